import { KvmReg } from '../ops/types';
import { CPUID_1_ECX, CPUID_1_EDX, CPUID_7_EBX, CPUID_7_ECX, CPUID_81_ECX, CPUID_81_EDX } from '../cpu/cpuid';
import { MAXPHYADDR } from '../cpu/consts';
import { KvmError } from './errors';
import type { KvmVcpu } from './vcpu';

/** struct kvm_cpuid_entry2. */
export interface KvmCpuidEntry2 {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;
/** KVM_MAX_CPUID_ENTRIES. */
export const KVM_MAX_CPUID_ENTRIES = 256;

/** CPUID vendor strings as EBX, EDX, ECX of leaf 0. */
export const VENDOR_SIGNATURES = {
  intel: [0x756e6547, 0x49656e69, 0x6c65746e], // "Genu" "ineI" "ntel"
  amd: [0x68747541, 0x69746e65, 0x444d4163], // "Auth" "enti" "cAMD"
} as const;

/**
 * KVM_GET_SUPPORTED_CPUID: what this KVM offers a guest on `vendor`'s hardware — the emulated
 * processor's own feature words (cpu/cpuid.ts, exactly what it implements), plus what KVM
 * itself emulates: the in-kernel LAPIC (APIC, x2APIC, TSC-deadline timer), the hypervisor bit
 * and KVM's signature leaves.
 */
export function supportedCpuid(vendor: 'intel' | 'amd'): KvmCpuidEntry2[] {
  const [b, d, c] = VENDOR_SIGNATURES[vendor];
  const e = (fn: number, eax: number, ebx: number, ecx: number, edx: number, index = 0, flags = 0): KvmCpuidEntry2 =>
    ({ function: fn, index, flags, eax: eax >>> 0, ebx: ebx >>> 0, ecx: ecx >>> 0, edx: edx >>> 0 });
  // Family 6 model 0x3a stepping 9 on Intel; family 0x17 on AMD (the processor's own signature).
  const signature = vendor === 'intel' ? 0x000306a9 : 0x00800f12;
  const APIC = 1 << 9;
  const X2APIC = 1 << 21;
  const TSC_DEADLINE = 1 << 24;
  const HYPERVISOR = 1 << 31;
  // AMD mirrors the leaf-1 EDX features it shares into 0x80000001 EDX (APM Vol. 3 E.4.2).
  const AMD_MIRRORED = 0x0183f3ff;
  const ext1Edx = CPUID_81_EDX | (vendor === 'amd' ? (CPUID_1_EDX | APIC) & AMD_MIRRORED : 0);
  const la57 = (CPUID_7_ECX & (1 << 16)) !== 0;
  return [
    e(0, 7, b, c, d),
    // EBX[15:8]: CLFLUSH line size in quadwords (64 bytes).
    e(1, signature, 0x00000800, CPUID_1_ECX | X2APIC | TSC_DEADLINE | HYPERVISOR, CPUID_1_EDX | APIC),
    e(7, 0, CPUID_7_EBX, CPUID_7_ECX, 0, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX),
    e(0x40000000, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d, 0), // "KVMKVMKVM\0\0\0"
    e(0x40000001, 0, 0, 0, 0),
    e(0x80000000, 0x80000008, vendor === 'amd' ? b : 0, vendor === 'amd' ? c : 0, vendor === 'amd' ? d : 0),
    e(0x80000001, vendor === 'amd' ? signature : 0, 0, CPUID_81_ECX, ext1Edx),
    e(0x80000008, MAXPHYADDR | ((la57 ? 57 : 48) << 8), 0, 0, 0),
  ];
}

/** KVM_SET_CPUID2 validation (kvm_vcpu_ioctl_set_cpuid2). */
export function validateCpuid(entries: readonly KvmCpuidEntry2[]): void {
  if (!Array.isArray(entries)) throw new KvmError('EINVAL', 'KVM_SET_CPUID2: entries must be an array');
  if (entries.length > KVM_MAX_CPUID_ENTRIES) {
    throw new KvmError('E2BIG', `KVM_SET_CPUID2: ${entries.length} entries exceed KVM_MAX_CPUID_ENTRIES (${KVM_MAX_CPUID_ENTRIES})`);
  }
  for (const [i, e] of entries.entries()) {
    for (const k of ['function', 'index', 'flags', 'eax', 'ebx', 'ecx', 'edx'] as const) {
      const v = e[k];
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw new KvmError('EINVAL', `KVM_SET_CPUID2: entry ${i} field ${k} must be a 32-bit unsigned integer, got ${String(v)}`);
      }
    }
  }
}

/** kvm_find_cpuid_entry. */
export function kvmFindCpuidEntry(vcpu: KvmVcpu, fn: number, index: number): KvmCpuidEntry2 | undefined {
  const entries = vcpu.arch.cpuidEntries;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (e.function === fn && (!(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e.index === index)) return e;
  }
  return undefined;
}

export function guestCpuidIsAmd(vcpu: KvmVcpu): boolean {
  const e = kvmFindCpuidEntry(vcpu, 0, 0);
  return !!e && e.ebx === VENDOR_SIGNATURES.amd[0] && e.ecx === VENDOR_SIGNATURES.amd[2] && e.edx === VENDOR_SIGNATURES.amd[1];
}

/** guest_cpuid_has for a (leaf, register, bit) feature. */
export function guestCpuidHas(vcpu: KvmVcpu, leaf: number, reg: 'eax' | 'ebx' | 'ecx' | 'edx', bit: number, index = 0): boolean {
  const e = kvmFindCpuidEntry(vcpu, leaf, index);
  return !!e && ((e[reg] >>> bit) & 1) === 1;
}

/**
 * kvm_cpuid(): the values the guest sees. Out-of-range leaves follow Intel's rule (the highest
 * basic leaf) unless the guest's vendor is AMD, where they read as zero — as KVM does.
 */
export function kvmCpuid(vcpu: KvmVcpu, fn: number, index: number): [number, number, number, number] {
  const e = kvmCpuidEntry(vcpu, fn, index);
  if (!e) return [0, 0, 0, 0];
  return [e.eax, e.ebx, e.ecx, e.edx];
}

/** The entry kvm_cpuid() answers from (undefined: all four registers read as zero). */
function kvmCpuidEntry(vcpu: KvmVcpu, fn: number, index: number): KvmCpuidEntry2 | undefined {
  let e = kvmFindCpuidEntry(vcpu, fn, index);
  if (!e && !guestCpuidIsAmd(vcpu)) {
    const classMax = kvmFindCpuidEntry(vcpu, fn & 0xc0000000, 0);
    if (!classMax || fn > classMax.eax) {
      const basic = kvmFindCpuidEntry(vcpu, 0, 0);
      if (basic) e = kvmFindCpuidEntry(vcpu, basic.eax, index);
    }
  }
  return e;
}

/**
 * kvm_emulate_cpuid: answer from the guest CPUID table and skip the instruction. The four
 * results are 32-bit and zero-extended into RAX/RBX/RCX/RDX (SDM Vol. 2A CPUID), written as
 * register halves: no BigInt and no allocation on this exit.
 */
export function kvmEmulateCpuid(vcpu: KvmVcpu): number {
  const fn = vcpu.registerReadLow(KvmReg.RAX);
  const index = vcpu.registerReadLow(KvmReg.RCX);
  const e = kvmCpuidEntry(vcpu, fn, index);
  const a = e ? e.eax : 0, b = e ? e.ebx : 0, c = e ? e.ecx : 0, d = e ? e.edx : 0;
  vcpu.kvm.stats.cpuidExits++;
  if (vcpu.kvm.tracing('kvm_cpuid')) vcpu.kvm.trace('kvm_cpuid', vcpu, () => `func ${fn.toString(16)} idx ${index.toString(16)} rax ${a.toString(16)} rbx ${b.toString(16)} rcx ${c.toString(16)} rdx ${d.toString(16)}`);
  // kvm_rax_write … kvm_rdx_write as 32-bit halves, in one go: RAX, RCX, RDX, RBX are
  // registers 0-3 (enum kvm_reg), so words 0-7 of regs32 and bits 0-3 of avail/dirty.
  const arch = vcpu.arch;
  const r32 = arch.regs32;
  r32[0] = a; r32[1] = 0; r32[2] = c; r32[3] = 0; r32[4] = d; r32[5] = 0; r32[6] = b; r32[7] = 0;
  arch.regsAvail |= CPUID_OUTPUT_REGS;
  arch.regsDirty |= CPUID_OUTPUT_REGS;
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

/** RAX, RCX, RDX and RBX as regsAvail/regsDirty bits. */
const CPUID_OUTPUT_REGS = (1 << KvmReg.RAX) | (1 << KvmReg.RCX) | (1 << KvmReg.RDX) | (1 << KvmReg.RBX);
