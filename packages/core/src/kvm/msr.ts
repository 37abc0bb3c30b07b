import { KvmReg, MsrData, X86Vector } from '../ops/types';
import { guestCpuidHas } from './cpuid';
import type { KvmVcpu } from './vcpu';
import { kvmGetTscDeadline, kvmSetApicBase, kvmSetTscDeadline, kvmX2apicMsrRead, kvmX2apicMsrWrite } from '../irqchip/apic-msr';

/** MSR indices (SDM Vol. 4; APM Vol. 2 App. A). */
export const MSR = {
  IA32_TSC: 0x10,
  IA32_PLATFORM_ID: 0x17,
  IA32_APICBASE: 0x1b,
  IA32_FEAT_CTL: 0x3a,
  IA32_TSC_ADJUST: 0x3b,
  IA32_SPEC_CTRL: 0x48,
  IA32_PRED_CMD: 0x49,
  IA32_UCODE_REV: 0x8b,
  IA32_MTRRCAP: 0xfe,
  IA32_ARCH_CAPABILITIES: 0x10a,
  IA32_SYSENTER_CS: 0x174,
  IA32_SYSENTER_ESP: 0x175,
  IA32_SYSENTER_EIP: 0x176,
  IA32_MCG_CAP: 0x179,
  IA32_MCG_STATUS: 0x17a,
  IA32_MCG_CTL: 0x17b,
  IA32_MISC_ENABLE: 0x1a0,
  IA32_DEBUGCTLMSR: 0x1d9,
  IA32_CR_PAT: 0x277,
  IA32_MTRR_DEF_TYPE: 0x2ff,
  IA32_MC0_CTL: 0x400,
  IA32_TSC_DEADLINE: 0x6e0,
  EFER: 0xc0000080,
  STAR: 0xc0000081,
  LSTAR: 0xc0000082,
  CSTAR: 0xc0000083,
  SYSCALL_MASK: 0xc0000084,
  FS_BASE: 0xc0000100,
  GS_BASE: 0xc0000101,
  KERNEL_GS_BASE: 0xc0000102,
  TSC_AUX: 0xc0000103,
  VM_CR: 0xc0010114,
  VM_HSAVE_PA: 0xc0010117,
} as const;

export const EFER_SCE = 1n << 0n;
export const EFER_LME = 1n << 8n;
export const EFER_LMA = 1n << 10n;
export const EFER_NX = 1n << 11n;
export const EFER_SVME = 1n << 12n;
export const EFER_FFXSR = 1n << 14n;

const KVM_MCE_BANKS = 10;

/** Guest-visible extra MSR state that core keeps (MTRRs, MCE banks). */
const mtrrs = new WeakMap<KvmVcpu, Map<number, bigint>>();
function mtrrState(vcpu: KvmVcpu): Map<number, bigint> {
  let m = mtrrs.get(vcpu);
  if (!m) mtrrs.set(vcpu, (m = new Map()));
  return m;
}

function isMtrr(index: number): boolean {
  return (index >= 0x200 && index <= 0x213) || index === 0x250 || index === 0x258 || index === 0x259 ||
    (index >= 0x268 && index <= 0x26f);
}

/** PAT entries must be valid memory types 0, 1, 4, 5, 6, 7 (kvm_pat_valid). */
export function patValid(data: bigint): boolean {
  for (let i = 0n; i < 8n; i++) {
    const t = Number((data >> (i * 8n)) & 0xffn);
    if (t === 2 || t === 3 || t > 7) return false;
  }
  return true;
}

/** kvm_valid_efer: which EFER bits this guest may set. */
export function efferReservedBits(vcpu: KvmVcpu): bigint {
  let allowed = EFER_SCE | EFER_LME | EFER_LMA;
  if (guestCpuidHas(vcpu, 0x80000001, 'edx', 20)) allowed |= EFER_NX;
  if (guestCpuidHas(vcpu, 0x80000001, 'ecx', 2)) allowed |= EFER_SVME;
  if (guestCpuidHas(vcpu, 0x80000001, 'edx', 25)) allowed |= EFER_FFXSR;
  return ~allowed & ((1n << 64n) - 1n);
}

/** set_efer(): validate and hand to the vendor. Returns 1 (#GP) when refused. */
function setEfer(vcpu: KvmVcpu, msr: MsrData): number {
  let efer = msr.data;
  if (efer & efferReservedBits(vcpu)) return 1;
  if (!msr.hostInitiated) {
    const PG = 1n << 31n;
    // SDM 2.2.1: changing LME while paging is enabled is #GP.
    if ((vcpu.readCr0() & PG) && ((vcpu.arch.efer ^ efer) & EFER_LME)) return 1;
    efer = (efer & ~EFER_LMA) | (vcpu.arch.efer & EFER_LMA);
  }
  vcpu.kvm.ops.setEfer(vcpu, efer);
  vcpu.arch.efer = efer;
  return 0;
}

/** kvm_get_msr_common: MSRs every vendor handles the same way. 0 ok, 1 #GP / refused. */
export function kvmGetMsrCommon(vcpu: KvmVcpu, msr: MsrData): number {
  const a = vcpu.arch;
  const i = msr.index;
  switch (i) {
    case MSR.EFER: msr.data = a.efer; return 0;
    case MSR.IA32_TSC: msr.data = BigInt.asUintN(64, vcpu.cpu.state.tsc + a.tscOffset); return 0;
    case MSR.IA32_APICBASE: msr.data = a.apicBase; return 0;
    case MSR.IA32_MISC_ENABLE: msr.data = a.miscEnable; return 0;
    case MSR.IA32_CR_PAT: msr.data = a.pat; return 0;
    case MSR.IA32_UCODE_REV: msr.data = a.ucodeRev; return 0;
    case MSR.IA32_PLATFORM_ID: msr.data = 0n; return 0;
    case MSR.IA32_MTRRCAP: msr.data = 0x508n; return 0; // 8 variable ranges, fixed ranges, WC
    case MSR.IA32_MTRR_DEF_TYPE: msr.data = a.mtrrDefType; return 0;
    case MSR.IA32_TSC_ADJUST: msr.data = 0n; return 0;
    case MSR.IA32_MCG_CAP: msr.data = BigInt(KVM_MCE_BANKS); return 0;
    case MSR.IA32_MCG_STATUS: case MSR.IA32_MCG_CTL: msr.data = 0n; return 0;
    case MSR.IA32_TSC_DEADLINE: return kvmGetTscDeadline(vcpu, msr);
    default:
      if (i >= 0x800 && i <= 0x8ff) return kvmX2apicMsrRead(vcpu, msr);
      if (isMtrr(i)) { msr.data = mtrrState(vcpu).get(i) ?? 0n; return 0; }
      if (i >= MSR.IA32_MC0_CTL && i < MSR.IA32_MC0_CTL + 4 * KVM_MCE_BANKS) { msr.data = (i & 3) === 0 ? (1n << 64n) - 1n : 0n; return 0; }
      return 1;
  }
}

/** kvm_set_msr_common. */
export function kvmSetMsrCommon(vcpu: KvmVcpu, msr: MsrData): number {
  const a = vcpu.arch;
  const i = msr.index;
  const d = msr.data;
  switch (i) {
    case MSR.EFER: return setEfer(vcpu, msr);
    case MSR.IA32_TSC: {
      const off = BigInt.asUintN(64, d - vcpu.cpu.state.tsc);
      a.l1TscOffset = off;
      a.tscOffset = vcpu.kvm.ops.writeL1TscOffset(vcpu, off);
      return 0;
    }
    case MSR.IA32_APICBASE: {
      if (vcpu.kvm.irqchip) return kvmSetApicBase(vcpu, msr);
      // Reserved: bits 0-7, 9, above MAXPHYADDR (40 here); x2APIC (10) without xAPIC enable (11) is invalid.
      if (d & ((0xffn << 0n) | (1n << 9n) | ~((1n << 40n) - 1n))) return 1;
      if ((d & (1n << 10n)) && !(d & (1n << 11n))) return 1;
      a.apicBase = d;
      return 0;
    }
    case MSR.IA32_MISC_ENABLE: a.miscEnable = d; return 0;
    case MSR.IA32_CR_PAT: if (!patValid(d)) return 1; a.pat = d; return 0;
    case MSR.IA32_UCODE_REV: if (!msr.hostInitiated) return 0; a.ucodeRev = d; return 0;
    case MSR.IA32_MTRR_DEF_TYPE: if (d & ~0xcffn) return 1; a.mtrrDefType = d; return 0;
    case MSR.IA32_TSC_ADJUST: return 0;
    case MSR.IA32_MCG_STATUS: case MSR.IA32_MCG_CTL: return 0;
    case MSR.IA32_TSC_DEADLINE: return kvmSetTscDeadline(vcpu, msr);
    default:
      if (i >= 0x800 && i <= 0x8ff) return kvmX2apicMsrWrite(vcpu, msr);
      if (isMtrr(i)) { mtrrState(vcpu).set(i, d); return 0; }
      if (i >= MSR.IA32_MC0_CTL && i < MSR.IA32_MC0_CTL + 4 * KVM_MCE_BANKS) return 0;
      return 1;
  }
}

/** kvm_emulate_rdmsr: the RDMSR exit handler both vendors share. */
export function kvmEmulateRdmsr(vcpu: KvmVcpu): number {
  const ecx = Number(vcpu.registerRead(KvmReg.RCX) & 0xffffffffn);
  const msr: MsrData = { hostInitiated: false, index: ecx, data: 0n };
  vcpu.kvm.stats.msrReads++;
  if (vcpu.kvm.tracing('kvm_msr')) vcpu.kvm.trace('kvm_msr', vcpu, `msr_read ${ecx.toString(16)}`);
  if (vcpu.kvm.ops.getMsr(vcpu, msr) !== 0) {
    vcpu.kvm.queueException(vcpu, X86Vector.GP, 0);
    return 1;
  }
  vcpu.registerWrite(KvmReg.RAX, msr.data & 0xffffffffn);
  vcpu.registerWrite(KvmReg.RDX, msr.data >> 32n);
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

/** Linear-address width for canonical checks: 57 with CR4.LA57, else 48 (SDM 3.3.7.1). */
export function vcpuVirtAddrBits(vcpu: KvmVcpu): number {
  return vcpu.readCr4() & (1n << 12n) ? 57 : 48;
}

export function isCanonical(v: bigint, bits: number): boolean {
  return BigInt.asIntN(64, v) === BigInt.asIntN(bits, v);
}

/** MSRs holding linear addresses that must be canonical (__kvm_set_msr). */
const CANONICAL_MSRS = new Set<number>([MSR.FS_BASE, MSR.GS_BASE, MSR.KERNEL_GS_BASE, MSR.CSTAR, MSR.LSTAR]);

/**
 * __kvm_set_msr: the checks every vendor shares, then the vendor hook. Address-holding MSRs
 * must be canonical (#GP for the guest, an error for userspace); SYSENTER_EIP/ESP are
 * canonicalized instead, as KVM does (AMD ignores their upper half). Returns 0, or 1 with
 * `why` naming a generic refusal ('' when the vendor refused).
 */
export function kvmSetMsr(vcpu: KvmVcpu, msr: MsrData): { r: number; why: string } {
  const bits = vcpuVirtAddrBits(vcpu);
  if (CANONICAL_MSRS.has(msr.index) && !isCanonical(msr.data, bits)) {
    return { r: 1, why: `value 0x${msr.data.toString(16)} is not a canonical ${bits}-bit address` };
  }
  if (msr.index === MSR.IA32_SYSENTER_EIP || msr.index === MSR.IA32_SYSENTER_ESP) {
    msr.data = BigInt.asUintN(64, BigInt.asIntN(bits, msr.data));
  }
  return { r: vcpu.kvm.ops.setMsr(vcpu, msr), why: '' };
}

/** kvm_emulate_wrmsr. */
export function kvmEmulateWrmsr(vcpu: KvmVcpu): number {
  const ecx = Number(vcpu.registerRead(KvmReg.RCX) & 0xffffffffn);
  const data = ((vcpu.registerRead(KvmReg.RDX) & 0xffffffffn) << 32n) | (vcpu.registerRead(KvmReg.RAX) & 0xffffffffn);
  const msr: MsrData = { hostInitiated: false, index: ecx, data };
  vcpu.kvm.stats.msrWrites++;
  if (vcpu.kvm.tracing('kvm_msr')) vcpu.kvm.trace('kvm_msr', vcpu, `msr_write ${ecx.toString(16)} = 0x${data.toString(16)}`);
  if (kvmSetMsr(vcpu, msr).r !== 0) {
    vcpu.kvm.queueException(vcpu, X86Vector.GP, 0);
    return 1;
  }
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

