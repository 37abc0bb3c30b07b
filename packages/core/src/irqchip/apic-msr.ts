/**
 * The LAPIC's MSRs, reached from kvm_get_msr_common / kvm_set_msr_common: IA32_APIC_BASE
 * (kvm_set_apic_base with the SDM 10.12.5 mode-transition rules), the x2APIC range
 * 0x800–0x8FF and IA32_TSC_DEADLINE. Each returns 0 on success, 1 for #GP / refused.
 */
import type { MsrData } from '../ops/types';
import { guestCpuidHas } from '../kvm/cpuid';
import type { KvmVcpu } from '../kvm/vcpu';
import { MSR_IA32_APICBASE_ENABLE, X2APIC_ENABLE } from './apic-regs';

/** The guest's MAXPHYADDR bound on the APIC base (40 bits, as CPUID 0x80000008 reports). */
const PHYS_ADDR_BITS = 40n;

enum LapicMode { DISABLED, INVALID, XAPIC, X2APIC }

function lapicMode(base: bigint): LapicMode {
  const en = (base & MSR_IA32_APICBASE_ENABLE) !== 0n;
  const x2 = (base & X2APIC_ENABLE) !== 0n;
  if (!en) return x2 ? LapicMode.INVALID : LapicMode.DISABLED;
  return x2 ? LapicMode.X2APIC : LapicMode.XAPIC;
}

/**
 * kvm_set_apic_base. Reserved: bits 0–7, 9, bits at or above MAXPHYADDR, and EXTD when the
 * guest's CPUID lacks x2APIC. EN=0 with EXTD=1 is invalid. The guest (not userspace) may not
 * go x2APIC → xAPIC or disabled → x2APIC directly (SDM 10.12.5.1).
 */
export function kvmSetApicBase(vcpu: KvmVcpu, msr: MsrData): number {
  const d = msr.data;
  const oldBase = vcpu.arch.apicBase;
  let reserved = 0xffn | (1n << 9n) | (~((1n << PHYS_ADDR_BITS) - 1n) & ((1n << 64n) - 1n));
  if (!guestCpuidHas(vcpu, 1, 'ecx', 21)) reserved |= X2APIC_ENABLE;
  if (d & reserved) return 1;
  const oldMode = lapicMode(oldBase);
  const newMode = lapicMode(d);
  if (newMode === LapicMode.INVALID) return 1;
  if (!msr.hostInitiated) {
    if (oldMode === LapicMode.X2APIC && newMode === LapicMode.XAPIC) return 1;
    if (oldMode === LapicMode.DISABLED && newMode === LapicMode.X2APIC) return 1;
  }
  vcpu.arch.apicBase = d;
  vcpu.kvm.irqchip?.lapic(vcpu)?.baseChanged(oldBase, d);
  return 0;
}

export function kvmX2apicMsrRead(vcpu: KvmVcpu, msr: MsrData): number {
  const a = vcpu.kvm.irqchip?.lapic(vcpu);
  const v = a?.x2apicMsrRead(msr.index);
  if (v === undefined) return 1;
  msr.data = v;
  return 0;
}

export function kvmX2apicMsrWrite(vcpu: KvmVcpu, msr: MsrData): number {
  const a = vcpu.kvm.irqchip?.lapic(vcpu);
  return a && a.x2apicMsrWrite(msr.index, msr.data) ? 0 : 1;
}

/** IA32_TSC_DEADLINE reads 0 without an in-kernel LAPIC or outside TSC-deadline mode (KVM). */
export function kvmGetTscDeadline(vcpu: KvmVcpu, msr: MsrData): number {
  msr.data = vcpu.kvm.irqchip?.lapic(vcpu)?.getTscDeadline() ?? 0n;
  return 0;
}

export function kvmSetTscDeadline(vcpu: KvmVcpu, msr: MsrData): number {
  vcpu.kvm.irqchip?.lapic(vcpu)?.setTscDeadline(msr.data);
  return 0;
}
