/**
 * Kernel types that cross the kvm_x86_ops boundary, with KVM's names.
 * Guest-visible 64-bit quantities are bigint here (DESIGN: "the contract boundary");
 * the processor's hot path uses its own typed-array state.
 */

/** struct msr_data (arch/x86/include/asm/kvm_host.h). */
export interface MsrData {
  /** True when userspace (KVM_GET/SET_MSRS) is the caller, not the guest's RDMSR/WRMSR. */
  hostInitiated: boolean;
  index: number;
  data: bigint;
}

/** struct kvm_msr_entry (uapi). */
export interface KvmMsrEntry {
  index: number;
  data: bigint;
}

/** struct kvm_segment (uapi): the vendor-neutral segment shape. */
export interface KvmSegment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

export function emptySegment(): KvmSegment {
  return { base: 0n, limit: 0, selector: 0, type: 0, present: 0, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 1 };
}

/** struct desc_ptr: GDTR/IDTR. */
export interface DescPtr {
  size: number;
  address: bigint;
}

/** enum kvm_reg: the register cache indices of vcpu->arch.regs. */
export enum KvmReg {
  RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSP = 4, RBP = 5, RSI = 6, RDI = 7,
  R8 = 8, R9 = 9, R10 = 10, R11 = 11, R12 = 12, R13 = 13, R14 = 14, R15 = 15,
  RIP = 16,
  /** Extended registers cached on demand through cacheReg (enum kvm_reg_ex). */
  PDPTR = 17, CR0 = 18, CR3 = 19, CR4 = 20, EXIT_INFO_1 = 21, EXIT_INFO_2 = 22,
}
export const NR_VCPU_REGS = 17;

/** enum kvm_sreg / VCPU_SREG_*: segment register numbering used by get/setSegment. */
export enum VcpuSreg {
  ES = 0, CS = 1, SS = 2, DS = 3, FS = 4, GS = 5, TR = 6, LDTR = 7,
}

/**
 * enum exit_fastpath_completion: what the vendor's exit fastpath (run, right after the VM exit)
 * did. NONE: nothing, handleExit dispatches the exit. REENTER_GUEST: handled, and the guest may
 * run again at once (core's run loop re-enters without its slow path unless an exit request
 * is pending). EXIT_HANDLED: handled, handleExit only finishes up. EXIT_USERSPACE: handled, and
 * KVM_RUN returns to userspace (vcpu.run says why).
 */
export enum ExitFastpathCompletion {
  EXIT_FASTPATH_NONE = 0,
  EXIT_FASTPATH_REENTER_GUEST = 1,
  EXIT_FASTPATH_EXIT_HANDLED = 2,
  EXIT_FASTPATH_EXIT_USERSPACE = 3,
}

/** struct kvm_tlb_range. */
export interface KvmTlbRange {
  startGfn: bigint;
  pages: bigint;
}

/** struct x86_exception (arch/x86/kvm/kvm_emulate.h). */
export interface X86Exception {
  vector: number;
  errorCodeValid: boolean;
  errorCode: number;
  nestedPageFault: boolean;
  address: bigint;
}

/** enum x86_intercept_stage. */
export enum X86InterceptStage {
  X86_ICTP_NONE = 0,
  X86_ICPT_PRE_EXCEPT = 1,
  X86_ICPT_POST_EXCEPT = 2,
  X86_ICPT_POST_MEMACCESS = 3,
}

/** enum x86_intercept: the instructions core's emulator may execute on the guest's behalf. */
export enum X86Intercept {
  none = 0, cr_read, cr_write, clts, lmsw, smsw, dr_read, dr_write, rdtsc, rdpmc,
  cpuid, rsm, iret, intn, invd, pause, hlt, invlpg, invlpga, vmrun, vmload, vmsave,
  vmmcall, stgi, clgi, skinit, rdtscp, icebp, wbinvd, monitor, mwait, rdmsr, wrmsr,
  in, ins, out, outs, xsetbv, lidt, sidt, lgdt, sgdt, lldt, sldt, ltr, str, pushf, popf,
  rdpid,
}

/** struct x86_instruction_info: what checkIntercept is told about an emulated instruction. */
export interface X86InstructionInfo {
  intercept: X86Intercept;
  rep: number;
  modrmMod: number;
  modrmReg: number;
  modrmRm: number;
  srcVal: bigint;
  dstVal: bigint;
  srcBytes: number;
  dstBytes: number;
  adSize: number;
  /** Length of the instruction in bytes. */
  length: number;
  nextRip: bigint;
}

/** X86EMUL_* return codes used by checkIntercept and the emulator. */
export enum X86Emul {
  CONTINUE = 0,
  UNHANDLEABLE = 1,
  PROPAGATE_FAULT = 2,
  RETRY_INSTR = 3,
  CMPXCHG_FAILED = 4,
  IO_NEEDED = 5,
  INTERCEPTED = 6,
}

/** struct kvm_memory_slot. */
export interface KvmMemorySlot {
  /** Slot id as userspace numbered it (low 16 bits of kvm_userspace_memory_region.slot). */
  readonly id: number;
  readonly baseGfn: bigint;
  readonly npages: number;
  readonly flags: number;
  /** Host-physical address of the slot's backing (what TDP entries point at). */
  readonly hostBase: number;
  /** userspace_addr analogue: the bytes userspace gave for this slot. */
  readonly userspace: Uint8Array;
  /** One bit per page; allocated only when KVM_MEM_LOG_DIRTY_PAGES is set. */
  dirtyBitmap: Uint32Array | null;
}

/** struct kvm_enc_region. */
export interface KvmEncRegion {
  addr: bigint;
  size: bigint;
}

/** Exception vectors (SDM Vol. 3A 6.3.1). */
export enum X86Vector {
  DE = 0, DB = 1, NMI = 2, BP = 3, OF = 4, BR = 5, UD = 6, NM = 7, DF = 8,
  TS = 10, NP = 11, SS = 12, GP = 13, PF = 14, MF = 16, AC = 17, MC = 18, XM = 19, VE = 20, CP = 21,
}
