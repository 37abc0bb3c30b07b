/**
 * Boot stubs: real mode → protected mode (→ long mode), ready to continue with test code.
 *
 * The vCPU starts in real mode at CS:IP = `cs`:(`loadAddress` - cs*16) with the image
 * loaded at `loadAddress` (KVM's reset state is CS=F000 IP=FFF0; the VMM sets CS:IP to
 * the entry, as for any flat binary). The stub:
 *
 *   16-bit  cli; DS = CS; lidt [null IDTR] (limit 0: any exception → triple fault →
 *           KVM_EXIT_SHUTDOWN, rather than jumping through the real-mode IVT);
 *           o32 lgdt [gdtr]; CR0.PE = 1; jmp dword 0x08:prot_entry
 *   32-bit  DS/ES/FS/GS/SS = 0x10; ESP = stackTop
 *           (protected-mode variant: user code continues here)
 *           zero the page tables (rep stosd); PML4[0] → PDPT; PDPT[0] → PD;
 *           PD[0..511] = 2 MiB pages 0..1 GiB (or PD[0] → PT, PT[0..511] = 4 KiB pages 0..2 MiB);
 *           CR4.PAE = 1; CR3 = PML4; EFER.LME = 1 (rdmsr/wrmsr 0xC0000080); CR0.PG = 1;
 *           jmp 0x18:long_entry
 *   64-bit  DS/ES/FS/GS/SS = 0x20; RSP = stackTop; user code continues here.
 *
 * Page tables are built by the guest at run time (not shipped in the image): the image
 * stays small and the stub exercises string instructions, loops and memory writes.
 *
 * Default guest-physical layout (all overridable, see `BootOptions`):
 *
 *   0x07c00            image (load address; real-mode stub, GDT, 32-bit, 64-bit code)
 *   0x70000 - 0x70fff  PML4
 *   0x71000 - 0x71fff  PDPT
 *   0x72000 - 0x72fff  PD
 *   0x73000 - 0x73fff  PT (only with paging: '4k')
 *   ...     - 0x7ffff  stack (ESP/RSP = 0x80000, grows down)
 *
 * GDT (in the image, 8-byte aligned): 0x00 null, 0x08 32-bit code, 0x10 32-bit data,
 * 0x18 64-bit code (L=1), 0x20 data for 64-bit code. All flat, base 0, limit 4 GiB, DPL 0.
 */
import {
  Assembler,
  AssembledImage,
  Image,
  Label,
  ax,
  cr0,
  cr3,
  cr4,
  ds,
  dword,
  eax,
  ecx,
  edi,
  es,
  esp,
  fs,
  gs,
  mem,
  rsp,
  ss,
  cs as csReg,
} from '../asm';

export const BOOT_SELECTORS = {
  CODE32: 0x08,
  DATA32: 0x10,
  CODE64: 0x18,
  DATA64: 0x20,
} as const;

/** The stub's GDT descriptors, in selector order (null, code32, data32, code64, data64). */
export const BOOT_GDT: readonly bigint[] = [
  0x0000000000000000n,
  0x00cf9a000000ffffn, // code: base 0, limit 0xfffff, G=1, D=1, P=1, DPL 0, execute/read, accessed=0
  0x00cf92000000ffffn, // data: base 0, limit 0xfffff, G=1, B=1, P=1, DPL 0, read/write
  0x00af9a000000ffffn, // code: L=1, D=0 (64-bit), otherwise as above
  0x00cf92000000ffffn, // data for 64-bit code (attributes mostly ignored in long mode)
];

export const MSR_EFER = 0xc0000080;
export const EFER_LME = 1 << 8;
export const CR0_PE = 1 << 0;
export const CR0_PG = 0x80000000;
export const CR4_PAE = 1 << 5;

/** Page-table entry bits used by the stub. */
export const PTE_P = 1 << 0;
export const PTE_RW = 1 << 1;
export const PTE_PS = 1 << 7;

export type BootPaging = '2m' | '4k';

export interface BootOptions {
  /** Linear address where the image is loaded and where execution starts. Default 0x7c00. */
  loadAddress?: number;
  /** Real-mode CS at entry (IP = loadAddress - cs*16, must be < 64 KiB). Default 0. */
  cs?: number;
  /** Page-table area, 4 KiB aligned: PML4 at +0, PDPT +0x1000, PD +0x2000, PT +0x3000. Default 0x70000. */
  pageTableBase?: number;
  /** Initial ESP/RSP. Default 0x80000. */
  stackTop?: number;
  /**
   * '2m' (default): identity-map 0 - 1 GiB with 2 MiB pages (PS=1 in the PD); three
   * table pages. '4k': identity-map 0 - 2 MiB with 4 KiB pages, exercising the full
   * four-level walk; four table pages.
   */
  paging?: BootPaging;
  /** Load an empty IDT before leaving real mode (default true). */
  nullIdt?: boolean;
}

export interface BootLayout {
  loadAddress: number;
  cs: number;
  ip: number;
  /** Absent for the protected-mode-only stub */
  pml4?: number;
  pdpt?: number;
  pd?: number;
  /** Only with paging '4k' */
  pt?: number;
  /** [pageTableBase, pageTableEnd) holds the tables (empty for the protected-mode stub) */
  pageTableBase: number;
  pageTableEnd: number;
  paging?: BootPaging;
  /** Bytes identity-mapped from address 0 (long mode) */
  identityMapped?: number;
  stackTop: number;
}

export interface BootLabels {
  /** first instruction (real mode) */
  start: Label;
  gdt: Label;
  gdtr: Label;
  /** first 32-bit instruction */
  protEntry: Label;
  /** where the protected-mode stub hands over to user code (32-bit) */
  protUser: Label;
  /** first 64-bit instruction (long-mode stub only) */
  longEntry?: Label;
  /** where the long-mode stub hands over to user code (64-bit) */
  longUser?: Label;
}

export interface BootStub {
  image: Image;
  /** 16-bit section at loadAddress */
  real: Assembler;
  /** 32-bit section; for the protected-mode stub, append user code here */
  prot: Assembler;
  /** 64-bit section (long-mode stub); append user code here */
  long?: Assembler;
  labels: BootLabels;
  layout: BootLayout;
}

export interface LongModeBootStub extends BootStub {
  long: Assembler;
}

/** An assembled guest ready to load: copy `image` to `loadAddress`, set CS:IP in real mode, run. */
export interface GuestImage {
  image: Uint8Array;
  loadAddress: number;
  /** linear address of the first instruction (= loadAddress) */
  entry: number;
  /** real-mode CS:IP at entry (CS base = cs * 16) */
  cs: number;
  ip: number;
  mode: 'real';
  layout: BootLayout;
  assembled: AssembledImage;
  /** label name → guest-physical address */
  symbols: Record<string, number>;
}

function resolveOptions(opts: BootOptions) {
  const loadAddress = opts.loadAddress ?? 0x7c00;
  const cs = opts.cs ?? 0;
  const ip = loadAddress - cs * 16;
  if (cs < 0 || cs > 0xffff) throw new Error(`cs 0x${cs.toString(16)} out of range`);
  if (ip < 0 || ip > 0xffff) throw new Error(`loadAddress 0x${loadAddress.toString(16)} not reachable from CS 0x${cs.toString(16)}`);
  const pageTableBase = opts.pageTableBase ?? 0x70000;
  if (pageTableBase % 0x1000) throw new Error('pageTableBase must be 4 KiB aligned');
  const stackTop = opts.stackTop ?? 0x80000;
  return { loadAddress, cs, ip, pageTableBase, stackTop, paging: opts.paging ?? ('2m' as BootPaging), nullIdt: opts.nullIdt ?? true };
}

function emitRealAndProt(o: ReturnType<typeof resolveOptions>): {
  image: Image;
  real: Assembler;
  prot: Assembler;
  labels: BootLabels;
} {
  const image = new Image({ base: o.loadAddress });
  const csBase = o.cs * 16;
  const real = image.section(16, { origin: o.loadAddress, csBase, name: 'real16' });
  const start = real.here('boot_start');
  const gdt = real.label('boot_gdt');
  const gdtr = real.label('boot_gdtr');
  const idtr = real.label('boot_null_idtr');
  const protEntry = new Label('boot_prot_entry');

  real.cli();
  // DS = CS so the descriptor-table pointers are addressed the same way as the code;
  // their offsets are linear - csBase.
  real.mov(ax, csReg);
  real.mov(ds, ax);
  if (o.nullIdt) real.lidt(mem(idtr.minus(csBase)));
  real.lgdt(mem(gdtr.minus(csBase)));
  real.mov(eax, cr0);
  real.or(eax, CR0_PE);
  real.mov(cr0, eax);
  // ptr16:32 so the 32-bit entry may lie anywhere below 4 GiB
  real.jmpFar(BOOT_SELECTORS.CODE32, protEntry, 32);

  real.align(8, 0);
  real.bind(gdt);
  real.dq(...BOOT_GDT);
  real.bind(gdtr);
  real.dw(BOOT_GDT.length * 8 - 1);
  real.dd(gdt);
  if (o.nullIdt) {
    real.bind(idtr);
    real.dw(0);
    real.dd(0);
  }

  const prot = image.section(32, { align: 16, name: 'prot32' });
  prot.bind(protEntry);
  // `mov sreg, eax` rather than `mov sreg, ax`: same effect without a 66h prefix
  prot.mov(eax, BOOT_SELECTORS.DATA32);
  for (const s of [ds, es, fs, gs, ss]) prot.mov(s, eax);
  prot.mov(esp, o.stackTop);
  const protUser = prot.here('boot_prot_user');
  return { image, real, prot, labels: { start, gdt, gdtr, protEntry, protUser } };
}

/**
 * Real → protected mode stub; append 32-bit code to `prot`. Paging stays off; segments
 * are flat (CS=0x08, data 0x10), ESP = stackTop.
 */
export function createProtectedModeBoot(opts: BootOptions = {}): BootStub {
  const o = resolveOptions(opts);
  const { image, real, prot, labels } = emitRealAndProt(o);
  return {
    image,
    real,
    prot,
    labels,
    layout: {
      loadAddress: o.loadAddress,
      cs: o.cs,
      ip: o.ip,
      pageTableBase: o.pageTableBase,
      pageTableEnd: o.pageTableBase,
      stackTop: o.stackTop,
    },
  };
}

/**
 * Real → protected → long mode stub; append 64-bit code to `long`. Paging: identity
 * map per `paging`; CS=0x18 (64-bit), data 0x20, RSP = stackTop, interrupts off.
 */
export function createLongModeBoot(opts: BootOptions = {}): LongModeBootStub {
  const o = resolveOptions(opts);
  const { image, real, prot, labels } = emitRealAndProt(o);
  const pml4 = o.pageTableBase;
  const pdpt = pml4 + 0x1000;
  const pd = pml4 + 0x2000;
  const pt = o.paging === '4k' ? pml4 + 0x3000 : undefined;
  const tables = o.paging === '4k' ? 4 : 3;
  const longEntry = new Label('boot_long_entry');

  // Zero the tables (a freshly created VM's memory is zero, but the stub must not rely on it).
  prot.cld();
  prot.mov(edi, pml4);
  prot.xor(eax, eax);
  prot.mov(ecx, tables * 1024);
  prot.repStosd();
  prot.mov(dword(pml4), pdpt | PTE_P | PTE_RW);
  prot.mov(dword(pdpt), pd | PTE_P | PTE_RW);
  let leafTable: number;
  let leafStep: number;
  let leafFlags: number;
  if (pt !== undefined) {
    prot.mov(dword(pd), pt | PTE_P | PTE_RW);
    leafTable = pt;
    leafStep = 0x1000;
    leafFlags = PTE_P | PTE_RW;
  } else {
    leafTable = pd;
    leafStep = 0x200000;
    leafFlags = PTE_P | PTE_RW | PTE_PS;
  }
  // 512 leaf entries, identity: entry i maps i * step. The high dwords stay zero.
  prot.mov(edi, leafTable);
  prot.mov(eax, leafFlags);
  prot.mov(ecx, 512);
  const fill = prot.here('boot_fill_leaf');
  prot.mov(dword(edi), eax);
  prot.add(eax, leafStep);
  prot.add(edi, 8);
  prot.loop(fill);

  prot.mov(eax, cr4);
  prot.or(eax, CR4_PAE);
  prot.mov(cr4, eax);
  prot.mov(eax, pml4);
  prot.mov(cr3, eax);
  prot.mov(ecx, MSR_EFER);
  prot.rdmsr();
  prot.or(eax, EFER_LME);
  prot.wrmsr();
  prot.mov(eax, cr0);
  prot.or(eax, CR0_PG);
  prot.mov(cr0, eax);
  // Now in compatibility mode (EFER.LMA=1, CS.L=0); a far jump to a L=1 code segment enters 64-bit mode.
  prot.jmpFar(BOOT_SELECTORS.CODE64, longEntry);

  const long = image.section(64, { align: 16, name: 'long64' });
  long.bind(longEntry);
  long.mov(eax, BOOT_SELECTORS.DATA64);
  for (const s of [ds, es, fs, gs, ss]) long.mov(s, eax);
  long.mov(rsp, o.stackTop);
  const longUser = long.here('boot_long_user');

  return {
    image,
    real,
    prot,
    long,
    labels: { ...labels, longEntry, longUser },
    layout: {
      loadAddress: o.loadAddress,
      cs: o.cs,
      ip: o.ip,
      pml4,
      pdpt,
      pd,
      pt,
      pageTableBase: o.pageTableBase,
      pageTableEnd: o.pageTableBase + tables * 0x1000,
      paging: o.paging,
      identityMapped: pt !== undefined ? 0x200000 : 0x40000000,
      stackTop: o.stackTop,
    },
  };
}

/** Assemble a stub (with whatever code was appended) into a loadable guest, checking the layout. */
export function buildGuest(stub: BootStub): GuestImage {
  const assembled = stub.image.assemble();
  const l = stub.layout;
  const lo = assembled.base;
  const hi = assembled.end;
  if (lo < l.pageTableEnd && l.pageTableBase < hi) {
    throw new Error(
      `image [0x${lo.toString(16)}, 0x${hi.toString(16)}) overlaps the page tables [0x${l.pageTableBase.toString(16)}, 0x${l.pageTableEnd.toString(16)})`,
    );
  }
  if (l.stackTop > lo && l.stackTop <= hi) throw new Error('the stack top lies inside the image');
  if (l.identityMapped !== undefined && hi > l.identityMapped) throw new Error('image extends past the identity-mapped range');
  return {
    image: assembled.bytes,
    loadAddress: l.loadAddress,
    entry: l.loadAddress,
    cs: l.cs,
    ip: l.ip,
    mode: 'real',
    layout: l,
    assembled,
    symbols: assembled.symbols,
  };
}

/** Long-mode guest in one call: `body` appends 64-bit code after the stub. */
export function buildLongModeGuest(body: (a: Assembler, stub: LongModeBootStub) => void, opts: BootOptions = {}): GuestImage {
  const stub = createLongModeBoot(opts);
  body(stub.long, stub);
  return buildGuest(stub);
}

/** Protected-mode guest in one call: `body` appends 32-bit code after the stub. */
export function buildProtectedModeGuest(body: (a: Assembler, stub: BootStub) => void, opts: BootOptions = {}): GuestImage {
  const stub = createProtectedModeBoot(opts);
  body(stub.prot, stub);
  return buildGuest(stub);
}
