/**
 * The processor state a boot protocol hands over, applied with KVM_SET_SREGS/KVM_SET_REGS:
 * - real: CS:IP from the entry, data segments 0, limit 64 KiB;
 * - protected: flat 4 GiB 32-bit code (selector 0x08) and data (0x10) segments from a GDT
 *   at BOOT_GDT, CR0.PE, paging off (what Multiboot requires);
 * - long: the same GDT with a 64-bit code segment (0x18) and data (0x20), CR0.PG|PE,
 *   CR4.PAE, EFER.LME|LMA, CR3 at identity page tables mapping the first 4 GiB with 2 MiB
 *   pages (PML4 at 0x1000, PDPT at 0x2000, page directories at 0x3000–0x6FFF).
 * IDTR is empty: an exception before the guest loads its own IDT is a triple fault.
 */
import type { KvmSegment } from '../../ops/types';
import type { KvmVcpu } from '../../kvm/vcpu';
import type { GuestRam } from '../memory';

export type StartMode = 'real' | 'protected' | 'long';
export const START_MODES: readonly StartMode[] = ['real', 'protected', 'long'];

export const BOOT_GDT = 0x500;
export const BOOT_PML4 = 0x1000;
export const BOOT_PAGING_END = 0x7000;
export const BOOT_SELECTORS = { CODE32: 0x08, DATA32: 0x10, CODE64: 0x18, DATA64: 0x20 } as const;
const GDT_ENTRIES = [
  0x0000000000000000n,
  0x00cf9b000000ffffn, // 32-bit code, flat, accessed
  0x00cf93000000ffffn, // data, flat, accessed
  0x00af9b000000ffffn, // 64-bit code (L=1)
  0x00cf93000000ffffn, // data for 64-bit code
];

export interface BootState {
  mode: StartMode;
  /** Linear address of the first instruction (real mode: CS:IP below is derived from it unless given). */
  entry: number;
  cs?: number;
  ip?: number;
  rax?: number;
  rbx?: number;
  rsp?: number;
}

/** Byte ranges the boot structures of `mode` occupy (for overlap checks). */
export function bootStructureRanges(mode: StartMode): [number, number][] {
  if (mode === 'real') return [];
  const r: [number, number][] = [[BOOT_GDT, BOOT_GDT + GDT_ENTRIES.length * 8]];
  if (mode === 'long') r.push([BOOT_PML4, BOOT_PAGING_END]);
  return r;
}

export function writeBootStructures(ram: GuestRam, mode: StartMode): void {
  if (mode === 'real') return;
  GDT_ENTRIES.forEach((d, i) => ram.writeU64(BOOT_GDT + i * 8, d));
  if (mode !== 'long') return;
  const pdpt = BOOT_PML4 + 0x1000;
  const pd0 = pdpt + 0x1000;
  ram.fill(BOOT_PML4, BOOT_PAGING_END - BOOT_PML4, 0);
  ram.writeU64(BOOT_PML4, BigInt(pdpt) | 3n);
  for (let i = 0; i < 4; i++) {
    const pd = pd0 + i * 0x1000;
    ram.writeU64(pdpt + i * 8, BigInt(pd) | 3n);
    for (let j = 0; j < 512; j++) ram.writeU64(pd + j * 8, (BigInt(i * 512 + j) << 21n) | 0x83n);
  }
}

function seg(selector: number, base: bigint, limit: number, type: number, f: { s?: number; db?: number; l?: number; g?: number } = {}): KvmSegment {
  return { selector, base, limit, type, present: 1, dpl: 0, db: f.db ?? 0, s: f.s ?? 1, l: f.l ?? 0, g: f.g ?? 0, avl: 0, unusable: 0 };
}

const CODE_RX_ACCESSED = 0xb;
const DATA_RW_ACCESSED = 0x3;

/** Load `state` into `vcpu` (after writeBootStructures for its mode). */
export function applyBootState(vcpu: KvmVcpu, state: BootState): void {
  const sregs = vcpu.getSregs();
  const regs = vcpu.getRegs();
  regs.rflags = 0x2n;
  if (state.mode === 'real') {
    const cs = state.cs ?? ((state.entry >>> 4) & 0xf000);
    const ip = state.ip ?? state.entry - cs * 16;
    sregs.cs = seg(cs, BigInt(cs) << 4n, 0xffff, CODE_RX_ACCESSED);
    const data = seg(0, 0n, 0xffff, DATA_RW_ACCESSED);
    sregs.ds = { ...data };
    sregs.es = { ...data };
    sregs.fs = { ...data };
    sregs.gs = { ...data };
    sregs.ss = { ...data };
    sregs.cr0 = 0x60000010n; // CD|NW|ET, as after RESET
    sregs.cr4 = 0n;
    sregs.efer = 0n;
    sregs.idt = { address: 0n, size: 0x3ff }; // the real-mode IVT
    regs.rip = BigInt(ip);
  } else {
    const long = state.mode === 'long';
    const flat = 0xffffffff;
    sregs.cs = long
      ? seg(BOOT_SELECTORS.CODE64, 0n, flat, CODE_RX_ACCESSED, { l: 1, g: 1 })
      : seg(BOOT_SELECTORS.CODE32, 0n, flat, CODE_RX_ACCESSED, { db: 1, g: 1 });
    const data = seg(long ? BOOT_SELECTORS.DATA64 : BOOT_SELECTORS.DATA32, 0n, flat, DATA_RW_ACCESSED, { db: 1, g: 1 });
    sregs.ds = { ...data };
    sregs.es = { ...data };
    sregs.fs = { ...data };
    sregs.gs = { ...data };
    sregs.ss = { ...data };
    sregs.tr = seg(0, 0n, 0x67, 0xb, { s: 0 });
    sregs.ldt = { ...seg(0, 0n, 0, 0x2, { s: 0 }), present: 0, unusable: 1 };
    sregs.gdt = { address: BigInt(BOOT_GDT), size: GDT_ENTRIES.length * 8 - 1 };
    sregs.idt = { address: 0n, size: 0 };
    if (long) {
      sregs.cr0 = 0x80000011n; // PG | ET | PE
      sregs.cr4 = 0x20n; // PAE
      sregs.cr3 = BigInt(BOOT_PML4);
      sregs.efer = 0x500n; // LME | LMA
    } else {
      sregs.cr0 = 0x11n; // ET | PE
      sregs.cr4 = 0n;
      sregs.cr3 = 0n;
      sregs.efer = 0n;
    }
    regs.rip = BigInt(state.entry);
  }
  if (state.rax !== undefined) regs.rax = BigInt(state.rax >>> 0);
  if (state.rbx !== undefined) regs.rbx = BigInt(state.rbx >>> 0);
  if (state.rsp !== undefined) regs.rsp = BigInt(state.rsp);
  vcpu.setSregs(sregs);
  vcpu.setRegs(regs);
}
