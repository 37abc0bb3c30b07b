import { KvmSegment, VcpuSreg, DescPtr } from '../ops/types';

const TWO32 = 4294967296;

/**
 * The processor's architectural state, in typed arrays so the interpreter's hot path
 * never allocates: 64-bit registers are kept as two 32-bit halves (lo/hi). The bigint
 * accessors are for backends and core at VM entry/exit, never for instruction execution.
 *
 * Who touches what: the processor owns this during guest execution; a backend's `run`
 * loads guest state into it before entry and reads it back after exit (as VMX hardware
 * does with the VMCS guest-state area and SVM with the VMCB save area).
 */
export class CpuState {
  /** GPRs RAX..R15 (KVM numbering), low halves. */
  readonly gprLo = new Int32Array(16);
  /** GPRs RAX..R15, high halves. */
  readonly gprHi = new Int32Array(16);
  ripLo = 0;
  ripHi = 0;
  /** RFLAGS as architecturally visible; the interpreter may keep lazy flags elsewhere and materialize here. */
  rflags = 0x2;

  /** Segment registers in VcpuSreg order (ES CS SS DS FS GS TR LDTR). */
  readonly segSel = new Uint16Array(8);
  readonly segBaseLo = new Int32Array(8);
  readonly segBaseHi = new Int32Array(8);
  readonly segLimit = new Uint32Array(8);
  /**
   * Access rights, in the layout of descriptor bits 40..55 (type 0-3, S 4, DPL 5-6, P 7,
   * AVL 12, L 13, D/B 14, G 15), plus bit 16 "unusable" (a null selector was loaded).
   * This is the processor's own neutral form; VMX and SVM each convert to theirs.
   */
  readonly segAttr = new Uint32Array(8);
  /**
   * Bumped whenever a segment register may have been reloaded: by `setSegment` and by the
   * processor (`segUpdate`, hence every mode update, and reset). Code that writes the arrays
   * above directly, outside the processor, bumps it too. A backend that stored the segment
   * registers at a VM exit and sees the same count at the next exit knows they are unchanged.
   */
  segWrites = 0;
  /**
   * Bumped whenever the processor may have written the system registers a VM exit stores:
   * GDTR/IDTR, CR0/CR3/CR4/CR8, DR7, EFER, PAT, DEBUGCTL and the SYSCALL/SYSENTER/KERNEL_GS_BASE
   * MSRs (MOV to CR/DR, WRMSR, LGDT/LIDT, SWAPGS, task switch, reset; KVM's emulator-state sync).
   * Not CR2 or DR6, which exception delivery writes: the backends store those at every exit.
   * A backend that stored these at a VM exit and sees the same count at the next exit knows
   * they are unchanged. Code that writes them directly, outside the processor, bumps it too —
   * except CR0, CR3, CR4, EFER and DR7, whose setters bump it themselves (whoever writes them:
   * the processor, a backend's VM-entry load, a test), so the processor can tell at VM entry
   * that its mode inputs are as it left them without comparing them.
   */
  sysWrites = 0;

  gdtrBase = 0n;
  gdtrLimit = 0;
  idtrBase = 0n;
  idtrLimit = 0;

  private cr0Value = 0x60000010n;
  private cr3Value = 0n;
  private cr4Value = 0n;
  private eferValue = 0n;
  private dr7Value = 0x400n;
  get cr0(): bigint { return this.cr0Value; }
  set cr0(v: bigint) { this.cr0Value = v; this.sysWrites++; }
  cr2 = 0n;
  get cr3(): bigint { return this.cr3Value; }
  set cr3(v: bigint) { this.cr3Value = v; this.sysWrites++; }
  get cr4(): bigint { return this.cr4Value; }
  set cr4(v: bigint) { this.cr4Value = v; this.sysWrites++; }
  /** CR8 / TPR[7:4]. */
  cr8 = 0n;
  get efer(): bigint { return this.eferValue; }
  set efer(v: bigint) { this.eferValue = v; this.sysWrites++; }
  xcr0 = 1n;
  /** DR0-DR3. Their writers need not bump anything: the processor compares them at VM entry while DR7 enables a breakpoint. */
  readonly dr = [0n, 0n, 0n, 0n];
  dr6 = 0xffff0ff0n;
  get dr7(): bigint { return this.dr7Value; }
  set dr7(v: bigint) { this.dr7Value = v; this.sysWrites++; }

  /** MSR-held state that VM entry/exit moves (SDM 24.4.1 / APM 15.5). */
  sysenterCs = 0n;
  sysenterEsp = 0n;
  sysenterEip = 0n;
  star = 0n;
  lstar = 0n;
  cstar = 0n;
  sfmask = 0n;
  kernelGsBase = 0n;
  tscAux = 0n;
  pat = 0x0007040600070406n;
  debugctl = 0n;

  /** Interruptibility (SDM 24.4.2): STI and MOV SS shadows, NMI blocking. */
  stiShadow = false;
  movSsShadow = false;
  nmiBlocked = false;
  /** Activity state: 0 active, 1 HLT, 2 shutdown, 3 wait-for-SIPI (SDM 24.4.2 encoding). */
  activity = 0;

  /**
   * Current privilege level, kept as its own state like AMD's VMCB.CPL; VMX entry loads it
   * from SS.DPL (SDM 27.3.2.2 makes them equal), SVM entry from VMCB.CPL.
   */
  cpl = 0;

  /**
   * The four PAE PDPTE registers (SDM Vol. 3A 4.4.1: internal, non-architectural), low and
   * high halves. With PAE paging (CR0.PG = 1, CR4.PAE = 1, EFER.LMA = 0) the page walk starts
   * from these, not from the PDPT in memory: they are loaded by MOV to CR3, by MOV to CR0/CR4
   * that enters PAE paging or changes CR0.CD/NW/PG or CR4.PAE/PGE/PSE/SMEP (`loadPdptrs` in
   * pdptr.ts), by a task switch, and at VM entry — from CR3 by default, or as the backend
   * stored them here when it sets `GuestModeRules.pdptrsLoaded` (VMX with EPT: the
   * GUEST_PDPTR0-3 guest-state fields, SDM 26.3.2.4; VM exit saves them back, SDM 27.3.4).
   */
  readonly pdptrLo = new Int32Array(4);
  readonly pdptrHi = new Int32Array(4);

  /**
   * Time-stamp counter of this processor (guest TSC = tsc + tscOffset), as the two halves of a
   * 64-bit two's-complement value: the processor adds the instructions it retired at every
   * exit without allocating. `tsc` (bigint) and `tscNumber` read it; readers reduce mod 2^64
   * (`BigInt.asUintN(64, tsc + offset)`), so a counter briefly below zero (WRMSR IA32_TSC
   * during a run subtracts what the run has retired so far) stays exact.
   */
  tscLo = 0;
  tscHi = 0;
  tscOffset = 0n;
  /** Retired instructions since reset; exact. */
  instructionsRetired = 0;

  /** The TSC counter (signed 64-bit; see tscLo/tscHi). Allocates: not for per-exit paths. */
  get tsc(): bigint {
    return (BigInt(this.tscHi) << 32n) | BigInt(this.tscLo >>> 0);
  }
  set tsc(v: bigint) {
    this.tscLo = Number(v & 0xffffffffn) | 0;
    this.tscHi = Number(BigInt.asIntN(32, v >> 32n));
  }
  /** The TSC counter as a double (exact while |tsc| < 2^53, i.e. for 104 days at 1 GHz × 10^3). */
  get tscNumber(): number {
    return this.tscHi * TWO32 + (this.tscLo >>> 0);
  }
  /** Set the TSC counter to the integer `v` (no BigInt while |v| ≤ 2^53). */
  setTscNumber(v: number): void {
    if (v >= -Number.MAX_SAFE_INTEGER && v <= Number.MAX_SAFE_INTEGER) {
      const hi = Math.floor(v / TWO32);
      this.tscHi = hi | 0;
      this.tscLo = (v - hi * TWO32) | 0;
    } else {
      this.tsc = BigInt.asIntN(64, BigInt(v));
    }
  }
  /** Advance the TSC counter by the non-negative integer `n` (wraps mod 2^64; no BigInt below 2^53). */
  addTsc(n: number): void {
    // The common case (every exit): the low half does not carry.
    const lo = (this.tscLo >>> 0) + n;
    if (lo < TWO32 && n >= 0) {
      this.tscLo = lo | 0;
      return;
    }
    const v = this.tscHi * TWO32 + (this.tscLo >>> 0) + n;
    if (v <= Number.MAX_SAFE_INTEGER) this.setTscNumber(v);
    else this.tsc = BigInt.asIntN(64, this.tsc + BigInt(n));
  }

  getGpr(i: number): bigint {
    return (BigInt(this.gprHi[i] >>> 0) << 32n) | BigInt(this.gprLo[i] >>> 0);
  }
  setGpr(i: number, v: bigint): void {
    this.gprLo[i] = Number(v & 0xffffffffn) | 0;
    this.gprHi[i] = Number((v >> 32n) & 0xffffffffn) | 0;
  }
  /** PDPTE register `i` (0-3) as a 64-bit value (backends: VMCS GUEST_PDPTRn). */
  getPdptr(i: number): bigint {
    return (BigInt(this.pdptrHi[i] >>> 0) << 32n) | BigInt(this.pdptrLo[i] >>> 0);
  }
  setPdptr(i: number, v: bigint): void {
    this.pdptrLo[i] = Number(v & 0xffffffffn) | 0;
    this.pdptrHi[i] = Number((v >> 32n) & 0xffffffffn) | 0;
  }
  get rip(): bigint {
    return (BigInt(this.ripHi >>> 0) << 32n) | BigInt(this.ripLo >>> 0);
  }
  set rip(v: bigint) {
    this.ripLo = Number(v & 0xffffffffn) | 0;
    this.ripHi = Number((v >> 32n) & 0xffffffffn) | 0;
  }

  getSegment(seg: VcpuSreg, out: KvmSegment): KvmSegment {
    const a = this.segAttr[seg];
    out.selector = this.segSel[seg];
    out.base = (BigInt(this.segBaseHi[seg] >>> 0) << 32n) | BigInt(this.segBaseLo[seg] >>> 0);
    out.limit = this.segLimit[seg];
    out.type = a & 0xf;
    out.s = (a >> 4) & 1;
    out.dpl = (a >> 5) & 3;
    out.present = (a >> 7) & 1;
    out.avl = (a >> 12) & 1;
    out.l = (a >> 13) & 1;
    out.db = (a >> 14) & 1;
    out.g = (a >> 15) & 1;
    out.unusable = (a >> 16) & 1;
    return out;
  }
  setSegment(seg: VcpuSreg, s: KvmSegment): void {
    this.segWrites++;
    this.segSel[seg] = s.selector;
    this.segBaseLo[seg] = Number(s.base & 0xffffffffn) | 0;
    this.segBaseHi[seg] = Number((s.base >> 32n) & 0xffffffffn) | 0;
    this.segLimit[seg] = s.limit >>> 0;
    this.segAttr[seg] =
      (s.type & 0xf) | ((s.s & 1) << 4) | ((s.dpl & 3) << 5) | ((s.present & 1) << 7) |
      ((s.avl & 1) << 12) | ((s.l & 1) << 13) | ((s.db & 1) << 14) | ((s.g & 1) << 15) | ((s.unusable & 1) << 16);
  }
  getGdt(out: DescPtr): DescPtr { out.address = this.gdtrBase; out.size = this.gdtrLimit; return out; }
  getIdt(out: DescPtr): DescPtr { out.address = this.idtrBase; out.size = this.idtrLimit; return out; }
}

export const SEG_ATTR_UNUSABLE = 1 << 16;
