/**
 * XCB — the "eXample Control Block": this backend's own control structure, one 4 KiB page in
 * host memory (core's HostMemory), read and written with a DataView. It is deliberately
 * neither a VMCS nor a VMCB: a control area (intercepts, event injection, exit information)
 * followed by a guest-state area, with its own segment-attribute packing and its own exit codes.
 *
 * Who touches it: the backend's hooks write the control area and guest state between runs;
 * the emulated "XCB hardware" (hardware.ts) reads it at entry and writes it at exit.
 */
import { HostMemory, KvmSegment } from '@tsvisor/core';

export const XCB_SIZE = 4096;

/** Control area. */
export const XCB = {
  INTERCEPTS: 0x000, // u32, XcbIntercept bits
  EXCEPTION_BITMAP: 0x004, // u32, vectors that exit instead of being delivered
  WINDOWS: 0x008, // u32: bit 0 exit on interrupt window, bit 1 exit on NMI window
  INJECT: 0x00c, // u32: bit 31 valid, bit 11 error code valid, bits 10:8 EventType, bits 7:0 vector
  INJECT_ERROR: 0x010, // u32
  TLB_TAG: 0x014, // u32: the tag guest translations carry in the processor's TLB (0 = untagged)
  TDP_ROOT: 0x018, // u64: host-physical address of the XPT root, 0 = no two-dimensional paging
  TSC_OFFSET: 0x020, // u64
  ENTRY_FAILURE: 0x028, // u32: set by the hardware when an entry check fails (XcbEntryFailure)
  TLB_FLUSH: 0x02c, // u32: 1 = flush this tag at the next entry (written by the flush hooks)
  EXIT_CODE: 0x030, // u32, XcbExit
  EXIT_INSN_LEN: 0x034, // u32
  EXIT_QUAL: 0x038, // u64, per exit code (see recordExit)
  EXIT_GPA: 0x040, // u64: TDP faults
  EXIT_NEXT_RIP: 0x048, // u64: RIP after the exiting instruction
  EXIT_VECTORING: 0x050, // u32: event being delivered at the exit, INJECT format
  EXIT_VECTORING_ERROR: 0x054, // u32
} as const;

/** Guest-state area. Segments are 16 bytes each in VcpuSreg order: u16 selector, u16 attr, u32 limit, u64 base. */
export const XCB_GUEST = {
  SEGMENTS: 0x100,
  GDTR_BASE: 0x180, GDTR_LIMIT: 0x188, IDTR_BASE: 0x190, IDTR_LIMIT: 0x198,
  CR0: 0x1a0, CR2: 0x1a8, CR3: 0x1b0, CR4: 0x1b8, EFER: 0x1c0, RFLAGS: 0x1c8, RIP: 0x1d0, RSP: 0x1d8, RAX: 0x1e0,
  DR6: 0x1e8, DR7: 0x1f0, CPL: 0x1f8, // u8
  INTERRUPTIBILITY: 0x1fc, // u32: bit 0 STI shadow, bit 1 MOV SS shadow, bit 2 NMI blocked
  STAR: 0x200, LSTAR: 0x208, CSTAR: 0x210, SFMASK: 0x218, KERNEL_GS_BASE: 0x220,
  SYSENTER_CS: 0x228, SYSENTER_ESP: 0x230, SYSENTER_EIP: 0x238, PAT: 0x240, DEBUGCTL: 0x248, CR8: 0x250,
  ACTIVITY: 0x258, // u32
} as const;

export const XCB_INTR_STI = 1;
export const XCB_INTR_MOV_SS = 2;
export const XCB_INTR_NMI = 4;
export const XCB_INJECT_VALID = 0x8000_0000;
export const XCB_INJECT_ERROR_VALID = 0x800;

/** What exits. */
export enum XcbIntercept {
  CPUID = 1 << 0, HLT = 1 << 1, IO = 1 << 2, MSR = 1 << 3, HYPERCALL = 1 << 4, SHUTDOWN = 1 << 5,
  /** INVD, WBINVD, XSETBV, MONITOR/MWAIT, and the VMX/SVM instructions (a guest cannot use those here). */
  PRIVILEGED = 1 << 6,
}

/** This backend's exit codes. */
export enum XcbExit {
  NONE = 0, EXCEPTION = 1, TIMESLICE = 2, IRQ_WINDOW = 3, NMI_WINDOW = 4, CPUID = 5, HLT = 6, IO = 7,
  RDMSR = 8, WRMSR = 9, HYPERCALL = 10, TDP_FAULT = 11, SHUTDOWN = 12, PRIVILEGED = 13,
}

/** The exit names vcpu.countExit records (and `tsvisor run` prints). */
export const XCB_EXIT_NAMES: Record<XcbExit, string> = {
  [XcbExit.NONE]: 'none', [XcbExit.EXCEPTION]: 'exception', [XcbExit.TIMESLICE]: 'timeslice',
  [XcbExit.IRQ_WINDOW]: 'irq-window', [XcbExit.NMI_WINDOW]: 'nmi-window', [XcbExit.CPUID]: 'cpuid',
  [XcbExit.HLT]: 'hlt', [XcbExit.IO]: 'io', [XcbExit.RDMSR]: 'rdmsr', [XcbExit.WRMSR]: 'wrmsr',
  [XcbExit.HYPERCALL]: 'hypercall', [XcbExit.TDP_FAULT]: 'tdp-fault', [XcbExit.SHUTDOWN]: 'shutdown',
  [XcbExit.PRIVILEGED]: 'privileged',
};

/** Why an entry was refused (run.failEntry.hardwareEntryFailureReason). "XC" in the high half. */
export enum XcbEntryFailure {
  NONE = 0,
  /** CS.L and CS.D both set while EFER.LMA is set. */
  CS_L_AND_D = 0x5843_0001,
  /** CR0.PG without CR0.PE. */
  PG_WITHOUT_PE = 0x5843_0002,
  /** RFLAGS bit 1 clear, or reserved bits set. */
  RFLAGS_RESERVED = 0x5843_0003,
  /** EFER.LMA differs from EFER.LME && CR0.PG. */
  LMA_MISMATCH = 0x5843_0004,
}

/**
 * Segment attributes, packed this backend's way: type 3:0, S 4, DPL 6:5, P 7, AVL 8, L 9,
 * D/B 10, G 11, unusable 12.
 */
export function packAttr(s: KvmSegment): number {
  return (s.type & 0xf) | ((s.s & 1) << 4) | ((s.dpl & 3) << 5) | ((s.present & 1) << 7) | ((s.avl & 1) << 8) |
    ((s.l & 1) << 9) | ((s.db & 1) << 10) | ((s.g & 1) << 11) | ((s.unusable & 1) << 12);
}
export function unpackAttr(a: number, out: KvmSegment): void {
  out.type = a & 0xf; out.s = (a >> 4) & 1; out.dpl = (a >> 5) & 3; out.present = (a >> 7) & 1; out.avl = (a >> 8) & 1;
  out.l = (a >> 9) & 1; out.db = (a >> 10) & 1; out.g = (a >> 11) & 1; out.unusable = (a >> 12) & 1;
}

/** One XCB page, reached by host-physical address. */
export class Xcb {
  readonly dv: DataView;
  private constructor(readonly pa: number, readonly bytes: Uint8Array, offset: number) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset + offset, XCB_SIZE);
  }

  static alloc(host: HostMemory, name: string): Xcb {
    const pa = host.allocPages(1, name);
    const { bytes, offset } = host.slice(pa, XCB_SIZE);
    return new Xcb(pa, bytes, offset);
  }

  r8(o: number): number { return this.dv.getUint8(o); }
  w8(o: number, v: number): void { this.dv.setUint8(o, v); }
  r16(o: number): number { return this.dv.getUint16(o, true); }
  w16(o: number, v: number): void { this.dv.setUint16(o, v, true); }
  r32(o: number): number { return this.dv.getUint32(o, true); }
  w32(o: number, v: number): void { this.dv.setUint32(o, v >>> 0, true); }
  r64(o: number): bigint { return this.dv.getBigUint64(o, true); }
  w64(o: number, v: bigint): void { this.dv.setBigUint64(o, BigInt.asUintN(64, v), true); }

  clear(): void {
    for (let i = 0; i < XCB_SIZE; i += 8) this.dv.setBigUint64(i, 0n);
  }

  getSeg(i: number, out: KvmSegment): KvmSegment {
    const at = XCB_GUEST.SEGMENTS + i * 16;
    out.selector = this.r16(at);
    unpackAttr(this.r16(at + 2), out);
    out.limit = this.r32(at + 4);
    out.base = this.r64(at + 8);
    return out;
  }
  setSeg(i: number, s: KvmSegment): void {
    const at = XCB_GUEST.SEGMENTS + i * 16;
    this.w16(at, s.selector);
    this.w16(at + 2, packAttr(s));
    this.w32(at + 4, s.limit);
    this.w64(at + 8, s.base);
  }
  segBase(i: number): bigint { return this.r64(XCB_GUEST.SEGMENTS + i * 16 + 8); }
  setSegBase(i: number, base: bigint): void { this.w64(XCB_GUEST.SEGMENTS + i * 16 + 8, base); }
  segAttr(i: number): number { return this.r16(XCB_GUEST.SEGMENTS + i * 16 + 2); }
}
