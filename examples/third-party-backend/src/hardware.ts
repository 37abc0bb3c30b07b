/**
 * The emulated "XCB hardware": what entering and leaving guest mode does with an XCB, in
 * front of core's vendor-neutral processor (X86Cpu.runGuest). Entry checks the guest state
 * (a failed check refuses the entry with an XcbEntryFailure reason, it never throws), performs
 * a requested TLB flush, loads the guest state, turns the control area into GuestModeRules and
 * injects the INJECT event. Exit stores the guest state back and records the exit in XCB form.
 */
import {
  CpuState, CrAccessType, EventType, GuestExit, GuestExitKind, GuestModeRules, HostMemory, InterceptInsn, KvmSegment,
  TdpWalker, X86Cpu, emptySegment,
} from '@tsvisor/core';
import {
  Xcb, XCB, XCB_GUEST, XCB_INJECT_ERROR_VALID, XCB_INJECT_VALID, XCB_INTR_MOV_SS, XCB_INTR_NMI, XCB_INTR_STI,
  XcbEntryFailure, XcbExit, XcbIntercept,
} from './xcb';
import { XptWalker } from './xpt';

const PRIVILEGED_INSNS = [
  InterceptInsn.INVD, InterceptInsn.WBINVD, InterceptInsn.XSETBV, InterceptInsn.MONITOR, InterceptInsn.MWAIT,
  InterceptInsn.VMMCALL, InterceptInsn.VMRUN, InterceptInsn.VMLOAD, InterceptInsn.VMSAVE, InterceptInsn.STGI,
  InterceptInsn.CLGI, InterceptInsn.SKINIT, InterceptInsn.INVLPGA, InterceptInsn.VMX_INSN, InterceptInsn.RSM,
];

/** The guest-mode rules of one entry, derived from the XCB control area. */
export class XcbRules implements GuestModeRules {
  readonly insn = new Uint8Array(InterceptInsn.COUNT);
  intercepts = 0;
  exceptionBitmap = 0;
  irqWindowExiting = false;
  nmiWindowExiting = false;
  shutdownExits = true;
  tdp: TdpWalker | null = null;
  tlbTag = 0;
  readonly monitorTrapFlag = false;
  readonly preemptionDeadlineTsc = -1n;

  load(x: Xcb, host: HostMemory, walker: { current: XptWalker | null }): void {
    this.intercepts = x.r32(XCB.INTERCEPTS);
    this.exceptionBitmap = x.r32(XCB.EXCEPTION_BITMAP);
    const i = this.intercepts;
    this.insn.fill(0);
    this.insn[InterceptInsn.CPUID] = i & XcbIntercept.CPUID ? 1 : 0;
    this.insn[InterceptInsn.HLT] = i & XcbIntercept.HLT ? 1 : 0;
    this.insn[InterceptInsn.VMCALL] = i & XcbIntercept.HYPERCALL ? 1 : 0;
    if (i & XcbIntercept.PRIVILEGED) for (const p of PRIVILEGED_INSNS) this.insn[p] = 1;
    const w = x.r32(XCB.WINDOWS);
    this.irqWindowExiting = (w & 1) !== 0;
    this.nmiWindowExiting = (w & 2) !== 0;
    this.shutdownExits = (i & XcbIntercept.SHUTDOWN) !== 0;
    this.tlbTag = x.r32(XCB.TLB_TAG);
    const root = Number(x.r64(XCB.TDP_ROOT));
    if (root === 0) this.tdp = null;
    else {
      if (!walker.current || walker.current.root !== root) walker.current = new XptWalker(host, root);
      this.tdp = walker.current;
    }
  }
  exceptionExits(vector: number): boolean {
    return vector < 32 && ((this.exceptionBitmap >>> vector) & 1) === 1;
  }
  ioExits(): boolean {
    return (this.intercepts & XcbIntercept.IO) !== 0;
  }
  msrExits(): boolean {
    return (this.intercepts & XcbIntercept.MSR) !== 0;
  }
  // The guest owns its control and debug registers: nothing about them exits.
  crWriteExits(): boolean { return false; }
  crReadExits(): boolean { return false; }
  crReadValue(_cr: number, real: bigint): bigint { return real; }
  drExits(): boolean { return false; }
}

/** The entry checks (this backend's rules; the manuals' equivalents are SDM 27.3.1 and APM 15.5.1). */
export function xcbEntryCheck(x: Xcb): XcbEntryFailure {
  const cr0 = x.r64(XCB_GUEST.CR0);
  const efer = x.r64(XCB_GUEST.EFER);
  const rflags = x.r64(XCB_GUEST.RFLAGS);
  if (!(rflags & 2n) || (rflags & ~0x3f7fd7n)) return XcbEntryFailure.RFLAGS_RESERVED;
  if ((cr0 & (1n << 31n)) && !(cr0 & 1n)) return XcbEntryFailure.PG_WITHOUT_PE;
  const lma = (efer & (1n << 10n)) !== 0n;
  const wantLma = (efer & (1n << 8n)) !== 0n && (cr0 & (1n << 31n)) !== 0n;
  if (lma !== wantLma) return XcbEntryFailure.LMA_MISMATCH;
  const cs = x.segAttr(1);
  if (lma && (cs >> 9) & 1 && (cs >> 10) & 1) return XcbEntryFailure.CS_L_AND_D;
  return XcbEntryFailure.NONE;
}

/** The XCB unit of one processor. */
export class XcbHardware {
  readonly rules = new XcbRules();
  private readonly walker: { current: XptWalker | null } = { current: null };
  private readonly seg: KvmSegment = emptySegment();

  constructor(readonly cpu: X86Cpu, readonly host: HostMemory) {}

  /**
   * Enter guest mode with `x` for at most `budget` instructions; on return the exit is in the
   * XCB. Returns the entry failure (the guest did not run) or NONE.
   */
  enter(x: Xcb, budget: number): XcbEntryFailure {
    const failure = xcbEntryCheck(x);
    x.w32(XCB.ENTRY_FAILURE, failure);
    if (failure !== XcbEntryFailure.NONE) return failure;
    const tag = x.r32(XCB.TLB_TAG);
    if (x.r32(XCB.TLB_FLUSH)) {
      this.cpu.flushTlbTag(tag);
      x.w32(XCB.TLB_FLUSH, 0);
    }
    this.load(x);
    this.rules.load(x, this.host, this.walker);
    const inj = this.cpu.injection;
    const ev = x.r32(XCB.INJECT);
    inj.valid = (ev & XCB_INJECT_VALID) !== 0;
    if (inj.valid) {
      inj.type = ((ev >>> 8) & 7) as EventType;
      inj.vector = ev & 0xff;
      inj.hasErrorCode = (ev & XCB_INJECT_ERROR_VALID) !== 0;
      inj.errorCode = x.r32(XCB.INJECT_ERROR);
      inj.insnLength = 0;
    }
    this.cpu.runGuest(this.rules, budget);
    x.w32(XCB.INJECT, 0);
    inj.valid = false;
    this.store(x);
    this.recordExit(x, this.cpu.exit);
    return XcbEntryFailure.NONE;
  }

  private load(x: Xcb): void {
    const s: CpuState = this.cpu.state;
    for (let i = 0; i < 8; i++) s.setSegment(i, x.getSeg(i, this.seg));
    s.gdtrBase = x.r64(XCB_GUEST.GDTR_BASE);
    s.gdtrLimit = x.r32(XCB_GUEST.GDTR_LIMIT);
    s.idtrBase = x.r64(XCB_GUEST.IDTR_BASE);
    s.idtrLimit = x.r32(XCB_GUEST.IDTR_LIMIT);
    s.cr0 = x.r64(XCB_GUEST.CR0);
    s.cr2 = x.r64(XCB_GUEST.CR2);
    s.cr3 = x.r64(XCB_GUEST.CR3);
    s.cr4 = x.r64(XCB_GUEST.CR4);
    s.cr8 = x.r64(XCB_GUEST.CR8);
    s.efer = x.r64(XCB_GUEST.EFER);
    s.rflags = Number(x.r64(XCB_GUEST.RFLAGS) & 0xffffffffn);
    s.rip = x.r64(XCB_GUEST.RIP);
    s.setGpr(4, x.r64(XCB_GUEST.RSP));
    s.setGpr(0, x.r64(XCB_GUEST.RAX));
    s.dr6 = x.r64(XCB_GUEST.DR6);
    s.dr7 = x.r64(XCB_GUEST.DR7);
    s.cpl = x.r8(XCB_GUEST.CPL) & 3;
    s.star = x.r64(XCB_GUEST.STAR);
    s.lstar = x.r64(XCB_GUEST.LSTAR);
    s.cstar = x.r64(XCB_GUEST.CSTAR);
    s.sfmask = x.r64(XCB_GUEST.SFMASK);
    s.kernelGsBase = x.r64(XCB_GUEST.KERNEL_GS_BASE);
    s.sysenterCs = x.r64(XCB_GUEST.SYSENTER_CS);
    s.sysenterEsp = x.r64(XCB_GUEST.SYSENTER_ESP);
    s.sysenterEip = x.r64(XCB_GUEST.SYSENTER_EIP);
    s.pat = x.r64(XCB_GUEST.PAT);
    s.debugctl = x.r64(XCB_GUEST.DEBUGCTL);
    s.tscOffset = x.r64(XCB.TSC_OFFSET);
    const intr = x.r32(XCB_GUEST.INTERRUPTIBILITY);
    s.stiShadow = (intr & XCB_INTR_STI) !== 0;
    s.movSsShadow = (intr & XCB_INTR_MOV_SS) !== 0;
    s.nmiBlocked = (intr & XCB_INTR_NMI) !== 0;
    s.activity = x.r32(XCB_GUEST.ACTIVITY);
  }

  private store(x: Xcb): void {
    const s = this.cpu.state;
    for (let i = 0; i < 8; i++) x.setSeg(i, s.getSegment(i, this.seg));
    x.w64(XCB_GUEST.GDTR_BASE, s.gdtrBase);
    x.w32(XCB_GUEST.GDTR_LIMIT, s.gdtrLimit);
    x.w64(XCB_GUEST.IDTR_BASE, s.idtrBase);
    x.w32(XCB_GUEST.IDTR_LIMIT, s.idtrLimit);
    x.w64(XCB_GUEST.CR0, s.cr0);
    x.w64(XCB_GUEST.CR2, s.cr2);
    x.w64(XCB_GUEST.CR3, s.cr3);
    x.w64(XCB_GUEST.CR4, s.cr4);
    x.w64(XCB_GUEST.CR8, s.cr8);
    x.w64(XCB_GUEST.EFER, s.efer);
    x.w64(XCB_GUEST.RFLAGS, BigInt(s.rflags >>> 0));
    x.w64(XCB_GUEST.RIP, s.rip);
    x.w64(XCB_GUEST.RSP, s.getGpr(4));
    x.w64(XCB_GUEST.RAX, s.getGpr(0));
    x.w64(XCB_GUEST.DR6, s.dr6);
    x.w64(XCB_GUEST.DR7, s.dr7);
    x.w8(XCB_GUEST.CPL, s.cpl);
    x.w64(XCB_GUEST.STAR, s.star);
    x.w64(XCB_GUEST.LSTAR, s.lstar);
    x.w64(XCB_GUEST.CSTAR, s.cstar);
    x.w64(XCB_GUEST.SFMASK, s.sfmask);
    x.w64(XCB_GUEST.KERNEL_GS_BASE, s.kernelGsBase);
    x.w64(XCB_GUEST.SYSENTER_CS, s.sysenterCs);
    x.w64(XCB_GUEST.SYSENTER_ESP, s.sysenterEsp);
    x.w64(XCB_GUEST.SYSENTER_EIP, s.sysenterEip);
    x.w64(XCB_GUEST.PAT, s.pat);
    x.w64(XCB_GUEST.DEBUGCTL, s.debugctl);
    x.w32(XCB_GUEST.INTERRUPTIBILITY,
      (s.stiShadow ? XCB_INTR_STI : 0) | (s.movSsShadow ? XCB_INTR_MOV_SS : 0) | (s.nmiBlocked ? XCB_INTR_NMI : 0));
    x.w32(XCB_GUEST.ACTIVITY, s.activity);
  }

  /** EXIT_CODE, EXIT_QUAL, EXIT_GPA, EXIT_NEXT_RIP, EXIT_INSN_LEN and EXIT_VECTORING for one neutral exit. */
  recordExit(x: Xcb, ex: GuestExit): void {
    let code = XcbExit.TIMESLICE;
    let qual = 0n;
    let gpa = 0n;
    switch (ex.kind) {
      case GuestExitKind.EXCEPTION:
        code = XcbExit.EXCEPTION;
        qual = BigInt(ex.vector) | (ex.hasErrorCode ? (1n << 8n) | (BigInt(ex.errorCode >>> 0) << 32n) : 0n);
        break;
      case GuestExitKind.INTERRUPT_WINDOW: code = XcbExit.IRQ_WINDOW; break;
      case GuestExitKind.NMI_WINDOW: code = XcbExit.NMI_WINDOW; break;
      case GuestExitKind.TRIPLE_FAULT: case GuestExitKind.SHUTDOWN: code = XcbExit.SHUTDOWN; break;
      case GuestExitKind.INSTRUCTION:
        code = ex.insn === InterceptInsn.CPUID ? XcbExit.CPUID : ex.insn === InterceptInsn.HLT ? XcbExit.HLT
          : ex.insn === InterceptInsn.VMCALL ? XcbExit.HYPERCALL : XcbExit.PRIVILEGED;
        qual = BigInt(ex.insn);
        break;
      case GuestExitKind.IO:
        code = XcbExit.IO;
        // port 31:16, size 7:4, IN 3, string 2, REP 1
        qual = BigInt(((ex.port & 0xffff) << 16) | (ex.size << 4) | (ex.isIn ? 8 : 0) | (ex.isString ? 4 : 0) | (ex.isRep ? 2 : 0)) & 0xffffffffn;
        break;
      case GuestExitKind.MSR_READ: code = XcbExit.RDMSR; break;
      case GuestExitKind.MSR_WRITE: code = XcbExit.WRMSR; break;
      case GuestExitKind.TDP_FAULT: case GuestExitKind.TDP_MISCONFIG: case GuestExitKind.MMIO:
        code = XcbExit.TDP_FAULT;
        // access bits 2:0 (read, write, fetch), bit 8 "no memory here" (MMIO)
        qual = BigInt(ex.access & 7) | (ex.kind === GuestExitKind.MMIO ? 1n << 8n : 0n);
        gpa = ex.gpa;
        break;
      case GuestExitKind.CR_ACCESS:
        // Never intercepted here; recorded as privileged for diagnostics.
        code = XcbExit.PRIVILEGED;
        qual = BigInt(ex.crAccessType === CrAccessType.MOV_TO_CR ? 0x100 + ex.crNumber : ex.crNumber);
        break;
      default:
        // BUDGET, EXTERNAL_INTERRUPT (a kick), HALTED and exits this hardware has no control for.
        code = XcbExit.TIMESLICE;
    }
    x.w32(XCB.EXIT_CODE, code);
    x.w64(XCB.EXIT_QUAL, qual);
    x.w64(XCB.EXIT_GPA, gpa);
    x.w64(XCB.EXIT_NEXT_RIP, ex.nextRip);
    x.w32(XCB.EXIT_INSN_LEN, ex.insnLength);
    const v = ex.vectoring;
    x.w32(XCB.EXIT_VECTORING, v.valid ? (XCB_INJECT_VALID | (v.type << 8) | (v.hasErrorCode ? XCB_INJECT_ERROR_VALID : 0) | (v.vector & 0xff)) >>> 0 : 0);
    x.w32(XCB.EXIT_VECTORING_ERROR, v.valid && v.hasErrorCode ? v.errorCode : 0);
  }
}
