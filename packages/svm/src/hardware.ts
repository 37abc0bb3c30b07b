/**
 * The emulated SVM hardware: what an AMD processor does on VMRUN and #VMEXIT (AMD APM Vol. 2
 * 15.5 and 15.6), in front of core's vendor-neutral processor. VMRUN checks the VMCB
 * (15.5.1), honours the VMCB clean bits (15.15.3), performs the TLB_CONTROL flush (15.16.1),
 * loads the guest state from the save area, turns the intercept vectors and the IOPM/MSRPM
 * into the processor's guest-mode rules, injects EVENTINJ (15.20) and runs the guest. #VMEXIT
 * stores the guest state back and writes EXITCODE, EXITINFO1/2, EXITINTINFO, nRIP and the
 * guest instruction bytes (decode assists, 15.8).
 *
 * KVM's __svm_vcpu_run also executes VMLOAD/VMSAVE around VMRUN; the state those move (FS,
 * GS, TR, LDTR, KernelGSBase, STAR/LSTAR/CSTAR/SFMASK, SYSENTER_*) is loaded and stored here
 * with the rest, which is the combined effect.
 */
import {
  ACCESS_WRITE, ApicPageHandler, Cr8Virtualization, CrAccessType, EventType, GuestExit, GuestExitKind, GuestModeRules, HostMemory, InterceptInsn,
  TdpWalker, X86Cpu, type CpuState,
} from '@tsvisor/core';
import {
  AVIC_ENABLE_MASK, CLEAN_GROUPS, fieldBytes, Intercept1, Intercept2, Intercept3, INTERCEPT2_CR_WRITE_TRAP_SHIFT, SREG_FIELDS,
  SVM_INTERRUPT_SHADOW_MASK, SVM_NESTED_CTL_NP_ENABLE, TlbControl, V_IRQ_MASK, V_TPR_MASK, VMCB_CONTROL, VMCB_SAVE,
  VMCB_SIZE, VmcbCleanBit,
} from './vmcb/layout';
import { ALL_CLEAN_GROUPS, Vmcb, attribToCpu, cpuToAttrib } from './vmcb/vmcb';
import { Iopm, Msrpm } from './vmcb/permission-maps';
import { vmrunConsistencyCheck, VmrunCheckFailure } from './vmcb/checks';
import {
  SVM_CR_VALID, SVM_EVTINJ_TYPE_MASK, SVM_EVTINJ_TYPE_SHIFT, SVM_EVTINJ_VALID, SVM_EVTINJ_VALID_ERR,
  SVM_EXIT_ERR_U64, SVM_IOIO_A16, SVM_IOIO_A32, SVM_IOIO_A64, SVM_IOIO_PORT_SHIFT, SVM_IOIO_REP,
  SVM_IOIO_SEG_SHIFT, SVM_IOIO_STR, SVM_IOIO_SZ16, SVM_IOIO_SZ32, SVM_IOIO_SZ8, SVM_IOIO_TYPE_IN, SvmEventType, SvmExit,
  SVM_EXITINFOSHIFT_TS_HAS_ERROR_CODE, SVM_EXITINFOSHIFT_TS_REASON_IRET, SVM_EXITINFOSHIFT_TS_REASON_JMP,
} from './vmcb/exit-codes';
import { NptWalker, npfErrorCode } from './npt/npt';
import { AvicHardware, AVIC_UNACCEL_ACCESS_WRITE_BIT } from './avic-hardware';

/** InterceptInsn → (intercept vector word, bit) as APM Table B-1 assigns them. */
const INSN_INTERCEPTS: ReadonlyArray<[InterceptInsn, 'MISC1' | 'MISC2' | 'MISC3', number]> = [
  [InterceptInsn.CPUID, 'MISC1', Intercept1.CPUID],
  [InterceptInsn.HLT, 'MISC1', Intercept1.HLT],
  [InterceptInsn.INVD, 'MISC1', Intercept1.INVD],
  [InterceptInsn.INVLPG, 'MISC1', Intercept1.INVLPG],
  [InterceptInsn.RDPMC, 'MISC1', Intercept1.RDPMC],
  [InterceptInsn.RDTSC, 'MISC1', Intercept1.RDTSC],
  [InterceptInsn.PAUSE, 'MISC1', Intercept1.PAUSE],
  [InterceptInsn.IRET, 'MISC1', Intercept1.IRET],
  [InterceptInsn.INTN, 'MISC1', Intercept1.INTN],
  [InterceptInsn.PUSHF, 'MISC1', Intercept1.PUSHF],
  [InterceptInsn.POPF, 'MISC1', Intercept1.POPF],
  [InterceptInsn.RSM, 'MISC1', Intercept1.RSM],
  [InterceptInsn.INVLPGA, 'MISC1', Intercept1.INVLPGA],
  [InterceptInsn.SIDT, 'MISC1', Intercept1.IDTR_READ],
  [InterceptInsn.SGDT, 'MISC1', Intercept1.GDTR_READ],
  [InterceptInsn.SLDT, 'MISC1', Intercept1.LDTR_READ],
  [InterceptInsn.STR, 'MISC1', Intercept1.TR_READ],
  [InterceptInsn.LIDT, 'MISC1', Intercept1.IDTR_WRITE],
  [InterceptInsn.LGDT, 'MISC1', Intercept1.GDTR_WRITE],
  [InterceptInsn.LLDT, 'MISC1', Intercept1.LDTR_WRITE],
  [InterceptInsn.LTR, 'MISC1', Intercept1.TR_WRITE],
  [InterceptInsn.VMRUN, 'MISC2', Intercept2.VMRUN],
  [InterceptInsn.VMMCALL, 'MISC2', Intercept2.VMMCALL],
  [InterceptInsn.VMLOAD, 'MISC2', Intercept2.VMLOAD],
  [InterceptInsn.VMSAVE, 'MISC2', Intercept2.VMSAVE],
  [InterceptInsn.STGI, 'MISC2', Intercept2.STGI],
  [InterceptInsn.CLGI, 'MISC2', Intercept2.CLGI],
  [InterceptInsn.SKINIT, 'MISC2', Intercept2.SKINIT],
  [InterceptInsn.RDTSCP, 'MISC2', Intercept2.RDTSCP],
  [InterceptInsn.ICEBP, 'MISC2', Intercept2.ICEBP],
  [InterceptInsn.WBINVD, 'MISC2', Intercept2.WBINVD],
  [InterceptInsn.MONITOR, 'MISC2', Intercept2.MONITOR],
  [InterceptInsn.MWAIT, 'MISC2', Intercept2.MWAIT],
  [InterceptInsn.XSETBV, 'MISC2', Intercept2.XSETBV],
  [InterceptInsn.INVPCID, 'MISC3', Intercept3.INVPCID],
];

/** InterceptInsn → #VMEXIT code for an intercepted instruction. */
const INSN_EXIT_CODE: Partial<Record<InterceptInsn, number>> = {
  [InterceptInsn.CPUID]: SvmExit.CPUID, [InterceptInsn.HLT]: SvmExit.HLT, [InterceptInsn.INVD]: SvmExit.INVD,
  [InterceptInsn.INVLPG]: SvmExit.INVLPG, [InterceptInsn.RDPMC]: SvmExit.RDPMC, [InterceptInsn.RDTSC]: SvmExit.RDTSC,
  [InterceptInsn.PAUSE]: SvmExit.PAUSE, [InterceptInsn.IRET]: SvmExit.IRET, [InterceptInsn.INTN]: SvmExit.SWINT,
  [InterceptInsn.PUSHF]: SvmExit.PUSHF, [InterceptInsn.POPF]: SvmExit.POPF, [InterceptInsn.RSM]: SvmExit.RSM,
  [InterceptInsn.INVLPGA]: SvmExit.INVLPGA, [InterceptInsn.SIDT]: SvmExit.IDTR_READ, [InterceptInsn.SGDT]: SvmExit.GDTR_READ,
  [InterceptInsn.SLDT]: SvmExit.LDTR_READ, [InterceptInsn.STR]: SvmExit.TR_READ, [InterceptInsn.LIDT]: SvmExit.IDTR_WRITE,
  [InterceptInsn.LGDT]: SvmExit.GDTR_WRITE, [InterceptInsn.LLDT]: SvmExit.LDTR_WRITE, [InterceptInsn.LTR]: SvmExit.TR_WRITE,
  [InterceptInsn.VMRUN]: SvmExit.VMRUN, [InterceptInsn.VMMCALL]: SvmExit.VMMCALL, [InterceptInsn.VMLOAD]: SvmExit.VMLOAD,
  [InterceptInsn.VMSAVE]: SvmExit.VMSAVE, [InterceptInsn.STGI]: SvmExit.STGI, [InterceptInsn.CLGI]: SvmExit.CLGI,
  [InterceptInsn.SKINIT]: SvmExit.SKINIT, [InterceptInsn.RDTSCP]: SvmExit.RDTSCP, [InterceptInsn.ICEBP]: SvmExit.ICEBP,
  [InterceptInsn.WBINVD]: SvmExit.WBINVD, [InterceptInsn.MONITOR]: SvmExit.MONITOR, [InterceptInsn.MWAIT]: SvmExit.MWAIT,
  [InterceptInsn.XSETBV]: SvmExit.XSETBV, [InterceptInsn.INVPCID]: SvmExit.INVPCID,
};

/** INSN_EXIT_CODE as a table indexed by InterceptInsn (INTR where SVM has no such exit), for recordExit. */
const INSN_EXIT_TABLE = Int32Array.from({ length: InterceptInsn.COUNT }, (_, i) => INSN_EXIT_CODE[i as InterceptInsn] ?? SvmExit.INTR);
/** 1 for the instruction intercepts whose exit carries no decode-assist operand in EXITINFO1/2 (APM 15.8). */
const INSN_PLAIN = Uint8Array.from({ length: InterceptInsn.COUNT },
  (_, i) => (i === InterceptInsn.INVLPG || i === InterceptInsn.INTN || i === InterceptInsn.INVPCID ? 0 : 1));

/** CLEAN_GROUPS as flat [offset, length, …] byte ranges, for the overlay of stale clean groups. */
const CLEAN_RANGES: readonly number[][] = Array.from({ length: VmcbCleanBit.COUNT }, (_, bit) =>
  CLEAN_GROUPS[bit].flatMap((fld) => [fld.offset, fieldBytes(fld)]));
// @tsvisor/core's exports are getters on a dictionary-mode object: the #VMEXIT path reads the
// enums through these module-level references instead.
const K = GuestExitKind;
const II = InterceptInsn;
const CA = CrAccessType;

/** The groups the VMRUN consistency checks read (APM 15.5.1), EVENTINJ apart. */
const CHECKED_GROUPS = (1 << VmcbCleanBit.I) | (1 << VmcbCleanBit.IOPM) | (1 << VmcbCleanBit.ASID) |
  (1 << VmcbCleanBit.CRX) | (1 << VmcbCleanBit.DRX) | (1 << VmcbCleanBit.SEG);

/** Groups I (intercept vectors) and IOPM (IOPM/MSRPM base addresses): the permission maps' inputs. */
const I_IOPM_GROUPS = (1 << VmcbCleanBit.I) | (1 << VmcbCleanBit.IOPM);

/** CR8 values as bigints (V_TPR is 4 bits): no BigInt built per VMRUN. */
const CR8_VALUES: readonly bigint[] = Array.from({ length: 16 }, (_, i) => BigInt(i));

/** CR0 bits a selective CR0 write may change without exiting (APM 15.9.2): TS and MP. */
const SVM_CR0_SELECTIVE_MASK = (1n << 3n) | (1n << 1n);
/** runWithPauseFilter: no PAUSE seen yet (a constant: `-1n` in an expression negates, and allocates, each time). */
const NO_PAUSE_TSC = -1n;
/** NP_ENABLE bit 0 as a number (the bigint constant converted once, not per VMRUN). */
const NP_ENABLE_BIT = Number(SVM_NESTED_CTL_NP_ENABLE);
/**
 * Word indexes (offset / 4, Vmcb.words) of the fields every VMRUN loads and every #VMEXIT
 * stores: the processor moves them by index, the low half first (APM Appendix B is little-endian).
 */
const W_RFLAGS = VMCB_SAVE.RFLAGS.offset >> 2;
const W_RIP = VMCB_SAVE.RIP.offset >> 2;
const W_RSP = VMCB_SAVE.RSP.offset >> 2;
const W_RAX = VMCB_SAVE.RAX.offset >> 2;
const W_CR2 = VMCB_SAVE.CR2.offset >> 2;
const W_DR6 = VMCB_SAVE.DR6.offset >> 2;
const W_INT_CTL = VMCB_CONTROL.INT_CTL.offset >> 2;
const W_INTERRUPT_SHADOW = VMCB_CONTROL.INTERRUPT_SHADOW.offset >> 2;
const W_EVENTINJ = VMCB_CONTROL.EVENTINJ.offset >> 2;
const W_NP_ENABLE = VMCB_CONTROL.NP_ENABLE.offset >> 2;
const W_EXITCODE = VMCB_CONTROL.EXITCODE.offset >> 2;
const W_EXITINFO1 = VMCB_CONTROL.EXITINFO1.offset >> 2;
const W_EXITINFO2 = VMCB_CONTROL.EXITINFO2.offset >> 2;
const W_EXITINTINFO = VMCB_CONTROL.EXITINTINFO.offset >> 2;
const W_NRIP = VMCB_CONTROL.NRIP.offset >> 2;
const W_VMCB_CLEAN = VMCB_CONTROL.VMCB_CLEAN.offset >> 2;
/** TLB_CONTROL is byte 0 of its word (0x05c). */
const W_TLB_CONTROL = VMCB_CONTROL.TLB_CONTROL.offset >> 2;
/**
 * The clean bits a resume (SvmHardware.vmrun's lean path) needs set: every group but TPR and
 * CR2, which KVM rewrites before each VMRUN (vmcb_mark_all_clean) and which the lean path loads
 * from memory as the general one does.
 */
const RESUME_HELD = ALL_CLEAN_GROUPS & ~((1 << VmcbCleanBit.TPR) | (1 << VmcbCleanBit.CR2));
/**
 * The imported constants the resume reads, as module-level copies: V8 folds a module `const`
 * into optimized code, where an imported binding is a property load each time.
 */
const EVTINJ_VALID = SVM_EVTINJ_VALID;
const AVIC_ENABLE = AVIC_ENABLE_MASK;
const TPR_MASK = V_TPR_MASK;
const IRQ_MASK = V_IRQ_MASK;
const SHADOW_MASK = SVM_INTERRUPT_SHADOW_MASK;
const VINTR_BIT = Intercept1.VINTR;
const PAUSE_INSN = InterceptInsn.PAUSE;
const ALL_GROUPS = ALL_CLEAN_GROUPS;
/** GUEST_INSN_LEN (0xd0) and the 15 instruction bytes after it: four words. */
const W_INSN = VMCB_CONTROL.GUEST_INSN_LEN.offset >> 2;
const INSN_LEN_OFFSET = VMCB_CONTROL.GUEST_INSN_LEN.offset;
const INSN_BYTES_OFFSET = VMCB_CONTROL.GUEST_INSN_BYTES.offset;
const CPL_OFFSET = VMCB_SAVE.CPL.offset;
const V_TPR_OFFSET = VMCB_CONTROL.V_TPR.offset;
/** A bigint register → two words of a VMCB (modulo 2^64), without a BigInt operation. */
const BIG = new BigUint64Array(1);
const BIG32 = new Int32Array(BIG.buffer);
function storeBig(w: Int32Array, i: number, v: bigint): void {
  BIG[0] = v;
  w[i] = BIG32[0];
  w[i + 1] = BIG32[1];
}
/** VMRUN's load of RFLAGS, RIP, RSP and RAX (APM 15.5.2; in no clean group: every VMRUN). */
function loadRegisters(s: CpuState, w: Int32Array): void {
  s.rflags = w[W_RFLAGS] >>> 0;
  s.ripLo = w[W_RIP];
  s.ripHi = w[W_RIP + 1];
  s.gprLo[4] = w[W_RSP];
  s.gprHi[4] = w[W_RSP + 1];
  s.gprLo[0] = w[W_RAX];
  s.gprHi[0] = w[W_RAX + 1];
}
/** SVM_CR_VALID (bit 63, APM 15.8.1) as EXITINFO1's high half. */
const SVM_CR_VALID_HI = Number(SVM_CR_VALID >> 32n) >>> 0;

/**
 * The guest-mode rules of one VMRUN, derived from the (effective) VMCB: the intercept
 * vectors, the IOPM and MSRPM at their physical addresses, V_IRQ+VINTR, N_CR3 and the ASID.
 */
export class SvmGuestModeRules implements GuestModeRules {
  readonly insn = new Uint8Array(InterceptInsn.COUNT);
  interceptCr = 0;
  interceptDr = 0;
  interceptExceptions = 0;
  misc1 = 0;
  misc2 = 0;
  misc3 = 0;
  iopm: Iopm | null = null;
  msrpm: Msrpm | null = null;
  irqWindowExiting = false;
  readonly nmiWindowExiting = false;
  shutdownExits = false;
  tdp: TdpWalker | null = null;
  tlbTag = 0;
  readonly monitorTrapFlag = false;
  readonly preemptionDeadlineTsc = -1n;

  constructor(private readonly cpu: X86Cpu) {}

  exceptionExits(vector: number): boolean {
    return vector < 32 && ((this.interceptExceptions >>> vector) & 1) === 1;
  }
  ioExits(port: number, size: number): boolean {
    return ((this.misc1 >>> Intercept1.IOIO_PROT) & 1) === 1 && this.iopm!.intercepts(port, size);
  }
  msrExits(index: number, isWrite: boolean): boolean {
    return ((this.misc1 >>> Intercept1.MSR_PROT) & 1) === 1 && this.msrpm!.intercepts(index, isWrite);
  }
  crWriteExits(cr: number, value: bigint): boolean {
    if ((this.interceptCr >>> (16 + cr)) & 1) return true;
    if (cr === 0 && (this.misc1 >>> Intercept1.CR0_SEL_WRITE) & 1) {
      return ((this.cpu.state.cr0 ^ value) & ~SVM_CR0_SELECTIVE_MASK & 0xffffffffn) !== 0n;
    }
    return false;
  }
  crReadExits(cr: number): boolean {
    return ((this.interceptCr >>> cr) & 1) === 1;
  }
  crReadValue(_cr: number, real: bigint): bigint {
    return real;
  }
  drExits(dr: number, isWrite: boolean): boolean {
    return ((this.interceptDr >>> (dr + (isWrite ? 16 : 0))) & 1) === 1;
  }
  /** Intercept vector 4 bits 31:16: CR0–15 write traps (APM Table B-1), taken after the write completes. */
  crWriteTraps(cr: number): boolean {
    return ((this.misc2 >>> (INTERCEPT2_CR_WRITE_TRAP_SHIFT + cr)) & 1) === 1;
  }
  /** Intercept vector 4 bit 15: EFER write trap. */
  eferWriteTraps = false;
  /** Intercept vector 3 bit 3 (APM Table B-1): an INIT signal in the guest is #VMEXIT(INIT). */
  initSipiExits = false;
  /** AVIC (APM 15.29): the APIC BAR page and CR8 go to the backing page while AVIC_ENABLE is set. */
  apicPage: ApicPageHandler | null = null;
  cr8: Cr8Virtualization | null = null;
}


/**
 * One processor's SVM unit. Owns the clean-bit cache and the rules object (no allocation per
 * VMRUN on the hot path beyond the permission-map views, which are cached by address).
 */
export class SvmHardware {
  readonly rules: SvmGuestModeRules;
  /** The processor's AVIC unit (avic-hardware.ts). */
  readonly avic: AvicHardware;
  /**
   * Host-physical address of the VMCB whose clean-bit groups the processor holds (-1: none).
   * The copy itself is kept copy-on-write with the VMCB object (Vmcb.cachedWords).
   */
  private cachePa = -1;
  /** X86Cpu.stateEpoch at the last #VMEXIT: unchanged means nothing but guest execution touched the processor since. */
  private heldEpoch = -1;
  /** Scratch page: the VMCB as this VMRUN sees it (memory overlaid with clean cached groups). */
  private readonly effective = new Vmcb(new Uint8Array(VMCB_SIZE), -1);
  private iopmCache: Iopm | null = null;
  /** The misc intercept words rules.insn was last derived from (NaN: never). */
  private readonly insnFrom = [NaN, NaN, NaN];
  private msrpmCache: Msrpm | null = null;
  /**
   * The segment-store skip. After #VMEXIT: the VMCB's `segStores` and the processor's
   * `segWrites` right after the stores (-1: the segment fields were not stored from the
   * processor). After VMRUN's load: the same pair, when the processor's eight segment
   * registers then equal the VMCB's segment fields in memory (-1 otherwise).
   */
  private segExitStores = -1;
  private segExitWrites = -1;
  private segEntryStores = -1;
  private segEntryWrites = -1;
  /** The VMCB object the entry counts are of. */
  private segVmcb: Vmcb | null = null;
  /** The VMCB the last #VMEXIT stored into, and its `msrStores` right after. */
  private exitVmcb: Vmcb | null = null;
  private msrExitStores = -1;
  /** The system-register store skip (vmexit): that VMCB's `sysStores`, and the processor state and its `sysWrites`, right after the last #VMEXIT. */
  private sysExitStores = -1;
  private sysExitWrites = -1;
  private sysExitState: unknown = null;
  private walker: NptWalker | null = null;
  /**
   * The V_TPR skip (vmexit): the processor's sysWrites right after VMRUN loaded CR8, and the
   * V_TPR value it loaded. The guest wrote no CR8 since (same count) and V_TPR in memory still
   * holds that value: the #VMEXIT store of CR8 into V_TPR writes what is there.
   */
  private entrySysWrites = -1;
  private entryVTpr = -1;
  /** The consistency check the last VMRUN failed (EXITCODE = VMEXIT_INVALID), or null. */
  failure: VmrunCheckFailure | null = null;
  /** Flushes performed because of TLB_CONTROL (for tests and statistics). */
  tlbControlFlushes = 0;
  /**
   * For tests and diagnostics: false sends every VMRUN down the general path, so that a
   * scenario can be run both ways and the results compared. The lean path is an
   * implementation shortcut with the same architectural result; this switch changes nothing
   * a guest or a VMM can observe except the `resumes` count.
   */
  resumeEnabled = true;
  /** VMRUNs that took the lean resume path (for tests and statistics). */
  resumes = 0;
  /**
   * The VMCB of the last #VMEXIT while the processor's cache is still its copy (`exitVmcb`,
   * with `cachePa` its address), null after invalidateCache or a failed VMRUN.
   */
  private resumeVmcb: Vmcb | null = null;
  /**
   * The resume's CR2 load: cr2Big is the value of the 64-bit words (cr2Lo, cr2Hi) — what read64
   * returns for them (0n for 0, 0) — last seen in a CR2 slot.
   */
  private cr2Big = 0n;
  private cr2Lo = 0;
  private cr2Hi = 0;
  /** The processor's CR2 equals cr2Big: the resume's #VMEXIT found it so (false after a general-path #VMEXIT). */
  private cr2InCpu = false;
  /**
   * The processor's CR8 is CR8_VALUES[cr8Tpr], loaded by a resume, while CpuState.sysWrites is
   * still cr8SysWrites (a CR8 write bumps it). -1: no such record (a general-path VMRUN loaded CR8).
   */
  private cr8Tpr = -1;
  private cr8SysWrites = -1;
  /** DR6 as the last #VMEXIT stored it: the bigint and the words it became (0n is words 0, 0). */
  private dr6Big = 0n;
  private dr6Lo = 0;
  private dr6Hi = 0;
  /** NRIP as recordExit last stored it: the bigint and the words it became (0n is words 0, 0). */
  private nripBig = 0n;
  private nripLo = 0;
  private nripHi = 0;

  constructor(readonly cpu: X86Cpu, readonly host: HostMemory) {
    this.rules = new SvmGuestModeRules(cpu);
    this.avic = new AvicHardware(cpu, host);
  }

  /** Forget the cached VMCB (as a different VMCB or a processor reset would). */
  invalidateCache(): void {
    this.cachePa = -1;
    this.resumeVmcb = null;
  }

  /**
   * The VMCB as VMRUN reads it: memory, except that a group whose clean bit is set is taken
   * from the processor's cache when that cache belongs to this VMCB (APM 15.15.3: "the
   * processor may use its cached copy"). A backend that changes a field without clearing the
   * group's clean bit therefore runs with the stale value, as on hardware.
   */
  effectiveVmcb(vmcb: Vmcb): Vmcb {
    if (vmcb.pa !== this.cachePa) return vmcb;
    // A clean group nobody wrote since #VMEXIT reads the same from memory as from the copy:
    // only a group changed without clearing its clean bit makes the VMCB differ from memory.
    const stale = vmcb.read32(VMCB_CONTROL.VMCB_CLEAN) & vmcb.writtenGroups;
    if (stale === 0) return vmcb;
    const eff = this.effective;
    eff.bytes.set(vmcb.bytes);
    const dst = eff.view;
    const cached = vmcb.cachedWords;
    for (let bit = 0; bit < VmcbCleanBit.COUNT; bit++) {
      if (!((stale >>> bit) & 1)) continue;
      const ranges = CLEAN_RANGES[bit];
      for (let i = 0; i < ranges.length; i += 2) {
        for (let o = ranges[i], end = o + ranges[i + 1]; o < end; o++) {
          dst.setUint8(o, (cached[o >> 2] >>> (8 * (o & 3))) & 0xff);
        }
      }
    }
    return eff;
  }

  /**
   * VMRUN: checks, load, run under the intercepts for at most `budget` instructions, #VMEXIT.
   * The caller has put the GPRs other than RAX/RSP into the processor (KVM's __svm_vcpu_run).
   * Returns the neutral exit (for diagnostics; the architectural result is in the VMCB), and
   * NONE with `failure` set when a consistency check failed.
   */
  vmrun(vmcb: Vmcb, budget: number): GuestExitKind {
    // The resume (the common re-entry: KVM's fastpath, or any VMRUN after a VMM that wrote only
    // RAX/RSP/RIP/RFLAGS/INTERRUPT_SHADOW and the TPR/CR2 groups): the same VMCB the processor
    // last exited from, which has run nothing else since (stateEpoch); every clean bit set
    // except TPR and CR2, and no clean group written since #VMEXIT (so the processor's copy is
    // memory, APM 15.15.3); no accessor write to the FS/GS/TR/LDTR/GDTR/IDTR or VMSAVE MSR
    // slots, no segment load in the processor (the segment and MSR skips of the general path);
    // no EVENTINJ (15.20), TLB_CONTROL = DO_NOTHING (15.16.1) and AVIC off (15.29, whose pages
    // the general path loads). Everything the general path would load from a held group is then
    // already in the processor, and its consistency checks (15.5.1) would not run.
    const w = vmcb.words;
    const cleanBits = w[W_VMCB_CLEAN];
    const intCtl = w[W_INT_CTL];
    if (!(vmcb === this.resumeVmcb && this.resumeEnabled === true && this.cpu.stateEpoch === this.heldEpoch &&
      (cleanBits & RESUME_HELD) === RESUME_HELD && (cleanBits & vmcb.writtenGroups) === 0 &&
      vmcb.segStores === this.segExitStores && vmcb.msrStores === this.msrExitStores && this.cpu.state.segWrites === this.segExitWrites &&
      ((w[W_EVENTINJ] & EVTINJ_VALID) | (w[W_TLB_CONTROL] & 0xff) | (intCtl & AVIC_ENABLE)) === 0)) {
      return this.vmrunGeneral(vmcb, budget);
    }
    // The lean path (the resume): the general path's result, doing only what can differ from
    // the processor's state after the last #VMEXIT. Loads RFLAGS, RIP, RSP, RAX, CR2, V_TPR →
    // CR8 and the interrupt shadow (APM 15.5.2; none of them is in a held clean group); derives
    // VINTR exiting from V_IRQ (group TPR, always read). The intercepts, permission maps, ASID,
    // nested paging, TSC_OFFSET and the save-area groups are those the processor holds
    // (15.15.3), as the general path's buildRules/loadGuestState keep them. #VMEXIT (15.6)
    // stores the segment and system registers only when the general path would (the same
    // counters), CR2 and DR6 only when they differ from what the VMCB holds. Nothing but this
    // code writes the VMCB between this load and that store (AVIC, the one unit that could, is
    // off). vmrun-resume.test.ts runs each case both ways and compares the VMCB after every exit.
    const s = this.cpu.state;
    this.resumes++;
    this.failure = null;
    // CR2 (group CR2, always loaded): the bigint last built for the words the slot holds; not
    // stored again into the processor when it holds that value since the last #VMEXIT.
    const cr2Lo = w[W_CR2], cr2Hi = w[W_CR2 + 1];
    if (cr2Lo !== this.cr2Lo || cr2Hi !== this.cr2Hi) {
      this.cr2Big = vmcb.read64(VMCB_SAVE.CR2);
      this.cr2Lo = cr2Lo;
      this.cr2Hi = cr2Hi;
      s.cr2 = this.cr2Big;
    } else if (this.cr2InCpu === false) {
      s.cr2 = this.cr2Big;
    }
    // V_TPR → CR8 (APM 15.21.1), unless the processor's CR8 is that value already: loaded by
    // a resume from the same V_TPR with no CR8 write since (CpuState.sysWrites counts them).
    const vTprIn = intCtl & TPR_MASK;
    if (vTprIn !== this.cr8Tpr || s.sysWrites !== this.cr8SysWrites) {
      s.cr8 = CR8_VALUES[vTprIn];
      this.cr8Tpr = vTprIn;
      this.cr8SysWrites = s.sysWrites;
    }
    loadRegisters(s, w);
    s.stiShadow = (w[W_INTERRUPT_SHADOW] & SHADOW_MASK) !== 0;
    s.movSsShadow = false;
    s.activity = 0;
    const entrySysWrites = s.sysWrites;
    // The rules of groups I, IOPM, ASID and NP are the previous VMRUN's; V_IRQ and AVIC_ENABLE
    // are in group TPR. AVIC is off here: no APIC page, no CR8 redirection.
    const r = this.rules;
    r.irqWindowExiting = (intCtl & IRQ_MASK) !== 0 && ((r.misc1 >>> VINTR_BIT) & 1) === 1;
    r.apicPage = null;
    r.cr8 = null;
    // No EVENTINJ (APM 15.20).
    this.cpu.injection.valid = false;
    const avic = this.avic;
    avic.inGuest = true;
    let kind: GuestExitKind;
    if (r.insn[PAUSE_INSN] === 0) {
      this.pausesFiltered = 0;
      kind = this.cpu.runGuest(r, budget);
    } else {
      kind = this.runWithPauseFilter(vmcb, budget);
    }
    avic.inGuest = false;

    // #VMEXIT (APM 15.6), storing what vmexit() stores. The segment fields held the processor's
    // registers at this VMRUN (the resume condition): stored when the processor loaded a
    // segment register since. The system registers likewise (sysWrites; the store counters
    // were checked at VMRUN). The processor's own stores take no copy-on-write snapshot.
    let stored = false;
    if (s.segWrites !== this.segExitWrites) {
      vmcb.writtenGroups = ALL_GROUPS;
      this.storeSegments(vmcb);
      stored = true;
    }
    if (stored || s.sysWrites !== this.sysExitWrites || vmcb.sysStores !== this.sysExitStores || this.sysExitState !== s) {
      vmcb.writtenGroups = ALL_GROUPS;
      this.storeSystem(vmcb, vmcb);
      stored = true;
    }
    vmcb.bytes[CPL_OFFSET] = s.cpl;
    // CR2 and DR6 (exception delivery writes them): the same value as loaded / last stored and
    // the slot still holding its words, the store would write what is there. (Nothing writes
    // the VMCB while the guest runs here, AVIC being off: the CR2 slot holds what was loaded.)
    if (s.cr2 !== this.cr2Big) {
      storeBig(w, W_CR2, s.cr2);
      this.cr2InCpu = false;
    } else {
      this.cr2InCpu = true;
    }
    if (s.dr6 !== this.dr6Big || w[W_DR6] !== this.dr6Lo || w[W_DR6 + 1] !== this.dr6Hi) this.storeDr6(w, s.dr6);
    w[W_RFLAGS] = s.rflags; w[W_RFLAGS + 1] = 0;
    w[W_RIP] = s.ripLo; w[W_RIP + 1] = s.ripHi;
    w[W_RSP] = s.gprLo[4]; w[W_RSP + 1] = s.gprHi[4];
    w[W_RAX] = s.gprLo[0]; w[W_RAX + 1] = s.gprHi[0];
    // V_TPR (APM 15.21.1), as in vmexit(): the guest wrote no CR8 (sysWrites) and V_TPR still
    // holds what was loaded (nothing wrote the VMCB since), the store writes what is there.
    if (s.sysWrites !== entrySysWrites) {
      const b = vmcb.bytes;
      b[V_TPR_OFFSET] = (b[V_TPR_OFFSET] & ~TPR_MASK) | (Number(s.cr8) & 0xf);
    }
    // (The processor set the shadows while it ran: TypeScript's narrowing from the load above does not hold.)
    w[W_INTERRUPT_SHADOW] = s.stiShadow === true || (s.movSsShadow as boolean) === true ? SHADOW_MASK : 0; w[W_INTERRUPT_SHADOW + 1] = 0;
    w[W_EVENTINJ] = 0; w[W_EVENTINJ + 1] = 0;
    this.cpu.injection.valid = false;
    this.recordExit(vmcb, this.cpu.exit);
    // vmexit()'s bookkeeping (cachePa, exitVmcb and sysExitState are unchanged; the store
    // counters move only with the stores above).
    vmcb.writtenGroups = 0;
    this.heldEpoch = this.cpu.stateEpoch;
    this.segExitWrites = s.segWrites;
    this.sysExitWrites = s.sysWrites;
    if (stored) {
      this.segExitStores = vmcb.segStores;
      this.msrExitStores = vmcb.msrStores;
      this.sysExitStores = vmcb.sysStores;
    }
    return kind;
  }

  /** VMRUN's general path: every case the resume (vmrun) does not cover. */
  private vmrunGeneral(vmcb: Vmcb, budget: number): GuestExitKind {
    // (loadGuestState loads CR8 from this VMCB: the resume's record of it no longer holds.)
    this.cr8Tpr = -1;
    const eff = this.effectiveVmcb(vmcb);
    // Groups VMRUN takes from the processor's copy (clean bits set, the copy is this VMCB's): their
    // values are what the last #VMEXIT stored, and the processor still holds them unless it ran
    // outside guest mode since (emulation or reset: X86Cpu.stateEpoch moved).
    const clean = this.cachePa === vmcb.pa ? vmcb.read32(VMCB_CONTROL.VMCB_CLEAN) : 0;
    const held = this.cpu.stateEpoch === this.heldEpoch ? clean : 0;
    // APM 15.5.1 checks: state the processor itself stored at #VMEXIT is consistent by
    // construction, so they run when a group they read was not served from the copy (or an
    // event is being injected).
    const failure = (clean & CHECKED_GROUPS) === CHECKED_GROUPS && !(eff.readLo(VMCB_CONTROL.EVENTINJ) & SVM_EVTINJ_VALID)
      ? null : vmrunConsistencyCheck(eff);
    this.failure = failure;
    if (failure) {
      // APM 15.5.1: an illegal state makes VMRUN exit at once with VMEXIT_INVALID; no guest state is loaded.
      vmcb.write64(VMCB_CONTROL.EXITCODE, SVM_EXIT_ERR_U64);
      vmcb.write64(VMCB_CONTROL.EXITINFO1, 0n);
      vmcb.write64(VMCB_CONTROL.EXITINFO2, 0n);
      vmcb.write64(VMCB_CONTROL.EXITINTINFO, 0n);
      this.cachePa = -1;
      this.resumeVmcb = null;
      return K.NONE;
    }
    this.tlbControl(eff);
    // The segment fields still hold what the last #VMEXIT stored (no write to them through the
    // Vmcb accessors since; a raw rewrite of the page goes with invalidateCache) and the
    // processor has loaded no segment register and run nothing outside this guest since
    // (segWrites, stateEpoch): the processor already holds the eight segment registers.
    const s = this.cpu.state;
    const stored = this.cachePa === vmcb.pa && this.exitVmcb === vmcb && this.cpu.stateEpoch === this.heldEpoch;
    const segsHeld = stored && vmcb.segStores === this.segExitStores && s.segWrites === this.segExitWrites;
    // Likewise STAR…SYSENTER_EIP (no clean bit: VMLOAD state): the processor still holds what
    // the last #VMEXIT stored when no accessor wrote those slots since and it ran nothing else.
    const msrsHeld = stored && vmcb.msrStores === this.msrExitStores;
    this.loadGuestState(eff, held, segsHeld, msrsHeld);
    this.entrySysWrites = s.sysWrites;
    this.entryVTpr = eff.bytes[V_TPR_OFFSET] & V_TPR_MASK;
    // The processor's segment registers now equal the VMCB's fields in memory, unless the
    // processor took ES/CS/SS/DS from its copy of a SEG group written while marked clean.
    if (eff === vmcb || !((vmcb.read32(VMCB_CONTROL.VMCB_CLEAN) & vmcb.writtenGroups) >>> VmcbCleanBit.SEG & 1)) {
      this.segEntryStores = vmcb.segStores;
      this.segEntryWrites = s.segWrites;
      this.segVmcb = vmcb;
    } else {
      this.segEntryStores = -1;
    }
    this.buildRules(eff, held);
    this.injectEvent(eff);
    // (The cache is refreshed at #VMEXIT, which always follows: it then holds the VMCB as stored.)
    this.avic.inGuest = true;
    const kind = this.runWithPauseFilter(eff, budget);
    this.avic.inGuest = false;
    this.vmexit(vmcb, eff);
    return kind;
  }

  /** PAUSE instructions the filter let through in the last VMRUN (for tests and statistics). */
  pausesFiltered = 0;

  /**
   * APM 15.14.4 (pause filter): with the PAUSE intercept set and PAUSE_FILTER_COUNT = n, the
   * processor executes n PAUSEs without exiting, counting down, and exits on the next one.
   * The count is loaded from the VMCB at each VMRUN. With a threshold, a PAUSE more than
   * `threshold` cycles after the previous one reloads the count.
   */
  private runWithPauseFilter(eff: Vmcb, budget: number): GuestExitKind {
    const s = this.cpu.state;
    this.pausesFiltered = 0;
    // Without the PAUSE intercept there is nothing to filter (the count is not consulted).
    if (this.rules.insn[II.PAUSE] === 0) return this.cpu.runGuest(this.rules, budget);
    const initial = eff.read16(VMCB_CONTROL.PAUSE_FILTER_COUNT);
    const threshold = eff.read16(VMCB_CONTROL.PAUSE_FILTER_THRESHOLD);
    let count = initial;
    let lastPauseTsc = NO_PAUSE_TSC;
    const start = s.instructionsRetired;
    for (;;) {
      const kind = this.cpu.runGuest(this.rules, Math.max(1, budget - (s.instructionsRetired - start)));
      const ex = this.cpu.exit;
      if (!(kind === K.INSTRUCTION && ex.insn === II.PAUSE)) return kind;
      if (threshold && lastPauseTsc >= 0n && s.tsc - lastPauseTsc > BigInt(threshold)) count = initial;
      lastPauseTsc = s.tsc;
      if (count === 0) return kind;
      count--;
      // The filtered PAUSE executes: it has no effect beyond retiring.
      s.rip = ex.nextRip;
      s.instructionsRetired++;
      s.stiShadow = false;
      s.movSsShadow = false;
      this.pausesFiltered++;
      if (s.instructionsRetired - start >= budget) {
        ex.kind = K.BUDGET;
        return K.BUDGET;
      }
    }
  }

  /** APM 15.16.1: TLB_CONTROL takes effect at this VMRUN. */
  private tlbControl(eff: Vmcb): void {
    const ctl = eff.read8(VMCB_CONTROL.TLB_CONTROL);
    switch (ctl) {
      case TlbControl.DO_NOTHING: return;
      case TlbControl.FLUSH_ALL_ASID: this.cpu.flushTlbAll(); break;
      case TlbControl.FLUSH_ASID: case TlbControl.FLUSH_ASID_LOCAL: this.cpu.flushTlbTag(eff.read32(VMCB_CONTROL.GUEST_ASID)); break;
      default: this.cpu.flushTlbAll(); break;
    }
    this.tlbControlFlushes++;
  }

  /** Load the processor from the save area (APM 15.5.2 "VMRUN … loads guest state"). */
  loadGuestState(eff: Vmcb, held = 0, segsHeld = false, msrsHeld = false): void {
    const s = this.cpu.state;
    // ES, CS, SS, DS and CPL are the SEG group: still in the processor when held. `segsHeld`:
    // all eight segment registers are (vmrun), so they are neither loaded nor counted as loaded.
    const segHeld = (held >>> VmcbCleanBit.SEG) & 1;
    if (!segsHeld) {
      for (let i = 0; i < 8; i++) {
        if (segHeld && i < 4) continue;
        const fld = SREG_FIELDS[i];
        s.segSel[i] = eff.segSelector(fld);
        s.segBaseLo[i] = eff.segBaseLo(fld) | 0;
        s.segBaseHi[i] = eff.segBaseHi(fld) | 0;
        s.segLimit[i] = eff.segLimit(fld);
        s.segAttr[i] = attribToCpu(eff.segAttrib(fld));
      }
      s.segWrites++;
    }
    if (!((held >>> VmcbCleanBit.DT) & 1)) {
      s.gdtrBase = eff.segBase(VMCB_SAVE.GDTR);
      s.gdtrLimit = eff.segLimit(VMCB_SAVE.GDTR) & 0xffff;
      s.idtrBase = eff.segBase(VMCB_SAVE.IDTR);
      s.idtrLimit = eff.segLimit(VMCB_SAVE.IDTR) & 0xffff;
    }
    // APM 15.5.1: the CPL is taken from the VMCB, not from SS or CS.
    if (!segHeld) s.cpl = eff.read8(VMCB_SAVE.CPL) & 3;
    if (!((held >>> VmcbCleanBit.CRX) & 1)) {
      s.efer = eff.read64(VMCB_SAVE.EFER);
      s.cr0 = eff.read64(VMCB_SAVE.CR0);
      s.cr3 = eff.read64(VMCB_SAVE.CR3);
      s.cr4 = eff.read64(VMCB_SAVE.CR4);
    }
    const w = eff.words;
    s.cr2 = eff.read64(VMCB_SAVE.CR2);
    s.cr8 = CR8_VALUES[eff.bytes[V_TPR_OFFSET] & V_TPR_MASK];
    if (!((held >>> VmcbCleanBit.DRX) & 1)) {
      s.dr6 = eff.read64(VMCB_SAVE.DR6);
      s.dr7 = eff.read64(VMCB_SAVE.DR7);
    }
    loadRegisters(s, w);
    if (!msrsHeld) {
      s.star = eff.read64(VMCB_SAVE.STAR);
      s.lstar = eff.read64(VMCB_SAVE.LSTAR);
      s.cstar = eff.read64(VMCB_SAVE.CSTAR);
      s.sfmask = eff.read64(VMCB_SAVE.SFMASK);
      s.kernelGsBase = eff.read64(VMCB_SAVE.KERNEL_GS_BASE);
      s.sysenterCs = eff.read64(VMCB_SAVE.SYSENTER_CS);
      s.sysenterEsp = eff.read64(VMCB_SAVE.SYSENTER_ESP);
      s.sysenterEip = eff.read64(VMCB_SAVE.SYSENTER_EIP);
    }
    if (!((held >>> VmcbCleanBit.LBR) & 1)) s.debugctl = eff.read64(VMCB_SAVE.DBGCTL);
    const np = (w[W_NP_ENABLE] & NP_ENABLE_BIT) !== 0;
    // APM 15.25.8: with nested paging the guest's PAT is G_PAT.
    if (np && !((held >>> VmcbCleanBit.NP) & 1)) s.pat = eff.read64(VMCB_SAVE.G_PAT);
    // TSC_OFFSET is in group I (APM 15.15.3): held, the processor still has the one it loaded.
    if (!((held >>> VmcbCleanBit.I) & 1)) s.tscOffset = eff.read64(VMCB_CONTROL.TSC_OFFSET);
    const shadow = (w[W_INTERRUPT_SHADOW] & SVM_INTERRUPT_SHADOW_MASK) !== 0;
    s.stiShadow = shadow;
    s.movSsShadow = false;
    s.activity = 0;
  }

  private buildRules(eff: Vmcb, held = 0): void {
    const r = this.rules;
    // The intercept vectors (group I) as the previous VMRUN derived them, when that group is held.
    if (!((held >>> VmcbCleanBit.I) & 1)) {
      r.interceptCr = eff.read32(VMCB_CONTROL.INTERCEPT_CR);
      r.interceptDr = eff.read32(VMCB_CONTROL.INTERCEPT_DR);
      r.interceptExceptions = eff.read32(VMCB_CONTROL.INTERCEPT_EXCEPTIONS);
      r.misc1 = eff.read32(VMCB_CONTROL.INTERCEPT_MISC1);
      r.misc2 = eff.read32(VMCB_CONTROL.INTERCEPT_MISC2);
      r.misc3 = eff.read32(VMCB_CONTROL.INTERCEPT_MISC3);
    }
    if (r.misc1 !== this.insnFrom[0] || r.misc2 !== this.insnFrom[1] || r.misc3 !== this.insnFrom[2]) {
      this.insnFrom[0] = r.misc1;
      this.insnFrom[1] = r.misc2;
      this.insnFrom[2] = r.misc3;
      r.insn.fill(0);
      for (const [insn, word, bit] of INSN_INTERCEPTS) {
        const w = word === 'MISC1' ? r.misc1 : word === 'MISC2' ? r.misc2 : r.misc3;
        r.insn[insn] = (w >>> bit) & 1;
      }
    }
    // The permission maps: what the previous VMRUN (of this VMCB) chose while groups I and IOPM are held.
    if ((held & I_IOPM_GROUPS) !== I_IOPM_GROUPS) {
      const iopmPa = eff.readHi(VMCB_CONTROL.IOPM_BASE_PA) * 0x1_0000_0000 + ((eff.readLo(VMCB_CONTROL.IOPM_BASE_PA) & ~0xfff) >>> 0);
      const msrpmPa = eff.readHi(VMCB_CONTROL.MSRPM_BASE_PA) * 0x1_0000_0000 + ((eff.readLo(VMCB_CONTROL.MSRPM_BASE_PA) & ~0xfff) >>> 0);
      if (r.misc1 & (1 << Intercept1.IOIO_PROT)) {
        if (!this.iopmCache || this.iopmCache.pa !== iopmPa) this.iopmCache = new Iopm(this.host, iopmPa);
        r.iopm = this.iopmCache;
      }
      if (r.misc1 & (1 << Intercept1.MSR_PROT)) {
        if (!this.msrpmCache || this.msrpmCache.pa !== msrpmPa) this.msrpmCache = new Msrpm(this.host, msrpmPa);
        r.msrpm = this.msrpmCache;
      }
    }
    const intCtl = eff.words[W_INT_CTL];
    const vIrq = (intCtl & V_IRQ_MASK) !== 0;
    r.irqWindowExiting = vIrq && ((r.misc1 >>> Intercept1.VINTR) & 1) === 1;
    r.shutdownExits = ((r.misc1 >>> Intercept1.SHUTDOWN) & 1) === 1;
    r.eferWriteTraps = ((r.misc2 >>> Intercept2.EFER_WRITE_TRAP) & 1) === 1;
    r.initSipiExits = ((r.misc1 >>> Intercept1.INIT) & 1) === 1;
    if (intCtl & AVIC_ENABLE_MASK) {
      // APM 15.29: AVIC_ENABLE redirects the APIC BAR page to the backing page and CR8 to its TPR.
      const avic = this.avic;
      avic.load(eff.read64(VMCB_CONTROL.AVIC_APIC_BAR), eff.read64(VMCB_CONTROL.AVIC_BACKING_PAGE),
        eff.read64(VMCB_CONTROL.AVIC_LOGICAL_TABLE), eff.read64(VMCB_CONTROL.AVIC_PHYSICAL_TABLE));
      avic.cr8WriteTrap = r.crWriteTraps(8);
      r.apicPage = avic;
      r.cr8 = avic;
    } else {
      r.apicPage = null;
      r.cr8 = null;
    }
    // The ASID and the nested-paging walker: as the previous VMRUN set them while ASID and NP are held.
    if (!((held >>> VmcbCleanBit.ASID) & 1)) r.tlbTag = eff.read32(VMCB_CONTROL.GUEST_ASID);
    if (!((held >>> VmcbCleanBit.NP) & 1)) {
      if ((eff.words[W_NP_ENABLE] & NP_ENABLE_BIT) !== 0) {
        const ncr3 = eff.read64(VMCB_CONTROL.N_CR3);
        if (!this.walker || this.walker.nCr3 !== ncr3) this.walker = new NptWalker(this.host, ncr3, true);
        r.tdp = this.walker;
      } else {
        r.tdp = null;
      }
    }
  }

  /** APM 15.20: EVENTINJ is delivered at VMRUN, after the guest state is loaded. */
  private injectEvent(eff: Vmcb): void {
    const inj = this.cpu.injection;
    const lo = eff.readLo(VMCB_CONTROL.EVENTINJ);
    if (!(lo & SVM_EVTINJ_VALID)) {
      inj.valid = false;
      return;
    }
    const type = (lo & SVM_EVTINJ_TYPE_MASK) >>> SVM_EVTINJ_TYPE_SHIFT;
    inj.valid = true;
    // APM 15.20: for TYPE = NMI the vector field is ignored; an NMI is always vector 2.
    inj.vector = type === SvmEventType.NMI ? 2 : lo & 0xff;
    inj.hasErrorCode = (lo & SVM_EVTINJ_VALID_ERR) !== 0;
    inj.errorCode = eff.readHi(VMCB_CONTROL.EVENTINJ);
    inj.insnLength = 0;
    inj.type = type === SvmEventType.NMI ? EventType.NMI
      : type === SvmEventType.EXEPT ? EventType.HARDWARE_EXCEPTION
        : type === SvmEventType.SOFT ? EventType.SOFTWARE_INTERRUPT : EventType.EXTERNAL_INTERRUPT;
    // With NRIP save, an injected software interrupt (TYPE 4) or #BP/#OF (INT3/INTO) pushes NRIP
    // as its return address; other events push the save-area RIP (APM 15.20, 15.7.1). NRIP = 0
    // (a VMM that does not use it) pushes RIP, as without the feature.
    const softExc = type === SvmEventType.EXEPT && (inj.vector === 3 || inj.vector === 4);
    if (type === SvmEventType.SOFT || softExc) {
      const nrip = eff.read64(VMCB_CONTROL.NRIP);
      if (nrip !== 0n) inj.insnLength = Number(BigInt.asIntN(64, nrip - eff.read64(VMCB_SAVE.RIP)));
      if (softExc) inj.type = EventType.SOFTWARE_EXCEPTION;
    }
  }

  /** #VMEXIT (APM 15.6): save guest state, record the exit, and refresh the processor's cache. */
  private vmexit(vmcb: Vmcb, eff: Vmcb): void {
    const s = this.cpu.state;
    // The processor's own stores: no copy-on-write snapshot (its cache is memory after them).
    vmcb.writtenGroups = ALL_CLEAN_GROUPS;
    // APM 15.6 stores ES…LDTR at every #VMEXIT. When the fields held the processor's segment
    // registers at VMRUN and neither side changed since (no accessor write to the fields, no
    // segment load in the processor: CpuState.segWrites), that store writes what they hold.
    if (vmcb.segStores !== this.segEntryStores || this.segVmcb !== vmcb || s.segWrites !== this.segEntryWrites) this.storeSegments(vmcb);
    // The same for GDTR/IDTR, EFER, CR0/CR3/CR4, DR7, the MSR slots, DBGCTL and G_PAT: when the
    // previous #VMEXIT stored them into this VMCB, no accessor wrote those slots since (segStores,
    // sysStores, msrStores) and the processor wrote none of those registers (CpuState.sysWrites),
    // the store writes what they hold. CR2 and DR6 (exception delivery writes them) always.
    const sysHeld = this.exitVmcb === vmcb && this.sysExitState === s && s.sysWrites === this.sysExitWrites &&
      vmcb.sysStores === this.sysExitStores && vmcb.msrStores === this.msrExitStores && vmcb.segStores === this.segExitStores;
    if (!sysHeld) this.storeSystem(vmcb, eff);
    // The state every #VMEXIT stores, by word index (Vmcb.words; no store counter is involved:
    // they are sampled below, after the stores).
    const w = vmcb.words;
    vmcb.bytes[CPL_OFFSET] = s.cpl;
    storeBig(w, W_CR2, s.cr2);
    this.storeDr6(w, s.dr6);
    this.cr2InCpu = false;
    w[W_RFLAGS] = s.rflags; w[W_RFLAGS + 1] = 0;
    w[W_RIP] = s.ripLo; w[W_RIP + 1] = s.ripHi;
    w[W_RSP] = s.gprLo[4]; w[W_RSP + 1] = s.gprHi[4];
    w[W_RAX] = s.gprLo[0]; w[W_RAX + 1] = s.gprHi[0];
    // V_TPR tracks the guest's CR8 (APM 15.21.1); V_IRQ stays as the backend left it. When the
    // guest wrote no CR8 since VMRUN loaded it (sysWrites counts MOV to CR8) and V_TPR in memory
    // is still what was loaded, the store writes what is there: no bigint conversion.
    const vTpr = vmcb.bytes[V_TPR_OFFSET];
    if (s.sysWrites !== this.entrySysWrites || (vTpr & V_TPR_MASK) !== this.entryVTpr) {
      vmcb.bytes[V_TPR_OFFSET] = (vTpr & ~V_TPR_MASK) | (Number(s.cr8) & 0xf);
    }
    w[W_INTERRUPT_SHADOW] = s.stiShadow || s.movSsShadow ? SVM_INTERRUPT_SHADOW_MASK : 0; w[W_INTERRUPT_SHADOW + 1] = 0;
    // The injected event was delivered or is reported in EXITINTINFO; either way EVENTINJ is consumed.
    w[W_EVENTINJ] = 0; w[W_EVENTINJ + 1] = 0;
    this.cpu.injection.valid = false;
    this.recordExit(vmcb, this.cpu.exit);
    // The cache now holds this VMCB as stored: every group clean of writes again.
    vmcb.writtenGroups = 0;
    this.cachePa = vmcb.pa;
    this.resumeVmcb = vmcb;
    this.heldEpoch = this.cpu.stateEpoch;
    this.segExitStores = vmcb.segStores;
    this.segExitWrites = s.segWrites;
    this.exitVmcb = vmcb;
    this.msrExitStores = vmcb.msrStores;
    this.sysExitStores = vmcb.sysStores;
    this.sysExitWrites = s.sysWrites;
    this.sysExitState = s;
  }

  /** #VMEXIT's store of ES…LDTR (APM 15.6), through the accessors (the caller has marked every group written). */
  private storeSegments(vmcb: Vmcb): void {
    const s = this.cpu.state;
    for (let i = 0; i < 8; i++) {
      vmcb.writeSegHalves(SREG_FIELDS[i], s.segSel[i], cpuToAttrib(s.segAttr[i]), s.segLimit[i], s.segBaseLo[i], s.segBaseHi[i]);
    }
  }

  /**
   * #VMEXIT's store of GDTR/IDTR, EFER, CR0/CR3/CR4, DR7, the VMSAVE MSRs, DBGCTL and, with
   * nested paging as this VMRUN ran it (`eff`), G_PAT (APM 15.25.8).
   */
  private storeSystem(vmcb: Vmcb, eff: Vmcb): void {
    const s = this.cpu.state;
    vmcb.setDtParts(VMCB_SAVE.GDTR, s.gdtrLimit, s.gdtrBase);
    vmcb.setDtParts(VMCB_SAVE.IDTR, s.idtrLimit, s.idtrBase);
    vmcb.store64(VMCB_SAVE.EFER, s.efer);
    vmcb.store64(VMCB_SAVE.CR0, s.cr0);
    vmcb.store64(VMCB_SAVE.CR3, s.cr3);
    vmcb.store64(VMCB_SAVE.CR4, s.cr4);
    vmcb.store64(VMCB_SAVE.DR7, s.dr7);
    vmcb.store64(VMCB_SAVE.STAR, s.star);
    vmcb.store64(VMCB_SAVE.LSTAR, s.lstar);
    vmcb.store64(VMCB_SAVE.CSTAR, s.cstar);
    vmcb.store64(VMCB_SAVE.SFMASK, s.sfmask);
    vmcb.store64(VMCB_SAVE.KERNEL_GS_BASE, s.kernelGsBase);
    vmcb.store64(VMCB_SAVE.SYSENTER_CS, s.sysenterCs);
    vmcb.store64(VMCB_SAVE.SYSENTER_ESP, s.sysenterEsp);
    vmcb.store64(VMCB_SAVE.SYSENTER_EIP, s.sysenterEip);
    vmcb.store64(VMCB_SAVE.DBGCTL, s.debugctl);
    if ((eff.words[W_NP_ENABLE] & NP_ENABLE_BIT) !== 0) vmcb.store64(VMCB_SAVE.G_PAT, s.pat);
  }

  /** DR6 into the VMCB, remembered (bigint and words) for the resume's comparison. */
  private storeDr6(w: Int32Array, dr6: bigint): void {
    storeBig(w, W_DR6, dr6);
    this.dr6Big = dr6;
    this.dr6Lo = w[W_DR6];
    this.dr6Hi = w[W_DR6 + 1];
  }

  /** EXITCODE, EXITINFO1/2, EXITINTINFO, nRIP and guest instruction bytes for one neutral exit. */
  recordExit(vmcb: Vmcb, ex: GuestExit): void {
    // The usual exit first, in a body small enough for V8 to inline into VMRUN: an intercepted
    // instruction without decode-assist operands (APM 15.8) has EXITINFO1/2 zero, nRIP set and
    // no instruction bytes.
    if (ex.kind !== K.INSTRUCTION || INSN_PLAIN[ex.insn] !== 1) {
      this.recordOtherExit(vmcb, ex);
      return;
    }
    const w = vmcb.words;
    w[W_EXITCODE] = INSN_EXIT_TABLE[ex.insn]; w[W_EXITCODE + 1] = 0;
    w[W_EXITINFO1] = 0; w[W_EXITINFO1 + 1] = 0;
    w[W_EXITINFO2] = 0; w[W_EXITINFO2 + 1] = 0;
    this.storeNrip(w, ex.nextRip);
    if ((w[W_INSN] | w[W_INSN + 1] | w[W_INSN + 2] | w[W_INSN + 3]) !== 0) {
      w[W_INSN] = 0; w[W_INSN + 1] = 0; w[W_INSN + 2] = 0; w[W_INSN + 3] = 0;
    }
    if (ex.vectoring.valid) storeBig(w, W_EXITINTINFO, encodeVectoring(ex));
    else { w[W_EXITINTINFO] = 0; w[W_EXITINTINFO + 1] = 0; }
  }

  /**
   * nRIP (APM 15.7.1). The value last stored, with the slot still holding its words (the same
   * instruction exiting again), would write what is there: no BigInt conversion.
   */
  private storeNrip(w: Int32Array, nrip: bigint): void {
    if (nrip !== this.nripBig || w[W_NRIP] !== this.nripLo || w[W_NRIP + 1] !== this.nripHi) {
      storeBig(w, W_NRIP, nrip);
      this.nripBig = nrip;
      this.nripLo = w[W_NRIP];
      this.nripHi = w[W_NRIP + 1];
    }
  }

  /** recordExit for every exit but a plain instruction intercept. */
  private recordOtherExit(vmcb: Vmcb, ex: GuestExit): void {
    let code: number;
    // EXITINFO1/2 as 32-bit halves (i0/i1, i2/i3, little-endian as the VMCB); a bigint value goes
    // through BIG/BIG32 (locals, not a scratch array: no typed-array access for the usual zeros).
    let i0 = 0, i1 = 0, i2 = 0, i3 = 0;
    let nrip: bigint | null = null;
    let insnBytes = false;
    switch (ex.kind) {
      case K.BUDGET:
      case K.EXTERNAL_INTERRUPT:
      case K.NONE:
        code = SvmExit.INTR;
        break;
      case K.NMI: code = SvmExit.NMI; break;
      case K.INIT: code = SvmExit.INIT; break;
      case K.INTERRUPT_WINDOW: code = SvmExit.VINTR; break;
      case K.TRIPLE_FAULT:
      case K.SHUTDOWN:
        code = SvmExit.SHUTDOWN;
        break;
      case K.EXCEPTION:
        code = SvmExit.EXCP_BASE + ex.vector;
        // APM 15.12: EXITINFO1 holds the error code when the exception pushes one; #PF puts the faulting address in EXITINFO2.
        if (ex.hasErrorCode) i0 = ex.errorCode;
        if (ex.vector === 14) { BIG[0] = ex.faultAddress; i2 = BIG32[0]; i3 = BIG32[1]; insnBytes = true; }
        break;
      case K.TASK_SWITCH:
        code = SvmExit.TASK_SWITCH;
        i0 = ex.taskSelector & 0xffff;
        // EXITINFO2's reason bits all lie in the high half (bits 36, 38, 44).
        if (ex.taskSource === 1) i3 |= 1 << (Number(SVM_EXITINFOSHIFT_TS_REASON_IRET) - 32);
        if (ex.taskSource === 2) i3 |= 1 << (Number(SVM_EXITINFOSHIFT_TS_REASON_JMP) - 32);
        if (ex.hasErrorCode) { i3 |= 1 << (Number(SVM_EXITINFOSHIFT_TS_HAS_ERROR_CODE) - 32); i2 = ex.errorCode; }
        break;
      case K.INSTRUCTION: {
        code = INSN_EXIT_TABLE[ex.insn] ?? SvmExit.INTR;
        nrip = ex.nextRip;
        if (ex.insn === II.INVLPG) { BIG[0] = ex.faultAddress; i0 = BIG32[0]; i1 = BIG32[1]; } // decode assist: the linear address
        else if (ex.insn === II.INTN) i0 = ex.vector & 0xff; // decode assist: INTn vector
        else if (ex.insn === II.INVPCID) { BIG[0] = ex.memOperandAddress; i0 = BIG32[0]; i1 = BIG32[1]; BIG[0] = ex.value; i2 = BIG32[0]; i3 = BIG32[1]; }
        break;
      }
      case K.CR_ACCESS: {
        const write = ex.crAccessType !== CA.MOV_FROM_CR;
        const selective = write && ex.crNumber === 0 && !((this.rules.interceptCr >>> 16) & 1);
        code = selective ? SvmExit.CR0_SEL_WRITE : (write ? SvmExit.WRITE_CR0 : SvmExit.READ_CR0) + ex.crNumber;
        // APM 15.8.1 decode assist: bit 63 set for MOV CRn with the GPR in bits 3:0; clear for LMSW/CLTS.
        if (ex.crAccessType === CA.MOV_TO_CR || ex.crAccessType === CA.MOV_FROM_CR) {
          i0 = ex.gpr & 0xf; i1 = SVM_CR_VALID_HI;
        }
        nrip = ex.nextRip;
        break;
      }
      case K.CR_WRITE_TRAP:
        // Trap-like (APM 15.35): the write completed, RIP is past it, EXITINFO1 is the new value.
        code = SvmExit.CR0_WRITE_TRAP + ex.crNumber;
        BIG[0] = ex.value; i0 = BIG32[0]; i1 = BIG32[1];
        nrip = ex.nextRip;
        break;
      case K.MSR_WRITE_TRAP:
        code = SvmExit.EFER_WRITE_TRAP;
        BIG[0] = ex.value; i0 = BIG32[0]; i1 = BIG32[1];
        nrip = ex.nextRip;
        break;
      case K.APIC_ACCESS:
      case K.APIC_WRITE:
        // APM 15.29 AVIC_NOACCEL: EXITINFO1 = register offset | write (bit 32); trap-like writes carry the EOI'd vector in EXITINFO2.
        code = SvmExit.AVIC_UNACCELERATED_ACCESS;
        BIG[0] = ex.gpa | (ex.access & ACCESS_WRITE ? AVIC_UNACCEL_ACCESS_WRITE_BIT : 0n); i0 = BIG32[0]; i1 = BIG32[1];
        if (ex.kind === K.APIC_WRITE) i2 = ex.vector;
        nrip = ex.nextRip;
        break;
      case K.INCOMPLETE_IPI:
        // APM 15.29 AVIC_INCOMPLETE_IPI: EXITINFO1 = ICR (high:low), EXITINFO2 = cause (63:32) | table index (8:0).
        code = SvmExit.AVIC_INCOMPLETE_IPI;
        BIG[0] = ex.value; i0 = BIG32[0]; i1 = BIG32[1];
        i2 = ex.vector & 0x1ff; i3 = ex.errorCode;
        nrip = ex.nextRip;
        break;
      case K.DR_ACCESS:
        code = (ex.isWrite ? SvmExit.WRITE_DR0 : SvmExit.READ_DR0) + ex.drNumber;
        i0 = ex.gpr & 0xf;
        nrip = ex.nextRip;
        break;
      case K.IO: {
        code = SvmExit.IOIO;
        let i = (ex.port & 0xffff) << SVM_IOIO_PORT_SHIFT;
        if (ex.isIn) i |= SVM_IOIO_TYPE_IN;
        if (ex.isString) i |= SVM_IOIO_STR;
        if (ex.isRep) i |= SVM_IOIO_REP;
        i |= ex.size === 1 ? SVM_IOIO_SZ8 : ex.size === 2 ? SVM_IOIO_SZ16 : SVM_IOIO_SZ32;
        if (ex.isString) {
          i |= ex.addrSize === 2 ? SVM_IOIO_A16 : ex.addrSize === 4 ? SVM_IOIO_A32 : SVM_IOIO_A64;
          i |= (ex.segment & 7) << SVM_IOIO_SEG_SHIFT;
        }
        i0 = i;
        // APM 15.10.2: EXITINFO2 is the RIP of the instruction after the IN/OUT.
        nrip = ex.nextRip;
        BIG[0] = nrip; i2 = BIG32[0]; i3 = BIG32[1];
        break;
      }
      case K.MSR_READ:
      case K.MSR_WRITE:
        code = SvmExit.MSR;
        i0 = ex.kind === K.MSR_WRITE ? 1 : 0;
        nrip = ex.nextRip;
        break;
      case K.TDP_FAULT:
      case K.TDP_MISCONFIG:
      case K.MMIO:
        code = SvmExit.NPF;
        BIG[0] = npfErrorCode(ex); i0 = BIG32[0]; i1 = BIG32[1];
        BIG[0] = ex.gpa; i2 = BIG32[0]; i3 = BIG32[1];
        insnBytes = true;
        break;
      default:
        // Exits with no SVM counterpart (PML, preemption timer, MTF, APICv): a processor/backend mismatch.
        code = SvmExit.INTR;
        break;
    }
    // The exit fields, by word index (the processor's stores: no accessor, no copy-on-write).
    // EXITCODE is a 64-bit field; every code here is a small non-negative number (APM Appendix C).
    const w = vmcb.words;
    w[W_EXITCODE] = code; w[W_EXITCODE + 1] = 0;
    w[W_EXITINFO1] = i0; w[W_EXITINFO1 + 1] = i1;
    w[W_EXITINFO2] = i2; w[W_EXITINFO2 + 1] = i3;
    if (nrip === null) { w[W_NRIP] = 0; w[W_NRIP + 1] = 0; } else this.storeNrip(w, nrip);
    // Decode assists (APM 15.8.4): GUEST_INSN_LEN and the bytes, zero when none were fetched.
    // The four words are tested first: zero already (the usual exit) means nothing to write.
    const count = insnBytes ? Math.min(15, ex.insnBytesCount) : 0;
    if (count !== 0) {
      const b = vmcb.bytes;
      b[INSN_LEN_OFFSET] = count;
      for (let i = 0; i < 15; i++) b[INSN_BYTES_OFFSET + i] = i < count ? ex.insnBytes[i] : 0;
    } else if ((w[W_INSN] | w[W_INSN + 1] | w[W_INSN + 2] | w[W_INSN + 3]) !== 0) {
      w[W_INSN] = 0; w[W_INSN + 1] = 0; w[W_INSN + 2] = 0; w[W_INSN + 3] = 0;
    }
    if (ex.vectoring.valid) storeBig(w, W_EXITINTINFO, encodeVectoring(ex));
    else { w[W_EXITINTINFO] = 0; w[W_EXITINTINFO + 1] = 0; }
  }
}

/** GuestExit.vectoring → EXITINTINFO (same format as EVENTINJ, APM 15.7.2). */
export function encodeVectoring(ex: GuestExit): bigint {
  const v = ex.vectoring;
  if (!v.valid) return 0n;
  let type: number;
  switch (v.type) {
    case EventType.NMI: type = SvmEventType.NMI; break;
    case EventType.HARDWARE_EXCEPTION:
    case EventType.SOFTWARE_EXCEPTION:
    case EventType.PRIVILEGED_SOFTWARE_EXCEPTION:
      type = SvmEventType.EXEPT; break;
    case EventType.SOFTWARE_INTERRUPT: type = SvmEventType.SOFT; break;
    default: type = SvmEventType.INTR;
  }
  let lo = (v.vector & 0xff) | (type << SVM_EVTINJ_TYPE_SHIFT) | SVM_EVTINJ_VALID;
  if (v.hasErrorCode) lo |= SVM_EVTINJ_VALID_ERR;
  return (BigInt(v.hasErrorCode ? v.errorCode >>> 0 : 0) << 32n) | BigInt(lo >>> 0);
}

