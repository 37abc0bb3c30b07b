/**
 * Reading guest memory by linear address on the backend's side (what KVM's emulator does
 * through kvm_read_guest_virt): segment base + the guest's own page tables, walked through
 * the memslots. Used by the #UD path to look at the faulting instruction.
 */
import { KvmVcpu, VcpuSreg, emptySegment } from '@tsvisor/core';

function readPhys(vcpu: KvmVcpu, gpa: number, len: number): Uint8Array | null {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) {
    const a = gpa + i;
    const slot = vcpu.kvm.memslots.find(Math.floor(a / 4096));
    if (!slot) return null;
    out[i] = slot.userspace[a - Number(slot.baseGfn) * 4096];
  }
  return out;
}

function read64(vcpu: KvmVcpu, gpa: number): bigint | null {
  const b = readPhys(vcpu, gpa, 8);
  if (!b) return null;
  return new DataView(b.buffer).getBigUint64(0, true);
}

/** Guest-physical address of linear `lin`, or -1 when unmapped (no fault is raised). */
export function guestLinearToPhys(vcpu: KvmVcpu, lin: bigint): number {
  const cr0 = vcpu.readCr0();
  if (!(cr0 & (1n << 31n))) return Number(lin & 0xffffffffn);
  const cr3 = vcpu.readCr3();
  const cr4 = vcpu.readCr4();
  const lma = (vcpu.arch.efer & (1n << 10n)) !== 0n;
  const ADDR = 0x000f_ffff_ffff_f000n;
  if (lma || (cr4 & (1n << 5n))) {
    let table = lma ? cr3 & ADDR : cr3 & 0xffff_ffe0n;
    const levels = lma ? 4 : 3;
    for (let level = levels; level >= 1; level--) {
      const shift = BigInt(12 + 9 * (level - 1));
      const idx = level === 3 && !lma ? (lin >> 30n) & 3n : (lin >> shift) & 0x1ffn;
      const e = read64(vcpu, Number(table + idx * 8n));
      if (e === null || !(e & 1n)) return -1;
      if (level === 1 || (level <= 3 && (e & 0x80n) && !(level === 3 && !lma))) {
        const mask = (1n << shift) - 1n;
        return Number(((e & ADDR) & ~mask) | (lin & mask));
      }
      table = e & ADDR;
    }
    return -1;
  }
  const pdeB = readPhys(vcpu, Number((cr3 & 0xfffff000n) + ((lin >> 22n) & 0x3ffn) * 4n), 4);
  if (!pdeB) return -1;
  const pde = new DataView(pdeB.buffer).getUint32(0, true);
  if (!(pde & 1)) return -1;
  if ((pde & 0x80) && (cr4 & (1n << 4n))) return (pde & 0xffc00000) + Number(lin & 0x3fffffn);
  const pteB = readPhys(vcpu, (pde & 0xfffff000) + Number((lin >> 12n) & 0x3ffn) * 4, 4);
  if (!pteB) return -1;
  const pte = new DataView(pteB.buffer).getUint32(0, true);
  if (!(pte & 1)) return -1;
  return (pte & 0xfffff000) + Number(lin & 0xfffn);
}

/** The bytes at CS:RIP (up to `len`, not crossing a page). */
export function readGuestInstruction(vcpu: KvmVcpu, len: number): { gpa: number; bytes: Uint8Array } | null {
  const cs = emptySegment();
  vcpu.kvm.ops.getSegment(vcpu, cs, VcpuSreg.CS);
  const lma = (vcpu.arch.efer & (1n << 10n)) !== 0n;
  const base = lma && cs.l ? 0n : cs.base;
  const lin = BigInt.asUintN(64, base + vcpu.rip);
  const gpa = guestLinearToPhys(vcpu, lin);
  if (gpa < 0) return null;
  const n = Math.min(len, 4096 - (gpa % 4096));
  const bytes = readPhys(vcpu, gpa, n);
  return bytes ? { gpa, bytes } : null;
}

/** Write guest-physical bytes (the patched hypercall), keeping the processor's decoded code coherent. */
export function writeGuestPhys(vcpu: KvmVcpu, gpa: number, data: Uint8Array): boolean {
  for (let i = 0; i < data.length; i++) {
    const a = gpa + i;
    const slot = vcpu.kvm.memslots.find(Math.floor(a / 4096));
    if (!slot) return false;
    slot.userspace[a - Number(slot.baseGfn) * 4096] = data[i];
    vcpu.kvm.memslots.markPageDirty(slot, Math.floor(a / 4096));
    for (const v of vcpu.kvm.vcpus) v.cpu.notifyWrite(slot.hostBase + (a - Number(slot.baseGfn) * 4096), 1);
  }
  return true;
}
