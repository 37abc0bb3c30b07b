import type { HostMemory } from '../mmu/host-memory';
import { CpuState } from './state';
import {
  ACCESS_FETCH, ACCESS_PAGE_WALK, ACCESS_READ, ACCESS_WRITE, ACCESS_USER,
  EventType, GuestExit, GuestExitKind, GuestModeRules, InterceptInsn, PendingInjection, passthroughRules, TdpWalker,
  APIC_ACCESS_DONE_TRAP, APIC_ACCESS_EXIT, ApicPageHandler,
} from './guest-mode';
import {
  AC, ARITH, CF, DF, IF, NT, OF, PF, RF, SF, TF, VM, ZF, AF,
  A_DB, A_L, A_P, A_S, A_UNUSABLE, CR0_PE, CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, CR4_PCIDE, CR4_PSE,
  CR4_SMAP, CR4_SMEP, CS, DS, ES, FS, GS, LDTR, SS, TR, EFER_LMA, EFER_NXE,
  P_SR, P_SW, P_SX, P_UR, P_UW, P_UX, MAXPHYADDR, GP, PF_VEC, SS_VEC, NP, TS, DF_VEC, DB, UD,
  CR4_PGE, IOPL, VIF, VIP, ID,
} from './consts';
import type { Op } from './op';
import { decodeBlock, Block, decodeOne } from './decode';
import { cpuidLeaf } from './cpuid';
import { compileBlock, JIT_THRESHOLD } from './jit';
import { idtDeliver } from './sys';
import { loadPdptrsAtEntry, pdpteReserved, pdptrsInMemory, reloadPdptrsForWalk } from './pdptr';

/** Guest-physical to host-physical without TDP: core's memslots. -1: not backed (MMIO). */
export interface GuestPhysMap {
  gpaToHpa(gpa: number): number;
  /**
   * Optional: like gpaToHpa but for a write; -1 when the GPA is not writable RAM (a
   * KVM_MEM_READONLY slot), so the write is treated as MMIO. Without it all RAM is writable.
   */
  gpaToHpaForWrite?(gpa: number): number;
}

/**
 * Where core's emulation of one instruction sends accesses that hit no RAM (MMIO).
 * `read` returns false when userspace must supply the value (KVM_EXIT_MMIO); the
 * instruction is then abandoned without side effects and re-executed on the next entry,
 * when `read` can answer from the completed exit (KVM's mmio read cache).
 */
export interface MmioBus {
  read(gpa: bigint, size: number, out: Uint8Array): boolean;
  write(gpa: bigint, size: number, data: Uint8Array): void;
}

/** Port I/O the emulated platform answers when guest mode does not intercept it. */
export interface PortBus {
  in(port: number, size: number): number;
  out(port: number, size: number, value: number): void;
}

export enum EmulationResult {
  /** The instruction completed (RIP advanced, state committed). */
  DONE = 0,
  /** An MMIO read needs userspace: nothing was committed; re-run after the exit completes. */
  NEEDS_USERSPACE_READ = 1,
  /** The instruction raised an exception (queued into `injection`). */
  EXCEPTION = 2,
  /** The instruction cannot be emulated (core reports KVM_INTERNAL_ERROR_EMULATION). */
  UNHANDLEABLE = 3,
}

export type CpuVendor = 'intel' | 'amd';

export interface X86CpuOptions {
  /** The emulated hardware's vendor: what its own CPUID says and where Intel and AMD behave differently. */
  vendor: CpuVendor;
  /** Seed of the RDRAND/RDSEED source (deterministic; default 1). */
  rngSeed?: number;
  /**
   * Execution tier: 'interpreter' runs every translated block through its operations' handlers;
   * 'jit' (default) also compiles hot blocks into JavaScript functions (see jit.ts).
   */
  tier?: 'interpreter' | 'jit';
}

/**
 * Where the time-stamp counter comes from when it does not count retired instructions. Without
 * one (the default) the counter (`CpuState.tsc`) advances by one per retired instruction while
 * the processor runs, and whoever lets time pass otherwise (core's virtual clock, skipping a
 * halted vCPU's idle time) adds to `CpuState.tsc`. With one (core's host clock), RDTSC, RDTSCP
 * and RDMSR(IA32_TSC) read it, and `CpuState.tsc` is refreshed from it at every exit.
 */
export interface TscSource {
  /** The counter now, in TSC ticks (`CpuState.tsc` semantics: before the guest-mode offset). */
  now(): number;
  /** WRMSR(IA32_TSC) not intercepted: the counter is to read `value` now. */
  set(value: number): void;
}

/** Execution counters of the tiers (diagnostics, benchmarks, tests). */
export interface CpuTierStats {
  /** Blocks translated (decoded) by the first tier. */
  blocksTranslated: number;
  /** Blocks compiled by the JIT tier. */
  blocksCompiled: number;
  /** Block executions through the interpreter / through compiled code. */
  interpretedRuns: number;
  compiledRuns: number;
  /** Instructions retired by interpreted / compiled execution (their sum is the total). */
  interpretedInstructions: number;
  compiledInstructions: number;
}

/** The default port bus: reads float high (all ones), writes are dropped. */
const NO_PORTS: PortBus = {
  in: (_p, size) => (size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff),
  out: () => undefined,
};


// Pending-event codes (X86Cpu.pend).
/** An exception is pending delivery (excVec/excErr/excHasErr/excAddr). */
export const PEND_EXC = 1;
/** `exit` is filled; runGuest returns it. */
export const PEND_EXIT = 2;
/** emulateInstruction: an MMIO read needs userspace; abandon the instruction. */
export const PEND_USER = 3;
/** emulateInstruction: cannot emulate. */
export const PEND_UNHANDLED = 4;

// Lazy-flag producers (X86Cpu.fOp).
export const F_EAGER = 0, F_ADD = 1, F_ADC = 2, F_SUB = 3, F_SBB = 4, F_LOGIC = 5, F_INC = 6, F_DEC = 7;

const TLB_BITS = 11;
const TLB_SIZE = 1 << TLB_BITS;
const TLB_MASK = TLB_SIZE - 1;
/** TLB context ids handed out before the TLB is emptied and numbering restarts (X86Cpu.ctxIdOf). */
const CTX_IDS = 4096;
const TWO32 = 4294967296;
/** The preemption deadline → number without BigInt operations (runLoop). */
const DEADLINE64 = new BigInt64Array(1);
const DEADLINE32 = new Int32Array(DEADLINE64.buffer);
/** Guest-physical mappings kept for the guest page walk's reads under TDP (physLoc). */
const GP_CACHE_SIZE = 64;
const GP_CACHE_MASK = GP_CACHE_SIZE - 1;

/** Fault-class exception vectors (bit n: vector n): #DE #BR #UD #NM #TS #NP #SS #GP #PF #MF #AC #XM #VE #CP. */
const FAULT_VECTORS = [0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21].reduce((m, v) => m | (1 << v), 0);

const PARITY = new Uint8Array(256);
for (let i = 0; i < 256; i++) {
  let p = 1;
  for (let b = i; b; b >>= 1) p ^= b & 1;
  PARITY[i] = p ? PF : 0;
}

/** Translated code of one guest-physical (host-physical) page. */
class CodePage {
  readonly blocks = new Map<number, Block>();
  /** Which bytes of the page lie in a decoded instruction: a write elsewhere keeps the cache. */
  readonly covered = new Uint8Array(4096);
  constructor(readonly hpa: number) {}
}

/**
 * X86Cpu.codePages key of the page at host-physical `hpaPage`: its page number, an int31 for
 * any host memory below 4 TiB, so a Map lookup does not box a double (HostMemory's default
 * limit is 64 GiB).
 */
function codeKey(hpaPage: number): number {
  return (hpaPage / 4096) | 0;
}


/**
 * The emulated x86-64 processor: the hardware every backend virtualizes.
 * See docs/architecture.md ("The processor") for its tiers, TLB and invalidation rules.
 *
 * Fields marked "internal" are the interpreter's hot state, public only so the operation
 * modules (ops.ts, sys.ts) can reach them without indirection.
 */
export class X86Cpu {
  readonly state = new CpuState();
  readonly exit = new GuestExit();
  /** The event to deliver at the next entry (set by the backend from its control block). */
  readonly injection: PendingInjection = {
    valid: false, type: EventType.EXTERNAL_INTERRUPT, vector: 0, hasErrorCode: false, errorCode: 0, insnLength: 0,
  };
  /** Set from another context (a kick) to make runGuest stop at the next boundary with EXTERNAL_INTERRUPT. */
  kick = false;
  /** Port I/O that guest mode does not intercept (default: reads all ones, writes ignored). */
  ports: PortBus = NO_PORTS;
  /** The TSC's time source, or null to count retired instructions (see TscSource). */
  tscSource: TscSource | null = null;

  // ---- internal: registers ----
  /** internal: GPR low halves (aliases state.gprLo). */
  readonly r: Int32Array;
  /** internal: GPR high halves (aliases state.gprHi). */
  readonly rh: Int32Array;
  /** internal: RIP as a double (legacy modes: 0..2^32-1; 64-bit: the signed canonical value). */
  rip = 0;
  /** internal: RFLAGS without the six status flags (those are lazy, see fOp). */
  fl = 2;
  /** internal: lazy flags: producer, operand size, operands and result as lo/hi halves. */
  fOp = F_EAGER; fSz = 4; fA = 0; fAh = 0; fB = 0; fBh = 0; fR = 0; fRh = 0; fCin = 0;
  /** internal: the status flags when fOp is F_EAGER, and CF for INC/DEC. */
  fE = 0;
  /** internal: out-parameter for the high half of a 64-bit value. */
  vh = 0;

  // ---- internal: mode ----
  /** internal: code size of CS: 16, 32 or 64. */
  bits = 16;
  /** internal: stack address size in bytes (2, 4 or 8). */
  ssz = 2;
  pe = false; pg = false; pae = false; la57 = false; lma = false; wp = false; nxe = false;
  smep = false; smap = false; pcide = false; pse = false; pge = false;
  /** internal: TLB permission bit required for data reads / writes / fetches at the current CPL. */
  accR = P_SR; accW = P_SW; accX = P_SX;
  /**
   * internal: TLB context id of the current (tag, PCID): what a TLB entry's tCtx must equal to
   * hit. See ctxIdOf: flushing a tag or everything retires ids instead of walking the TLB.
   */
  ctx = 0;
  /** internal: the current context's key, tlbTag * 4096 + PCID (-1: none yet). */
  private ctxKey = -1;
  /** internal: legacy-mode linear base of each segment register (uint32). */
  readonly segBase = new Float64Array(8);
  /** internal: per segment, 1 = reads need no limit/type check, 2 = writes need none (flat). */
  readonly segFast = new Uint8Array(8);

  // ---- internal: events ----
  /** internal: pending event (PEND_*), 0 when none. */
  pend = 0;
  excVec = 0; excErr = 0; excHasErr = false; excAddr = 0;
  /** internal: set when translated code was dropped or the mode changed: leave the block. */
  brk = false;
  /** internal: what stopped a compiled block (the op return-code contract of op.ts). */
  jrc = 0;
  /** internal: bound of canonical linear addresses as signed doubles (2^47, or 2^56 with LA57). */
  canonLimit = 140737488355328;
  /** internal: compile hot blocks (options.tier !== 'interpreter'). */
  readonly jitOn: boolean;
  /** Execution counters per tier. */
  readonly stats: CpuTierStats = {
    blocksTranslated: 0, blocksCompiled: 0, interpretedRuns: 0, compiledRuns: 0,
    interpretedInstructions: 0, compiledInstructions: 0,
  };
  /** internal: an instruction set the STI / MOV SS shadow this step. */
  shadowSet = false;
  /** internal: retired-instruction count of the current runGuest call. */
  retired = 0;
  /** internal: state.tsc at entry, as a double. */
  tscBase = 0;
  /** internal: the guest-mode rules in force. */
  rules: GuestModeRules;
  /** internal: emulateInstruction in progress (MMIO goes to `mmio`, exceptions to `injection`). */
  emu = false;
  mmio: MmioBus | null = null;
  /** internal: the event being delivered (for exit.vectoring), valid while delivering. */
  dlvValid = false; dlvType = 0; dlvVec = 0; dlvErr = 0; dlvHasErr = false; dlvLen = 0;
  /** internal: instruction being executed (for exits). */
  curOp: Op | null = null;
  /** internal: random source state (xorshift32) for RDRAND/RDSEED. */
  rng = 1;
  /** internal: DR7 breakpoints armed (the run loop steps one instruction at a time and checks them). */
  dbgArmed = false;
  /** internal: an enabled data breakpoint exists: every data access takes the TLB slow path (tPerm = 0). */
  dbgData = false;
  /** internal: an enabled I/O breakpoint exists (R/W = 10; effective with CR4.DE). */
  dbgIo = false;
  /** internal: enabled breakpoints (bit n: DRn has L or G set). */
  dbgEn = 0;
  /** internal: DR7 R/W and LEN fields per breakpoint; addresses as 64-bit (signed canonical) and legacy (uint32) linear. */
  readonly dbgRw = new Uint8Array(4);
  readonly dbgSize = new Uint8Array(4);
  readonly dbgAddr64 = new Float64Array(4);
  readonly dbgAddr32 = new Float64Array(4);
  /** internal: DR6.B0-B3 bits of data/I-O breakpoints hit by the current instruction (reported as a trap after it). */
  dbgHit = 0;
  /** internal: the #DB being raised is a fault other than an instruction breakpoint (general detect): pushes RF = 1. */
  dbgFault = false;
  /** internal: descriptor scratch (sys.ts): low/high dwords, linear address, bytes 8..11 of a 16-byte descriptor. */
  dLo = 0; dHi = 0; dLin = 0; dHi2 = 0;
  /** internal: stack read from the TSS (sys.ts). */
  tssSs = 0; tssSpLo = 0; tssSpHi = 0;
  /** internal: high half of a 64-bit far-pointer offset. */
  farHi = 0;
  /** internal: scratch registers (POPA, CPUID). */
  readonly scratch = new Int32Array(16);
  /** internal: 128-bit product words (MUL/IMUL 64). */
  readonly m128 = new Float64Array(4);

  // ---- internal: software TLB (direct-mapped, 4 KiB entries) ----
  readonly tPage = new Float64Array(TLB_SIZE).fill(NaN);
  /** Context id (ctxIdOf) the entry was filled under; it hits only while that id is `ctx`. */
  readonly tCtx = new Int32Array(TLB_SIZE);
  /** Permissions usable on the fast path (writes stripped on pages holding translated code). */
  readonly tPerm = new Int32Array(TLB_SIZE);
  /** Permissions the page tables grant. */
  readonly tPermReal = new Int32Array(TLB_SIZE);
  readonly tOff = new Int32Array(TLB_SIZE);
  readonly tHpa = new Float64Array(TLB_SIZE);
  readonly tGlobal = new Uint8Array(TLB_SIZE);
  /** log2 of the page size the entry came from (12, 21, 22, 30): INVLPG drops the whole page. */
  readonly tShift = new Uint8Array(TLB_SIZE);
  readonly tBuf: Uint8Array[] = new Array<Uint8Array>(TLB_SIZE);
  private largeEntries = 0;
  /** Bumped on every TLB invalidation: block chains check it. */
  tlbGen = 0;
  // Context ids. A TLB entry records the id of the (tag, PCID) it was filled under, and hits only
  // when that id is the current `ctx`. Invalidating every entry of a tag (INVVPID single-context,
  // INVPCID all-context, an ASID flush) or of all tags therefore only retires ids: the next use
  // of a retired (tag, PCID) gets a fresh id, which no entry holds. Ids are never reused until
  // CTX_IDS have been handed out; then every entry is dropped at once (a TLB may drop any entry
  // at any time, SDM 4.10.4.4 / APM 5.5.2) and numbering restarts.
  /** Live ids by key (tag * 4096 + PCID). */
  private readonly ctxIds = new Map<number, number>();
  /** Key of each id handed out since the last restart (NaN for id 0: the never-filled entries). */
  private readonly ctxKeyOf = new Float64Array(CTX_IDS).fill(NaN);
  private nextCtxId = 1;

  // ---- internal: guest-physical mappings for paging-structure reads under TDP (physLoc) ----
  // SDM 28.3.1 / APM 15.25.11: the processor may cache guest-physical translations derived from
  // EPT/NPT; any TLB invalidation (tlbGen) or a different TDP root drops them. Only reads by the
  // guest page walk are served from here; writes (A/D updates) always walk the TDP tables.
  private readonly gpPage = new Float64Array(GP_CACHE_SIZE).fill(NaN);
  private readonly gpHpa = new Float64Array(GP_CACHE_SIZE);
  private gpGen = -1;
  private gpTdp: TdpWalker | null = null;
  private gpRoot = -1;

  // ---- internal: translated code ----
  /** Pages holding translated code, by codeKey(host-physical page address). */
  readonly codePages = new Map<number, CodePage>();
  /** Physical-access scratch (physLoc). */
  pBuf: Uint8Array = new Uint8Array(0);
  pOff = 0;
  pHpa = 0;
  private lastRegion: { base: number; bytes: Uint8Array } | null = null;
  private prevRegion: { base: number; bytes: Uint8Array } | null = null;
  private readonly mmioBuf = new Uint8Array(16);
  mmioGpa = 0;

  constructor(
    readonly host: HostMemory,
    readonly phys: GuestPhysMap,
    readonly options: X86CpuOptions,
  ) {
    this.r = this.state.gprLo;
    this.rh = this.state.gprHi;
    // The tier: the option, else TSVISOR_CPU_TIER from the environment (for runs through tools), else 'jit'.
    const envTier = typeof process !== 'undefined' && process.env ? process.env.TSVISOR_CPU_TIER : undefined;
    this.jitOn = (options.tier ?? envTier) !== 'interpreter';
    this.rules = passthroughRules();
    const empty = new Uint8Array(0);
    for (let i = 0; i < TLB_SIZE; i++) this.tBuf[i] = empty;
    this.rng = (options.rngSeed ?? 1) | 0 || 1;
    this.resetState();
  }

  /** Put the register file in the architectural power-on state (SDM Vol. 3A 10.1.1): real mode at F000:FFF0. */
  resetState(): void {
    const s = this.state;
    this.stateEpoch++;
    s.gprLo.fill(0); s.gprHi.fill(0);
    s.gprLo[2] = this.options.vendor === 'amd' ? 0x00800f12 : 0x000306a9;
    s.rip = 0xfff0n;
    s.rflags = 2;
    for (let i = 0; i < 8; i++) {
      s.segSel[i] = 0; s.segBaseLo[i] = 0; s.segBaseHi[i] = 0; s.segLimit[i] = 0xffff;
      s.segAttr[i] = 0x93;
    }
    s.segSel[CS] = 0xf000; s.segBaseLo[CS] = 0xffff0000 | 0; s.segAttr[CS] = 0x9b;
    s.segAttr[LDTR] = 0x82; s.segAttr[TR] = 0x8b;
    s.gdtrBase = 0n; s.gdtrLimit = 0xffff; s.idtrBase = 0n; s.idtrLimit = 0xffff;
    s.cr0 = 0x60000010n; s.cr2 = 0n; s.cr3 = 0n; s.cr4 = 0n; s.efer = 0n;
    s.sysWrites++;
    s.activity = 0; s.cpl = 0;
    s.segWrites++;
    this.flushTlbAll();
  }

  // =====================================================================================
  // Public API for backends and core
  // =====================================================================================

  /**
   * Execute in guest mode under `rules` until an exit or until `budget` instructions have
   * retired. Delivers `injection` first if valid. Returns `exit.kind`.
   */
  runGuest(rules: GuestModeRules, budget: number): GuestExitKind {
    this.rules = rules;
    this.emu = false;
    this.inBlock = false;
    const ap = rules.apicPage ?? null;
    this.guestApic = ap;
    this.apicTrap = false;
    if (ap === null) { this.apicSeenGpa = -1; this.apicSeenHpa = -1; } else if (ap.gpaPage !== this.apicSeenGpa || ap.hpaPage !== this.apicSeenHpa) {
      // Translations of the page cached before it was virtualized must not bypass the handler.
      this.apicSeenGpa = ap.gpaPage; this.apicSeenHpa = ap.hpaPage;
      this.flushTlbAll();
    }
    this.syncIn();
    // VM entry loads the PAE PDPTE registers unless the backend supplied them (SDM 26.3.2.4).
    if (rules.pdptrsLoaded) this.pdptrReload = false; else loadPdptrsAtEntry(this);
    const ex = this.exit;
    ex.kind = GuestExitKind.NONE;
    ex.vectoring.valid = false;
    try {
      this.runLoop(budget);
    } catch (e) {
      // A host bug must not take the VMM down with it; report it as a shutdown-class exit
      // with the message kept for diagnostics (never reached by a correct guest action).
      this.hostError = e instanceof Error ? e : new Error(String(e));
      ex.kind = GuestExitKind.SHUTDOWN;
      this.state.activity = 2;
    }
    this.syncOut();
    return ex.kind;
  }

  /**
   * Bumped each time the processor loads its hot state (syncIn: VM entry, emulation, task-switch
   * emulation) and at reset: a backend that saw the value at its VM exit and sees it unchanged at
   * the next entry knows nothing but that exit's guest execution has touched the state since.
   */
  stateEpoch = 0;

  /** The last host error caught by runGuest (a processor bug), or null. */
  hostError: Error | null = null;

  /**
   * Execute exactly the one instruction at RIP outside guest mode on core's behalf (KVM's x86
   * emulator, for MMIO and string I/O): accesses to unbacked GPAs go to `mmio`. Guest
   * exceptions are queued into `injection` (a #PF also sets CR2, as kvm_inject_page_fault does).
   */
  emulateInstruction(mmio: MmioBus): EmulationResult {
    this.rules = this.emuRules;
    this.emu = true;
    this.mmio = mmio;
    this.syncIn();
    this.exit.kind = GuestExitKind.NONE;
    let res = EmulationResult.DONE;
    // Snapshot what an abandoned instruction could have touched (registers, flags, RIP).
    const saveLo = this.snapLo, saveHi = this.snapHi;
    saveLo.set(this.r); saveHi.set(this.rh);
    const sRip = this.rip, sFl = this.fl;
    const sF = [this.fOp, this.fSz, this.fA, this.fAh, this.fB, this.fBh, this.fR, this.fRh, this.fCin, this.fE];
    try {
      const op = decodeOne(this, this.rip);
      if (op === null) {
        res = this.pend === PEND_EXC ? EmulationResult.EXCEPTION : EmulationResult.UNHANDLEABLE;
      } else {
        this.curOp = op;
        const rc = op.fn(this, op);
        // Sequential flow: 16-bit code wraps IP at 64 KiB whatever the operand size.
        if (rc === 0) this.rip = this.bits === 16 ? (this.rip + op.len) & 0xffff : this.nextRip(op);
        if (rc !== 2) this.retired++;
      }
      if (this.pend === PEND_USER) res = EmulationResult.NEEDS_USERSPACE_READ;
      else if (this.pend === PEND_UNHANDLED || this.pend === PEND_EXIT) res = EmulationResult.UNHANDLEABLE;
      else if (this.pend === PEND_EXC) {
        res = EmulationResult.EXCEPTION;
        this.pendingExceptionToInjection();
      }
    } catch {
      res = EmulationResult.UNHANDLEABLE;
    }
    if (res !== EmulationResult.DONE) {
      this.r.set(saveLo); this.rh.set(saveHi);
      this.rip = sRip; this.fl = sFl;
      [this.fOp, this.fSz, this.fA, this.fAh, this.fB, this.fBh, this.fR, this.fRh, this.fCin, this.fE] = sF;
      if (res === EmulationResult.EXCEPTION) { /* RIP stays at the faulting instruction */ }
    }
    this.pend = 0;
    this.emu = false;
    this.mmio = null;
    this.syncOut();
    return res;
  }
  private readonly emuRules = passthroughRules();

  /**
   * kvm_read_guest_virt: read `out.length` bytes at linear address `lin` as a data read at the
   * loaded CPL, outside guest mode (core's emulator state, as for
   * emulateInstruction). Returns false when the read faulted (the exception is queued in
   * `injection`, a #PF with CR2) or reached no memory.
   */
  readGuestVirt(lin: number, out: Uint8Array): boolean {
    this.rules = this.emuRules;
    this.emu = true;
    this.mmio = null;
    this.syncIn();
    this.curOp = null;
    let ok = true;
    for (let k = 0; k < out.length && ok; k++) {
      out[k] = this.rd8(this.linAdd(lin, k));
      if (this.pend !== 0) ok = false;
    }
    if (this.pend === PEND_EXC) {
      const inj = this.injection;
      inj.valid = true; inj.type = EventType.HARDWARE_EXCEPTION; inj.vector = this.excVec;
      inj.hasErrorCode = this.excHasErr; inj.errorCode = this.excErr; inj.insnLength = 0;
      if (this.excVec === PF_VEC) this.state.cr2 = BigInt.asUintN(64, BigInt(this.excAddr));
    }
    this.pend = 0;
    this.emu = false;
    this.syncOut();
    return ok;
  }
  private readonly snapLo = new Int32Array(16);
  private readonly snapHi = new Int32Array(16);

  /** Flush every TLB entry (all tags, all PCIDs): every context id is retired. */
  flushTlbAll(): void {
    this.ctxIds.clear();
    // No live entry is left, so INVLPG need not look for large pages until one is filled again.
    this.largeEntries = 0;
    this.renewCtx();
    this.tlbGen++;
  }
  /** Flush the entries of one VPID/ASID tag (all PCIDs): that tag's context ids are retired. */
  flushTlbTag(tag: number): void {
    const t = tag & 0xfffff;
    // (the live contexts are few: one per tag and PCID in use since the last flush)
    for (const key of this.ctxIds.keys()) if (Math.floor(key / 4096) === t) this.ctxIds.delete(key);
    this.renewCtx();
    this.tlbGen++;
  }

  /** internal: the context id of key (tag * 4096 + PCID), handing out a fresh one if it has none. */
  private ctxIdOf(key: number): number {
    const id = this.ctxIds.get(key);
    if (id !== undefined) return id;
    if (this.nextCtxId === CTX_IDS) {
      // Every id is in use or retired: empty the TLB (no entry may keep an id about to be reused).
      this.tPage.fill(NaN);
      this.largeEntries = 0;
      this.ctxIds.clear();
      this.ctxKeyOf.fill(NaN);
      this.nextCtxId = 1;
      this.tlbGen++;
    }
    const fresh = this.nextCtxId++;
    this.ctxKeyOf[fresh] = key;
    this.ctxIds.set(key, fresh);
    return fresh;
  }
  /** internal: after ids were retired, the current context's id (a fresh one if it was retired). */
  private renewCtx(): void {
    if (this.ctxKey >= 0) this.ctx = this.ctxIdOf(this.ctxKey);
  }
  /** Flush the translation of one guest-virtual address under `tag` (INVVPID individual-address / INVLPGA). */
  flushTlbGva(tag: number, gva: bigint): void {
    this.invlpgLin(Number(BigInt.asIntN(64, gva)), tag & 0xfffff, -1);
  }
  /** Flush the entries of one PCID under a tag (INVPCID single-context); globals kept unless `all`. */
  flushTlbPcid(tag: number, pcid: number, includeGlobal = false): void {
    const c = this.ctxIds.get((tag & 0xfffff) * 4096 + (pcid & 0xfff));
    if (c !== undefined) {
      for (let i = 0; i < TLB_SIZE; i++) {
        if (this.tCtx[i] === c && (includeGlobal || !this.tGlobal[i])) this.tPage[i] = NaN;
      }
    }
    this.tlbGen++;
  }

  /**
   * Someone (core, a device, a backend) wrote `len` bytes at host-physical `hpa`: drop the
   * translated code of every page the write touched (self-modifying / DMA-modified code).
   */
  notifyWrite(hpa: number, len: number): void {
    if (this.codePages.size === 0) return;
    let a = hpa;
    const end = hpa + len;
    while (a < end) {
      const page = a - (a % 4096);
      const n = Math.min(end, page + 4096) - a;
      this.codeWrite(a, n);
      a += n;
    }
  }

  /** Drop all translated code (e.g. after memslots change). */
  flushCode(): void {
    for (const p of this.codePages.values()) for (const b of p.blocks.values()) b.valid = false;
    this.codePages.clear();
    this.resetFastPerms();
    this.brk = true;
  }

  /** Number of translated-code pages (diagnostics and tests). */
  get codePageCount(): number {
    return this.codePages.size;
  }

  // =====================================================================================
  // State synchronisation (CpuState <-> hot fields)
  // =====================================================================================

  /** internal: load the hot fields from `state` (VM entry: the backend loaded guest state). */
  syncIn(): void {
    const s = this.state;
    this.stateEpoch++;
    this.fl = (s.rflags & ~ARITH) | 2;
    this.fOp = F_EAGER;
    this.fE = s.rflags & ARITH;
    this.pend = 0;
    this.brk = false;
    this.retired = 0;
    this.tscBase = s.tscNumber;
    // Re-entry with the state the last exit left (the common case after an exit handled in the
    // kernel): the mode-derived fields, the block chains and the breakpoint fields are still
    // exact, so they are not recomputed; any difference in their inputs recomputes them all.
    if (this.modeInputsChanged()) {
      this.updateMode();
      this.rip = this.bits === 64 ? (s.ripHi | 0) * TWO32 + (s.ripLo >>> 0) : s.ripLo >>> 0;
      this.dbgUpdate();
      this.saveModeInputs();
    } else {
      this.brk = true;
      this.rip = this.bits === 64 ? (s.ripHi | 0) * TWO32 + (s.ripLo >>> 0) : s.ripLo >>> 0;
    }
  }

  // Inputs of updateMode/dbgUpdate as of the last saveModeInputs (kTag -1: unknown). The 64-bit
  // registers (CR0, CR3, CR4, EFER, DR7, DR0-3) are kept as 32-bit halves in kBig and compared
  // through a typed-array conversion: a BigInt comparison is a runtime call, this is not.
  private kCpl = -1; private kTag = -1;
  /** CpuState.segWrites when the segment inputs below were last seen equal to the state's (-1: never). */
  private kSegWrites = -1;
  /** CpuState.sysWrites when CR0/CR3/CR4/EFER/DR7 were last seen equal to kBig's (-1: never). */
  private kSysWrites = -1;
  private readonly kBig = new Uint32Array(18);
  private readonly kSegBase = new Int32Array(8);
  private readonly kSegLimit = new Uint32Array(8);
  private readonly kSegAttr = new Uint32Array(8);
  private readonly conv64 = new BigUint64Array(9);
  private readonly conv32 = new Uint32Array(this.conv64.buffer);

  /** internal: the mode's 64-bit inputs into conv32 as halves (CR0, CR3, CR4, EFER, DR7 in 0-9; DR0-3 in 10-17). */
  private modeBigInputs(): void {
    const s = this.state;
    const c = this.conv64;
    c[0] = s.cr0; c[1] = s.cr3; c[2] = s.cr4; c[3] = s.efer; c[4] = s.dr7;
    c[5] = s.dr[0]; c[6] = s.dr[1]; c[7] = s.dr[2]; c[8] = s.dr[3];
  }

  /** internal: did anything updateMode or dbgUpdate read change since saveModeInputs? */
  private modeInputsChanged(): boolean {
    const s = this.state;
    if (this.kTag !== this.rules.tlbTag || s.cpl !== this.kCpl) return true;
    // Every write to the segment registers bumps segWrites (setSegment, segUpdate, reset, the
    // backends' loads, SIPI): unchanged, the eight segments are as last compared.
    if (s.segWrites !== this.kSegWrites) {
      for (let i = 0; i < 8; i++) {
        if (s.segBaseLo[i] !== this.kSegBase[i] || s.segLimit[i] !== this.kSegLimit[i] || s.segAttr[i] !== this.kSegAttr[i]) return true;
      }
      this.kSegWrites = s.segWrites;
    }
    // CR0/CR3/CR4/EFER/DR7 bump sysWrites when written (their setters): unchanged, they are as
    // last compared. DR0-3 matter only while DR7 enables a breakpoint (dbgEn; a DR7 write that
    // enables one bumps sysWrites, and dbgUpdate then reads DR0-3 afresh).
    const sys = s.sysWrites !== this.kSysWrites;
    if (!sys && this.dbgEn === 0) return false;
    this.modeBigInputs();
    const k = this.kBig, c = this.conv32;
    for (let i = sys ? 0 : 10; i < 18; i++) if (c[i] !== k[i]) return true;
    this.kSysWrites = s.sysWrites;
    return false;
  }

  /** internal: record the inputs the mode-derived fields now reflect. */
  private saveModeInputs(): void {
    const s = this.state;
    this.kTag = this.rules.tlbTag; this.kCpl = s.cpl;
    for (let i = 0; i < 8; i++) {
      this.kSegBase[i] = s.segBaseLo[i]; this.kSegLimit[i] = s.segLimit[i]; this.kSegAttr[i] = s.segAttr[i];
    }
    this.kSegWrites = s.segWrites;
    this.kSysWrites = s.sysWrites;
    this.modeBigInputs();
    this.kBig.set(this.conv32);
  }

  /**
   * internal: recompute the breakpoint fields from DR0-3/DR7 (SDM Vol. 3B 19.2.4). Called
   * at entry and on MOV to DRn. Arming a data breakpoint strips the fast-path permissions of
   * every TLB entry so all data accesses reach rdSlow/wrSlow, where they are matched.
   */
  dbgUpdate(): void {
    const s = this.state;
    this.kTag = -1;
    const dr7 = Number(s.dr7 & 0xffffffffn);
    const wasData = this.dbgData;
    this.dbgArmed = (dr7 & 0xff) !== 0;
    this.dbgEn = 0; this.dbgData = false; this.dbgIo = false;
    for (let n = 0; n < 4; n++) {
      const rw = (dr7 >>> (16 + 4 * n)) & 3;
      const len = (dr7 >>> (18 + 4 * n)) & 3;
      this.dbgRw[n] = rw;
      this.dbgSize[n] = len === 0 ? 1 : len === 1 ? 2 : len === 3 ? 4 : 8;
      this.dbgAddr64[n] = Number(BigInt.asIntN(64, s.dr[n]));
      this.dbgAddr32[n] = Number(s.dr[n] & 0xffffffffn);
      if (((dr7 >>> (2 * n)) & 3) === 0) continue;
      this.dbgEn |= 1 << n;
      if (rw === 1 || rw === 3) this.dbgData = true;
      else if (rw === 2) this.dbgIo = true;
    }
    if (this.dbgData !== wasData) this.resetFastPerms();
  }

  /** internal: recompute every TLB entry's fast-path permissions (code pages: no write; data breakpoints: none). */
  private resetFastPerms(): void {
    for (let i = 0; i < TLB_SIZE; i++) this.tPerm[i] = this.fastPerm(this.tPermReal[i], this.tHpa[i]);
  }
  private fastPerm(perm: number, hpaPage: number): number {
    if (this.dbgData) return 0;
    return this.codePages.has(codeKey(hpaPage)) ? perm & ~(P_SW | P_UW) : perm;
  }

  /** internal: breakpoint address n (aligned down to its length) in the current mode's linear form. */
  private dbgAddr(n: number): number {
    const a = this.bits === 64 ? this.dbgAddr64[n] : this.dbgAddr32[n];
    const sz = this.dbgSize[n];
    return a - (((a % sz) + sz) % sz);
  }

  /** internal: a data access of `sz` bytes at linear `lin` (SDM 19.2.5): record matching breakpoints in dbgHit. */
  dataBreak(lin: number, sz: number, write: boolean): void {
    const en = this.dbgEn;
    for (let n = 0; n < 4; n++) {
      if (!(en & (1 << n))) continue;
      const rw = this.dbgRw[n];
      if (rw !== 3 && !(rw === 1 && write)) continue;
      const a = this.dbgAddr(n);
      if (lin < a + this.dbgSize[n] && a < lin + sz) this.dbgHit |= 1 << n;
    }
  }

  /** internal: an I/O access of `sz` bytes at `port` (R/W = 10 with CR4.DE): record matching breakpoints. */
  ioBreak(port: number, sz: number): void {
    if (!(Number(this.state.cr4 & 0xffn) & 8 /* CR4.DE */)) return;
    const en = this.dbgEn;
    for (let n = 0; n < 4; n++) {
      if (!(en & (1 << n)) || this.dbgRw[n] !== 2) continue;
      const size = this.dbgSize[n];
      const a0 = this.dbgAddr32[n] & 0xffff;
      const a = a0 - (a0 % size);
      if (port < a + size && a < port + sz) this.dbgHit |= 1 << n;
    }
  }

  /** internal: instruction breakpoints (R/W = 00) matching the instruction at RIP; returns DR6 B0-B3 bits. */
  private insnBreak(): number {
    const lin = this.bits === 64 ? this.rip : (this.segBase[CS] + this.rip) >>> 0;
    let hit = 0;
    const en = this.dbgEn;
    for (let n = 0; n < 4; n++) {
      if (!(en & (1 << n)) || this.dbgRw[n] !== 0) continue;
      if ((this.bits === 64 ? this.dbgAddr64[n] : this.dbgAddr32[n]) === lin) hit |= 1 << n;
    }
    return hit;
  }

  /**
   * internal: the exception an instruction emulated for core raised (PEND_EXC) becomes the
   * injection core queues for the guest (with CR2 for a #PF, as kvm_inject_page_fault sets it).
   */
  pendingExceptionToInjection(): void {
    const inj = this.injection;
    inj.valid = true; inj.type = EventType.HARDWARE_EXCEPTION; inj.vector = this.excVec;
    inj.hasErrorCode = this.excHasErr; inj.errorCode = this.excErr; inj.insnLength = 0;
    if (this.excVec === PF_VEC) this.state.cr2 = BigInt.asUintN(64, BigInt(this.excAddr));
  }

  /**
   * An instruction the hypervisor completed for the guest after its exit (KVM's
   * kvm_skip_emulated_instruction → kvm_pmu_instruction_retired: CPUID, RDMSR/WRMSR, I/O, …)
   * retires like any other: it counts in the retired-instruction count (the PMU, the virtual
   * clock) and, with no host time source, in the TSC. Called outside runGuest.
   */
  retireSkipped(): void {
    const s = this.state;
    s.instructionsRetired++;
    if (this.tscSource === null) {
      s.addTsc(1);
      this.tscBase = s.tscNumber;
    }
  }

  /** internal: store the hot fields back into `state` (VM exit). */
  syncOut(): void {
    const s = this.state;
    s.rflags = (this.fl & ~ARITH) | this.getArith() | 2;
    const rip = this.rip;
    s.ripLo = rip | 0;
    s.ripHi = this.bits === 64 ? Math.floor(rip / TWO32) | 0 : 0;
    if (this.tscSource !== null) {
      s.instructionsRetired += this.retired;
      this.retired = 0;
      s.setTscNumber(Math.floor(this.tscSource.now()));
    } else if (this.retired) {
      s.instructionsRetired += this.retired;
      s.addTsc(this.retired);
      this.retired = 0;
    }
    this.tscBase = s.tscNumber;
  }

  /** internal: recompute mode-derived fields after CR0/CR4/EFER/CS/SS/CPL changes. */
  updateMode(): void {
    const s = this.state;
    this.kTag = -1; // recomputed outside syncIn: syncIn compares against nothing until it saves again
    const cr0 = Number(s.cr0 & 0xffffffffn);
    const cr4 = Number(s.cr4 & 0xffffffffn);
    const efer = Number(s.efer & 0xffffn);
    this.pe = (cr0 & CR0_PE) !== 0;
    this.pg = (cr0 & CR0_PG) !== 0;
    this.wp = (cr0 & CR0_WP) !== 0;
    this.pae = (cr4 & CR4_PAE) !== 0;
    this.pse = (cr4 & CR4_PSE) !== 0;
    this.pge = (cr4 & CR4_PGE) !== 0;
    this.la57 = (cr4 & CR4_LA57) !== 0;
    this.smep = (cr4 & CR4_SMEP) !== 0;
    this.smap = (cr4 & CR4_SMAP) !== 0;
    this.pcide = (cr4 & CR4_PCIDE) !== 0;
    this.lma = (efer & EFER_LMA) !== 0;
    this.canonLimit = this.la57 ? 72057594037927936 : 140737488355328;
    this.nxe = (efer & EFER_NXE) !== 0;
    const csA = s.segAttr[CS];
    if (!this.pe) this.bits = 16;
    else if (this.lma && (csA & A_L)) this.bits = 64;
    else this.bits = (csA & A_DB) ? 32 : 16;
    this.ssz = this.bits === 64 ? 8 : (this.pe && (s.segAttr[SS] & A_DB)) ? 4 : 2;
    // Real mode: CPL 0 (the register keeps its value for VMX's unrestricted guests).
    const cpl = this.pe ? s.cpl : 0;
    if ((cpl !== 0) !== this.atUser) {
      // PMU CPL filtering: inside a block the retired count is known only at its end (the CPL
      // change ends the block: brk below), so the instruction that changed CPL counts at the old one.
      if (this.inBlock) this.cplPending = true; else this.foldCpl();
    }
    if (cpl === 3) { this.accR = P_UR; this.accW = P_UW; this.accX = P_UX; } else { this.accR = P_SR; this.accW = P_SW; this.accX = P_SX; }
    const pcid = this.pcide ? Number(s.cr3 & 0xfffn) : 0;
    const key = (this.rules.tlbTag & 0xfffff) * 4096 + pcid;
    if (key !== this.ctxKey) {
      this.ctxKey = key;
      this.ctx = this.ctxIdOf(key);
    }
    for (let i = 0; i < 8; i++) this.segUpdate(i);
    this.brk = true;
    this.tlbGen++; // block chains depend on CS base, code size and CPL
  }

  /** internal: refresh the cached base and fast-check bits of segment `i` after a load. */
  segUpdate(i: number): void {
    const s = this.state;
    this.kTag = -1;
    s.segWrites++;
    this.segBase[i] = s.segBaseLo[i] >>> 0;
    const a = s.segAttr[i];
    let f = 0;
    if (s.segLimit[i] === 0xffffffff && !(a & A_UNUSABLE) && (a & A_S)) {
      const type = a & 0xf;
      if (type & 8) { if (type & 2) f = 1; }            // readable code
      else if (!(type & 4)) f = (type & 2) ? 3 : 1;      // expand-up data
    }
    if (!this.pe) f = s.segLimit[i] === 0xffffffff ? 3 : 0;
    this.segFast[i] = f;
  }

  // ---- PMU CPL filtering (IA32_PERFEVTSELx USR/OS, IA32_FIXED_CTR_CTRL; SDM Vol. 3B 20.2) ----
  // What retired, and the TSC cycles that passed, at CPL > 0: folded at each CPL change only.
  private atUser = false;
  private userRetired = 0;
  private userCycles = 0;
  private markRetired = 0;
  private markCycles = 0;
  /** internal: a block is executing (its retirements are counted when it ends). */
  private inBlock = false;
  private cplPending = false;

  private cycleNow(): number {
    return this.tscSource !== null ? Math.floor(this.tscSource.now()) : this.tscBase + this.retired;
  }
  private foldCpl(): void {
    const r = this.state.instructionsRetired + this.retired;
    const c = this.cycleNow();
    if (this.atUser) { this.userRetired += r - this.markRetired; this.userCycles += c - this.markCycles; }
    this.markRetired = r;
    this.markCycles = c;
    this.atUser = this.pe && this.state.cpl !== 0;
    this.cplPending = false;
  }
  /** Instructions retired at CPL 1-3 so far (USR); those at CPL 0 (OS) are `state.instructionsRetired` minus these. */
  userInstructionsRetired(): number {
    return this.userRetired + (this.atUser ? this.state.instructionsRetired + this.retired - this.markRetired : 0);
  }
  /** TSC cycles spent at CPL 1-3 so far (an instruction takes one cycle of the virtual clock). */
  userCyclesElapsed(): number {
    return this.userCycles + (this.atUser ? this.cycleNow() - this.markCycles : 0);
  }

  // ---- INIT and start-up IPIs (the processor's INIT and SIPI inputs) ----
  private initPending = false;
  private sipiPending = false;
  private sipiVector = 0;
  /** An INIT signal (SDM 10.4.7.3): recognized at the next instruction boundary of runGuest. */
  signalInit(): void {
    this.initPending = true;
  }
  /** A start-up IPI (SDM 10.4.4.1): taken only in the wait-for-SIPI activity state, else discarded. */
  signalSipi(vector: number): void {
    this.sipiVector = vector & 0xff;
    this.sipiPending = true;
  }
  /** internal: take a pending INIT / SIPI at an instruction boundary; true when runGuest must return. */
  private initSipi(): boolean {
    const ex = this.exit;
    const s = this.state;
    if (this.initPending) {
      this.initPending = false;
      if (this.rules.initSipiExits) { ex.kind = GuestExitKind.INIT; this.fillBoundaryExit(); return true; }
      // INIT: the INIT state (SDM Table 10-1 — the power-up registers), then wait for a SIPI.
      this.syncOut();
      this.resetState();
      s.activity = 3;
      this.syncIn();
    }
    if (this.sipiPending) {
      this.sipiPending = false;
      if (s.activity !== 3) return false; // a SIPI outside wait-for-SIPI is discarded (SDM 26.2, 10.4.4.1)
      if (this.rules.initSipiExits) {
        ex.kind = GuestExitKind.SIPI; ex.vector = this.sipiVector; this.fillBoundaryExit(); return true;
      }
      // Start at vector:0000 in real mode (SDM 10.4.4.1): CS = vector << 8, base vector << 12, IP 0.
      this.syncOut();
      s.segSel[CS] = this.sipiVector << 8; s.segBaseLo[CS] = this.sipiVector << 12; s.segBaseHi[CS] = 0;
      s.segWrites++;
      s.ripLo = 0; s.ripHi = 0;
      s.activity = 0;
      this.syncIn();
    }
    return false;
  }

  /** internal: the CPL (0 in real mode). */
  get cpl(): number {
    return this.pe ? this.state.cpl : 0;
  }

  /** internal: virtual-8086 mode (CR0.PE = 1, EFLAGS.VM = 1, not IA-32e; SDM 20.2). */
  get vm86(): boolean {
    return (this.fl & VM) !== 0 && this.pe && !this.lma;
  }

  // =====================================================================================
  // Lazy flags (SDM Vol. 1 3.4.3.1; status flags computed only when read)
  // =====================================================================================

  /** internal: the six status flags, materialized. */
  getArith(): number {
    const op = this.fOp;
    if (op === F_EAGER) return this.fE;
    // Logical instructions clear CF, OF and AF (AF undefined: 0 here, as everywhere in this processor).
    if (op === F_LOGIC) return this.getPF() | this.getZF() | this.getSF();
    return this.getCF() | this.getPF() | this.getAF() | this.getZF() | this.getSF() | this.getOF();
  }
  /** internal: set all six status flags eagerly from `f` (RFLAGS bit positions). */
  setArith(f: number): void {
    this.fOp = F_EAGER;
    this.fE = f & ARITH;
  }
  getCF(): number {
    switch (this.fOp) {
      case F_ADD: return ult(this.fR, this.fRh, this.fA, this.fAh);
      case F_ADC: return this.fCin ? ule(this.fR, this.fRh, this.fA, this.fAh) : ult(this.fR, this.fRh, this.fA, this.fAh);
      case F_SUB: return ult(this.fA, this.fAh, this.fB, this.fBh);
      case F_SBB: return this.fCin ? ule(this.fA, this.fAh, this.fB, this.fBh) : ult(this.fA, this.fAh, this.fB, this.fBh);
      case F_LOGIC: return 0;
      default: return this.fE & CF;
    }
  }
  getZF(): number {
    if (this.fOp === F_EAGER) return this.fE & ZF;
    return (this.fR | (this.fSz === 8 ? this.fRh : 0)) === 0 ? ZF : 0;
  }
  getSF(): number {
    if (this.fOp === F_EAGER) return this.fE & SF;
    const sz = this.fSz;
    return (sz === 8 ? this.fRh >>> 31 : (this.fR >>> (sz * 8 - 1)) & 1) ? SF : 0;
  }
  getPF(): number {
    if (this.fOp === F_EAGER) return this.fE & PF;
    return PARITY[this.fR & 0xff];
  }
  getAF(): number {
    const op = this.fOp;
    if (op === F_EAGER) return this.fE & AF;
    if (op === F_LOGIC) return 0;
    return (this.fA ^ this.fB ^ this.fR) & AF;
  }
  getOF(): number {
    const op = this.fOp;
    let x: number, xh: number;
    switch (op) {
      case F_ADD: case F_ADC: case F_INC:
        x = (this.fA ^ this.fR) & (this.fB ^ this.fR); xh = (this.fAh ^ this.fRh) & (this.fBh ^ this.fRh); break;
      case F_SUB: case F_SBB: case F_DEC:
        x = (this.fA ^ this.fB) & (this.fA ^ this.fR); xh = (this.fAh ^ this.fBh) & (this.fAh ^ this.fRh); break;
      case F_LOGIC: return 0;
      default: return this.fE & OF;
    }
    const sz = this.fSz;
    return (sz === 8 ? xh >>> 31 : (x >>> (sz * 8 - 1)) & 1) ? OF : 0;
  }
  /** internal: evaluate condition code `cc` (x86 encoding 0..15: O NO B AE E NE BE A S NS P NP L GE LE G). */
  cond(cc: number): boolean {
    // Fast paths for compare-and-branch after SUB/CMP of the common sizes.
    if (this.fOp === F_SUB && this.fSz === 4) {
      const a = this.fA, b = this.fB;
      switch (cc) {
        case 2: return (a >>> 0) < (b >>> 0);
        case 3: return (a >>> 0) >= (b >>> 0);
        case 4: return a === b;
        case 5: return a !== b;
        case 6: return (a >>> 0) <= (b >>> 0);
        case 7: return (a >>> 0) > (b >>> 0);
        case 12: return a < b;
        case 13: return a >= b;
        case 14: return a <= b;
        case 15: return a > b;
      }
    }
    let r: boolean;
    switch (cc >> 1) {
      case 0: r = this.getOF() !== 0; break;
      case 1: r = this.getCF() !== 0; break;
      case 2: r = this.getZF() !== 0; break;
      case 3: r = (this.getCF() | this.getZF()) !== 0; break;
      case 4: r = this.getSF() !== 0; break;
      case 5: r = this.getPF() !== 0; break;
      case 6: r = (this.getSF() !== 0) !== (this.getOF() !== 0); break;
      default: r = this.getZF() !== 0 || ((this.getSF() !== 0) !== (this.getOF() !== 0)); break;
    }
    return (cc & 1) ? !r : r;
  }
  /** internal: the full RFLAGS value. */
  getFlags(): number {
    return (this.fl & ~ARITH) | this.getArith() | 2;
  }
  /** internal: set RFLAGS (all bits; callers apply the privilege rules first). */
  setFlags(f: number): void {
    this.fl = (f & ~ARITH & 0x3f7fd7) | 2;
    this.setArith(f);
  }

  // =====================================================================================
  // Exceptions and exits
  // =====================================================================================

  /** internal: raise exception `vec` (fault: RIP stays at the instruction). Returns 2 for op returns. */
  raise(vec: number, err: number, hasErr: boolean): number {
    if (this.pend === 0) {
      this.pend = PEND_EXC;
      this.excVec = vec;
      this.excErr = err & 0xffff;
      if (vec === PF_VEC) this.excErr = err;
      this.excHasErr = hasErr && this.pe;
    }
    return 2;
  }
  /** internal: #GP(err). */
  gp(err: number): number { return this.raise(GP, err, true); }
  /** internal: #UD. */
  ud(): number { return this.raise(UD, 0, false); }

  /** internal: fill the exit header for the current instruction (kind, length, bytes, next RIP). */
  exitInsn(kind: GuestExitKind, op: Op): number {
    const ex = this.exit;
    ex.kind = kind;
    ex.insnLength = op.len;
    ex.insnBytesFrom(op.bytes);
    // The same instruction exiting again (a loop) reuses the bigint of its next RIP.
    const next = this.nextRip(op);
    if (next !== this.exitNextRipNum) {
      this.exitNextRipNum = next;
      this.exitNextRipBig = this.ripBig(next);
    }
    ex.nextRip = this.exitNextRipBig;
    ex.vectoring.valid = false;
    this.pend = PEND_EXIT;
    return 2;
  }
  /** The block whose last instruction exited, and the RIP after that instruction (runLoop's re-entry chaining). */
  private resumeBlk: Block | null = null;
  private resumeRip = NaN;
  private exitNextRipNum = NaN;
  private exitNextRipBig = 0n;
  /** internal: RIP value (double) as the architectural 64-bit bigint. */
  ripBig(rip: number): bigint {
    return BigInt.asUintN(64, BigInt(rip));
  }
  /** internal: the address of the instruction after `op`. */
  nextRip(op: Op): number {
    const n = this.rip + op.len;
    if (this.bits === 64) return n;
    return this.bits === 16 && op.sz !== 4 ? n & 0xffff : n >>> 0;
  }
  /** internal: is the instruction intercepted? If so fill an INSTRUCTION exit. */
  intercepted(which: InterceptInsn, op: Op): boolean {
    if (this.rules.insn[which] === 0 || this.emu) return false;
    this.exitInsn(GuestExitKind.INSTRUCTION, op);
    this.exit.insn = which;
    return true;
  }

  // =====================================================================================
  // The run loop
  // =====================================================================================

  private runLoop(budget: number): void {
    const s = this.state;
    const rules = this.rules;
    const ex = this.exit;
    if (s.activity === 2) { ex.kind = GuestExitKind.SHUTDOWN; return; }
    // Event injection at entry (SDM 26.6; APM 15.20).
    const inj = this.injection;
    if (inj.valid) {
      inj.valid = false;
      s.activity = 0;
      const soft = inj.type === EventType.SOFTWARE_INTERRUPT || inj.type === EventType.SOFTWARE_EXCEPTION ||
        inj.type === EventType.PRIVILEGED_SOFTWARE_EXCEPTION;
      if (soft) this.rip = this.bits === 64 ? this.rip + inj.insnLength : (this.rip + inj.insnLength) >>> 0;
      // Injected INT n and INT3/INTO (types 4 and 6) check the gate DPL as the instructions do;
      // a privileged software exception (INT1) does not (SDM 27.6.1.1, 6.12.1.1).
      this.deliverEvent(inj.type, inj.vector, inj.errorCode, inj.hasErrorCode, soft ? inj.insnLength : 0,
        inj.type === EventType.SOFTWARE_INTERRUPT || inj.type === EventType.SOFTWARE_EXCEPTION);
      if (this.pend === PEND_EXIT) { this.pend = 0; return; }
      this.pend = 0;
      if (s.activity === 2) return;
    }
    let left = budget;
    let prevBlk: Block | null = null;
    // Re-entry right after the instruction whose exit ended the last run (an exit the VMM
    // completed and skipped, like CPUID): the block there is found through that block's
    // resumption link instead of a lookup.
    let resumeFrom: Block | null = this.resumeBlk !== null && this.rip === this.resumeRip ? this.resumeBlk : null;
    this.resumeBlk = null;
    // (through a typed-array conversion: no BigInt comparison at every entry)
    DEADLINE64[0] = rules.preemptionDeadlineTsc;
    const deadline = DEADLINE32[1] < 0 ? -1 : DEADLINE32[1] * TWO32 + (DEADLINE32[0] >>> 0);
    for (;;) {
      // Instruction boundary: events in priority order (SDM 6.9 / 26.7).
      if (this.kick) { this.kick = false; ex.kind = GuestExitKind.EXTERNAL_INTERRUPT; return; }
      // INIT (SDM Table 6-2 priority 3, above NMI and interrupts) and SIPI.
      if ((this.initPending || this.sipiPending) && this.initSipi()) return;
      // Wait-for-SIPI (activity state 3): nothing executes until a SIPI.
      if (s.activity === 3) { ex.kind = GuestExitKind.HALTED; return; }
      if (deadline >= 0 && this.tscBase + this.retired >= deadline) { ex.kind = GuestExitKind.PREEMPTION_TIMER; return; }
      const shadow = s.stiShadow || s.movSsShadow;
      if (rules.nmiWindowExiting && !s.nmiBlocked && !s.movSsShadow) {
        ex.kind = GuestExitKind.NMI_WINDOW; this.fillBoundaryExit(); s.activity = 0; return;
      }
      if (rules.irqWindowExiting && (this.fl & IF) && !shadow) {
        ex.kind = GuestExitKind.INTERRUPT_WINDOW; this.fillBoundaryExit(); s.activity = 0; return;
      }
      if (s.activity === 1) { ex.kind = GuestExitKind.HALTED; return; }
      if (s.activity === 2) { ex.kind = rules.shutdownExits ? GuestExitKind.TRIPLE_FAULT : GuestExitKind.SHUTDOWN; return; }
      if (left <= 0) { ex.kind = GuestExitKind.BUDGET; return; }

      // Instruction breakpoints fault before the fetch (SDM 6.9 priority 6; 19.2.4), unless RF is set.
      if (this.dbgArmed && !(this.fl & RF)) {
        const hit = this.insnBreak();
        if (hit !== 0) {
          s.dr6 = (s.dr6 & ~0xfn) | BigInt(hit);
          this.curOp = null;
          this.raise(DB, 0, false);
          prevBlk = null;
          if (this.handlePend()) return;
          continue;
        }
      }
      let blk: Block | null = null;
      const pb = prevBlk as Block | null;
      if (pb !== null && pb.chainGen === this.tlbGen) {
        if (pb.c1Rip === this.rip) blk = pb.c1; else if (pb.c2Rip === this.rip) blk = pb.c2;
        if (blk !== null && !blk.valid) blk = null;
      }
      if (resumeFrom !== null) {
        const rf: Block = resumeFrom;
        resumeFrom = null;
        if (rf.rGen === this.tlbGen && rf.rRip === this.rip && rf.rNext !== null && rf.rNext.valid) blk = rf.rNext;
        else {
          blk = this.lookupBlock();
          if (blk !== null && rf.valid && blk.cacheable) { rf.rGen = this.tlbGen; rf.rRip = this.rip; rf.rNext = blk; }
        }
      }
      if (blk === null) {
        blk = this.lookupBlock();
        if (blk !== null && pb !== null && pb.valid && blk.cacheable) {
          // Chain pb → blk (SDM-invisible: a cache of the lookup, dropped on any TLB/mode change).
          if (pb.chainGen !== this.tlbGen) { pb.chainGen = this.tlbGen; pb.c1 = null; pb.c2 = null; pb.c1Rip = NaN; pb.c2Rip = NaN; }
          if (pb.c1 === null) { pb.c1 = blk; pb.c1Rip = this.rip; } else { pb.c2 = blk; pb.c2Rip = this.rip; }
        }
      }
      prevBlk = null;
      if (blk === null) {
        // Instruction fetch faulted or exited.
        if (this.handlePend()) return;
        continue;
      }
      const ops = blk.ops;
      let limit = blk.n;
      // 16-bit code: IP wraps from 0xFFFF to 0 (a block may be reached at any IP): run only the
      // instructions that end by 0x10000; an instruction straddling it runs alone.
      if (this.bits === 16 && this.rip + blk.bytes + 15 > 0x10000) {
        limit = this.ipWrapLimit(blk);
        if (limit < 0) { prevBlk = null; if (this.handlePend()) return; continue; }
      }
      let maxRun = left;
      if (deadline >= 0 && deadline - (this.tscBase + this.retired) < maxRun) maxRun = Math.max(1, deadline - (this.tscBase + this.retired));
      const tfStep = (this.fl & TF) !== 0;
      const single = shadow || tfStep || rules.monitorTrapFlag || this.dbgArmed || (this.fl & RF) !== 0;
      // RF is cleared at the start of every instruction, after the instruction-breakpoint check.
      let rfWas = 0;
      if (single) { limit = 1; rfWas = this.fl & RF; this.fl &= ~RF; this.dbgHit = 0; }
      if (limit > left) limit = left;
      if (deadline >= 0 && deadline - (this.tscBase + this.retired) < limit) limit = Math.max(1, deadline - (this.tscBase + this.retired));
      this.brk = false;
      let rc = 0;
      let done: number;
      this.inBlock = true;
      const whole = !single && limit === blk.n;
      if (whole && blk.jit !== null) {
        // Second tier: the compiled block (may iterate a self-loop up to maxRun instructions).
        done = blk.jit(this, maxRun);
        rc = this.jrc;
        this.stats.compiledRuns++;
        this.stats.compiledInstructions += done;
      } else {
        if (whole && ++blk.heat === JIT_THRESHOLD && this.jitOn && blk.cacheable) {
          blk.jit = compileBlock(blk, this.bits);
          if (blk.jit !== null) this.stats.blocksCompiled++;
        }
        let k = 0;
        for (; k < limit; k++) {
          const op = ops[k];
          this.curOp = op;
          rc = op.fn(this, op);
          if (rc !== 0) break;
          this.rip = this.rip + op.len;
          if (this.brk) { k++; break; }
        }
        done = k;
        if (rc === 1) done++;
        this.stats.interpretedRuns++;
        this.stats.interpretedInstructions += done;
      }
      // Ops advanced RIP without wrap; legacy modes wrap EIP at 4 GiB, and sequential execution
      // in 16-bit code wraps IP at 64 KiB (a branch's target was already sized by its handler).
      if (this.bits !== 64 && this.rip > 0xffffffff) this.rip = this.rip >>> 0;
      if (rc === 0 && this.bits === 16 && this.rip > 0xffff) this.rip = this.rip & 0xffff;
      if (rc === 3) left--; // a partial REP string step: no retirement, but it consumes budget
      this.retired += done;
      left -= done;
      this.inBlock = false;
      if (this.cplPending) this.foldCpl();
      if (single) {
        if (shadow && !this.shadowSet && (rc <= 1)) { s.stiShadow = false; s.movSsShadow = false; }
        this.shadowSet = false;
      } else if (this.shadowSet) this.shadowSet = false;
      if (rc === 2) {
        // Not executed: RF keeps its value (a fault's delivery then pushes RF = 1 anyway).
        if (single) this.fl |= rfWas;
        if (this.apicTrap) {
          // A trap-like APIC exit is for a completed instruction; a later fault of the same one (or its exit) wins.
          this.apicTrap = false;
          if (this.pend !== PEND_EXIT) ex.kind = GuestExitKind.NONE;
        }
        // An instruction's exit: the VMM may skip it and re-enter right after it (runLoop's
        // resumption link checks RIP, the TLB generation and validity before use).
        const resume = this.pend === PEND_EXIT && this.curOp !== null && blk.cacheable ? blk : null;
        const resumeRip = resume !== null ? this.nextRip(this.curOp!) : NaN;
        if (this.handlePend()) {
          this.resumeBlk = resume;
          this.resumeRip = resumeRip;
          return;
        }
        continue;
      }
      if (this.apicTrap) {
        // Trap-like APIC exits (TPR below threshold, virtualized EOI, APIC write; SDM 29.1.2, 29.1.4,
        // 29.4.3.3) happen after the instruction retired, RIP past it. The handler filled `exit`.
        this.apicTrap = false;
        this.fillBoundaryExit();
        return;
      }
      if (blk.cacheable && blk.valid && !this.brk) prevBlk = blk;
      if (single) {
        // Trap-class #DB after the instruction (SDM 19.2.5, 19.3.1.4): data / I/O breakpoints
        // hit by it and the single-step trap, reported together in DR6.
        let hits = this.dbgArmed ? this.dbgHit : 0;
        this.dbgHit = 0;
        if (tfStep && rc <= 1) hits |= 0x4000;
        if (hits !== 0) {
          s.dr6 = (s.dr6 & ~0xfn) | BigInt(hits);
          // Between iterations of a REP string instruction the pushed RF is 1 (SDM 19.3.1.1).
          if (rc === 3) this.fl |= RF;
          prevBlk = null;
          this.raise(DB, 0, false);
          if (this.handlePend()) return;
        }
        if (rules.monitorTrapFlag && rc <= 1) { ex.kind = GuestExitKind.MONITOR_TRAP_FLAG; this.fillBoundaryExit(); return; }
      }
    }
  }

  /**
   * 16-bit code near IP 0xFFFF: how many of `blk`'s instructions end at or before IP 0x10000
   * (the run loop wraps IP to 0 after them). 1 when the first instruction itself straddles the
   * wrap, unless its bytes pass the CS limit: then #GP(0) is raised (SDM 6.3 / 3.4.5: a fetch
   * beyond the limit) and -1 returned.
   */
  private ipWrapLimit(blk: Block): number {
    let end = this.rip;
    let k = 0;
    for (; k < blk.n; k++) {
      end += blk.ops[k].len;
      if (end > 0x10000) break;
    }
    if (k > 0) return k;
    if (end - 1 > this.state.segLimit[CS]) { this.curOp = null; this.gp(0); return -1; }
    return 1;
  }

  private fillBoundaryExit(): void {
    const ex = this.exit;
    ex.insnLength = 0;
    ex.noInsnBytes();
    ex.nextRip = this.ripBig(this.rip);
    ex.vectoring.valid = false;
  }

  /** Handle `pend` after an instruction stopped; returns true when runGuest must return. */
  private handlePend(): boolean {
    const p = this.pend;
    this.pend = 0;
    if (p === PEND_EXIT) return true;
    if (p === PEND_EXC) {
      this.deliverException(this.excVec, this.excErr, this.excHasErr, this.excAddr);
      if (this.pend === PEND_EXIT) { this.pend = 0; return true; }
      this.pend = 0;
      return this.state.activity === 2 && this.exit.kind !== GuestExitKind.NONE;
    }
    return false;
  }

  /** Deliver (or exit on) a hardware exception raised by an instruction. */
  deliverException(vec: number, err: number, hasErr: boolean, addr: number): void {
    if (!this.emu && this.rules.exceptionExits(vec, err)) {
      this.fillExceptionExit(vec, err, hasErr, addr);
      return;
    }
    if (vec === PF_VEC) this.state.cr2 = BigInt.asUintN(64, BigInt(addr));
    // Fault-class exceptions other than an instruction-breakpoint #DB push RF = 1 (SDM 19.3.1.1).
    if (((FAULT_VECTORS >>> vec) & 1) !== 0 || (vec === DB && this.dbgFault)) this.fl |= RF;
    this.dbgFault = false;
    this.deliverEvent(EventType.HARDWARE_EXCEPTION, vec, err, hasErr, 0, false);
  }

  private fillExceptionExit(vec: number, err: number, hasErr: boolean, addr: number): void {
    const ex = this.exit;
    ex.kind = GuestExitKind.EXCEPTION;
    ex.vector = vec;
    ex.errorCode = err;
    ex.hasErrorCode = hasErr;
    ex.faultAddress = vec === PF_VEC ? BigInt.asUintN(64, BigInt(addr)) : 0n;
    const op = this.curOp;
    if (op && this.dlvValid === false) {
      ex.insnLength = op.len;
      ex.insnBytesFrom(op.bytes);
    } else {
      ex.insnLength = 0;
      ex.noInsnBytes();
    }
    ex.nextRip = this.ripBig(this.rip);
    this.pend = PEND_EXIT;
  }

  /**
   * Deliver an event through the IDT (SDM 6.12 / 6.14; APM 8.9). Faults during delivery
   * combine into #DF or a triple fault (SDM Table 6-5); an exit during delivery records the
   * event in exit.vectoring.
   */
  deliverEvent(type: EventType, vec: number, err: number, hasErr: boolean, insnLen: number, softInt: boolean): void {
    let t = type, v = vec, e = err, h = hasErr, soft = softInt;
    this.curOp = null;
    for (let guard = 0; guard < 4; guard++) {
      this.dlvValid = true; this.dlvType = t; this.dlvVec = v; this.dlvErr = e; this.dlvHasErr = h; this.dlvLen = insnLen;
      this.pend = 0;
      const ext = (t === EventType.SOFTWARE_INTERRUPT || t === EventType.SOFTWARE_EXCEPTION || t === EventType.PRIVILEGED_SOFTWARE_EXCEPTION) ? 0 : 1;
      const ok = this.idtDeliver(v, e, h && this.pe, soft, ext);
      if (ok) {
        this.dlvValid = false;
        if (t === EventType.NMI) this.state.nmiBlocked = true;
        this.state.activity = 0;
        this.brk = true;
        return;
      }
      if (this.pend === PEND_EXIT) {
        const vi = this.exit.vectoring;
        vi.valid = true; vi.type = t; vi.vector = v; vi.hasErrorCode = h && this.pe; vi.errorCode = e; vi.insnLength = insnLen;
        // An exit while delivering INT n / INT3 / INTO / INT1 (or an injected software event)
        // saves RIP at the instruction, not past it: the VMM re-injects it with its length, which
        // advances RIP once (SDM 28.2.4 with the VM-exit instruction length; APM 15.7.2 EXITINTINFO).
        if (insnLen !== 0) {
          this.rip = this.bits === 64 ? this.rip - insnLen : (this.rip - insnLen) >>> 0;
          this.exit.insnLength = insnLen;
        }
        this.dlvValid = false;
        return;
      }
      if (this.pend !== PEND_EXC) { this.dlvValid = false; return; }
      // A second exception while delivering the first (SDM 6.15, Table 6-5).
      const nv = this.excVec, ne = this.excErr, nh = this.excHasErr, na = this.excAddr;
      this.pend = 0;
      // A fault while delivering a software interrupt is reported at the INT instruction.
      if (insnLen !== 0) this.rip = this.bits === 64 ? this.rip - insnLen : (this.rip - insnLen) >>> 0;
      if (t === EventType.HARDWARE_EXCEPTION && v === DF_VEC) { this.dlvValid = false; this.tripleFault(); return; }
      const firstClass = t === EventType.HARDWARE_EXCEPTION ? excClass(v) : 0;
      const secondClass = excClass(nv);
      let dv = nv, de = ne, dh = nh;
      if ((firstClass === 1 && secondClass === 1) || (firstClass === 2 && secondClass !== 0)) {
        dv = DF_VEC; de = 0; dh = true;
      }
      if (!this.emu && this.rules.exceptionExits(dv, de)) {
        this.fillExceptionExit(dv, de, dh && this.pe, na);
        const vi = this.exit.vectoring;
        vi.valid = true; vi.type = t; vi.vector = v; vi.hasErrorCode = h && this.pe; vi.errorCode = e; vi.insnLength = insnLen;
        this.dlvValid = false;
        return;
      }
      if (dv === PF_VEC) this.state.cr2 = BigInt.asUintN(64, BigInt(na));
      t = EventType.HARDWARE_EXCEPTION; v = dv; e = de; h = dh; soft = false; insnLen = 0;
    }
    this.dlvValid = false;
    this.tripleFault();
  }

  /** internal: deliver through the IDT/IVT (sys.ts). */
  idtDeliver(vec: number, err: number, hasErr: boolean, soft: boolean, ext: number): boolean {
    return idtDeliver(this, vec, err, hasErr, soft, ext);
  }

  /** internal: triple fault → shutdown (SDM 6.15 "Interrupt 8"; exits when the vendor says so). */
  tripleFault(): void {
    const ex = this.exit;
    this.pend = PEND_EXIT;
    ex.vectoring.valid = false;
    ex.insnLength = 0;
    ex.nextRip = this.ripBig(this.rip);
    if (!this.emu && this.rules.shutdownExits) {
      ex.kind = GuestExitKind.TRIPLE_FAULT;
    } else {
      this.state.activity = 2;
      ex.kind = GuestExitKind.SHUTDOWN;
    }
  }

  // =====================================================================================
  // Memory: linear → host through the software TLB
  // =====================================================================================

  /** internal: read `sz` (1,2,4) bytes at linear `lin` (data read at the current CPL). */
  rd8(lin: number): number {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accR) !== 0) {
      return this.tBuf[i][this.tOff[i] + o];
    }
    return this.rdSlow(lin, 1);
  }
  rd16(lin: number): number {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accR) !== 0 && o < 0xfff) {
      const b = this.tBuf[i], p = this.tOff[i] + o;
      return b[p] | (b[p + 1] << 8);
    }
    return this.rdSlow(lin, 2);
  }
  rd32(lin: number): number {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accR) !== 0 && o < 0xffd) {
      const b = this.tBuf[i], p = this.tOff[i] + o;
      return b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24);
    }
    return this.rdSlow(lin, 4);
  }
  /** 64-bit read: returns the low half, high half in `vh`. */
  rd64(lin: number): number {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accR) !== 0 && o < 0xff9) {
      const b = this.tBuf[i], p = this.tOff[i] + o;
      this.vh = b[p + 4] | (b[p + 5] << 8) | (b[p + 6] << 16) | (b[p + 7] << 24);
      return b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24);
    }
    return this.rdSlow(lin, 8);
  }
  /** Read of size `sz` (1,2,4,8); high half in vh for 8 (0 otherwise). */
  rdN(lin: number, sz: number): number {
    switch (sz) {
      case 1: this.vh = 0; return this.rd8(lin);
      case 2: this.vh = 0; return this.rd16(lin);
      case 4: this.vh = 0; return this.rd32(lin);
      default: return this.rd64(lin);
    }
  }
  wr8(lin: number, v: number): void {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accW) !== 0) {
      this.tBuf[i][this.tOff[i] + o] = v;
      return;
    }
    this.wrSlow(lin, 1, v, 0);
  }
  wr16(lin: number, v: number): void {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accW) !== 0 && o < 0xfff) {
      const b = this.tBuf[i], p = this.tOff[i] + o;
      b[p] = v; b[p + 1] = v >> 8;
      return;
    }
    this.wrSlow(lin, 2, v, 0);
  }
  wr32(lin: number, v: number): void {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accW) !== 0 && o < 0xffd) {
      const b = this.tBuf[i], p = this.tOff[i] + o;
      b[p] = v; b[p + 1] = v >> 8; b[p + 2] = v >> 16; b[p + 3] = v >> 24;
      return;
    }
    this.wrSlow(lin, 4, v, 0);
  }
  wr64(lin: number, v: number, vh: number): void {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accW) !== 0 && o < 0xff9) {
      const b = this.tBuf[i], p = this.tOff[i] + o;
      b[p] = v; b[p + 1] = v >> 8; b[p + 2] = v >> 16; b[p + 3] = v >> 24;
      b[p + 4] = vh; b[p + 5] = vh >> 8; b[p + 6] = vh >> 16; b[p + 7] = vh >> 24;
      return;
    }
    this.wrSlow(lin, 8, v, vh);
  }
  wrN(lin: number, sz: number, v: number, vh: number): void {
    switch (sz) {
      case 1: this.wr8(lin, v); return;
      case 2: this.wr16(lin, v); return;
      case 4: this.wr32(lin, v); return;
      default: this.wr64(lin, v, vh);
    }
  }
  /**
   * internal: stores for compiled code: 0 when the store is done and nothing else happened;
   * 1 when the caller must look at `pend` (a fault or exit: nothing stored) or `brk` (the
   * store dropped translated code).
   */
  jw8(lin: number, v: number): number {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accW) !== 0) {
      this.tBuf[i][this.tOff[i] + o] = v;
      return 0;
    }
    this.wrSlow(lin, 1, v, 0);
    return this.pend !== 0 || this.brk ? 1 : 0;
  }
  jw16(lin: number, v: number): number {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accW) !== 0 && o < 0xfff) {
      const b = this.tBuf[i], p = this.tOff[i] + o;
      b[p] = v; b[p + 1] = v >> 8;
      return 0;
    }
    this.wrSlow(lin, 2, v, 0);
    return this.pend !== 0 || this.brk ? 1 : 0;
  }
  jw32(lin: number, v: number): number {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accW) !== 0 && o < 0xffd) {
      const b = this.tBuf[i], p = this.tOff[i] + o;
      b[p] = v; b[p + 1] = v >> 8; b[p + 2] = v >> 16; b[p + 3] = v >> 24;
      return 0;
    }
    this.wrSlow(lin, 4, v, 0);
    return this.pend !== 0 || this.brk ? 1 : 0;
  }
  jw64(lin: number, v: number, vh: number): number {
    this.wr64(lin, v, vh);
    return this.pend !== 0 || this.brk ? 1 : 0;
  }

  /**
   * internal: make sure a write of `sz` bytes at `lin` will succeed (translate for write,
   * set dirty bits) before an instruction reads its operand (read-modify-write ordering:
   * faults come before any side effect). Sets `pend` on a fault.
   */
  wprobe(lin: number, sz: number): void {
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accW) !== 0 && o <= 0x1000 - sz) return;
    if (this.xlate(lin, 1) === -1) return;
    if (o > 0x1000 - sz) this.xlate(this.linAdd(lin, sz - 1), 1);
  }
  /** internal: linear address + small delta with the mode's wrap-around. */
  linAdd(lin: number, d: number): number {
    return this.bits === 64 ? lin + d : (lin + d) >>> 0;
  }

  private rdSlow(lin: number, sz: number): number {
    if (this.dbgData) this.dataBreak(lin, sz, false);
    const o = lin & 0xfff;
    if (o + sz <= 0x1000) {
      const i = this.xlate(lin, 0);
      if (i < 0) return i === -3 ? this.apicRead(lin, sz) : this.rdMmio(i, lin, sz);
      const b = this.tBuf[i], p = this.tOff[i] + o;
      let v = 0;
      for (let k = Math.min(sz, 4) - 1; k >= 0; k--) v = (v << 8) | b[p + k];
      if (sz === 8) {
        let h = 0;
        for (let k = 7; k >= 4; k--) h = (h << 8) | b[p + k];
        this.vh = h;
      }
      return v;
    }
    if (this.guestApic !== null && !this.emu) return this.crossApic(lin, sz, false, 0, 0);
    // Crossing a page boundary: both pages must translate before the read completes.
    let lo = 0, hi = 0;
    for (let k = 0; k < sz; k++) {
      const a = this.linAdd(lin, k);
      let byte: number;
      const i = this.xlate(a, 0);
      if (i === -1) return 0;
      if (i < 0) { byte = this.rdMmio(i, a, 1); if (this.pend) return 0; } else byte = this.tBuf[i][this.tOff[i] + (a & 0xfff)];
      if (k < 4) lo |= byte << (k * 8); else hi |= byte << ((k - 4) * 8);
    }
    this.vh = hi;
    return lo;
  }

  private rdMmio(i: number, lin: number, sz: number): number {
    if (i === -1) { this.vh = 0; return 0; }
    // i === -2: unbacked GPA in emulateInstruction: ask the MMIO bus.
    const buf = this.mmioBuf;
    const gpa = this.mmioGpa;
    if (!this.mmio || !this.mmio.read(BigInt(gpa), sz, buf)) {
      this.pend = PEND_USER;
      this.vh = 0;
      return 0;
    }
    void lin;
    const v = buf[0] | (buf[1] << 8) | (buf[2] << 16) | (buf[3] << 24);
    this.vh = sz === 8 ? buf[4] | (buf[5] << 8) | (buf[6] << 16) | (buf[7] << 24) : 0;
    return sz === 1 ? v & 0xff : sz === 2 ? v & 0xffff : v;
  }

  private wrSlow(lin: number, sz: number, v: number, vh: number): void {
    if (this.dbgData) this.dataBreak(lin, sz, true);
    const o = lin & 0xfff;
    if (o + sz <= 0x1000) {
      const i = this.xlate(lin, 1);
      if (i === -1) return;
      if (i === -2) { this.wrMmio(sz, v, vh); return; }
      if (i === -3) {
        const lo = sz === 1 ? v & 0xff : sz === 2 ? v & 0xffff : v >>> 0;
        this.apicResult(this.guestApic!.access(o, sz, 1, lo, sz === 8 ? vh >>> 0 : 0, this.exit));
        return;
      }
      this.wrBytes(i, o, sz, v, vh);
      return;
    }
    if (this.guestApic !== null && !this.emu) { this.crossApic(lin, sz, true, v, vh); return; }
    // Crossing: translate both pages for write first.
    const lin2 = this.linAdd(lin, 0x1000 - o);
    const i1 = this.xlate(lin, 1);
    if (i1 === -1) return;
    const g1 = this.mmioGpa;
    const i2 = this.xlate(lin2, 1);
    if (i2 === -1) return;
    const n1 = 0x1000 - o;
    for (let k = 0; k < sz; k++) {
      const byte = k < 4 ? (v >>> (k * 8)) & 0xff : (vh >>> ((k - 4) * 8)) & 0xff;
      const i = k < n1 ? i1 : i2;
      if (i === -2) {
        this.mmioBuf[0] = byte;
        this.mmio!.write(BigInt(k < n1 ? g1 + k : this.mmioGpa + (k - n1)), 1, this.mmioBuf.subarray(0, 1));
      } else {
        const off = k < n1 ? o + k : k - n1;
        this.wrBytes(i, off, 1, byte, 0);
      }
    }
  }

  private wrMmio(sz: number, v: number, vh: number): void {
    const b = this.mmioBuf;
    for (let k = 0; k < sz; k++) b[k] = k < 4 ? v >>> (k * 8) : vh >>> ((k - 4) * 8);
    this.mmio!.write(BigInt(this.mmioGpa), sz, b.subarray(0, sz));
  }

  private wrBytes(i: number, o: number, sz: number, v: number, vh: number): void {
    const hpa = this.tHpa[i];
    if (this.tPerm[i] !== this.tPermReal[i]) {
      // A page with translated code: drop what the write overlaps.
      this.codeWrite(hpa + o, sz);
      if (!this.codePages.has(codeKey(hpa)) && !this.dbgData) this.tPerm[i] = this.tPermReal[i];
    }
    const b = this.tBuf[i], p = this.tOff[i] + o;
    for (let k = 0; k < sz; k++) b[p + k] = k < 4 ? v >>> (k * 8) : vh >>> ((k - 4) * 8);
  }

  /**
   * internal: translate linear `lin` for `kind` (0 read, 1 write, 2 fetch) at the current
   * access privilege; returns the TLB index, -1 on a fault/exit (pend set), -2 for MMIO in
   * emulateInstruction (mmioGpa set).
   */
  xlate(lin: number, kind: number): number {
    const req = kind === 0 ? this.accR : kind === 1 ? this.accW : this.accX;
    const o = lin & 0xfff;
    const i = (lin >>> 12) & TLB_MASK;
    if (this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPermReal[i] & req) !== 0) return i;
    return this.walk(lin, kind, req);
  }

  /** internal: physical location of `gpa` for `access`: sets pBuf/pOff/pHpa; false with pend set, or 'mmio'. */
  physLoc(gpa: number, access: number, gla: number, glaValid: boolean): number {
    let hpa: number;
    const tdp = this.rules.tdp;
    if (tdp !== null && !this.emu) {
      const page = gpa - (gpa % 4096);
      if (access === (ACCESS_READ | ACCESS_PAGE_WALK)) {
        if (this.gpGen !== this.tlbGen || this.gpTdp !== tdp || this.gpRoot !== tdp.rootTag) {
          this.gpPage.fill(NaN);
          this.gpGen = this.tlbGen; this.gpTdp = tdp; this.gpRoot = tdp.rootTag;
        }
        const ci = (gpa / 4096) & GP_CACHE_MASK;
        if (this.gpPage[ci] === page) {
          hpa = this.gpHpa[ci];
        } else {
          hpa = tdp.translate(page, access, gla, glaValid, this.exit);
          if (hpa >= 0) { this.gpPage[ci] = page; this.gpHpa[ci] = hpa; }
        }
      } else {
        hpa = tdp.translate(page, access, gla, glaValid, this.exit);
      }
      if (hpa < 0) {
        this.exit.vectoring.valid = false;
        this.exit.insnLength = this.curOp ? this.curOp.len : 0;
        this.exit.nextRip = this.ripBig(this.rip);
        this.pend = PEND_EXIT;
        return -1;
      }
      hpa += gpa % 4096;
    } else {
      hpa = (access & ACCESS_WRITE) && this.phys.gpaToHpaForWrite ? this.phys.gpaToHpaForWrite(gpa) : this.phys.gpaToHpa(gpa);
      const ap = this.guestApic;
      if (ap !== null && this.emu && !(access & (ACCESS_PAGE_WALK | ACCESS_FETCH)) &&
        (gpa - (gpa % 4096) === ap.gpaPage || (hpa >= 0 && hpa - (hpa % 4096) === ap.hpaPage))) {
        // KVM's emulator treats the virtualized APIC page as MMIO (vcpu_is_mmio_gpa): the access reaches the APIC.
        hpa = -1;
      }
      if (hpa < 0) {
        if (this.emu && !(access & ACCESS_PAGE_WALK) && !(access & ACCESS_FETCH)) {
          this.mmioGpa = gpa;
          return -2;
        }
        if (this.emu) { this.pend = PEND_UNHANDLED; return -1; }
        const ex = this.exit;
        ex.kind = GuestExitKind.MMIO;
        ex.gpa = BigInt(gpa);
        ex.gla = BigInt.asUintN(64, BigInt(gla));
        ex.glaValid = glaValid;
        ex.access = access;
        ex.insnLength = this.curOp ? this.curOp.len : 0;
        if (this.curOp) {
          ex.insnBytesFrom(this.curOp.bytes);
          ex.nextRip = this.ripBig(this.nextRip(this.curOp));
        } else {
          ex.noInsnBytes();
          ex.nextRip = this.ripBig(this.rip);
        }
        ex.vectoring.valid = false;
        this.pend = PEND_EXIT;
        return -1;
      }
    }
    let reg = this.lastRegion;
    if (reg === null || hpa < reg.base || hpa >= reg.base + reg.bytes.length) {
      // The two most recent regions: a TLB miss alternates between the guest's page tables
      // and the data page, often in different memslots.
      const prev = this.prevRegion;
      if (prev !== null && hpa >= prev.base && hpa < prev.base + prev.bytes.length) {
        reg = prev;
      } else {
        reg = this.host.find(hpa);
        if (reg === null) {
          // A backend mapped a GPA to nothing: a host bug, surfaced as an internal error.
          throw new Error(`processor: host-physical 0x${hpa.toString(16)} is outside host memory`);
        }
      }
      this.prevRegion = this.lastRegion;
      this.lastRegion = reg;
    }
    this.pBuf = reg.bytes;
    this.pOff = hpa - reg.base;
    this.pHpa = hpa;
    return 0;
  }

  /** internal: read a 32-bit paging entry at gpa (pBuf/pOff left pointing at it). */
  private ptRead32(gpa: number, lin: number): number {
    if (this.physLoc(gpa, ACCESS_READ | ACCESS_PAGE_WALK, lin, true) !== 0) return -1;
    const b = this.pBuf, p = this.pOff;
    return (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0;
  }
  /** internal: read a 64-bit paging entry: low half returned (>= 0), high in vh; -1 on exit. */
  private ptRead64(gpa: number, lin: number): number {
    if (this.physLoc(gpa, ACCESS_READ | ACCESS_PAGE_WALK, lin, true) !== 0) return -1;
    const b = this.pBuf, p = this.pOff;
    this.vh = b[p + 4] | (b[p + 5] << 8) | (b[p + 6] << 16) | (b[p + 7] << 24);
    return (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0;
  }
  /** internal: set bits in the low byte of a paging entry (A/D updates). */
  private ptSetBits(gpa: number, lin: number, bits: number): boolean {
    if (this.physLoc(gpa, ACCESS_WRITE | ACCESS_PAGE_WALK, lin, true) !== 0) return false;
    this.pBuf[this.pOff] |= bits;
    if (this.codePages.size) this.codeWrite(this.pHpa, 1);
    return true;
  }

  /**
   * The page walk (SDM Vol. 3A 4.3-4.5; APM Vol. 2 5.3): translate, check permissions,
   * set accessed/dirty bits, fill the TLB. Returns the TLB index or -1/-2 (see xlate).
   */
  private walk(lin: number, kind: number, req: number): number {
    const user = (req & (P_UR | P_UW | P_UX)) !== 0;
    let gpa: number;
    let perm = P_SR | P_SW | P_SX | P_UR | P_UW | P_UX;
    let global = 0;
    let shift = 12;
    if (!this.pg) {
      gpa = this.bits === 64 ? lin : lin >>> 0;
    } else {
      let rw = 1, us = 1, nx = 0;
      let dirty = 0;
      let leafGpa = 0;
      let leafVal = 0;
      const s = this.state;
      const wantW = kind === 1;
      const rsvdFault = (): number => this.pageFault(lin, kind, user, true, true);
      if (!this.pae) {
        // 32-bit paging (SDM 4.3).
        const l = lin >>> 0;
        const pdeA = Number(s.cr3 & 0xfffff000n) + ((l >>> 22) << 2);
        const pde = this.ptRead32(pdeA, lin);
        if (pde < 0) return -1;
        if (!(pde & 1)) return this.pageFault(lin, kind, user, false, false);
        rw &= (pde >>> 1) & 1; us &= (pde >>> 2) & 1;
        if ((pde & 0x80) && this.pse) {
          if (pde & 0x200000) return rsvdFault();
          leafGpa = pdeA; leafVal = pde;
          gpa = (pde & 0xffc00000) + ((pde >>> 13) & 0xff) * TWO32 + (l & 0x3fffff);
          global = (pde >>> 8) & 1; shift = 22;
          dirty = (pde >>> 6) & 1;
        } else {
          if (!(pde & 0x20)) { if (!this.ptSetBits(pdeA, lin, 0x20)) return -1; }
          const pteA = (pde & 0xfffff000) + (((l >>> 12) & 0x3ff) << 2);
          const pte = this.ptRead32(pteA, lin);
          if (pte < 0) return -1;
          if (!(pte & 1)) return this.pageFault(lin, kind, user, false, false);
          rw &= (pte >>> 1) & 1; us &= (pte >>> 2) & 1;
          leafGpa = pteA; leafVal = pte;
          gpa = (pte & 0xfffff000) + (l & 0xfff);
          global = (pte >>> 8) & 1;
          dirty = (pte >>> 6) & 1;
        }
      } else {
        // PAE (SDM 4.4) and 4/5-level (SDM 4.5).
        const hiL = Math.floor(lin / TWO32);
        const loL = lin >>> 0;
        const rsvdHiMask = (0xfffff >>> (MAXPHYADDR - 32)) << (MAXPHYADDR - 32);
        let tableGpa: number;
        let level: number;
        if (this.lma) {
          tableGpa = Number(s.cr3 & 0x000ffffffffff000n);
          level = this.la57 ? 5 : 4;
        } else {
          // PAE paging starts from the PDPTE registers, not the PDPT in memory (SDM 4.4.1);
          // AMD under nested paging reads the PDPEs from guest memory (pdptr.ts).
          const pi = loL >>> 30;
          let e: number, eh: number;
          if (pdptrsInMemory(this)) {
            e = this.ptRead64(Number(s.cr3 & 0xffffffe0n) + pi * 8, lin);
            if (e < 0) return -1;
            eh = this.vh;
          } else {
            if (this.pdptrReload && !reloadPdptrsForWalk(this)) return -1;
            e = s.pdptrLo[pi]; eh = s.pdptrHi[pi];
          }
          if (!(e & 1)) return this.pageFault(lin, kind, user, false, false);
          if (pdpteReserved(e, eh)) return rsvdFault();
          tableGpa = ((e & 0xfffff000) >>> 0) + (eh & 0xfffff) * TWO32;
          level = 2;
        }
        for (;;) {
          let idx: number;
          switch (level) {
            case 5: idx = (hiL >>> 16) & 0x1ff; break;
            case 4: idx = (hiL >>> 7) & 0x1ff; break;
            case 3: idx = ((hiL & 0x7f) << 2) | (loL >>> 30); break;
            case 2: idx = (loL >>> 21) & 0x1ff; break;
            default: idx = (loL >>> 12) & 0x1ff;
          }
          const ea = tableGpa + idx * 8;
          const e = this.ptRead64(ea, lin);
          if (e < 0) return -1;
          const eh = this.vh;
          if (!(e & 1)) return this.pageFault(lin, kind, user, false, false);
          if ((eh & rsvdHiMask) !== 0) return rsvdFault();
          if ((eh & 0x80000000) && !this.nxe) return rsvdFault();
          rw &= (e >>> 1) & 1; us &= (e >>> 2) & 1; nx |= this.nxe ? eh >>> 31 : 0;
          const ps = (e & 0x80) !== 0;
          if (level >= 4 && ps) return rsvdFault();
          if (level === 1 || ps) {
            if (level === 3) {
              if (e & 0x3fffe000) return rsvdFault();
              gpa = ((e & 0xc0000000) >>> 0) + (eh & 0xfffff) * TWO32 + (loL & 0x3fffffff);
              shift = 30;
            } else if (level === 2) {
              if (e & 0x1fe000) return rsvdFault();
              gpa = ((e & 0xffe00000) >>> 0) + (eh & 0xfffff) * TWO32 + (loL & 0x1fffff);
              shift = 21;
            } else {
              gpa = ((e & 0xfffff000) >>> 0) + (eh & 0xfffff) * TWO32 + (loL & 0xfff);
            }
            leafGpa = ea; leafVal = e;
            global = (e >>> 8) & 1;
            dirty = (e >>> 6) & 1;
            break;
          }
          if (!(e & 0x20)) { if (!this.ptSetBits(ea, lin, 0x20)) return -1; }
          tableGpa = ((e & 0xfffff000) >>> 0) + (eh & 0xfffff) * TWO32;
          level--;
        }
      }
      // Permissions (SDM 4.6): U/S, R/W with CR0.WP, NX, SMEP, SMAP.
      perm = P_SR | P_SX;
      if (rw || !this.wp) perm |= P_SW;
      if (us) {
        perm |= P_UR | P_UX;
        if (rw) perm |= P_UW;
        if (this.smep) perm &= ~P_SX;
        if (this.smap) perm &= ~(P_SR | P_SW);
      }
      if (nx) perm &= ~(P_SX | P_UX);
      let allowed = (perm & req) !== 0;
      if (!allowed && us && this.smap && (req & (P_SR | P_SW)) && (this.fl & AC) && !this.implicitSup) {
        // SMAP with RFLAGS.AC=1: explicit supervisor data access to a user page is allowed
        // (SDM 4.6.1); not cached, so the check is redone on every such access.
        const p2 = (rw || !this.wp) ? (P_SR | P_SW) : P_SR;
        allowed = (p2 & req) !== 0;
      }
      if (!allowed) return this.pageFault(lin, kind, user, true, false);
      // Accessed and dirty (SDM 4.8).
      let setBits = 0;
      if (!(leafVal & 0x20)) setBits |= 0x20;
      if (wantW && !dirty) { setBits |= 0x40; dirty = 1; }
      if (setBits && !this.ptSetBits(leafGpa, lin, setBits)) return -1;
      if (!dirty) perm &= ~(P_SW | P_UW);
      if (!this.pge) global = 0;
    }
    const access = kind === 1 ? ACCESS_WRITE : kind === 2 ? ACCESS_FETCH : ACCESS_READ;
    const ap = this.guestApic;
    // The vendor's APIC page, by guest-physical address before TDP (SVM AVIC_APIC_BAR).
    if (ap !== null && !this.emu && gpa - (gpa % 4096) === ap.gpaPage) {
      const r = this.apicPageHit(ap, lin, kind);
      if (r !== 0) return r;
    }
    const pl = this.physLoc(gpa, access | (user ? ACCESS_USER : 0), lin, true);
    if (pl !== 0) return pl;
    // ... or by host-physical address after TDP (VMX APIC-access address, SDM 29.4).
    if (ap !== null && !this.emu && this.pHpa - (this.pHpa % 4096) === ap.hpaPage) {
      const r = this.apicPageHit(ap, lin, kind);
      if (r !== 0) return r;
    }
    // With TDP or a read-only slot, a read fill may not grant write (and vice versa for fetch).
    if (kind !== 1 && (this.rules.tdp !== null || this.phys.gpaToHpaForWrite)) perm &= ~(P_SW | P_UW);
    if (this.rules.tdp !== null && kind !== 2) perm &= ~(P_SX | P_UX);
    // A fetch the APIC-page handler let through is cached for fetches only: data accesses keep missing.
    if (this.apicFetchOnly) { this.apicFetchOnly = false; perm &= P_SX | P_UX; }
    const i = (lin >>> 12) & TLB_MASK;
    const hpaPage = this.pHpa - (this.pHpa % 4096);
    this.tPage[i] = lin - (lin & 0xfff);
    this.tCtx[i] = this.ctx;
    this.tPermReal[i] = perm;
    this.tPerm[i] = this.fastPerm(perm, hpaPage);
    this.tOff[i] = this.pOff - (this.pOff % 4096);
    this.tBuf[i] = this.pBuf;
    this.tHpa[i] = hpaPage;
    this.tGlobal[i] = global;
    this.tShift[i] = shift;
    if (shift !== 12) this.largeEntries++;
    return i;
  }
  /** internal: the current access is an implicit supervisor access (descriptor tables, TSS, IDT). */
  implicitSup = false;

  // ---- internal: the vendor's virtualized APIC page (GuestModeRules.apicPage) ----
  /** internal: rules.apicPage of the last runGuest (kept through emulateInstruction), or null. */
  guestApic: ApicPageHandler | null = null;
  private apicSeenGpa = -1;
  private apicSeenHpa = -1;
  /** internal: the handler asked for a trap-like exit once the current instruction completes (`exit` filled). */
  apicTrap = false;
  private apicFetchOnly = false;

  /**
   * internal: a translation reached the APIC page. Data accesses return -3 (the caller hands the
   * access to the handler; nothing is cached). A fetch asks the handler now: an exit is -1 with
   * `pend` set; otherwise 0 and the walk caches the page for fetches only.
   */
  private apicPageHit(ap: ApicPageHandler, lin: number, kind: number): number {
    if (kind !== 2) return -3;
    if (ap.access(lin & 0xfff, 1, 2, 0, 0, this.exit) === APIC_ACCESS_EXIT) { this.apicExit(); return -1; }
    this.apicFetchOnly = true;
    return 0;
  }

  /** internal: the handler filled a fault-like exit: the instruction does not complete (SDM 29.4.1). */
  private apicExit(): void {
    const ex = this.exit;
    const op = this.curOp;
    ex.vectoring.valid = false;
    if (op) {
      ex.insnLength = op.len;
      ex.insnBytesFrom(op.bytes);
      ex.nextRip = this.ripBig(this.nextRip(op));
    } else {
      ex.insnLength = 0;
      ex.noInsnBytes();
      ex.nextRip = this.ripBig(this.rip);
    }
    this.pend = PEND_EXIT;
  }

  /** internal: the handler's result code for one access; false when it exited (pend set). */
  private apicResult(rc: number): boolean {
    if (rc === APIC_ACCESS_EXIT) { this.apicExit(); return false; }
    if (rc === APIC_ACCESS_DONE_TRAP) { this.apicTrap = true; this.brk = true; }
    return true;
  }

  /** internal: a read of `sz` bytes at `lin` on the APIC page (high half in vh). */
  private apicRead(lin: number, sz: number): number {
    const ap = this.guestApic!;
    if (!this.apicResult(ap.access(lin & 0xfff, sz, 0, 0, 0, this.exit))) { this.vh = 0; return 0; }
    this.vh = sz === 8 ? ap.result[1] | 0 : 0;
    const v = ap.result[0];
    return sz === 1 ? v & 0xff : sz === 2 ? v & 0xffff : v | 0;
  }

  /** internal: one part (`n` bytes at `lin`, within one page, translated to TLB index `i` / -2 / -3) of a page-crossing read, into apicBytes. */
  private readonly apicBytes = new Uint8Array(16);
  private crossPart(i: number, lin: number, n: number, at: number, write: boolean): boolean {
    const b = this.apicBytes;
    if (i === -3) {
      let lo = 0, hi = 0;
      if (write) {
        for (let k = n - 1; k >= 0; k--) { if (k >= 4) hi = (hi << 8) | b[at + k]; else lo = (lo << 8) | b[at + k]; }
        return this.apicResult(this.guestApic!.access(lin & 0xfff, n, 1, lo >>> 0, hi >>> 0, this.exit));
      }
      const ap = this.guestApic!;
      if (!this.apicResult(ap.access(lin & 0xfff, n, 0, 0, 0, this.exit))) return false;
      for (let k = 0; k < n; k++) b[at + k] = k < 4 ? ap.result[0] >>> (k * 8) : ap.result[1] >>> ((k - 4) * 8);
      return true;
    }
    if (write) this.wrBytesN(i, lin & 0xfff, b, at, n);
    else { const src = this.tBuf[i], p = this.tOff[i] + (lin & 0xfff); for (let k = 0; k < n; k++) b[at + k] = src[p + k]; }
    return true;
  }
  private wrBytesN(i: number, o: number, b: Uint8Array, at: number, n: number): void {
    for (let k = 0; k < n; k++) this.wrBytes(i, o + k, 1, b[at + k], 0);
  }

  /** internal: a page-crossing access with an APIC page in force (only then: -3 may come back from xlate). */
  private crossApic(lin: number, sz: number, write: boolean, v: number, vh: number): number {
    const n1 = 0x1000 - (lin & 0xfff);
    const lin2 = this.linAdd(lin, n1);
    const i1 = this.xlate(lin, write ? 1 : 0);
    if (i1 === -1) return 0;
    const i2 = this.xlate(lin2, write ? 1 : 0);
    if (i2 === -1) return 0;
    const b = this.apicBytes;
    if (write) for (let k = 0; k < sz; k++) b[k] = k < 4 ? v >>> (k * 8) : vh >>> ((k - 4) * 8);
    if (!this.crossPart(i1, lin, n1, 0, write)) return 0;
    if (!this.crossPart(i2, lin2, sz - n1, n1, write)) return 0;
    if (write) return 0;
    this.vh = sz === 8 ? b[4] | (b[5] << 8) | (b[6] << 16) | (b[7] << 24) : 0;
    return sz === 2 ? b[0] | (b[1] << 8) : b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24);
  }
  /** internal: the PDPTE registers could not be read at entry: the next PAE walk loads them (pdptr.ts). */
  pdptrReload = false;

  private pageFault(lin: number, kind: number, user: boolean, present: boolean, rsvd: boolean): number {
    let err = (present ? 1 : 0) | (kind === 1 ? 2 : 0) | (user ? 4 : 0) | (rsvd ? 9 : 0);
    if (kind === 2 && (this.nxe || this.smep)) err |= 0x10;
    this.raise(PF_VEC, err, true);
    this.excAddr = this.bits === 64 ? lin : lin >>> 0;
    this.excErr = err;
    return -1;
  }

  /** internal: INVLPG semantics for `lin` under TLB tag `tag` (pcid -1: any). */
  invlpgLin(lin: number, tag: number, pcid: number): void {
    const i = (lin >>> 12) & TLB_MASK;
    const page = lin - (lin & 0xfff);
    // The given PCID's entries, and global entries whatever their PCID (SDM INVLPG, 4.10.4.1).
    // (An entry of a retired id may match too: dropping a dead entry changes nothing.)
    const keyOf = this.ctxKeyOf;
    const matchCtx = (c: number, j: number): boolean => {
      const key = keyOf[c];
      return Math.floor(key / 4096) === tag && (pcid < 0 || key % 4096 === pcid || this.tGlobal[j] !== 0);
    };
    if (this.tPage[i] === page && matchCtx(this.tCtx[i], i)) this.tPage[i] = NaN;
    if (this.largeEntries > 0) {
      for (let j = 0; j < TLB_SIZE; j++) {
        const sh = this.tShift[j];
        if (sh === 12 || !matchCtx(this.tCtx[j], j)) continue;
        const size = 2 ** sh;
        const t = this.tPage[j];
        if (Math.floor(t / size) === Math.floor(lin / size)) this.tPage[j] = NaN;
      }
    }
    this.tlbGen++;
  }

  /** internal: flush the current context's entries (MOV CR3 without PCID no-flush). */
  flushCurrentCtx(keepGlobal: boolean): void {
    const c = this.ctx;
    for (let i = 0; i < TLB_SIZE; i++) {
      if (this.tCtx[i] === c && !(keepGlobal && this.tGlobal[i])) this.tPage[i] = NaN;
    }
    this.tlbGen++;
  }

  // =====================================================================================
  // Translated code: blocks per host-physical page and code size
  // =====================================================================================

  /** Find or translate the block at RIP; null when the fetch faulted/exited (pend set). */
  private lookupBlock(): Block | null {
    const s = this.state;
    let lin: number;
    if (this.bits === 64) {
      lin = this.rip;
    } else {
      // Code-segment limit (SDM 6.3: #GP(0) when EIP is beyond CS.limit).
      if (this.rip > s.segLimit[CS]) { this.curOp = null; this.gp(0); return null; }
      lin = (this.segBase[CS] + this.rip) >>> 0;
    }
    const o = lin & 0xfff;
    let i = (lin >>> 12) & TLB_MASK;
    if (!(this.tPage[i] === lin - o && this.tCtx[i] === this.ctx && (this.tPerm[i] & this.accX) !== 0)) {
      this.curOp = null;
      i = this.xlate(lin, 2);
      if (i < 0) return null;
    }
    const hpa = this.tHpa[i];
    const key = o * 4 + (this.bits >> 5);
    const page = this.codePages.get(codeKey(hpa));
    if (page !== undefined) {
      const b = page.blocks.get(key);
      if (b !== undefined) return b;
    }
    return this.translate(lin, i, hpa, key);
  }

  private translate(lin: number, i: number, hpa: number, key: number): Block | null {
    const buf = this.tBuf[i];
    const base = this.tOff[i];
    const o = lin & 0xfff;
    // At most 1 KiB is handed to the decoder (a block is <= 64 instructions); the page end stays the limit.
    const blk = decodeBlock(this, buf.subarray(base + o, base + Math.min(4096, o + 1024)), this.bits, lin);
    if (blk === null) return null; // crossing instruction faulted on its second page
    this.stats.blocksTranslated++;
    if (blk.cacheable) {
      let page = this.codePages.get(codeKey(hpa));
      if (page === undefined) {
        page = new CodePage(hpa);
        this.codePages.set(codeKey(hpa), page);
        // Writes to this page must now take the slow path (self-modifying code).
        for (let j = 0; j < TLB_SIZE; j++) {
          if (this.tHpa[j] === hpa) this.tPerm[j] = this.fastPerm(this.tPermReal[j], hpa);
        }
      }
      page.blocks.set(key, blk);
      page.covered.fill(1, o, Math.min(4096, o + blk.bytes));
    }
    return blk;
  }

  /** A write of `len` bytes at host-physical `hpa` (within one page): drop overlapping code. */
  private codeWrite(hpa: number, len: number): void {
    const pb = hpa - (hpa % 4096);
    const page = this.codePages.get(codeKey(pb));
    if (page === undefined) return;
    const o = hpa - pb;
    const cov = page.covered;
    let hit = false;
    for (let k = o; k < o + len && k < 4096; k++) if (cov[k]) { hit = true; break; }
    if (!hit) return;
    for (const b of page.blocks.values()) b.valid = false;
    this.codePages.delete(codeKey(pb));
    this.brk = true;
  }

  // =====================================================================================
  // Misc helpers used by operations
  // =====================================================================================

  /** internal: CPUID as this processor implements it (not intercepted). */
  cpuid(leaf: number, sub: number, out: Int32Array): void {
    cpuidLeaf(this, leaf, sub, out);
  }

  /** internal: next value of the deterministic random source (xorshift32). */
  nextRandom(): number {
    let x = this.rng;
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    this.rng = x | 0;
    return x >>> 0;
  }

  /**
   * internal: guest TSC now, as bigint (RDTSC/RDTSCP/RDMSR, rare): the counter plus the
   * guest-mode offset. The counter is the time source's, else state.tsc + the instructions
   * retired so far in this run — exact at every instruction, because the translator starts a
   * new block at each instruction that reads the TSC (decode.ts), so `retired` is current.
   */
  guestTsc(): bigint {
    const src = this.tscSource;
    const counter = src !== null ? BigInt(Math.floor(src.now())) : this.state.tsc + BigInt(this.retired);
    return BigInt.asUintN(64, counter + this.state.tscOffset);
  }

  /** internal: materialized flag helpers for ops that only touch some status flags. */
  static readonly PARITY = PARITY;
  static readonly FLAG_BITS = { CF, PF, AF, ZF, SF, OF, TF, IF, DF, NT, RF, VM, AC, IOPL, VIF, VIP, ID };
  static readonly SEG = { ES, CS, SS, DS, FS, GS, TR, LDTR };
  static readonly SEGATTR = { A_P, A_S, A_UNUSABLE };
  static readonly VEC = { GP, NP, SS_VEC, TS };
}

/** Unsigned (lo,hi) < (lo,hi). */
function ult(al: number, ah: number, bl: number, bh: number): number {
  const a = ah >>> 0, b = bh >>> 0;
  return a < b || (a === b && (al >>> 0) < (bl >>> 0)) ? 1 : 0;
}
function ule(al: number, ah: number, bl: number, bh: number): number {
  const a = ah >>> 0, b = bh >>> 0;
  return a < b || (a === b && (al >>> 0) <= (bl >>> 0)) ? 1 : 0;
}
/** Exception class for double-fault detection (SDM Table 6-4): 0 benign, 1 contributory, 2 page fault. */
function excClass(v: number): number {
  if (v === 0 || (v >= 10 && v <= 13)) return 1;
  if (v === PF_VEC) return 2;
  return 0;
}
