/**
 * VMCALL vs VMMCALL. A guest built for AMD executes VMMCALL (0F 01 D9), which is #UD on
 * Intel hardware; KVM intercepts #UD, recognises the hypercall and rewrites it to VMCALL
 * (kvm_fix_hypercall → patch_hypercall), then lets the guest run the patched instruction.
 */
import { KvmVcpu, KvmReg, kvmQueueUd, VcpuSreg } from '@tsvisor/core';
import { F } from './vmcs/fields';
import { toVmx } from './vcpu-vmx';

/** VMCALL (SDM Vol. 3C 31.3). */
export const VMCALL_BYTES = Uint8Array.of(0x0f, 0x01, 0xc1);
/** VMMCALL (AMD APM Vol. 3). */
export const VMMCALL_BYTES = Uint8Array.of(0x0f, 0x01, 0xd9);

/** vmx_patch_hypercall: the native hypercall instruction. */
export function vmxPatchHypercall(_vcpu: KvmVcpu, hypercallAddr: Uint8Array): void {
  hypercallAddr.set(VMCALL_BYTES);
}

/** Guest-physical → host-physical through the memslots, or -1. */
function gpaToHpa(vcpu: KvmVcpu, gpa: number): number {
  return vcpu.kvm.memslots.gpaToHpa(gpa);
}

function readPhys64(vcpu: KvmVcpu, gpa: number): bigint | null {
  const hpa = gpaToHpa(vcpu, gpa);
  return hpa < 0 ? null : vcpu.kvm.hostMemory.read64(hpa);
}
function readPhys32(vcpu: KvmVcpu, gpa: number): number | null {
  const hpa = gpaToHpa(vcpu, gpa);
  return hpa < 0 ? null : vcpu.kvm.hostMemory.read32(hpa);
}

/**
 * The guest's own linear → guest-physical translation (SDM Vol. 3A ch. 4), for the few places
 * the backend reads guest instructions (KVM's kvm_read_guest_virt). No permission checks: the
 * processor already fetched from this address. Returns -1 when not mapped.
 */
export function guestLinearToPhys(vcpu: KvmVcpu, lin: bigint): number {
  const v = toVmx(vcpu).vmcs;
  const cr0 = v.readLow(F.GUEST_CR0);
  const cr4 = v.readLow(F.GUEST_CR4);
  const cr3 = v.readNum(F.GUEST_CR3);
  if (!(cr0 & 0x80000000)) return Number(lin & 0xffffffffn);
  const lma = (v.read64(F.GUEST_IA32_EFER) & 0x400n) !== 0n;
  const ADDR = 0x000f_ffff_ffff_f000n;
  if (lma || cr4 & 0x20) {
    let table: number;
    let level: number;
    if (lma) {
      level = cr4 & 0x1000 ? 5 : 4;
      table = cr3 - (cr3 % 4096);
    } else {
      const pdpte = readPhys64(vcpu, (cr3 & ~0x1f) + Number((lin >> 30n) & 3n) * 8);
      if (pdpte === null || !(pdpte & 1n)) return -1;
      table = Number(pdpte & ADDR);
      level = 2;
    }
    for (; level >= 1; level--) {
      const shift = 12n + 9n * BigInt(level - 1);
      const e = readPhys64(vcpu, table + Number((lin >> shift) & 511n) * 8);
      if (e === null || !(e & 1n)) return -1;
      if (level === 1 || ((level === 2 || level === 3) && e & 0x80n)) {
        const mask = (1n << shift) - 1n;
        return Number((e & ADDR & ~mask) | (lin & mask));
      }
      table = Number(e & ADDR);
    }
    return -1;
  }
  const l = Number(lin & 0xffffffffn);
  const pde = readPhys32(vcpu, (cr3 & ~0xfff) + (l >>> 22) * 4);
  if (pde === null || !(pde & 1)) return -1;
  if (pde & 0x80 && cr4 & 0x10) return ((pde & 0xffc00000) >>> 0) + (l & 0x3fffff);
  const pte = readPhys32(vcpu, ((pde & ~0xfff) >>> 0) + ((l >>> 12) & 0x3ff) * 4);
  if (pte === null || !(pte & 1)) return -1;
  return ((pte & ~0xfff) >>> 0) + (l & 0xfff);
}

/** The bytes at CS:RIP, or null when they cannot be read (page split or unmapped). */
function instructionLocation(vcpu: KvmVcpu, len: number): { hpa: number; bytes: Uint8Array; offset: number } | null {
  const lin = vcpu.kvm.ops.getSegmentBase(vcpu, VcpuSreg.CS) + vcpu.registerRead(KvmReg.RIP);
  const gpa = guestLinearToPhys(vcpu, BigInt.asUintN(64, lin));
  if (gpa < 0 || (gpa % 4096) + len > 4096) return null;
  const hpa = gpaToHpa(vcpu, gpa);
  if (hpa < 0) return null;
  const { bytes, offset } = vcpu.kvm.hostMemory.slice(hpa, len);
  return { hpa, bytes, offset };
}

/**
 * handle_ud: a VMMCALL is patched to VMCALL in guest memory and re-executed (the page is
 * marked dirty and the processor drops its decoded copy); any other #UD goes to the guest.
 */
export function handleUd(vcpu: KvmVcpu): number {
  const loc = instructionLocation(vcpu, 3);
  if (loc && VMMCALL_BYTES.every((b, i) => loc.bytes[loc.offset + i] === b)) {
    const patched = new Uint8Array(3);
    vcpu.kvm.ops.patchHypercall(vcpu, patched);
    loc.bytes.set(patched, loc.offset);
    vcpu.cpu.notifyWrite(loc.hpa, 3);
    const gfn = Math.floor(guestLinearToPhys(vcpu, BigInt.asUintN(64, vcpu.kvm.ops.getSegmentBase(vcpu, VcpuSreg.CS) + vcpu.registerRead(KvmReg.RIP))) / 4096);
    const slot = vcpu.kvm.memslots.find(gfn);
    if (slot) vcpu.kvm.memslots.markPageDirty(slot, gfn);
    vcpu.arch.hypercallsPatched++;
    return 1;
  }
  kvmQueueUd(vcpu);
  return 1;
}
