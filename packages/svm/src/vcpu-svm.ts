import type { Kvm, KvmVcpu } from '@tsvisor/core';
import { Vmcb } from './vmcb/vmcb';
import { Iopm, Msrpm } from './vmcb/permission-maps';
import { SvmHardware } from './hardware';
import type { VmrunCheckFailure } from './vmcb/checks';

/**
 * struct vcpu_svm: the backend's per-vCPU state. Who touches it: only the backend's hooks
 * (core reaches it through kvm_x86_ops); `hw` is the emulated processor's SVM unit.
 */
export class VcpuSvm {
  /** Guest ASID and the generation it was allocated in (KVM's asid_generation). */
  asidGeneration = 0;
  /** svm->next_rip: where skipEmulatedInstruction goes (nRIP of the last exit, or an exit's EXITINFO2). */
  nextRip = 0n;
  /**
   * svm->soft_int_*: a software interrupt or INT3/INTO that KVM injected (EVENTINJ with NRIP
   * as its return address), kept to re-inject it if an exit interrupts its delivery
   * (svm_update_soft_interrupt_rip / svm_complete_soft_interrupt). Linear RIPs (CS base + RIP).
   */
  softIntInjected = false;
  softIntCsbase = 0n;
  softIntOldRip = 0n;
  softIntNextRip = 0n;
  /** HF_NMI_MASK: an NMI was injected and its IRET has not executed. */
  nmiMasked = false;
  /** HF_IRET_MASK: the IRET intercept fired; NMIs open once RIP moves past nmiIretRip. */
  iretMasked = false;
  nmiIretRip = 0n;
  /** nmi_singlestep: the guest is single-stepped over its IRET so the NMI window is seen right after it. */
  nmiSinglestep = false;
  nmiSinglestepGuestRflags = 0n;
  /** Full 64-bit SYSENTER_EIP/ESP (Intel guests on AMD), TSC_AUX and the other MSRs KVM keeps in vcpu_svm. */
  sysenterEip = 0n;
  sysenterEsp = 0n;
  tscAux = 0n;
  vmHsavePa = 0n;
  vmCr = 0n;
  specCtrl = 0n;
  virtSpecCtrl = 0n;
  msrDecfg = 0n;
  /** instructionsRetired at the start of the current KVM_RUN (for the time-slice budget). */
  budgetStart = 0;
  /** A host-side error the processor caught during the last VMRUN (reported by handleExit). */
  hostError: Error | null = null;
  /** The consistency check that failed at the last VMRUN, for the FAIL_ENTRY message. */
  lastFailure: VmrunCheckFailure | null = null;
  /** The processor's SVM unit: clean-bit cache, rules, TLB_CONTROL. */
  readonly hw: SvmHardware;
  /** Per-"physical CPU" ASID allocator (svm_cpu_data): each vCPU has its own emulated processor. */
  readonly cpuData = { asidGeneration: 1, nextAsid: 1, minAsid: 1, maxAsid: 0xffff };
  /** AVIC: host-physical address of this vCPU's APIC backing page (0 until AVIC is set up). */
  avicBackingPage = 0;
  avicDoorbells = 0;
  avicIpiWakeups = 0;
  avicTrapWrites = 0;
  /** The LAPIC register page mapped as the backing page (avic_get_backing_page_address: __pa(apic->regs)). */
  avicBackingRegs: Uint32Array | null = null;
  /** svm->ldr_reg / svm->dfr_reg: the LDR and DFR the logical APIC ID table entry was built from. */
  avicLdrReg = 0;
  avicDfrReg = 0xffffffff;
  /** PMU counters (AMD legacy PERF_CTL0–3 / PERF_CTR0–3). */
  readonly perfCtl = [0n, 0n, 0n, 0n];
  readonly perfCtrBase = [0n, 0n, 0n, 0n];
  readonly perfCtrStart = [0n, 0n, 0n, 0n];

  constructor(readonly vcpu: KvmVcpu, readonly vmcb: Vmcb, readonly msrpm: Msrpm) {
    this.hw = new SvmHardware(vcpu.cpu, vcpu.kvm.hostMemory);
  }
}

/** struct kvm_svm: per-VM state. */
export class KvmSvm {
  constructor(readonly kvm: Kvm, readonly iopm: Iopm) {}
}

export function svmOf(vcpu: KvmVcpu): VcpuSvm {
  const s = vcpu.vendor;
  if (!(s instanceof VcpuSvm)) throw new Error(`vcpu ${vcpu.vcpuId} has no SVM state (vcpuCreate did not run)`);
  return s;
}

export function kvmSvmOf(kvm: Kvm): KvmSvm {
  const s = kvm.vendor;
  if (!(s instanceof KvmSvm)) throw new Error('the VM has no SVM state (vmInit did not run)');
  return s;
}
