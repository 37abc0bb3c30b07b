/**
 * Test harness for the processor: guest RAM at GPA 0, a rules object with no intercepts
 * (tests switch individual intercepts on), and a GNU-as-free way to place code: tests carry
 * machine code as hex (each listing shows the assembly it encodes).
 */
import { HostMemory } from '../../src/mmu/host-memory';
import { X86Cpu, GuestPhysMap } from '../../src/cpu/x86-cpu';
import { ApicPageHandler, Cr8Virtualization, GuestModeRules, InterceptInsn, TdpWalker } from '../../src/cpu/guest-mode';

export class TestRules implements GuestModeRules {
  readonly insn = new Uint8Array(InterceptInsn.COUNT);
  excExit = new Set<number>();
  ioExit = false;
  msrExit = false;
  crWrite = new Set<number>();
  crRead = new Set<number>();
  exceptionExits(vector: number, _e: number): boolean { return this.excExit.has(vector); }
  ioExits(_p: number, _s: number, _i: boolean): boolean { return this.ioExit; }
  msrExits(_i: number, _w: boolean): boolean { return this.msrExit; }
  crWriteExits(cr: number, _v: bigint): boolean { return this.crWrite.has(cr); }
  crReadExits(cr: number): boolean { return this.crRead.has(cr); }
  crReadValue(_cr: number, real: bigint): bigint { return real; }
  drExits(): boolean { return false; }
  irqWindowExiting = false;
  nmiWindowExiting = false;
  shutdownExits = false;
  tdp: TdpWalker | null = null;
  tlbTag = 0;
  monitorTrapFlag = false;
  preemptionDeadlineTsc = -1n;
  pdptrsLoaded = false;
  apicPage: ApicPageHandler | null = null;
  cr8: Cr8Virtualization | null = null;
  taskSwitchExits?: boolean;
}

export interface Machine {
  cpu: X86Cpu;
  ram: Uint8Array;
  rules: TestRules;
  host: HostMemory;
  base: number;
}

/** A processor with `mb` MiB of RAM at GPA 0 (GPAs beyond are MMIO), in `tier` (default: the processor's). */
export function machine(vendor: 'intel' | 'amd' = 'intel', mb = 4, tier?: 'interpreter' | 'jit'): Machine {
  const host = new HostMemory();
  const ram = new Uint8Array(mb << 20);
  const base = host.map(ram, 'ram');
  const phys: GuestPhysMap = { gpaToHpa: (gpa: number) => (gpa >= 0 && gpa < ram.length ? base + gpa : -1) };
  const cpu = new X86Cpu(host, phys, tier ? { vendor, tier } : { vendor });
  return { cpu, ram, rules: new TestRules(), host, base };
}

export function hex(s: string): Uint8Array {
  const clean = s.replace(/#[^\n]*/g, '').replace(/[^0-9a-fA-F]/g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.substr(i * 2, 2), 16);
  return out;
}

export function load(m: Machine, gpa: number, bytes: Uint8Array | number[]): void {
  m.ram.set(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes), gpa);
}

export function w32(m: Machine, gpa: number, v: number): void {
  new DataView(m.ram.buffer).setUint32(gpa, v >>> 0, true);
}
export function w64(m: Machine, gpa: number, v: bigint): void {
  new DataView(m.ram.buffer).setBigUint64(gpa, BigInt.asUintN(64, v), true);
}
export function r32(m: Machine, gpa: number): number {
  return new DataView(m.ram.buffer).getUint32(gpa, true);
}

/** Real mode, CS:IP = 0:ip, flat 64 KiB segments. */
export function realMode(m: Machine, ip: number): void {
  const s = m.cpu.state;
  for (let i = 0; i < 6; i++) { s.segSel[i] = 0; s.segBaseLo[i] = 0; s.segBaseHi[i] = 0; s.segLimit[i] = 0xffff; s.segAttr[i] = i === 1 ? 0x9b : 0x93; }
  s.rip = BigInt(ip);
  s.gprLo[4] = 0x7000;
}

/**
 * Flat 32-bit protected mode (CPL 0, no paging) with a GDT at 0x500:
 * 0x08 code32, 0x10 data32, 0x18 code64, 0x20 code16, 0x28 data16, 0x33 user code32 (DPL3), 0x3b user data32.
 */
export function protMode(m: Machine, eip: number): void {
  writeGdt(m);
  const s = m.cpu.state;
  s.cr0 = 0x60000011n;
  s.gdtrBase = 0x500n; s.gdtrLimit = 0x5f;
  for (let i = 0; i < 6; i++) { s.segSel[i] = 0x10; s.segBaseLo[i] = 0; s.segBaseHi[i] = 0; s.segLimit[i] = 0xffffffff; s.segAttr[i] = 0xc093; }
  s.segSel[1] = 0x08; s.segAttr[1] = 0xc09b;
  s.segSel[6] = 0; s.segAttr[6] = 0x8b; s.segLimit[6] = 0x67;
  s.rip = BigInt(eip);
  s.gprLo[4] = 0x7000;
  s.cpl = 0;
}

export const GDT = [
  0n,
  0x00cf9b000000ffffn, // 0x08 code32
  0x00cf93000000ffffn, // 0x10 data32
  0x00af9b000000ffffn, // 0x18 code64
  0x00009b000000ffffn, // 0x20 code16
  0x000093000000ffffn, // 0x28 data16
  0x00cffb000000ffffn, // 0x30 user code32 (DPL3)
  0x00cff3000000ffffn, // 0x38 user data32 (DPL3)
  0x00affb000000ffffn, // 0x40 user code64 (DPL3)
  0n, 0n, 0n,
];
export function writeGdt(m: Machine, at = 0x500): void {
  for (let i = 0; i < GDT.length; i++) w64(m, at + i * 8, GDT[i]);
}

/** Identity-map the first 4 MiB with 4-level paging at 0x10000 (PML4) / 0x11000 / 0x12000 (2 MiB pages). */
export function identityMap4(m: Machine, user = true): number {
  const u = user ? 4 : 0;
  w64(m, 0x10000, BigInt(0x11000 | 3 | u));
  w64(m, 0x11000, BigInt(0x12000 | 3 | u));
  w64(m, 0x12000, BigInt(0x000000 | 0x83 | u));
  w64(m, 0x12008, BigInt(0x200000 | 0x83 | u));
  return 0x10000;
}

/** 64-bit long mode with identity paging, CPL 0, IDT at 0x2000 (empty). */
export function longMode(m: Machine, rip: number): void {
  protMode(m, rip);
  const s = m.cpu.state;
  identityMap4(m);
  s.cr3 = 0x10000n;
  s.cr4 = 0x20n;
  s.efer = 0x500n;
  s.cr0 = 0x80010011n | 0x60000000n;
  s.segSel[1] = 0x18; s.segAttr[1] = 0xa09b;
  s.idtrBase = 0x2000n; s.idtrLimit = 0xfff;
}

/** Write a 64-bit interrupt gate for `vec` in an IDT at `idt` pointing at `target` (CS 0x18). */
export function gate64(m: Machine, idt: number, vec: number, target: number, dpl = 0, ist = 0, type = 0xe): void {
  const lo = (BigInt(target & 0xffff)) | (0x18n << 16n) | (BigInt(ist) << 32n) | (BigInt(0x80 | (dpl << 5) | type) << 40n) | (BigInt((target >>> 16) & 0xffff) << 48n);
  w64(m, idt + vec * 16, lo);
  w64(m, idt + vec * 16 + 8, BigInt(Math.floor(target / 2 ** 32)));
}
/** 32-bit interrupt gate (CS 0x08). */
export function gate32(m: Machine, idt: number, vec: number, target: number, dpl = 0, type = 0xe, sel = 0x08): void {
  const lo = (BigInt(target & 0xffff)) | (BigInt(sel) << 16n) | (BigInt(0x80 | (dpl << 5) | type) << 40n) | (BigInt((target >>> 16) & 0xffff) << 48n);
  w64(m, idt + vec * 8, lo);
}

export function reg(m: Machine, i: number): bigint {
  return m.cpu.state.getGpr(i);
}
