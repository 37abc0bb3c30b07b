/**
 * Guests the CLI can start, and the VMM's job of starting them: guest RAM in slot 0 at
 * GPA 0, the image copied in at its load address, and the vCPU's registers and segment
 * caches set (KVM_SET_SREGS / KVM_SET_REGS) for the mode it starts in.
 */
import { readFileSync } from 'node:fs';
import { KvmSegment, KvmSregs, KvmVcpu, Kvm } from '@tsvisor/core';
import { CliError } from './status';

export type StartMode = 'real' | 'protected' | 'long';
export const START_MODES: readonly StartMode[] = ['real', 'protected', 'long'];

export interface GuestSpec {
  /** for messages: "the demo guest" or the file name */
  description: string;
  image: Uint8Array;
  loadAddress: number;
  /** linear address of the first instruction */
  entry: number;
  mode: StartMode;
  /** real mode: CS selector and IP at entry (CS base = cs << 4) */
  cs?: number;
  ip?: number;
  /** what the demo expects to find in MSR_FS_BASE afterwards (the demo only) */
  expectedFsBase?: bigint;
}

export const DEFAULT_LOAD_ADDRESS = 0x7c00;
export const PAGE_SIZE = 4096;

/** The testkit's demo: real → protected → long mode, banner with the CPUID vendor, WRMSR FS_BASE, HLT. */
export function demoGuest(): GuestSpec {
  // Loaded lazily: only `tsvisor run` without a guest needs the testkit (and iced-x86's encoder).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const testkit = require('@tsvisor/testkit') as typeof import('@tsvisor/testkit');
  const demo = testkit.buildDemoGuest();
  return {
    description: 'the demo guest',
    image: demo.image,
    loadAddress: demo.loadAddress,
    entry: demo.entry,
    mode: 'real',
    cs: demo.cs,
    ip: demo.ip,
    expectedFsBase: demo.fsBase,
  };
}

/** A flat binary: the file's bytes at `loadAddress`, execution from `entry` in `mode`. */
export function flatBinaryGuest(file: string, opts: { loadAddress: number; entry: number; mode: StartMode }): GuestSpec {
  let image: Uint8Array;
  try {
    image = readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why =
      err.code === 'ENOENT' ? 'no such file' :
      err.code === 'EACCES' ? 'permission denied' :
      err.code === 'EISDIR' ? 'it is a directory' :
      err.message;
    throw new CliError(`cannot read guest file '${file}': ${why}`);
  }
  if (image.length === 0) throw new CliError(`guest file '${file}' is empty`);
  const guest: GuestSpec = { description: `'${file}'`, image, loadAddress: opts.loadAddress, entry: opts.entry, mode: opts.mode };
  if (opts.mode === 'real') {
    // CS:IP for a linear entry below 1 MiB: the largest 64 KiB-aligned CS, as a BIOS far jump would use.
    if (opts.entry >= 0x100000) {
      throw new CliError(`--entry 0x${opts.entry.toString(16)} is not reachable in real mode (must be below 0x100000)`);
    }
    guest.cs = (opts.entry >>> 4) & 0xf000;
    guest.ip = opts.entry - guest.cs * 16;
  }
  return guest;
}

// ---- the VMM's boot data for protected and long mode (at the top of RAM)

/** GDT selectors the CLI sets up (same layout as the testkit's boot stub). */
export const GDT_SELECTORS = { CODE32: 0x08, DATA32: 0x10, CODE64: 0x18, DATA64: 0x20 } as const;
const GDT_ENTRIES = [
  0x0000000000000000n,
  0x00cf9b000000ffffn, // 32-bit code, flat, accessed
  0x00cf93000000ffffn, // data, flat, accessed
  0x00af9b000000ffffn, // 64-bit code (L=1)
  0x00cf93000000ffffn, // data for 64-bit code
];
/** Boot data pages below the top of RAM: GDT, PML4, PDPT, 4 page directories (identity map of 4 GiB). */
const BOOT_DATA_PAGES = 7;
const PTE_P_RW = 0x3n;
const PDE_PS = 0x80n;

export interface BootData {
  gdtBase: number;
  pml4: number;
  /** [base, end) of the boot data */
  base: number;
  end: number;
}

/**
 * Where the CLI puts boot data in a RAM of `ramSize` bytes, if the guest's mode needs any
 * (protected: a GDT; long: a GDT and identity-mapping page tables).
 */
export function bootDataLayout(ramSize: number): BootData {
  const base = ramSize - BOOT_DATA_PAGES * PAGE_SIZE;
  return { gdtBase: base, pml4: base + PAGE_SIZE, base, end: ramSize };
}

function writeBootData(ram: Uint8Array, layout: BootData, withPageTables: boolean): void {
  const dv = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
  GDT_ENTRIES.forEach((d, i) => dv.setBigUint64(layout.gdtBase + i * 8, d, true));
  if (!withPageTables) return;
  const pml4 = layout.pml4;
  const pdpt = pml4 + PAGE_SIZE;
  const pd0 = pdpt + PAGE_SIZE;
  dv.setBigUint64(pml4, BigInt(pdpt) | PTE_P_RW, true);
  for (let i = 0; i < 4; i++) {
    const pd = pd0 + i * PAGE_SIZE;
    dv.setBigUint64(pdpt + i * 8, BigInt(pd) | PTE_P_RW, true);
    for (let j = 0; j < 512; j++) {
      const frame = BigInt(i * 512 + j) << 21n;
      dv.setBigUint64(pd + j * 8, frame | PDE_PS | PTE_P_RW, true);
    }
  }
}

/** A present, usable segment (kvm_segment). */
function segment(selector: number, base: bigint, limit: number, type: number, f: { s?: number; db?: number; l?: number; g?: number } = {}): KvmSegment {
  return {
    selector, base, limit, type, present: 1, dpl: 0,
    db: f.db ?? 0, s: f.s ?? 1, l: f.l ?? 0, g: f.g ?? 0, avl: 0, unusable: 0,
  };
}

const CR0_PE = 1n;
const CR0_ET = 1n << 4n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
const RFLAGS_FIXED = 0x2n;
const TYPE_CODE_RX_ACCESSED = 0xb;
const TYPE_DATA_RW_ACCESSED = 0x3;
const TYPE_TSS_BUSY = 0xb;
const TYPE_LDT = 0x2;

/** A CliError (status 2) unless the image, and the boot data its mode needs, fit in `ramSize` bytes. */
export function checkGuestFits(guest: GuestSpec, ramSize: number): void {
  const end = guest.loadAddress + guest.image.length;
  if (end > ramSize) {
    throw new CliError(
      `${guest.description} (${guest.image.length} bytes at 0x${guest.loadAddress.toString(16)}) does not fit in ${formatSize(ramSize)} of RAM; give more with -m`,
    );
  }
  const boot = bootDataLayout(ramSize);
  if (guest.mode !== 'real' && guest.loadAddress < boot.end && end > boot.base) {
    throw new CliError(
      `${guest.description} overlaps the boot data tsvisor keeps in the last ${BOOT_DATA_PAGES * 4} KiB of RAM (0x${boot.base.toString(16)}); give more RAM with -m`,
    );
  }
}

/**
 * Give the VM `ramSize` bytes of RAM in slot 0 at GPA 0, load the guest, and point the vCPU
 * at its entry in its mode. Returns the RAM (userspace's view of guest memory).
 */
export function loadGuest(kvm: Kvm, vcpu: KvmVcpu, guest: GuestSpec, ramSize: number): Uint8Array {
  checkGuestFits(guest, ramSize);
  const boot = bootDataLayout(ramSize);
  const ram = new Uint8Array(ramSize);
  ram.set(guest.image, guest.loadAddress);
  if (guest.mode !== 'real') writeBootData(ram, boot, guest.mode === 'long');
  kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: BigInt(ramSize), userspace: ram });

  // KVM_GET_SUPPORTED_CPUID → KVM_SET_CPUID2, as every VMM does before the first run.
  vcpu.setCpuid2(kvm.getSupportedCpuid());

  const sregs: KvmSregs = vcpu.getSregs();
  const regs = vcpu.getRegs();
  regs.rflags = RFLAGS_FIXED;
  if (guest.mode === 'real') {
    // Real mode: base = selector << 4, limit 64 KiB, read/write data and execute/read code.
    const cs = guest.cs ?? 0;
    sregs.cs = segment(cs, BigInt(cs) << 4n, 0xffff, TYPE_CODE_RX_ACCESSED);
    const data = segment(0, 0n, 0xffff, TYPE_DATA_RW_ACCESSED);
    sregs.ds = { ...data };
    sregs.es = { ...data };
    sregs.fs = { ...data };
    sregs.gs = { ...data };
    sregs.ss = { ...data };
    sregs.cr0 &= ~(CR0_PE | CR0_PG);
    sregs.efer = 0n;
    regs.rip = BigInt(guest.ip ?? guest.entry);
    // SS:SP = 0:load address, where a BIOS leaves a boot sector's stack.
    regs.rsp = guest.loadAddress <= 0xffff ? BigInt(guest.loadAddress) : 0n;
  } else {
    const long = guest.mode === 'long';
    const flat = 0xffffffff;
    sregs.cs = long
      ? segment(GDT_SELECTORS.CODE64, 0n, flat, TYPE_CODE_RX_ACCESSED, { l: 1, g: 1 })
      : segment(GDT_SELECTORS.CODE32, 0n, flat, TYPE_CODE_RX_ACCESSED, { db: 1, g: 1 });
    const data = segment(long ? GDT_SELECTORS.DATA64 : GDT_SELECTORS.DATA32, 0n, flat, TYPE_DATA_RW_ACCESSED, { db: 1, g: 1 });
    sregs.ds = { ...data };
    sregs.es = { ...data };
    sregs.fs = { ...data };
    sregs.gs = { ...data };
    sregs.ss = { ...data };
    sregs.tr = segment(0, 0n, 0x67, TYPE_TSS_BUSY, { s: 0 });
    sregs.ldt = { ...segment(0, 0n, 0, TYPE_LDT, { s: 0 }), present: 0, unusable: 1 };
    sregs.gdt = { address: BigInt(boot.gdtBase), size: GDT_ENTRIES.length * 8 - 1 };
    // An empty IDT: any exception before the guest loads its own is a triple fault (exit status 3).
    sregs.idt = { address: 0n, size: 0 };
    if (long) {
      sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
      sregs.cr4 = CR4_PAE;
      sregs.cr3 = BigInt(boot.pml4);
      sregs.efer = EFER_LME | EFER_LMA;
    } else {
      sregs.cr0 = CR0_PE | CR0_ET;
      sregs.cr4 = 0n;
      sregs.cr3 = 0n;
      sregs.efer = 0n;
    }
    regs.rip = BigInt(guest.entry);
    // The stack grows down from the load address, below the image.
    regs.rsp = BigInt(guest.loadAddress);
  }
  vcpu.setSregs(sregs);
  vcpu.setRegs(regs);
  return ram;
}

export function formatSize(bytes: number): string {
  if (bytes % 2 ** 30 === 0) return `${bytes / 2 ** 30} GiB`;
  if (bytes % 2 ** 20 === 0) return `${bytes / 2 ** 20} MiB`;
  if (bytes % 2 ** 10 === 0) return `${bytes / 2 ** 10} KiB`;
  return `${bytes} bytes`;
}
