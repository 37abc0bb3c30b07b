/**
 * Recording VM-exit information (SDM Vol. 3C 28.2): translate the processor's neutral
 * `GuestExit` into the basic exit reason, exit qualification (28.2.1), VM-exit
 * interruption information (28.2.2), IDT-vectoring information (28.2.4), instruction length
 * and VM-exit instruction information (28.2.5), and the guest-physical/linear address fields.
 */
import { ACCESS_FETCH, ACCESS_READ, ACCESS_WRITE, CrAccessType, EventType, GuestExit, GuestExitKind, InterceptInsn } from '@tsvisor/core';
import { F } from './vmcs/fields';
import { Vmcs } from './vmcs/vmcs';
import {
  ExitReason, HOST_LOCAL_TIMER_VECTOR, INTR_INFO_DELIVER_CODE_MASK, INTR_INFO_VALID_MASK, INTR_TYPE_EXT_INTR,
  INTR_TYPE_HARD_EXCEPTION, INTR_TYPE_NMI_INTR, INTR_TYPE_SOFT_EXCEPTION,
} from './vmx-defs';

/** The fields one exit writes, before they go into the VMCS (also what the tests inspect). */
export interface VmxExitRecord {
  reason: number;
  qualification: bigint;
  intrInfo: number;
  intrErrorCode: number;
  instructionLength: number;
  instructionInfo: number;
  guestPhysicalAddress: bigint;
  guestLinearAddress: bigint;
}

export function emptyExitRecord(): VmxExitRecord {
  return { reason: 0, qualification: 0n, intrInfo: 0, intrErrorCode: 0, instructionLength: 0, instructionInfo: 0, guestPhysicalAddress: 0n, guestLinearAddress: 0n };
}

// @tsvisor/core's exports are getters on a dictionary-mode object: encodeExit, on every exit,
// reads the enums through these module-level references instead.
const K = GuestExitKind;
const II = InterceptInsn;
const ET = EventType;

/** Instructions that exit unconditionally or by control, by the processor's InterceptInsn. */
const INSN_EXIT_REASON: Partial<Record<InterceptInsn, ExitReason>> = {
  [InterceptInsn.CPUID]: ExitReason.CPUID,
  [InterceptInsn.HLT]: ExitReason.HLT,
  [InterceptInsn.INVD]: ExitReason.INVD,
  [InterceptInsn.INVLPG]: ExitReason.INVLPG,
  [InterceptInsn.RDPMC]: ExitReason.RDPMC,
  [InterceptInsn.RDTSC]: ExitReason.RDTSC,
  [InterceptInsn.RDTSCP]: ExitReason.RDTSCP,
  [InterceptInsn.VMCALL]: ExitReason.VMCALL,
  [InterceptInsn.MWAIT]: ExitReason.MWAIT_INSTRUCTION,
  [InterceptInsn.MONITOR]: ExitReason.MONITOR_INSTRUCTION,
  [InterceptInsn.PAUSE]: ExitReason.PAUSE_INSTRUCTION,
  [InterceptInsn.WBINVD]: ExitReason.WBINVD,
  [InterceptInsn.XSETBV]: ExitReason.XSETBV,
  [InterceptInsn.RDRAND]: ExitReason.RDRAND,
  [InterceptInsn.RDSEED]: ExitReason.RDSEED,
  [InterceptInsn.INVPCID]: ExitReason.INVPCID,
  [InterceptInsn.RSM]: ExitReason.RSM,
  [InterceptInsn.LGDT]: ExitReason.GDTR_IDTR,
  [InterceptInsn.LIDT]: ExitReason.GDTR_IDTR,
  [InterceptInsn.SGDT]: ExitReason.GDTR_IDTR,
  [InterceptInsn.SIDT]: ExitReason.GDTR_IDTR,
  [InterceptInsn.LLDT]: ExitReason.LDTR_TR,
  [InterceptInsn.LTR]: ExitReason.LDTR_TR,
  [InterceptInsn.SLDT]: ExitReason.LDTR_TR,
  [InterceptInsn.STR]: ExitReason.LDTR_TR,
};

/** Which VMX instruction exited, from its bytes (SDM Vol. 3C ch. 31 opcodes). */
export function vmxInstructionExitReason(bytes: Uint8Array, n: number): ExitReason {
  let i = 0;
  let p66 = false;
  let pF3 = false;
  while (i < n && (bytes[i] === 0x66 || bytes[i] === 0xf3 || bytes[i] === 0xf2 || (bytes[i] & 0xf0) === 0x40)) {
    if (bytes[i] === 0x66) p66 = true;
    if (bytes[i] === 0xf3) pF3 = true;
    i++;
  }
  if (bytes[i] !== 0x0f) return ExitReason.VMCALL;
  const op = bytes[i + 1];
  if (op === 0x01) {
    switch (bytes[i + 2]) {
      case 0xc1: return ExitReason.VMCALL;
      case 0xc2: return ExitReason.VMLAUNCH;
      case 0xc3: return ExitReason.VMRESUME;
      case 0xc4: return ExitReason.VMOFF;
      case 0xd4: return ExitReason.VMFUNC;
    }
  }
  if (op === 0x78) return ExitReason.VMREAD;
  if (op === 0x79) return ExitReason.VMWRITE;
  if (op === 0x38 && bytes[i + 2] === 0x80) return ExitReason.INVEPT;
  if (op === 0x38 && bytes[i + 2] === 0x81) return ExitReason.INVVPID;
  if (op === 0xc7) {
    const reg = (bytes[i + 2] >> 3) & 7;
    if (reg === 7) return ExitReason.VMPTRST;
    if (p66) return ExitReason.VMCLEAR;
    if (pF3) return ExitReason.VMON;
    return ExitReason.VMPTRLD;
  }
  return ExitReason.VMCALL;
}

/** SDM 28.2.1 Table 28-5: I/O qualification. */
export function ioQualification(e: GuestExit): bigint {
  const q = ((e.size - 1) & 7) | (e.isIn ? 1 << 3 : 0) | (e.isString ? 1 << 4 : 0) | (e.isRep ? 1 << 5 : 0) |
    (e.immediate ? 1 << 6 : 0);
  return BigInt(q >>> 0) | (BigInt(e.port & 0xffff) << 16n);
}

/** SDM 28.2.1 Table 28-3: control-register access qualification. */
export function crQualification(e: GuestExit): bigint {
  let q = (e.crNumber & 0xf) | ((e.crAccessType & 3) << 4) | ((e.gpr & 0xf) << 8);
  if (e.crAccessType === CrAccessType.LMSW) {
    // Bit 6: LMSW operand type (1 = memory); bits 31:16 the LMSW source data.
    if (e.memOperandAddress !== 0n || e.gpr < 0) q |= 1 << 6;
    q = (q & 0xffff) | (Number(e.value & 0xffffn) << 16);
    return BigInt(q >>> 0);
  }
  return BigInt(q >>> 0);
}

/** SDM 28.2.1 Table 28-4: debug-register access qualification (bit 4: 1 = MOV from DR). */
export function drQualification(e: GuestExit): bigint {
  return BigInt((e.drNumber & 7) | (e.isWrite ? 0 : 1 << 4) | ((e.gpr & 0xf) << 8));
}

/**
 * SDM 28.2.1 Table 28-7: EPT-violation qualification. Bits 2:0 the access (read, write,
 * fetch), 5:3 what the EPT entries allowed (readable, writable, executable), 7 the linear
 * address is valid, 8 (when 7 is set) the access was to the final translation rather than
 * to a guest paging structure.
 */
export function eptViolationQualification(e: GuestExit): bigint {
  let q = 0;
  if (e.access & ACCESS_READ) q |= 1 << 0;
  if (e.access & ACCESS_WRITE) q |= 1 << 1;
  if (e.access & ACCESS_FETCH) q |= 1 << 2;
  if (e.tdpPermissions & ACCESS_READ) q |= 1 << 3;
  if (e.tdpPermissions & ACCESS_WRITE) q |= 1 << 4;
  if (e.tdpPermissions & ACCESS_FETCH) q |= 1 << 5;
  if (e.glaValid) {
    q |= 1 << 7;
    if (e.finalTranslation) q |= 1 << 8;
  }
  return BigInt(q);
}

/** SDM 28.2.1 Table 28-2: task-switch qualification (selector 15:0, source 31:30). */
export function taskSwitchQualification(e: GuestExit): bigint {
  return BigInt(((e.taskSelector & 0xffff) | ((e.taskSource & 3) << 30)) >>> 0);
}

/** SDM 28.2.5 Table 28-8: INS/OUTS instruction information (address size 9:7, segment 17:15). */
export function stringIoInstructionInfo(e: GuestExit): number {
  const as = e.addrSize === 2 ? 0 : e.addrSize === 4 ? 1 : 2;
  return ((as << 7) | ((e.segment & 7) << 15)) >>> 0;
}

/** Interruption type of a vectored event, as the exit/IDT-vectoring field encodes it. */
function exceptionIntrType(e: GuestExit): number {
  if (e.vector === 2) return INTR_TYPE_NMI_INTR;
  // #BP from INT3 and #OF from INTO are software exceptions (SDM 25.9.2).
  if (e.insnLength > 0 && (e.vector === 3 || e.vector === 4)) return INTR_TYPE_SOFT_EXCEPTION;
  return INTR_TYPE_HARD_EXCEPTION;
}

/** IDT-vectoring information (SDM 28.2.4) of the event that was being delivered. */
export function idtVectoringInfo(e: GuestExit): { info: number; errorCode: number } {
  const v = e.vectoring;
  if (!v.valid) return { info: 0, errorCode: 0 };
  let info = (v.vector & 0xff) | ((v.type & 7) << 8) | INTR_INFO_VALID_MASK;
  if (v.hasErrorCode) info |= INTR_INFO_DELIVER_CODE_MASK;
  return { info: info >>> 0, errorCode: v.errorCode >>> 0 };
}

/**
 * Encode one exit. `ackIntrOnExit`: the VM-exit control that makes external-interrupt exits
 * carry the vector (SDM 25.7.1).
 */
export function encodeExit(e: GuestExit, ackIntrOnExit: boolean, out: VmxExitRecord): VmxExitRecord {
  // The 64-bit fields are reset only when an earlier exit set them: storing a bigint into the
  // record costs a write barrier at every exit, comparing it does not.
  if (out.qualification !== 0n) out.qualification = 0n;
  out.intrInfo = 0;
  out.intrErrorCode = 0;
  out.instructionLength = 0;
  out.instructionInfo = 0;
  if (out.guestPhysicalAddress !== 0n) out.guestPhysicalAddress = 0n;
  if (out.guestLinearAddress !== 0n) out.guestLinearAddress = 0n;
  switch (e.kind) {
    case K.BUDGET:
    case K.EXTERNAL_INTERRUPT:
      // The time slice or a kick arrives as a host interrupt (the host's local timer).
      out.reason = ExitReason.EXTERNAL_INTERRUPT;
      if (ackIntrOnExit) out.intrInfo = (HOST_LOCAL_TIMER_VECTOR | INTR_TYPE_EXT_INTR | INTR_INFO_VALID_MASK) >>> 0;
      break;
    case K.EXCEPTION: {
      out.reason = ExitReason.EXCEPTION_NMI;
      const type = exceptionIntrType(e);
      out.intrInfo = ((e.vector & 0xff) | type | INTR_INFO_VALID_MASK | (e.hasErrorCode ? INTR_INFO_DELIVER_CODE_MASK : 0)) >>> 0;
      out.intrErrorCode = e.hasErrorCode ? e.errorCode >>> 0 : 0;
      if (type === INTR_TYPE_SOFT_EXCEPTION) out.instructionLength = e.insnLength;
      // SDM 28.2.1: #PF → the faulting linear address; #DB → the DR6-format pending bits.
      if (e.vector === 14) out.qualification = e.faultAddress;
      // (B0-B3, BD, BS; bit 16 RTM is active-high here but active-low in DR6).
      else if (e.vector === 1) out.qualification = (e.pendingDr6 & 0x600fn) | (e.pendingDr6 & 0x10000n ? 0n : 0x10000n);
      break;
    }
    case K.NMI:
      out.reason = ExitReason.EXCEPTION_NMI;
      out.intrInfo = (2 | INTR_TYPE_NMI_INTR | INTR_INFO_VALID_MASK) >>> 0;
      break;
    case K.TRIPLE_FAULT:
    case K.SHUTDOWN:
      out.reason = ExitReason.TRIPLE_FAULT;
      break;
    case K.INIT:
      out.reason = ExitReason.INIT_SIGNAL;
      break;
    case K.SIPI:
      out.reason = ExitReason.SIPI_SIGNAL;
      out.qualification = BigInt(e.vector & 0xff);
      break;
    case K.INTERRUPT_WINDOW:
      out.reason = ExitReason.INTERRUPT_WINDOW;
      break;
    case K.NMI_WINDOW:
      out.reason = ExitReason.NMI_WINDOW;
      break;
    case K.TASK_SWITCH:
      out.reason = ExitReason.TASK_SWITCH;
      out.qualification = taskSwitchQualification(e);
      out.instructionLength = e.insnLength;
      break;
    case K.INSTRUCTION: {
      out.reason = e.insn === II.VMX_INSN
        ? vmxInstructionExitReason(e.insnBytes, e.insnBytesCount)
        : INSN_EXIT_REASON[e.insn] ?? ExitReason.VMCALL;
      out.instructionLength = e.insnLength;
      if (e.insn === II.INVLPG) out.qualification = e.faultAddress;
      if (out.reason === ExitReason.GDTR_IDTR || out.reason === ExitReason.LDTR_TR) {
        out.instructionInfo = e.instructionInfo >>> 0;
        out.qualification = e.memOperandAddress;
      }
      // SDM 28.2.1 / Table 28-11: INVPCID reports its displacement and the decoded operands.
      if (e.insn === II.INVPCID) {
        out.instructionInfo = e.instructionInfo >>> 0;
        out.qualification = e.displacement;
      }
      break;
    }
    case K.CR_ACCESS:
      out.reason = ExitReason.CR_ACCESS;
      out.qualification = crQualification(e);
      out.instructionLength = e.insnLength;
      break;
    case K.DR_ACCESS:
      out.reason = ExitReason.DR_ACCESS;
      out.qualification = drQualification(e);
      out.instructionLength = e.insnLength;
      break;
    case K.IO:
      out.reason = ExitReason.IO_INSTRUCTION;
      out.qualification = ioQualification(e);
      out.instructionLength = e.insnLength;
      if (e.isString) {
        out.instructionInfo = stringIoInstructionInfo(e);
        out.guestLinearAddress = e.gla;
      }
      break;
    case K.MSR_READ:
      out.reason = ExitReason.MSR_READ;
      out.instructionLength = e.insnLength;
      break;
    case K.MSR_WRITE:
      out.reason = ExitReason.MSR_WRITE;
      out.instructionLength = e.insnLength;
      break;
    case K.TDP_FAULT:
    case K.MMIO:
      // Without TDP the processor reports unbacked guest-physical accesses as MMIO; to KVM
      // that is an EPT violation on a not-present entry (permissions 0).
      out.reason = ExitReason.EPT_VIOLATION;
      out.qualification = eptViolationQualification(e);
      out.guestPhysicalAddress = e.gpa;
      out.guestLinearAddress = e.glaValid ? e.gla : 0n;
      break;
    case K.TDP_MISCONFIG:
      out.reason = ExitReason.EPT_MISCONFIG;
      out.guestPhysicalAddress = e.gpa;
      break;
    case K.PREEMPTION_TIMER:
      out.reason = ExitReason.PREEMPTION_TIMER;
      break;
    case K.MONITOR_TRAP_FLAG:
      out.reason = ExitReason.MONITOR_TRAP_FLAG;
      break;
    case K.PML_FULL:
      out.reason = ExitReason.PML_FULL;
      break;
    case K.TPR_BELOW_THRESHOLD:
      out.reason = ExitReason.TPR_BELOW_THRESHOLD;
      break;
    case K.APIC_ACCESS:
      // SDM 28.2.1 Table 28-6: page offset 11:0; access type 15:12 (0 linear read, 1 linear write,
      // 2 fetch, 3 linear access during event delivery — IDT-vectoring information then valid).
      out.reason = ExitReason.APIC_ACCESS;
      out.qualification = BigInt((Number(e.gpa & 0xfffn) |
        ((e.vectoring.valid ? 3 : e.access & ACCESS_FETCH ? 2 : e.access & ACCESS_WRITE ? 1 : 0) << 12)) >>> 0);
      out.instructionLength = e.insnLength;
      break;
    case K.VIRTUALIZED_EOI:
      out.reason = ExitReason.EOI_INDUCED;
      out.qualification = BigInt(e.vector & 0xff);
      break;
    case K.APIC_WRITE:
      out.reason = ExitReason.APIC_WRITE;
      out.qualification = e.gpa & 0xfffn;
      break;
    default:
      // NONE or a kind this encoder does not know: report it as an exit KVM has no handler for.
      out.reason = 0xffff;
  }
  // SDM 28.2.4: an exit during delivery of a software interrupt or exception reports that
  // instruction's length, so the VMM can re-inject it (VM_ENTRY_INSTRUCTION_LEN).
  const vt = e.vectoring;
  if (vt.valid && (vt.type === ET.SOFTWARE_INTERRUPT || vt.type === ET.PRIVILEGED_SOFTWARE_EXCEPTION ||
    vt.type === ET.SOFTWARE_EXCEPTION)) {
    out.instructionLength = vt.insnLength;
  }
  return out;
}

/**
 * The basic exit reason of an instruction exit whose information is its reason and its length
 * alone (SDM 28.2.1: no exit qualification; 28.2.5: no instruction information), by
 * InterceptInsn; -1 for the instructions encodeExit treats otherwise (VMX instructions, INVLPG
 * and INVPCID with their qualification, descriptor-table instructions with their instruction
 * information, instructions without a VMX exit of their own).
 */
const PLAIN_INSN_REASON = Int32Array.from({ length: InterceptInsn.COUNT }, (_, i) => {
  const r = INSN_EXIT_REASON[i as InterceptInsn];
  if (r === undefined || i === InterceptInsn.INVLPG || i === InterceptInsn.INVPCID ||
    r === ExitReason.GDTR_IDTR || r === ExitReason.LDTR_TR) return -1;
  return r;
});
const K_INSTRUCTION = GuestExitKind.INSTRUCTION;

/**
 * encodeExit + recordExit for the most common exit, without the record: an intercepted
 * instruction that reports only its reason and length, not during event delivery (28.2.4:
 * IDT-vectoring information clear). Writes the same fields with the same values (every other
 * exit-information field 0) and returns the basic exit reason, or -1 (nothing written) for any
 * other exit.
 */
export function recordPlainInstructionExit(vmcs: Vmcs, e: GuestExit): number {
  if (e.kind !== K_INSTRUCTION || e.vectoring.valid) return -1;
  const reason = PLAIN_INSN_REASON[e.insn];
  if (reason < 0) return -1;
  const lo = vmcs.lo, hi = vmcs.hi;
  lo[S_EXIT_REASON] = reason;
  lo[S_INTR_INFO] = 0;
  lo[S_INTR_ERROR_CODE] = 0;
  lo[S_INSTRUCTION_LEN] = e.insnLength;
  lo[S_INSTRUCTION_INFO] = 0;
  lo[S_QUALIFICATION] = hi[S_QUALIFICATION] = 0;
  lo[S_GUEST_PHYSICAL] = hi[S_GUEST_PHYSICAL] = 0;
  lo[S_GUEST_LINEAR] = hi[S_GUEST_LINEAR] = 0;
  lo[S_IDT_VECTORING_INFO] = 0;
  lo[S_IDT_VECTORING_ERROR] = 0;
  return reason;
}

const S_EXIT_REASON = Vmcs.exitSlotOf(F.VM_EXIT_REASON);
const S_QUALIFICATION = Vmcs.exitSlotOf(F.EXIT_QUALIFICATION);
const S_INTR_INFO = Vmcs.exitSlotOf(F.VM_EXIT_INTR_INFO);
const S_INTR_ERROR_CODE = Vmcs.exitSlotOf(F.VM_EXIT_INTR_ERROR_CODE);
const S_INSTRUCTION_LEN = Vmcs.exitSlotOf(F.VM_EXIT_INSTRUCTION_LEN);
const S_INSTRUCTION_INFO = Vmcs.exitSlotOf(F.VMX_INSTRUCTION_INFO);
const S_GUEST_PHYSICAL = Vmcs.exitSlotOf(F.GUEST_PHYSICAL_ADDRESS);
const S_GUEST_LINEAR = Vmcs.exitSlotOf(F.GUEST_LINEAR_ADDRESS);
const S_IDT_VECTORING_INFO = Vmcs.exitSlotOf(F.IDT_VECTORING_INFO_FIELD);
const S_IDT_VECTORING_ERROR = Vmcs.exitSlotOf(F.IDT_VECTORING_ERROR_CODE);
/** BigInt → 32-bit halves (modulo 2^64) through a typed array: no BigInt operation, no allocation. */
const CONV64 = new BigUint64Array(1);
const CONV32 = new Uint32Array(CONV64.buffer);

/**
 * Store an encoded exit into the VMCS's read-only exit-information fields (SDM 28.2): every
 * field every exit, as the SDM has every exit write them (fields an exit does not use hold 0
 * here, where the SDM leaves some undefined). The processor's own stores, by slot. Returns the
 * IDT-vectoring information field (vmx->idt_vectoring_info).
 */
export function recordExit(vmcs: Vmcs, r: VmxExitRecord, e: GuestExit): number {
  const lo = vmcs.lo, hi = vmcs.hi;
  lo[S_EXIT_REASON] = r.reason;
  lo[S_INTR_INFO] = r.intrInfo;
  lo[S_INTR_ERROR_CODE] = r.intrErrorCode;
  lo[S_INSTRUCTION_LEN] = r.instructionLength;
  lo[S_INSTRUCTION_INFO] = r.instructionInfo;
  const q = r.qualification, gpa = r.guestPhysicalAddress, gla = r.guestLinearAddress;
  if (q === 0n && gpa === 0n && gla === 0n) {
    // Most exits use none of the 64-bit fields: no conversion.
    lo[S_QUALIFICATION] = hi[S_QUALIFICATION] = 0;
    lo[S_GUEST_PHYSICAL] = hi[S_GUEST_PHYSICAL] = 0;
    lo[S_GUEST_LINEAR] = hi[S_GUEST_LINEAR] = 0;
  } else {
    storeWide(lo, hi, S_QUALIFICATION, q);
    storeWide(lo, hi, S_GUEST_PHYSICAL, gpa);
    storeWide(lo, hi, S_GUEST_LINEAR, gla);
  }
  // (idtVectoringInfo without its result object: no allocation per exit)
  const vt = e.vectoring;
  let info = 0;
  let code = 0;
  if (vt.valid) {
    info = (vt.vector & 0xff) | ((vt.type & 7) << 8) | INTR_INFO_VALID_MASK;
    if (vt.hasErrorCode) info |= INTR_INFO_DELIVER_CODE_MASK;
    code = vt.errorCode;
  }
  lo[S_IDT_VECTORING_INFO] = info;
  lo[S_IDT_VECTORING_ERROR] = code;
  return info >>> 0;
}

/** A 64-bit/natural-width exit-information field, modulo 2^64. */
function storeWide(lo: Uint32Array, hi: Uint32Array, slot: number, x: bigint): void {
  CONV64[0] = x;
  lo[slot] = CONV32[0];
  hi[slot] = CONV32[1];
}
