/**
 * What the project's two backends state in their conformance options: only where the vendors'
 * manuals differ. Shared by conformance.test.ts and conformance-broken.test.ts.
 */
import { SuiteOptions } from '@tsvisor/testkit';

/** kvm-intel: exits counted by basic-exit-reason name (vmx-defs.ts ExitReason). */
export const VMX_CONFORMANCE: SuiteOptions = {
  cpuVendor: 'GenuineIntel',
  hypercall: 'vmcall',
  patchesForeignHypercall: true,
  exitNames: { cpuid: 'CPUID', hlt: 'HLT', io: 'IO_INSTRUCTION', msrRead: 'MSR_READ', msrWrite: 'MSR_WRITE', hypercall: 'VMCALL' },
  // SDM 26.8 / 28.2.1: VM-entry failure due to invalid guest state — basic reason 33 with bit 31 set.
  failEntryReason: 0x80000021n,
  dirtyLog: 'pml',
  tlb: 'tagged',
  hvTimer: { exitName: 'PREEMPTION_TIMER' },
};

/** kvm-amd: exits counted by KVM's SVM_EXIT_REASONS strings (vmcb/exit-codes.ts); RDMSR and WRMSR are both 'msr'. */
export const SVM_CONFORMANCE: SuiteOptions = {
  cpuVendor: 'AuthenticAMD',
  hypercall: 'vmmcall',
  patchesForeignHypercall: true,
  exitNames: { cpuid: 'cpuid', hlt: 'hlt', io: 'io', msrRead: 'msr', msrWrite: 'msr', hypercall: 'hypercall' },
  // APM 15.5.1: VMEXIT_INVALID; KVM reports the low 32 bits of EXITCODE.
  failEntryReason: 0xffffffffn,
  dirtyLog: 'write-protect',
  tlb: 'tagged',
};
