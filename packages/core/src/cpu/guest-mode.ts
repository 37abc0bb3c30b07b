/**
 * Seam 3 (DESIGN.md): backend ↔ processor. The processor is the emulated hardware and knows
 * no VMCS or VMCB. A backend's `run` loads guest state into `CpuState`, installs the
 * vendor's guest-mode rules (which events exit) and the events to inject, and calls
 * `X86Cpu.runGuest`. When an event the rules name happens, the processor stops *as the
 * hardware would at that point* and describes it in a vendor-neutral `GuestExit`; the backend
 * then encodes it in its own vocabulary (VMX basic exit reason + qualification + instruction
 * length/information; SVM EXITCODE + EXITINFO1/2 + next RIP) and stores guest state back.
 *
 * This file is shared by the processor and both backends. Change it additively.
 */

/** Instructions that a vendor may intercept unconditionally (indexes `GuestModeRules.insn`). */
export enum InterceptInsn {
  CPUID = 0, HLT, INVD, INVLPG, RDPMC, RDTSC, RDTSCP, VMCALL, VMMCALL, MWAIT, MONITOR, PAUSE,
  WBINVD, XSETBV, RDRAND, RDSEED, INVPCID, IRET, INTN, PUSHF, POPF, ICEBP, RSM,
  VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA,
  LGDT, LIDT, SGDT, SIDT, LLDT, LTR, SLDT, STR,
  RDPID, INT3, INTO, VMX_INSN,
  COUNT,
}

/** Kinds of neutral exit the processor reports. */
export enum GuestExitKind {
  NONE = 0,
  /** The instruction budget given to runGuest ran out (not an architectural exit). */
  BUDGET,
  /** An exception the rules said exits (vector, errorCode, hasErrorCode; #PF: faultAddress). */
  EXCEPTION,
  NMI,
  /** A host interrupt or kick arrived (requestImmediateExit, time slice, device). */
  EXTERNAL_INTERRUPT,
  TRIPLE_FAULT,
  INIT,
  SIPI,
  /** Interrupt window opened while irqWindowExiting / a virtual interrupt was pending. */
  INTERRUPT_WINDOW,
  NMI_WINDOW,
  TASK_SWITCH,
  /** An InterceptInsn the rules intercept; `insn` says which. */
  INSTRUCTION,
  /** MOV to/from CRn, CLTS, LMSW (crNumber, crAccessType, gpr, value). */
  CR_ACCESS,
  /** MOV to/from DRn (drNumber, isWrite, gpr). */
  DR_ACCESS,
  /** IN/OUT/INS/OUTS (port, size, isIn, isString, isRep, addrSize, segment, immediate). */
  IO,
  MSR_READ,
  MSR_WRITE,
  /** Guest-physical access not permitted by the two-dimensional page tables (EPT violation / #NPF). */
  TDP_FAULT,
  /** A TDP entry that is not well formed (EPT misconfiguration; NPT reports TDP_FAULT with RSVD). */
  TDP_MISCONFIG,
  /** The guest-physical address is backed by no memory: core must emulate (MMIO). */
  MMIO,
  PREEMPTION_TIMER,
  MONITOR_TRAP_FLAG,
  /** The page-modification log filled (PML full). */
  PML_FULL,
  /** Processor entered shutdown without an exit-on-triple-fault vendor rule (SVM SHUTDOWN). */
  SHUTDOWN,
  /** VMX TPR below threshold / APIC access / virtualized EOI / APIC write (APICv). */
  TPR_BELOW_THRESHOLD,
  APIC_ACCESS,
  VIRTUALIZED_EOI,
  APIC_WRITE,
  /**
   * Not an exit: the processor executed HLT (not intercepted) and is idle (state.activity = 1).
   * runGuest returns it at once while halted; an injection or an open window wakes it.
   */
  HALTED,
  /**
   * A trap-like CR write intercept (AMD APM Vol. 2 15.35, the SEV-ES CR write traps; SVM
   * EXITCODE 0x90 + n): MOV to CRn / CLTS / LMSW completed, RIP is past it (`nextRip`), and
   * `value` holds the register's new value.
   */
  CR_WRITE_TRAP,
  /**
   * A trap-like MSR write intercept (SVM EFER_WRITE_TRAP, EXITCODE 0x8F): WRMSR completed, RIP
   * is past it, `msrIndex` and `value` (the MSR's new value) describe it.
   */
  MSR_WRITE_TRAP,
  /**
   * An IPI the APIC virtualization could not complete (SVM AVIC_INCOMPLETE_IPI, APM 15.29),
   * trap-like after the ICR write: `value` = ICR (high:low), `errorCode` = failure cause,
   * `vector` = the physical/logical APIC ID table index concerned.
   */
  INCOMPLETE_IPI,
}

/** CR access types, in the SDM's qualification order (Table 28-3). */
export enum CrAccessType {
  MOV_TO_CR = 0, MOV_FROM_CR = 1, CLTS = 2, LMSW = 3,
}

/** Event types for injection and IDT-vectoring, in the SDM's numbering (24.8.3). */
export enum EventType {
  EXTERNAL_INTERRUPT = 0, NMI = 2, HARDWARE_EXCEPTION = 3, SOFTWARE_INTERRUPT = 4,
  PRIVILEGED_SOFTWARE_EXCEPTION = 5, SOFTWARE_EXCEPTION = 6,
}

/** Access bits for TDP translation and faults. */
export const ACCESS_READ = 1;
export const ACCESS_WRITE = 2;
export const ACCESS_FETCH = 4;
export const ACCESS_USER = 8;
/** The access is the processor's own page-walk of guest paging structures. */
export const ACCESS_PAGE_WALK = 16;

/** An event being delivered when an exit happened (VMX IDT-vectoring info / SVM EXITINTINFO). */
export interface VectoringInfo {
  valid: boolean;
  type: EventType;
  vector: number;
  hasErrorCode: boolean;
  errorCode: number;
  /** Instruction length for software events. */
  insnLength: number;
}

/**
 * What the processor reports on a stop. One preallocated object per processor, overwritten
 * on each stop (no allocation per exit). Fields not relevant to `kind` are stale.
 */
const NO_BYTES = new Uint8Array(0);

export class GuestExit {
  kind = GuestExitKind.NONE;
  insn = InterceptInsn.CPUID;
  /** Length of the instruction that caused the exit (0 when none). */
  insnLength = 0;
  /**
   * Up to 15 bytes of that instruction (SVM decode assists: guest instruction bytes; the bytes
   * past `insnBytesCount` are zero). An instruction exit only notes which instruction it was
   * (`insnBytesFrom`): the bytes are copied here when first read, as few exits need them.
   */
  get insnBytes(): Uint8Array {
    const src = this.bytesSource;
    if (src !== null) {
      this.bytesSource = null;
      const out = this.bytes;
      const n = src.length < 15 ? src.length : 15;
      for (let i = 0; i < n; i++) out[i] = src[i];
      out.fill(0, n);
    }
    return this.bytes;
  }
  private readonly bytes = new Uint8Array(15);
  private bytesSource: Uint8Array | null = null;
  /** The exit's instruction bytes are `src` (an instruction's own bytes, never modified): copied when read. */
  insnBytesFrom(src: Uint8Array): void {
    this.bytesSource = src;
    this.insnBytesCount = src.length;
  }
  /** No instruction bytes for this exit (count 0, bytes zero). */
  noInsnBytes(): void {
    this.bytesSource = NO_BYTES;
    this.insnBytesCount = 0;
  }
  insnBytesCount = 0;
  /** Guest RIP of the instruction after the exiting one (SVM nRIP). */
  nextRip = 0n;

  vector = 0;
  errorCode = 0;
  hasErrorCode = false;
  /** #PF: linear address (CR2 is not written when a #PF exits, as on VMX). INVLPG: its operand. */
  faultAddress = 0n;
  /** #DB: the DR6 bits the exception would have set (the VMX exit qualification). */
  pendingDr6 = 0n;

  crNumber = 0;
  crAccessType = CrAccessType.MOV_TO_CR;
  drNumber = 0;
  isWrite = false;
  /** GPR operand number (KVM numbering) for CR/DR moves. */
  gpr = 0;
  /** The value being written (MOV to CR/DR, LMSW source, XSETBV, WRMSR EDX:EAX). */
  value = 0n;
  /** MSR_READ / MSR_WRITE: the MSR index (ECX). */
  msrIndex = 0;

  port = 0;
  size = 0;
  isIn = false;
  isString = false;
  isRep = false;
  /** Port given as an immediate (vs DX). */
  immediate = false;
  /** Address size in bytes (2/4/8) for string I/O and instruction information. */
  addrSize = 0;
  /** Segment register for OUTS source (VcpuSreg). */
  segment = 0;

  /** TDP_FAULT / TDP_MISCONFIG / MMIO. */
  gpa = 0n;
  gla = 0n;
  glaValid = false;
  /** ACCESS_* bits of the faulting access. */
  access = 0;
  /** Permissions the TDP walk found (ACCESS_READ|WRITE|FETCH). */
  tdpPermissions = 0;
  /** The access was to a final translation (not a guest page-table walk). */
  finalTranslation = false;
  /** A reserved bit was set in a TDP entry (NPT #NPF RSVD / EPT misconfig). */
  reservedBit = false;
  /** TDP walk level that faulted, for diagnostics. */
  level = 0;

  /** Task switch: new TSS selector and source (0 CALL, 1 IRET, 2 JMP, 3 IDT gate). */
  taskSelector = 0;
  taskSource = 0;

  /** Instruction information for descriptor-table and INVPCID exits: the decoded operand. */
  memOperandAddress = 0n;
  /**
   * INVPCID: the memory operand in the VMX instruction-information layout (SDM Table 28-11:
   * scaling 1:0, address size 9:7, segment 17:15, index 21:18 / invalid 22, base 26:23 /
   * invalid 27, the register operand 31:28).
   */
  instructionInfo = 0;
  /** INVPCID: the memory operand's displacement, sign-extended to 64 bits (the VMX exit qualification). */
  displacement = 0n;

  readonly vectoring: VectoringInfo = {
    valid: false, type: EventType.EXTERNAL_INTERRUPT, vector: 0, hasErrorCode: false, errorCode: 0, insnLength: 0,
  };
}

/** An event to inject at entry (VMX VM-entry interruption information / SVM EVENTINJ). */
export interface PendingInjection {
  valid: boolean;
  type: EventType;
  vector: number;
  hasErrorCode: boolean;
  errorCode: number;
  /** For software events: the length of the instruction (RIP advances past it on delivery). */
  insnLength: number;
}

/**
 * Translation of guest-physical addresses through the backend's two-dimensional page tables
 * (EPT or NPT). Implemented by the backend; the processor calls it on a TLB miss.
 */
export interface TdpWalker {
  /**
   * Translate the guest-physical page of `gpa` for `access` (ACCESS_* bits). Returns the
   * host-physical address of the 4 KiB page (>= 0), or -1 after filling `exit` with a
   * TDP_FAULT / TDP_MISCONFIG / MMIO / PML_FULL description. May set accessed/dirty flags
   * and log to the PML buffer as the vendor's hardware does.
   *
   * This is the processor's TLB-miss path, so addresses are numbers: `gpa` is the 4 KiB-aligned
   * guest-physical page (below 2^52), `gla` the linear address as the processor holds it (a
   * 64-bit one may be negative: its two's-complement value; `BigInt.asUintN(64, BigInt(gla))`
   * gives the exit field). An implementation should not allocate or use BigInt on success.
   */
  translate(gpa: number, access: number, gla: number, glaValid: boolean, exit: GuestExit): number;
  /** Tag for the processor's TLB (EPTP / nCR3 identity), so a change of root flushes. */
  readonly rootTag: number;
}

/**
 * The vendor's guest-mode rules: which events exit. One object per vCPU, owned by the
 * backend, consulted by the processor at each point the manuals define.
 */
export interface GuestModeRules {
  /** Indexed by InterceptInsn: nonzero means the instruction exits before it executes. */
  readonly insn: Uint8Array;
  /** Does this exception exit instead of being delivered? (VMX: bitmap + #PF mask/match.) */
  exceptionExits(vector: number, errorCode: number): boolean;
  /** Does IN/OUT to this port exit? (VMX: unconditional or bitmaps A/B; SVM: IOPM.) */
  ioExits(port: number, size: number, isIn: boolean): boolean;
  /** Does RDMSR/WRMSR of this MSR exit? (VMX 4 KiB bitmap; SVM 8 KiB MSRPM.) */
  msrExits(index: number, isWrite: boolean): boolean;
  /** Does a write of `value` to CR`cr` (MOV, CLTS, LMSW) exit? */
  crWriteExits(cr: number, value: bigint): boolean;
  /** Does a read of CR`cr` exit? */
  crReadExits(cr: number): boolean;
  /**
   * The value the guest reads from CR0/CR4 when not exiting (VMX: read shadow for host-owned
   * bits; SVM: the real register). Receives the real value.
   */
  crReadValue(cr: number, real: bigint): bigint;
  /** Does MOV to/from DRn exit? */
  drExits(dr: number, isWrite: boolean): boolean;
  /** Exit as soon as interrupts are allowed (VMX interrupt-window exiting; SVM V_IRQ + VINTR). */
  irqWindowExiting: boolean;
  /** Exit as soon as NMIs are unblocked (VMX NMI-window exiting). */
  nmiWindowExiting: boolean;
  /** Triple fault exits (VMX always; SVM when SHUTDOWN is intercepted). */
  shutdownExits: boolean;
  /** Two-dimensional paging, or null for guest-physical = memslot direct (no TDP). */
  tdp: TdpWalker | null;
  /** TLB tag: VPID (VMX) or ASID (SVM); 0 means untagged. */
  tlbTag: number;
  /** Single-step the guest (VMX monitor trap flag): exit after each instruction. */
  monitorTrapFlag: boolean;
  /** VMX-preemption timer: exit when `tsc` reaches this value (-1n: disabled). */
  preemptionDeadlineTsc: bigint;
  /**
   * Optional: the backend stored the PAE PDPTE registers in `CpuState.pdptrLo/Hi` for this
   * entry (VMX with "enable EPT": from GUEST_PDPTR0-3, SDM 26.3.2.4). When absent or false,
   * entry to a guest with PAE paging loads them from the PDPT that CR3 references, as VMX
   * entry without EPT does (SDM 26.3.2.4) and as a load of CR3 does.
   */
  pdptrsLoaded?: boolean;
  /**
   * Optional (absent = exits): does a task switch stop the guest as a TASK_SWITCH exit instead
   * of happening? VMX: always (SDM 26.1.3); SVM: when the TASK_SWITCH intercept is set (APM
   * 15.14). False: the processor switches tasks itself (SDM 7.3), as bare hardware does.
   */
  taskSwitchExits?: boolean;
  /**
   * Optional (absent = never): does a completed write to CR`cr` (MOV, CLTS, LMSW) stop the
   * guest *after* the instruction (CR_WRITE_TRAP)? Consulted only when crWriteExits said no.
   * SVM: intercept vector 4 bits 31:16 (APM Table B-1, CR0–15 write traps).
   */
  crWriteTraps?(cr: number): boolean;
  /**
   * Optional (absent = false): does a completed WRMSR to EFER stop the guest after the
   * instruction (MSR_WRITE_TRAP)? Consulted only when msrExits said no. SVM: intercept vector
   * 4 bit 15 (EFER write trap).
   */
  eferWriteTraps?: boolean;
  /**
   * Optional (absent/null = none): the APIC page the vendor virtualizes (VMX APIC-access page,
   * SDM 29.4; SVM AVIC backing page, APM 15.29). Every data access to it goes to the handler
   * (never through the processor's TLB); see ApicPageHandler.
   */
  apicPage?: ApicPageHandler | null;
  /**
   * Optional (absent/null = CR8 is the processor's own): CR8 virtualized by the vendor (VMX
   * "use TPR shadow": MOV CR8 reads/writes VTPR, SDM 29.3; SVM V_TPR, APM 15.21.4). Consulted
   * only when crReadExits / crWriteExits said no.
   */
  cr8?: Cr8Virtualization | null;
  /**
   * Optional (absent = false): INIT signals (X86Cpu.signalInit) and, in the wait-for-SIPI
   * activity state, start-up IPIs (signalSipi) stop the guest as INIT / SIPI exits (VMX non-root
   * operation: always, SDM 26.2; SVM: the INIT intercept). Otherwise INIT puts the processor in
   * its INIT state waiting for a SIPI, and a SIPI starts it at vector:0000 in real mode.
   */
  initSipiExits?: boolean;
}

/** ApicPageHandler.access / Cr8Virtualization.write results. */
/** Handled (a read's value is in `result[0]` (low 32 bits) / `result[1]` (high)). */
export const APIC_ACCESS_DONE = 0;
/** Fault-like exit: `exit` is filled; the instruction does not complete. */
export const APIC_ACCESS_EXIT = 1;
/** Handled, then a trap-like exit after the instruction completes (`exit` filled). */
export const APIC_ACCESS_DONE_TRAP = 2;

/**
 * The vendor's virtualized APIC page. The processor matches each data access's page on the
 * guest-physical address before TDP (`gpaPage`) or the host-physical address after TDP
 * (`hpaPage`) and hands it here instead of to memory; an access crossing into or out of the
 * page hands over only the part on the page (`size` 1-8). Instruction fetches from the page are
 * handed over once per translation with size 1: EXIT stops them; DONE lets the processor fetch
 * from memory. Physical accesses (guest page walks) are not matched. Outside guest mode
 * (emulateInstruction) the page of the last runGuest's handler is MMIO, as KVM's
 * vcpu_is_mmio_gpa makes the APIC page for its emulator.
 */
export interface ApicPageHandler {
  /** 4 KiB-aligned guest-physical address matched before TDP (SVM AVIC: AVIC_APIC_BAR), or -1. */
  gpaPage: number;
  /** 4 KiB-aligned host-physical address matched after TDP (VMX: the APIC-access address), or -1. */
  hpaPage: number;
  /** Length 2: a read's value, low and high 32 bits. */
  readonly result: Uint32Array;
  /**
   * One access at page offset `offset` of `size` bytes; `kind` 0 read, 1 write, 2 fetch. A write's
   * data is `valueLo` / `valueHi`. Returns APIC_ACCESS_DONE / _EXIT / _DONE_TRAP. For an exit the
   * handler fills the vendor-neutral fields of `exit` (kind, gpa = offset, access, vector); the
   * processor fills instruction length, next RIP and IDT-vectoring information.
   */
  access(offset: number, size: number, kind: number, valueLo: number, valueHi: number, exit: GuestExit): number;
}

/** CR8 virtualization (GuestModeRules.cr8). */
export interface Cr8Virtualization {
  /** The value MOV from CR8 returns (bits 3:0). */
  read(): number;
  /** MOV to CR8 of `v` (bits 3:0; #GP for larger values is the processor's): APIC_ACCESS_DONE or _DONE_TRAP (`exit` filled). */
  write(v: number, exit: GuestExit): number;
}

/**
 * Rules with no intercepts at all: the processor as bare hardware. Used outside guest mode
 * (emulateInstruction) and by tests that run the processor directly; override fields as needed.
 */
export function passthroughRules(): GuestModeRules {
  return {
    insn: new Uint8Array(InterceptInsn.COUNT),
    exceptionExits: () => false,
    ioExits: () => false,
    msrExits: () => false,
    crWriteExits: () => false,
    crReadExits: () => false,
    crReadValue: (_cr, real) => real,
    drExits: () => false,
    irqWindowExiting: false,
    nmiWindowExiting: false,
    shutdownExits: false,
    tdp: null,
    tlbTag: 0,
    monitorTrapFlag: false,
    preemptionDeadlineTsc: -1n,
    taskSwitchExits: false,
    apicPage: null,
    cr8: null,
  };
}
