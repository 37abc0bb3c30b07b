/**
 * svm_get_msr / svm_set_msr: MSRs whose guest value lives in the VMCB save area or in
 * struct vcpu_svm, the rest through core's kvm_get/set_msr_common.
 */
import { KvmVcpu, MSR, MsrData, kvmGetMsrCommon, kvmSetMsrCommon, KvmMsrEntry, guestCpuidIsAmd } from '@tsvisor/core';
import { VMCB_SAVE, VmcbCleanBit } from './vmcb/layout';
import { svmOf } from './vcpu-svm';

/** AMD MSR indices (APM Vol. 2 App. A) not in core's table. */
export const MSR_AMD = {
  LASTBRANCHFROMIP: 0x1db,
  LASTBRANCHTOIP: 0x1dc,
  LASTINTFROMIP: 0x1dd,
  LASTINTTOIP: 0x1de,
  VIRT_SPEC_CTRL: 0xc001011f,
  /** MSR_F10H_DECFG (DE_CFG): bit 1 LFENCE serializing. */
  DE_CFG: 0xc0011029,
  VM_CR: 0xc0010114,
  VM_HSAVE_PA: 0xc0010117,
  /** AMD PMU: legacy PERF_CTL0–3 and PERF_CTR0–3 (APM Vol. 2 13.2). */
  K7_EVNTSEL0: 0xc0010000,
  K7_PERFCTR0: 0xc0010004,
} as const;

/** VM_CR bits (APM 15.30.1): DPD 0, R_INIT 1, DIS_A20M 2, LOCK 3, SVMDIS 4. */
const SVM_VM_CR_VALID_MASK = 0x1fn;
const SVM_VM_CR_SVM_LOCK_MASK = 1n << 3n;
const SVM_VM_CR_SVM_DIS_MASK = 1n << 4n;
/** DEBUGCTL bits SVM virtualizes: LBR (0) and BTF (1). */
const DEBUGCTL_LBR = 1n;
const DEBUGCTL_BTF = 2n;
/** SPEC_CTRL: IBRS 0, STIBP 1, SSBD 2. */
const SPEC_CTRL_VALID = 0x7n;
/** VIRT_SPEC_CTRL: SSBD bit 2. */
const VIRT_SPEC_CTRL_SSBD = 1n << 2n;
/** DE_CFG: LFENCE serializing (bit 1). */
const DE_CFG_LFENCE_SERIALIZE = 1n << 1n;

export function svmGetMsr(vcpu: KvmVcpu, msr: MsrData): number {
  const svm = svmOf(vcpu);
  const v = svm.vmcb;
  switch (msr.index) {
    case MSR.FS_BASE: msr.data = v.segBase(VMCB_SAVE.FS); return 0;
    case MSR.GS_BASE: msr.data = v.segBase(VMCB_SAVE.GS); return 0;
    case MSR.STAR: msr.data = v.read64(VMCB_SAVE.STAR); return 0;
    case MSR.LSTAR: msr.data = v.read64(VMCB_SAVE.LSTAR); return 0;
    case MSR.CSTAR: msr.data = v.read64(VMCB_SAVE.CSTAR); return 0;
    case MSR.SYSCALL_MASK: msr.data = v.read64(VMCB_SAVE.SFMASK); return 0;
    case MSR.KERNEL_GS_BASE: msr.data = v.read64(VMCB_SAVE.KERNEL_GS_BASE); return 0;
    case MSR.IA32_SYSENTER_CS: msr.data = v.read64(VMCB_SAVE.SYSENTER_CS); return 0;
    // The save area holds what the processor uses; KVM keeps the full 64-bit values an Intel guest wrote.
    case MSR.IA32_SYSENTER_EIP: msr.data = svm.sysenterEip; return 0;
    case MSR.IA32_SYSENTER_ESP: msr.data = svm.sysenterEsp; return 0;
    case MSR.TSC_AUX: msr.data = svm.tscAux; return 0;
    case MSR.IA32_DEBUGCTLMSR: msr.data = v.read64(VMCB_SAVE.DBGCTL); return 0;
    case MSR_AMD.LASTBRANCHFROMIP: msr.data = v.read64(VMCB_SAVE.BR_FROM); return 0;
    case MSR_AMD.LASTBRANCHTOIP: msr.data = v.read64(VMCB_SAVE.BR_TO); return 0;
    case MSR_AMD.LASTINTFROMIP: msr.data = v.read64(VMCB_SAVE.LASTEXCPFROM); return 0;
    case MSR_AMD.LASTINTTOIP: msr.data = v.read64(VMCB_SAVE.LASTEXCPTO); return 0;
    case MSR_AMD.VM_HSAVE_PA: msr.data = svm.vmHsavePa; return 0;
    case MSR_AMD.VM_CR: msr.data = svm.vmCr; return 0;
    case MSR.IA32_SPEC_CTRL: msr.data = svm.specCtrl; return 0;
    case MSR_AMD.VIRT_SPEC_CTRL:
      if (!msr.hostInitiated && !guestCpuidHasVirtSsbd(vcpu)) return 1;
      msr.data = svm.virtSpecCtrl;
      return 0;
    case MSR_AMD.DE_CFG: msr.data = svm.msrDecfg; return 0;
    default:
      if (vcpu.kvm.ops.pmuOps.isValidMsr(vcpu, msr.index)) return vcpu.kvm.ops.pmuOps.getMsr(vcpu, msr);
      return kvmGetMsrCommon(vcpu, msr);
  }
}

export function svmSetMsr(vcpu: KvmVcpu, msr: MsrData): number {
  const svm = svmOf(vcpu);
  const v = svm.vmcb;
  const d = msr.data;
  switch (msr.index) {
    case MSR.FS_BASE: v.setSegBase(VMCB_SAVE.FS, d); return 0;
    case MSR.GS_BASE: v.setSegBase(VMCB_SAVE.GS, d); return 0;
    case MSR.STAR: v.write64(VMCB_SAVE.STAR, d); return 0;
    case MSR.LSTAR: v.write64(VMCB_SAVE.LSTAR, d); return 0;
    case MSR.CSTAR: v.write64(VMCB_SAVE.CSTAR, d); return 0;
    case MSR.SYSCALL_MASK: v.write64(VMCB_SAVE.SFMASK, d); return 0;
    case MSR.KERNEL_GS_BASE: v.write64(VMCB_SAVE.KERNEL_GS_BASE, d); return 0;
    case MSR.IA32_SYSENTER_CS: v.write64(VMCB_SAVE.SYSENTER_CS, d & 0xffffn); return 0;
    case MSR.IA32_SYSENTER_EIP:
      svm.sysenterEip = d;
      v.write64(VMCB_SAVE.SYSENTER_EIP, d);
      return 0;
    case MSR.IA32_SYSENTER_ESP:
      svm.sysenterEsp = d;
      v.write64(VMCB_SAVE.SYSENTER_ESP, d);
      return 0;
    case MSR.TSC_AUX:
      // Bits 63:32 are reserved (APM: TSC_AUX is 32 bits).
      if (d >> 32n) return 1;
      svm.tscAux = d;
      return 0;
    case MSR.IA32_DEBUGCTLMSR:
      if (d & ~(DEBUGCTL_LBR | DEBUGCTL_BTF)) return 1;
      v.write64(VMCB_SAVE.DBGCTL, d);
      v.markDirty(VmcbCleanBit.LBR);
      return 0;
    case MSR_AMD.VM_HSAVE_PA:
      // APM 15.30.4: 4 KiB aligned.
      if (d & 0xfffn) return 1;
      svm.vmHsavePa = d;
      return 0;
    case MSR_AMD.VM_CR: {
      if (svm.vmCr & SVM_VM_CR_SVM_LOCK_MASK && ((d ^ svm.vmCr) & SVM_VM_CR_SVM_DIS_MASK)) return 1;
      if (d & ~SVM_VM_CR_VALID_MASK) return 1;
      svm.vmCr = d;
      return 0;
    }
    case MSR.IA32_SPEC_CTRL:
      if (d & ~SPEC_CTRL_VALID) return 1;
      svm.specCtrl = d;
      return 0;
    case MSR.IA32_PRED_CMD:
      // Write-only command: IBPB (bit 0); nothing to cache.
      if (d & ~1n) return 1;
      return 0;
    case MSR_AMD.VIRT_SPEC_CTRL:
      if (!msr.hostInitiated && !guestCpuidHasVirtSsbd(vcpu)) return 1;
      if (d & ~VIRT_SPEC_CTRL_SSBD) return 1;
      svm.virtSpecCtrl = d;
      return 0;
    case MSR_AMD.DE_CFG:
      // Only the bits getMsrFeature reports may be set, and only by userspace (as KVM).
      if (d & ~DE_CFG_LFENCE_SERIALIZE) return 1;
      if (!msr.hostInitiated && d !== svm.msrDecfg) return 1;
      svm.msrDecfg = d;
      return 0;
    case MSR.IA32_CR_PAT: {
      const r = kvmSetMsrCommon(vcpu, msr);
      if (r) return r;
      // With NPT the guest's PAT is the VMCB's G_PAT (APM 15.25.8).
      v.write64(VMCB_SAVE.G_PAT, d);
      v.markDirty(VmcbCleanBit.NP);
      return 0;
    }
    default:
      if (vcpu.kvm.ops.pmuOps.isValidMsr(vcpu, msr.index)) return vcpu.kvm.ops.pmuOps.setMsr(vcpu, msr);
      return kvmSetMsrCommon(vcpu, msr);
  }
}

/** CPUID 8000_0008h EBX bit 25 (VIRT_SSBD), which KVM offers on AMD. */
function guestCpuidHasVirtSsbd(vcpu: KvmVcpu): boolean {
  const e = vcpu.arch.cpuidEntries.find((x) => x.function === 0x80000008);
  return !!e && ((e.ebx >>> 25) & 1) === 1 && guestCpuidIsAmd(vcpu);
}

/** svm_get_msr_feature: feature MSRs userspace may read before creating vCPUs. */
export function svmGetMsrFeature(entry: KvmMsrEntry): number {
  switch (entry.index) {
    case MSR_AMD.DE_CFG:
      entry.data = DE_CFG_LFENCE_SERIALIZE;
      return 0;
    case MSR.IA32_ARCH_CAPABILITIES:
    case MSR.IA32_UCODE_REV:
      entry.data = 0n;
      return 0;
    default:
      return 1;
  }
}
