/**
 * Control- and debug-register writes on the guest's behalf (x86.c's kvm_set_cr0/3/4/8 and
 * kvm_set_dr, which core does not provide yet): the architectural #GP checks, then the
 * vendor hooks. Return 0 on success, 1 for #GP (kvm_complete_insn_gp injects it).
 */
import { KvmReg, KvmReq, KvmVcpu, EFER_LME, KvmSegment, emptySegment, VcpuSreg } from '@tsvisor/core';
import { HOST_MAXPHYADDR } from './vmcb/checks';

const CR0_PE = 1n, CR0_ET = 1n << 4n, CR0_NW = 1n << 29n, CR0_CD = 1n << 30n, CR0_PG = 1n << 31n;
const CR0_WP = 1n << 16n;
const CR4_PAE = 1n << 5n, CR4_PGE = 1n << 7n, CR4_PCIDE = 1n << 17n, CR4_PSE = 1n << 4n, CR4_SMEP = 1n << 20n;
const CR4_DE = 1n << 3n;
/** CR4 bits a guest may set on this processor (checks.ts lists the architectural set; VMXE is reserved on AMD). */
const CR4_GUEST_VALID = 0x7ffn | (1n << 11n) | (1n << 16n) | (1n << 17n) | (1n << 18n) | (1n << 20n) | (1n << 21n);

const seg: KvmSegment = emptySegment();

function isLongMode(vcpu: KvmVcpu): boolean {
  return (vcpu.arch.efer & (1n << 10n)) !== 0n;
}

/** kvm_set_cr0. */
export function kvmSetCr0(vcpu: KvmVcpu, value: bigint): number {
  const old = vcpu.readCr0();
  let cr0 = value | CR0_ET;
  if (cr0 >> 32n) return 1;
  if ((cr0 & CR0_NW) && !(cr0 & CR0_CD)) return 1;
  if ((cr0 & CR0_PG) && !(cr0 & CR0_PE)) return 1;
  if (!(old & CR0_PG) && (cr0 & CR0_PG) && (vcpu.arch.efer & EFER_LME)) {
    // SDM/APM: enabling paging with LME set requires PAE and a CS that is not 64-bit yet.
    if (!(vcpu.readCr4() & CR4_PAE)) return 1;
    vcpu.kvm.ops.getSegment(vcpu, seg, VcpuSreg.CS);
    if (seg.l) return 1;
  }
  if (!(cr0 & CR0_PG) && (vcpu.readCr4() & CR4_PCIDE)) return 1;
  vcpu.kvm.ops.setCr0(vcpu, cr0);
  vcpu.arch.cr0 = cr0;
  if ((cr0 ^ old) & (CR0_PG | CR0_WP | CR0_PE)) vcpu.makeRequest(KvmReq.TLB_FLUSH_CURRENT);
  return 0;
}

/** kvm_set_cr4. */
export function kvmSetCr4(vcpu: KvmVcpu, cr4: bigint): number {
  const old = vcpu.readCr4();
  if (cr4 & ~CR4_GUEST_VALID) return 1;
  if (isLongMode(vcpu)) {
    if (!(cr4 & CR4_PAE)) return 1;
  }
  if ((cr4 & CR4_PCIDE) && !(old & CR4_PCIDE)) {
    if (!isLongMode(vcpu) || (vcpu.readCr3() & 0xfffn)) return 1;
  }
  if (vcpu.kvm.ops.setCr4(vcpu, cr4)) return 1;
  vcpu.arch.cr4 = cr4;
  if ((cr4 ^ old) & (CR4_PGE | CR4_PAE | CR4_PSE | CR4_PCIDE | CR4_SMEP)) vcpu.makeRequest(KvmReq.TLB_FLUSH_CURRENT);
  return 0;
}

/** kvm_set_cr3: reserved bits are #GP in long mode (bits 63:MAXPHYADDR, bit 63 is PCID no-flush). */
export function kvmSetCr3(vcpu: KvmVcpu, cr3: bigint): number {
  let v = cr3;
  const pcide = (vcpu.readCr4() & CR4_PCIDE) !== 0n;
  if (pcide) v &= ~(1n << 63n);
  if (isLongMode(vcpu) && (v >> BigInt(HOST_MAXPHYADDR))) return 1;
  vcpu.arch.cr3 = v;
  vcpu.arch.regsAvail |= 1 << KvmReg.CR3;
  vcpu.makeRequest(KvmReq.LOAD_MMU_PGD);
  if (!pcide || !(cr3 & (1n << 63n))) vcpu.makeRequest(KvmReq.TLB_FLUSH_CURRENT);
  return 0;
}

/** kvm_set_cr8: TPR is 4 bits. */
export function kvmSetCr8(vcpu: KvmVcpu, cr8: bigint): number {
  if (cr8 & ~0xfn) return 1;
  vcpu.arch.cr8 = cr8;
  return 0;
}

/** kvm_get_dr. DR4/DR5 alias DR6/DR7 when CR4.DE is clear (the caller raised #UD otherwise). */
export function kvmGetDr(vcpu: KvmVcpu, dr: number): bigint {
  switch (dr) {
    case 0: case 1: case 2: case 3: return vcpu.arch.db[dr];
    case 4: case 6: return vcpu.arch.dr6;
    default: return vcpu.arch.dr7;
  }
}

/** kvm_set_dr: DR6/DR7 bits 63:32 are #GP. */
export function kvmSetDr(vcpu: KvmVcpu, dr: number, val: bigint): number {
  switch (dr) {
    case 0: case 1: case 2: case 3: vcpu.arch.db[dr] = val; return 0;
    case 4: case 6:
      if (val >> 32n) return 1;
      // B0–B3, BD, BS, BT are volatile; the rest reads as the fixed 0xFFFF0FF0 (SDM 17.2.3).
      vcpu.arch.dr6 = (val & 0xe00fn) | 0xffff0ff0n;
      return 0;
    default:
      if (val >> 32n) return 1;
      vcpu.arch.dr7 = (val & ~(0x3n << 14n)) | 0x400n;
      vcpu.kvm.ops.setDr7(vcpu, vcpu.arch.dr7);
      return 0;
  }
}

export function cr4De(vcpu: KvmVcpu): boolean {
  return (vcpu.readCr4() & CR4_DE) !== 0n;
}
