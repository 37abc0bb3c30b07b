export * from './errors';
export * from './run';
export * from './vcpu';
export * from './kvm';
export * from './cpuid';
export * from './msr';
export * from './pio';
export * from './emulate';
export * from './io-bus';
export * from './emulator-state';
export * from './task-switch';
export {
  kvmQueueException, kvmRequeueException, kvmClearExceptionQueue, kvmQueueInterrupt, kvmClearInterruptQueue,
  kvmSkipEmulatedInstruction, kvmCpuHasInjectableIntr, exceptionHasErrorCode, internalError, flushRemoteTlbs,
  vcpuReset, handleFastpathCpuid, handleFastpathInvd,
} from './x86';
