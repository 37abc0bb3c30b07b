/**
 * @tsvisor/svm — kvm-amd for tsvisor: the SVM backend over an emulated VMCB.
 */
export { SvmBackend, svmModuleParams, ApicvInhibitReason } from './svm';
export { dumpControlBlock, dumpVmcb } from './dump';
export { Vmcb, packAttrib, attribToCpu, cpuToAttrib } from './vmcb/vmcb';
export * from './vmcb/layout';
export * from './vmcb/exit-codes';
export { Iopm, Msrpm, msrpmOffset, IOPM_SIZE, MSRPM_SIZE } from './vmcb/permission-maps';
export { vmrunConsistencyCheck, eventInjIsLegal, HOST_MAXPHYADDR } from './vmcb/checks';
export type { VmrunCheckFailure } from './vmcb/checks';
export { SvmHardware, SvmGuestModeRules, encodeVectoring } from './hardware';
export { NptWalker, nptFormat, npfErrorCode } from './npt/npt';
export { svmExitHandlers, svmHandleExit } from './exit-handlers';
export { VcpuSvm, KvmSvm, svmOf } from './vcpu-svm';
export { VMMCALL_BYTES, VMCALL_BYTES } from './hypercall';
export { MSR_AMD } from './msr';
