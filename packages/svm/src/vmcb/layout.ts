/**
 * The VMCB layout: AMD APM Vol. 2, Appendix B ("Layout of VMCB"), Table B-1 (control area)
 * and Table B-2 (state save area, at offset 0x400). Offsets cross-checked against Linux's
 * arch/x86/include/asm/svm.h (struct vmcb_control_area / vmcb_save_area and its size and
 * reserved-offset build checks). Every field carries its width, so an accessor cannot read
 * an 8-byte field with a 4-byte access.
 */

export type FieldWidth = 1 | 2 | 4 | 8;

export interface VmcbField {
  readonly name: string;
  readonly offset: number;
  readonly width: FieldWidth;
}

function f<W extends FieldWidth>(name: string, offset: number, width: W): VmcbField & { width: W } {
  return { name, offset, width };
}

/** The page is 4 KiB; the control area takes the first 1 KiB (APM B: "the control area is 1024 bytes"). */
export const VMCB_SIZE = 0x1000;
export const VMCB_CONTROL_SIZE = 0x400;
export const VMCB_SAVE_BASE = 0x400;

/** Table B-1: control area. */
export const VMCB_CONTROL = {
  /** Intercept vector 0: CR0–15 reads in bits 15:0, writes in bits 31:16. */
  INTERCEPT_CR: f('INTERCEPT_CR', 0x000, 4),
  /** Intercept vector 1: DR0–15 reads in bits 15:0, writes in bits 31:16. */
  INTERCEPT_DR: f('INTERCEPT_DR', 0x004, 4),
  /** Intercept vector 2: one bit per exception vector 0–31. */
  INTERCEPT_EXCEPTIONS: f('INTERCEPT_EXCEPTIONS', 0x008, 4),
  /** Intercept vector 3 (INTR … SHUTDOWN). */
  INTERCEPT_MISC1: f('INTERCEPT_MISC1', 0x00c, 4),
  /** Intercept vector 4 (VMRUN … CR write traps). */
  INTERCEPT_MISC2: f('INTERCEPT_MISC2', 0x010, 4),
  /** Intercept vector 5 (INVLPGB, INVPCID, MCOMMIT, TLBSYNC). */
  INTERCEPT_MISC3: f('INTERCEPT_MISC3', 0x014, 4),
  PAUSE_FILTER_THRESHOLD: f('PAUSE_FILTER_THRESHOLD', 0x03c, 2),
  PAUSE_FILTER_COUNT: f('PAUSE_FILTER_COUNT', 0x03e, 2),
  IOPM_BASE_PA: f('IOPM_BASE_PA', 0x040, 8),
  MSRPM_BASE_PA: f('MSRPM_BASE_PA', 0x048, 8),
  TSC_OFFSET: f('TSC_OFFSET', 0x050, 8),
  GUEST_ASID: f('GUEST_ASID', 0x058, 4),
  TLB_CONTROL: f('TLB_CONTROL', 0x05c, 1),
  /** Bits 7:0 of the 32-bit "int_ctl" word: V_TPR in bits 3:0. */
  V_TPR: f('V_TPR', 0x060, 1),
  /** Byte 0x61: V_IRQ in bit 0 (int_ctl bit 8), V_GIF in bit 1. */
  V_IRQ: f('V_IRQ', 0x061, 1),
  /** Byte 0x62: V_INTR_PRIO in bits 3:0 (int_ctl 19:16), V_IGN_TPR in bit 4 (int_ctl 20). */
  V_INTR_PRIO: f('V_INTR_PRIO', 0x062, 1),
  /** Byte 0x63: V_INTR_MASKING in bit 0 (int_ctl 24), V_GIF_ENABLE bit 1, AVIC_ENABLE bit 7 (int_ctl 31). */
  V_INTR_MASKING: f('V_INTR_MASKING', 0x063, 1),
  /** The whole 32-bit int_ctl word at 0x60 (V_TPR … AVIC_ENABLE). */
  INT_CTL: f('INT_CTL', 0x060, 4),
  V_INTR_VECTOR: f('V_INTR_VECTOR', 0x064, 1),
  /** Bit 0 INTERRUPT_SHADOW, bit 1 GUEST_INTERRUPT_MASK. */
  INTERRUPT_SHADOW: f('INTERRUPT_SHADOW', 0x068, 8),
  EXITCODE: f('EXITCODE', 0x070, 8),
  EXITINFO1: f('EXITINFO1', 0x078, 8),
  EXITINFO2: f('EXITINFO2', 0x080, 8),
  EXITINTINFO: f('EXITINTINFO', 0x088, 8),
  /** Bit 0 NP_ENABLE, bit 1 SEV, bit 2 SEV-ES. */
  NP_ENABLE: f('NP_ENABLE', 0x090, 8),
  AVIC_APIC_BAR: f('AVIC_APIC_BAR', 0x098, 8),
  GHCB_PA: f('GHCB_PA', 0x0a0, 8),
  EVENTINJ: f('EVENTINJ', 0x0a8, 8),
  N_CR3: f('N_CR3', 0x0b0, 8),
  /** Bit 0 LBR_VIRTUALIZATION_ENABLE, bit 1 virtualized VMSAVE/VMLOAD. */
  LBR_VIRTUALIZATION_ENABLE: f('LBR_VIRTUALIZATION_ENABLE', 0x0b8, 8),
  VMCB_CLEAN: f('VMCB_CLEAN', 0x0c0, 4),
  NRIP: f('NRIP', 0x0c8, 8),
  /** Number of valid guest instruction bytes (decode assists). */
  GUEST_INSN_LEN: f('GUEST_INSN_LEN', 0x0d0, 1),
  /** First of the 15 guest instruction bytes at 0x0D1–0x0DF. */
  GUEST_INSN_BYTES: f('GUEST_INSN_BYTES', 0x0d1, 1),
  AVIC_BACKING_PAGE: f('AVIC_BACKING_PAGE', 0x0e0, 8),
  AVIC_LOGICAL_TABLE: f('AVIC_LOGICAL_TABLE', 0x0f0, 8),
  /** Bits 51:12 table address, bits 7:0 max index. */
  AVIC_PHYSICAL_TABLE: f('AVIC_PHYSICAL_TABLE', 0x0f8, 8),
  VMSA_PA: f('VMSA_PA', 0x108, 8),
} as const;

/** vmcb_seg: selector u16, attrib u16 (packed 12-bit), limit u32, base u64 (APM B, Table B-2). */
export const SEG_SELECTOR = 0;
export const SEG_ATTRIB = 2;
export const SEG_LIMIT = 4;
export const SEG_BASE = 8;
export const SEG_SIZE = 16;

const S = VMCB_SAVE_BASE;
/** Table B-2: state save area (offsets are from the start of the VMCB). */
export const VMCB_SAVE = {
  ES: f('ES', S + 0x000, 8),
  CS: f('CS', S + 0x010, 8),
  SS: f('SS', S + 0x020, 8),
  DS: f('DS', S + 0x030, 8),
  FS: f('FS', S + 0x040, 8),
  GS: f('GS', S + 0x050, 8),
  GDTR: f('GDTR', S + 0x060, 8),
  LDTR: f('LDTR', S + 0x070, 8),
  IDTR: f('IDTR', S + 0x080, 8),
  TR: f('TR', S + 0x090, 8),
  CPL: f('CPL', S + 0x0cb, 1),
  EFER: f('EFER', S + 0x0d0, 8),
  CR4: f('CR4', S + 0x148, 8),
  CR3: f('CR3', S + 0x150, 8),
  CR0: f('CR0', S + 0x158, 8),
  DR7: f('DR7', S + 0x160, 8),
  DR6: f('DR6', S + 0x168, 8),
  RFLAGS: f('RFLAGS', S + 0x170, 8),
  RIP: f('RIP', S + 0x178, 8),
  RSP: f('RSP', S + 0x1d8, 8),
  RAX: f('RAX', S + 0x1f8, 8),
  STAR: f('STAR', S + 0x200, 8),
  LSTAR: f('LSTAR', S + 0x208, 8),
  CSTAR: f('CSTAR', S + 0x210, 8),
  SFMASK: f('SFMASK', S + 0x218, 8),
  KERNEL_GS_BASE: f('KERNEL_GS_BASE', S + 0x220, 8),
  SYSENTER_CS: f('SYSENTER_CS', S + 0x228, 8),
  SYSENTER_ESP: f('SYSENTER_ESP', S + 0x230, 8),
  SYSENTER_EIP: f('SYSENTER_EIP', S + 0x238, 8),
  CR2: f('CR2', S + 0x240, 8),
  G_PAT: f('G_PAT', S + 0x268, 8),
  DBGCTL: f('DBGCTL', S + 0x270, 8),
  BR_FROM: f('BR_FROM', S + 0x278, 8),
  BR_TO: f('BR_TO', S + 0x280, 8),
  LASTEXCPFROM: f('LASTEXCPFROM', S + 0x288, 8),
  LASTEXCPTO: f('LASTEXCPTO', S + 0x290, 8),
} as const;

export type SegmentField = (typeof VMCB_SAVE)['ES' | 'CS' | 'SS' | 'DS' | 'FS' | 'GS' | 'GDTR' | 'LDTR' | 'IDTR' | 'TR'];

/** Segment save-area slots in VcpuSreg order (ES CS SS DS FS GS TR LDTR). */
export const SREG_FIELDS = [VMCB_SAVE.ES, VMCB_SAVE.CS, VMCB_SAVE.SS, VMCB_SAVE.DS, VMCB_SAVE.FS, VMCB_SAVE.GS, VMCB_SAVE.TR, VMCB_SAVE.LDTR] as const;

// ---------------------------------------------------------------- control-area bit fields

/** int_ctl (0x060) bits. */
export const V_TPR_MASK = 0x0f;
export const V_IRQ_MASK = 1 << 8;
export const V_GIF_MASK = 1 << 9;
export const V_INTR_PRIO_SHIFT = 16;
export const V_INTR_PRIO_MASK = 0x0f << 16;
export const V_IGN_TPR_MASK = 1 << 20;
export const V_INTR_MASKING_MASK = 1 << 24;
export const V_GIF_ENABLE_MASK = 1 << 25;
export const AVIC_ENABLE_MASK = 1 << 31;

/** Interrupt-shadow word (0x068). */
export const SVM_INTERRUPT_SHADOW_MASK = 1;

/** NP_ENABLE word (0x090). */
export const SVM_NESTED_CTL_NP_ENABLE = 1n;

/** TLB_CONTROL encodings (APM 15.16.1). */
export enum TlbControl {
  DO_NOTHING = 0,
  FLUSH_ALL_ASID = 1,
  FLUSH_ASID = 3,
  FLUSH_ASID_LOCAL = 7,
}

/** Misc intercept vector 3 (0x00C) bits (APM Table B-1). */
export enum Intercept1 {
  INTR = 0, NMI, SMI, INIT, VINTR, CR0_SEL_WRITE, IDTR_READ, GDTR_READ, LDTR_READ, TR_READ,
  IDTR_WRITE, GDTR_WRITE, LDTR_WRITE, TR_WRITE, RDTSC, RDPMC, PUSHF, POPF, CPUID, RSM, IRET,
  INTN, INVD, PAUSE, HLT, INVLPG, INVLPGA, IOIO_PROT, MSR_PROT, TASK_SWITCH, FERR_FREEZE, SHUTDOWN,
}

/** Misc intercept vector 4 (0x010) bits; bits 31:16 are the CR0–15 write traps. */
export enum Intercept2 {
  VMRUN = 0, VMMCALL, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, RDTSCP, ICEBP, WBINVD, MONITOR, MWAIT,
  MWAIT_COND, XSETBV, RDPRU, EFER_WRITE_TRAP,
}
export const INTERCEPT2_CR_WRITE_TRAP_SHIFT = 16;

/** Misc intercept vector 5 (0x014) bits. */
export enum Intercept3 {
  INVLPGB = 0, INVLPGB_ILLEGAL, INVPCID, MCOMMIT, TLBSYNC,
}

/** VMCB clean bits (APM 15.15.3, Table 15-9): which groups the processor may serve from its cache. */
export enum VmcbCleanBit {
  /** Intercept vectors, TSC_OFFSET, pause filter count/threshold. */
  I = 0,
  /** IOPM_BASE_PA, MSRPM_BASE_PA. */
  IOPM = 1,
  ASID = 2,
  /** V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR (int_ctl, int_vector). */
  TPR = 3,
  /** NP_ENABLE, N_CR3, G_PAT. */
  NP = 4,
  /** CR0, CR3, CR4, EFER. */
  CRX = 5,
  /** DR6, DR7. */
  DRX = 6,
  /** GDTR, IDTR. */
  DT = 7,
  /** CS, DS, SS, ES, CPL. */
  SEG = 8,
  CR2 = 9,
  /** DBGCTL, BR_FROM, BR_TO, LASTEXCPFROM, LASTEXCPTO. */
  LBR = 10,
  /** AVIC_APIC_BAR, AVIC backing page, logical and physical table pointers. */
  AVIC = 11,
  COUNT = 12,
}

/** Which fields each clean bit covers (the cache serves exactly these when the bit is set). */
export const CLEAN_GROUPS: Readonly<Record<number, readonly VmcbField[]>> = {
  [VmcbCleanBit.I]: [
    VMCB_CONTROL.INTERCEPT_CR, VMCB_CONTROL.INTERCEPT_DR, VMCB_CONTROL.INTERCEPT_EXCEPTIONS,
    VMCB_CONTROL.INTERCEPT_MISC1, VMCB_CONTROL.INTERCEPT_MISC2, VMCB_CONTROL.INTERCEPT_MISC3,
    VMCB_CONTROL.TSC_OFFSET, VMCB_CONTROL.PAUSE_FILTER_COUNT, VMCB_CONTROL.PAUSE_FILTER_THRESHOLD,
  ],
  [VmcbCleanBit.IOPM]: [VMCB_CONTROL.IOPM_BASE_PA, VMCB_CONTROL.MSRPM_BASE_PA],
  [VmcbCleanBit.ASID]: [VMCB_CONTROL.GUEST_ASID],
  [VmcbCleanBit.TPR]: [VMCB_CONTROL.INT_CTL, VMCB_CONTROL.V_INTR_VECTOR],
  [VmcbCleanBit.NP]: [VMCB_CONTROL.NP_ENABLE, VMCB_CONTROL.N_CR3, VMCB_SAVE.G_PAT],
  [VmcbCleanBit.CRX]: [VMCB_SAVE.CR0, VMCB_SAVE.CR3, VMCB_SAVE.CR4, VMCB_SAVE.EFER],
  [VmcbCleanBit.DRX]: [VMCB_SAVE.DR6, VMCB_SAVE.DR7],
  [VmcbCleanBit.DT]: [VMCB_SAVE.GDTR, VMCB_SAVE.IDTR],
  [VmcbCleanBit.SEG]: [VMCB_SAVE.CS, VMCB_SAVE.DS, VMCB_SAVE.SS, VMCB_SAVE.ES, VMCB_SAVE.CPL],
  [VmcbCleanBit.CR2]: [VMCB_SAVE.CR2],
  [VmcbCleanBit.LBR]: [VMCB_SAVE.DBGCTL, VMCB_SAVE.BR_FROM, VMCB_SAVE.BR_TO, VMCB_SAVE.LASTEXCPFROM, VMCB_SAVE.LASTEXCPTO],
  [VmcbCleanBit.AVIC]: [VMCB_CONTROL.AVIC_APIC_BAR, VMCB_CONTROL.AVIC_BACKING_PAGE, VMCB_CONTROL.AVIC_LOGICAL_TABLE, VMCB_CONTROL.AVIC_PHYSICAL_TABLE],
};

/** Bytes a field occupies in the page (segments and descriptor-table registers are 16-byte vmcb_seg). */
export function fieldBytes(fld: VmcbField): number {
  return fld.offset >= VMCB_SAVE_BASE && fld.offset < VMCB_SAVE_BASE + 0xa0 && fld.width === 8 ? SEG_SIZE : fld.width;
}
