/**
 * Control-register and debug-register access exits (handle_cr, handle_dr) and the parts of
 * x86.c's kvm_set_cr0/cr3/cr4/cr8, kvm_lmsw and kvm_get/set_dr they need.
 */
import { KvmExitReason, KvmReg, KvmVcpu, kvmInjectGp, kvmQueueUd } from '@tsvisor/core';
import { F } from './vmcs/fields';
import { toVmx } from './vcpu-vmx';
import { VMX_CR4_FIXED1 } from './capabilities';

const CR0_PE = 1n, CR0_ET = 0x10n, CR0_NW = 1n << 29n, CR0_CD = 1n << 30n, CR0_PG = 1n << 31n, CR0_TS = 8n;
const CR4_PAE = 0x20n, CR4_DE = 0x8n, CR4_VMXE = 0x2000n, CR4_PCIDE = 0x20000n;
const EFER_LME = 0x100n, EFER_LMA = 0x400n;
/** CR4 bits a guest may set: what the processor implements, less VMXE (no nested VMX). */
export const GUEST_CR4_ALLOWED = BigInt(VMX_CR4_FIXED1) & ~CR4_VMXE;

/** kvm_set_cr0. 0: done, 1: #GP. */
export function kvmSetCr0(vcpu: KvmVcpu, cr0In: bigint): number {
  let cr0 = cr0In | CR0_ET;
  if (cr0 >> 32n) return 1;
  if (cr0 & CR0_NW && !(cr0 & CR0_CD)) return 1;
  if (cr0 & CR0_PG && !(cr0 & CR0_PE)) return 1;
  const old = vcpu.readCr0();
  if (!(old & CR0_PG) && cr0 & CR0_PG && vcpu.arch.efer & EFER_LME) {
    if (!(vcpu.readCr4() & CR4_PAE)) return 1;
    if (vcpu.kvm.ops.getCsDbLBits(vcpu).l) return 1;
  }
  if (!(cr0 & CR0_PG) && vcpu.readCr4() & CR4_PCIDE) return 1;
  cr0 &= 0xffffffffn;
  vcpu.kvm.ops.setCr0(vcpu, cr0);
  return 0;
}

/** kvm_set_cr4. */
export function kvmSetCr4(vcpu: KvmVcpu, cr4: bigint): number {
  if (cr4 & ~GUEST_CR4_ALLOWED) return 1;
  if (vcpu.arch.efer & EFER_LMA && !(cr4 & CR4_PAE)) return 1;
  return vcpu.kvm.ops.setCr4(vcpu, cr4) ? 1 : 0;
}

/** kvm_set_cr3 with EPT: the guest's CR3 goes straight into the VMCS. */
export function kvmSetCr3(vcpu: KvmVcpu, cr3: bigint): number {
  if (cr3 >> 40n) return 1;
  vcpu.arch.cr3 = cr3;
  vcpu.arch.regsAvail |= 1 << KvmReg.CR3;
  toVmx(vcpu).vmcs.writeNat(F.GUEST_CR3, cr3);
  return 0;
}

/** kvm_set_cr8. */
export function kvmSetCr8(vcpu: KvmVcpu, cr8: bigint): number {
  if (cr8 & ~0xfn) return 1;
  vcpu.arch.cr8 = cr8;
  return 0;
}

/** kvm_lmsw: only PE, MP, EM, TS; PE cannot be cleared. */
export function kvmLmsw(vcpu: KvmVcpu, msw: number): number {
  const old = vcpu.readCr0();
  return kvmSetCr0(vcpu, (old & ~0x0en) | BigInt(msw & 0x0f));
}

function completeInsnGp(vcpu: KvmVcpu, err: number): number {
  if (err) {
    kvmInjectGp(vcpu, 0);
    return 1;
  }
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

/** handle_cr (SDM 28.2.1 Table 28-3 qualification). */
export function handleCr(vcpu: KvmVcpu): number {
  const vmx = toVmx(vcpu);
  const q = vmx.vmcs.readNat(F.EXIT_QUALIFICATION);
  const cr = Number(q & 15n);
  const type = Number((q >> 4n) & 3n);
  const reg = Number((q >> 8n) & 15n) as KvmReg;
  switch (type) {
    case 0: {
      const val = vcpu.registerRead(reg);
      switch (cr) {
        case 0: return completeInsnGp(vcpu, kvmSetCr0(vcpu, val));
        case 3: return completeInsnGp(vcpu, kvmSetCr3(vcpu, val));
        case 4: return completeInsnGp(vcpu, kvmSetCr4(vcpu, val));
        case 8: {
          const prev = vcpu.arch.cr8;
          const r = completeInsnGp(vcpu, kvmSetCr8(vcpu, val));
          if (vcpu.kvm.irqchipInKernel || prev <= vcpu.arch.cr8) return r;
          // A lowered TPR without an in-kernel APIC: userspace may now inject (KVM_EXIT_SET_TPR).
          vcpu.run.exitReason = KvmExitReason.KVM_EXIT_SET_TPR;
          return 0;
        }
      }
      break;
    }
    case 1:
      if (cr === 3) {
        vcpu.registerWrite(reg, vcpu.readCr3());
        return vcpu.kvm.skipEmulatedInstruction(vcpu);
      }
      if (cr === 8) {
        vcpu.registerWrite(reg, vcpu.arch.cr8);
        return vcpu.kvm.skipEmulatedInstruction(vcpu);
      }
      break;
    case 2:
      // CLTS with TS host-owned.
      return completeInsnGp(vcpu, kvmSetCr0(vcpu, vcpu.readCr0() & ~CR0_TS));
    case 3:
      return completeInsnGp(vcpu, kvmLmsw(vcpu, Number((q >> 16n) & 0xffffn)));
  }
  vcpu.run.exitReason = KvmExitReason.KVM_EXIT_UNKNOWN;
  return 0;
}

/** kvm_get_dr. */
function kvmGetDr(vcpu: KvmVcpu, dr: number): bigint {
  const a = vcpu.arch;
  switch (dr) {
    case 0: case 1: case 2: case 3: return a.db[dr];
    case 4: case 6: return a.dr6;
    default: return toVmx(vcpu).vmcs.readNat(F.GUEST_DR7);
  }
}

/** kvm_set_dr: 0 ok, 1 #GP. */
function kvmSetDr(vcpu: KvmVcpu, dr: number, val: bigint): number {
  const a = vcpu.arch;
  switch (dr) {
    case 0: case 1: case 2: case 3: a.db[dr] = val; return 0;
    case 4: case 6:
      if (val >> 32n) return 1;
      a.dr6 = (val & 0x1e00fn) | 0xfffe0ff0n;
      return 0;
    default:
      if (val >> 32n) return 1;
      a.dr7 = (val & ~0x2000n) | 0x400n;
      vcpu.kvm.ops.setDr7(vcpu, a.dr7);
      return 0;
  }
}

/** handle_dr (SDM Table 28-4). DR4/DR5 alias DR6/DR7 unless CR4.DE (then #UD). */
export function handleDr(vcpu: KvmVcpu): number {
  const q = toVmx(vcpu).vmcs.readNat(F.EXIT_QUALIFICATION);
  const dr = Number(q & 7n);
  const reg = Number((q >> 8n) & 15n) as KvmReg;
  if (vcpu.kvm.ops.getCpl(vcpu) > 0) {
    kvmInjectGp(vcpu, 0);
    return 1;
  }
  if ((dr === 4 || dr === 5) && vcpu.readCr4() & CR4_DE) {
    kvmQueueUd(vcpu);
    return 1;
  }
  const d = dr === 5 ? 7 : dr;
  if (q & 0x10n) {
    vcpu.registerWrite(reg, kvmGetDr(vcpu, d));
  } else if (kvmSetDr(vcpu, d, vcpu.registerRead(reg))) {
    kvmInjectGp(vcpu, 0);
    return 1;
  }
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}
