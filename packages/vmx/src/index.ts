/**
 * @tsvisor/vmx — tsvisor's kvm-intel: every kvm_x86_ops hook against an emulated VMCS.
 */
import type { KvmVcpu } from '@tsvisor/core';
import { dumpVmcs } from './vmcs/dump';
import { toVmx } from './vcpu-vmx';

export { VmxBackend } from './vmx';
export * from './vmcs/fields';
export * from './vmcs/vmcs';
export { dumpVmcs } from './vmcs/dump';
export * from './vmx-defs';
export * from './capabilities';
export * from './entry-checks';
export * from './exit-info';
export { kvmVmxExitHandlers, vmxHandleExit } from './exit-handlers';
export { VmxGuestModeRules } from './guest-rules';
export { VcpuVmx, KvmVmx, toVmx, toKvmVmx } from './vcpu-vmx';
export * from './ept/ept';
export * from './msr';
export * from './pmu';
export * from './apic-access';
export * from './apic-exits';
export * from './invpcid';
export { VMCALL_BYTES, VMMCALL_BYTES, guestLinearToPhys } from './hypercall';

/** The CLI's --dump-control-block: every VMCS field of this vCPU by name. */
export function dumpControlBlock(vcpu: KvmVcpu): string {
  return dumpVmcs(toVmx(vcpu).vmcs);
}
