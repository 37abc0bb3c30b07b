/**
 * VMX architectural constants: VM-execution, VM-exit and VM-entry control bits (SDM Vol. 3C
 * 25.6–25.8), basic exit reasons (Appendix C), event-information layouts (25.8.3, 25.9.2),
 * guest interruptibility and activity states (25.4.2).
 */

// SDM 25.6.1 Table 25-5: pin-based VM-execution controls
export const PIN_BASED_EXT_INTR_MASK = 1 << 0;
export const PIN_BASED_NMI_EXITING = 1 << 3;
export const PIN_BASED_VIRTUAL_NMIS = 1 << 5;
export const PIN_BASED_VMX_PREEMPTION_TIMER = 1 << 6;
export const PIN_BASED_POSTED_INTR = 1 << 7;

// SDM 25.6.2 Table 25-6: primary processor-based VM-execution controls
export const CPU_BASED_INTR_WINDOW_EXITING = 1 << 2;
export const CPU_BASED_USE_TSC_OFFSETTING = 1 << 3;
export const CPU_BASED_HLT_EXITING = 1 << 7;
export const CPU_BASED_INVLPG_EXITING = 1 << 9;
export const CPU_BASED_MWAIT_EXITING = 1 << 10;
export const CPU_BASED_RDPMC_EXITING = 1 << 11;
export const CPU_BASED_RDTSC_EXITING = 1 << 12;
export const CPU_BASED_CR3_LOAD_EXITING = 1 << 15;
export const CPU_BASED_CR3_STORE_EXITING = 1 << 16;
export const CPU_BASED_ACTIVATE_TERTIARY_CONTROLS = 1 << 17;
export const CPU_BASED_CR8_LOAD_EXITING = 1 << 19;
export const CPU_BASED_CR8_STORE_EXITING = 1 << 20;
export const CPU_BASED_TPR_SHADOW = 1 << 21;
export const CPU_BASED_NMI_WINDOW_EXITING = 1 << 22;
export const CPU_BASED_MOV_DR_EXITING = 1 << 23;
export const CPU_BASED_UNCOND_IO_EXITING = 1 << 24;
export const CPU_BASED_USE_IO_BITMAPS = 1 << 25;
export const CPU_BASED_MONITOR_TRAP_FLAG = 1 << 27;
export const CPU_BASED_USE_MSR_BITMAPS = 1 << 28;
export const CPU_BASED_MONITOR_EXITING = 1 << 29;
export const CPU_BASED_PAUSE_EXITING = 1 << 30;
export const CPU_BASED_ACTIVATE_SECONDARY_CONTROLS = (1 << 31) >>> 0;

// SDM 25.6.2 Table 25-7: secondary processor-based VM-execution controls
export const SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES = 1 << 0;
export const SECONDARY_EXEC_ENABLE_EPT = 1 << 1;
export const SECONDARY_EXEC_DESC = 1 << 2;
export const SECONDARY_EXEC_ENABLE_RDTSCP = 1 << 3;
export const SECONDARY_EXEC_VIRTUALIZE_X2APIC_MODE = 1 << 4;
export const SECONDARY_EXEC_ENABLE_VPID = 1 << 5;
export const SECONDARY_EXEC_WBINVD_EXITING = 1 << 6;
export const SECONDARY_EXEC_UNRESTRICTED_GUEST = 1 << 7;
export const SECONDARY_EXEC_APIC_REGISTER_VIRT = 1 << 8;
export const SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY = 1 << 9;
export const SECONDARY_EXEC_PAUSE_LOOP_EXITING = 1 << 10;
export const SECONDARY_EXEC_RDRAND_EXITING = 1 << 11;
export const SECONDARY_EXEC_ENABLE_INVPCID = 1 << 12;
export const SECONDARY_EXEC_ENABLE_VMFUNC = 1 << 13;
export const SECONDARY_EXEC_SHADOW_VMCS = 1 << 14;
export const SECONDARY_EXEC_ENCLS_EXITING = 1 << 15;
export const SECONDARY_EXEC_RDSEED_EXITING = 1 << 16;
export const SECONDARY_EXEC_ENABLE_PML = 1 << 17;
export const SECONDARY_EXEC_EPT_VIOLATION_VE = 1 << 18;
export const SECONDARY_EXEC_XSAVES = 1 << 20;
export const SECONDARY_EXEC_TSC_SCALING = 1 << 25;

// SDM 25.7.1 Table 25-13: primary VM-exit controls
export const VM_EXIT_SAVE_DEBUG_CONTROLS = 1 << 2;
export const VM_EXIT_HOST_ADDR_SPACE_SIZE = 1 << 9;
export const VM_EXIT_LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 12;
export const VM_EXIT_ACK_INTR_ON_EXIT = 1 << 15;
export const VM_EXIT_SAVE_IA32_PAT = 1 << 18;
export const VM_EXIT_LOAD_IA32_PAT = 1 << 19;
export const VM_EXIT_SAVE_IA32_EFER = 1 << 20;
export const VM_EXIT_LOAD_IA32_EFER = 1 << 21;
export const VM_EXIT_SAVE_VMX_PREEMPTION_TIMER = 1 << 22;
export const VM_EXIT_CLEAR_BNDCFGS = 1 << 23;

// SDM 25.8.1 Table 25-15: VM-entry controls
export const VM_ENTRY_LOAD_DEBUG_CONTROLS = 1 << 2;
export const VM_ENTRY_IA32E_MODE = 1 << 9;
export const VM_ENTRY_SMM = 1 << 10;
export const VM_ENTRY_DEACT_DUAL_MONITOR = 1 << 11;
export const VM_ENTRY_LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 13;
export const VM_ENTRY_LOAD_IA32_PAT = 1 << 14;
export const VM_ENTRY_LOAD_IA32_EFER = 1 << 15;
export const VM_ENTRY_LOAD_BNDCFGS = 1 << 16;

/** "Default1" control bits (SDM Appendix A.2): reserved bits that must be 1 without the TRUE MSRs. */
export const PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR = 0x00000016;
export const CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR = 0x0401e172;
export const VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR = 0x00036dff;
export const VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR = 0x000011ff;

/** Basic exit reasons (SDM Vol. 3D Appendix C). */
export enum ExitReason {
  EXCEPTION_NMI = 0,
  EXTERNAL_INTERRUPT = 1,
  TRIPLE_FAULT = 2,
  INIT_SIGNAL = 3,
  SIPI_SIGNAL = 4,
  IO_SMI = 5,
  OTHER_SMI = 6,
  INTERRUPT_WINDOW = 7,
  NMI_WINDOW = 8,
  TASK_SWITCH = 9,
  CPUID = 10,
  GETSEC = 11,
  HLT = 12,
  INVD = 13,
  INVLPG = 14,
  RDPMC = 15,
  RDTSC = 16,
  RSM = 17,
  VMCALL = 18,
  VMCLEAR = 19,
  VMLAUNCH = 20,
  VMPTRLD = 21,
  VMPTRST = 22,
  VMREAD = 23,
  VMRESUME = 24,
  VMWRITE = 25,
  VMOFF = 26,
  VMON = 27,
  CR_ACCESS = 28,
  DR_ACCESS = 29,
  IO_INSTRUCTION = 30,
  MSR_READ = 31,
  MSR_WRITE = 32,
  INVALID_STATE = 33,
  MSR_LOAD_FAIL = 34,
  MWAIT_INSTRUCTION = 36,
  MONITOR_TRAP_FLAG = 37,
  MONITOR_INSTRUCTION = 39,
  PAUSE_INSTRUCTION = 40,
  MCE_DURING_VMENTRY = 41,
  TPR_BELOW_THRESHOLD = 43,
  APIC_ACCESS = 44,
  EOI_INDUCED = 45,
  GDTR_IDTR = 46,
  LDTR_TR = 47,
  EPT_VIOLATION = 48,
  EPT_MISCONFIG = 49,
  INVEPT = 50,
  RDTSCP = 51,
  PREEMPTION_TIMER = 52,
  INVVPID = 53,
  WBINVD = 54,
  XSETBV = 55,
  APIC_WRITE = 56,
  RDRAND = 57,
  INVPCID = 58,
  VMFUNC = 59,
  ENCLS = 60,
  RDSEED = 61,
  PML_FULL = 62,
  XSAVES = 63,
  XRSTORS = 64,
  UMWAIT = 67,
  TPAUSE = 68,
}
export const VMX_EXIT_REASON_MAX = 69;

/** Exit reason bit 31: VM-entry failure (SDM 25.9.1). */
export const VMX_EXIT_REASONS_FAILED_VMENTRY = 0x80000000;

/** KVM's name for an exit reason (VMX_EXIT_REASONS strings in uapi/asm/vmx.h). */
export function exitReasonName(basic: number): string {
  return ExitReason[basic] ?? `EXIT_REASON_${basic}`;
}

// SDM 25.8.3 / 25.9.2: interruption-information fields (entry, exit, IDT-vectoring)
export const INTR_INFO_VECTOR_MASK = 0xff;
export const INTR_INFO_INTR_TYPE_MASK = 0x700;
export const INTR_INFO_DELIVER_CODE_MASK = 0x800;
export const INTR_INFO_UNBLOCK_NMI = 0x1000;
export const INTR_INFO_VALID_MASK = 0x80000000;
export const INTR_INFO_RESVD_BITS_MASK = 0x7ffff000;
export const INTR_TYPE_EXT_INTR = 0 << 8;
export const INTR_TYPE_NMI_INTR = 2 << 8;
export const INTR_TYPE_HARD_EXCEPTION = 3 << 8;
export const INTR_TYPE_SOFT_INTR = 4 << 8;
export const INTR_TYPE_PRIV_SW_EXCEPTION = 5 << 8;
export const INTR_TYPE_SOFT_EXCEPTION = 6 << 8;
export const INTR_TYPE_OTHER_EVENT = 7 << 8;

// SDM 25.4.2 Table 25-3: guest interruptibility state
export const GUEST_INTR_STATE_STI = 1 << 0;
export const GUEST_INTR_STATE_MOV_SS = 1 << 1;
export const GUEST_INTR_STATE_SMI = 1 << 2;
export const GUEST_INTR_STATE_NMI = 1 << 3;
export const GUEST_INTR_STATE_ENCLAVE_INTR = 1 << 4;

// SDM 25.4.2: activity state
export const GUEST_ACTIVITY_ACTIVE = 0;
export const GUEST_ACTIVITY_HLT = 1;
export const GUEST_ACTIVITY_SHUTDOWN = 2;
export const GUEST_ACTIVITY_WAIT_SIPI = 3;

/** Access-rights bit 16: the segment is unusable (SDM 25.4.1). */
export const VMX_AR_UNUSABLE_MASK = 1 << 16;
/** Bits of the AR field that are defined (type, S, DPL, P, AVL, L, D/B, G, unusable). */
export const VMX_AR_DEFINED = 0x1f0ff;
/** Access-rights bits 11:8 and 31:17 are reserved (SDM 27.3.1.2). */
export const VMX_AR_RESERVED_MASK = 0xfffe0f00;

/** Host's local-timer vector, reported for budget/kick stops with acknowledge-on-exit. */
export const HOST_LOCAL_TIMER_VECTOR = 0xec;

/** The PML buffer holds 512 GPAs; the index counts down from 511 (SDM 29.3.6). */
export const PML_ENTITY_NUM = 512;
