/** testkit's backend conformance suite, in VMX's vocabulary (KVM's VMX exit-reason names). */
import { describeBackendConformance } from '@tsvisor/testkit';
import { VmxBackend } from '@tsvisor/vmx';
import { VMX } from './helpers';

void VmxBackend;
describeBackendConformance(VMX, {
  cpuVendor: 'GenuineIntel',
  hypercall: 'vmcall',
  exitNames: { cpuid: 'CPUID', hlt: 'HLT', io: 'IO_INSTRUCTION', msrRead: 'MSR_READ', msrWrite: 'MSR_WRITE', hypercall: 'VMCALL' },
  // Exit reason 33 (invalid guest state) with bit 31 (VM-entry failure), as KVM reports it.
  failEntryReason: 0x80000021n,
  dirtyLog: 'pml',
  patchesForeignHypercall: true,
  hvTimer: { exitName: 'PREEMPTION_TIMER' },
  onReport: () => undefined,
});
