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
export class GuestExit {
  kind = GuestExitKind.NONE;
  insn = InterceptInsn.CPUID;
  /** Length of the instruction that caused the exit (0 when none). */
  insnLength = 0;
  /** Up to 15 bytes of that instruction (SVM decode assists: guest instruction bytes). */
  readonly insnBytes = new Uint8Array(15);
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
  instructionInfo = 0;

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
   */
  translate(gpa: bigint, access: number, gla: bigint, glaValid: boolean, exit: GuestExit): number;
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
  };
}
