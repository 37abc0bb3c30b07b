/**
 * #VMEXIT codes (AMD APM Vol. 2, Appendix C, Table C-1) and KVM's names for them
 * (SVM_EXIT_REASONS in arch/x86/include/uapi/asm/svm.h), used for exit statistics.
 */
export enum SvmExit {
  READ_CR0 = 0x000, READ_CR2 = 0x002, READ_CR3 = 0x003, READ_CR4 = 0x004, READ_CR8 = 0x008,
  WRITE_CR0 = 0x010, WRITE_CR2 = 0x012, WRITE_CR3 = 0x013, WRITE_CR4 = 0x014, WRITE_CR8 = 0x018,
  READ_DR0 = 0x020, WRITE_DR0 = 0x030,
  /** 0x40 + exception vector. */
  EXCP_BASE = 0x040,
  INTR = 0x060, NMI = 0x061, SMI = 0x062, INIT = 0x063, VINTR = 0x064, CR0_SEL_WRITE = 0x065,
  IDTR_READ = 0x066, GDTR_READ = 0x067, LDTR_READ = 0x068, TR_READ = 0x069,
  IDTR_WRITE = 0x06a, GDTR_WRITE = 0x06b, LDTR_WRITE = 0x06c, TR_WRITE = 0x06d,
  RDTSC = 0x06e, RDPMC = 0x06f, PUSHF = 0x070, POPF = 0x071, CPUID = 0x072, RSM = 0x073,
  IRET = 0x074, SWINT = 0x075, INVD = 0x076, PAUSE = 0x077, HLT = 0x078, INVLPG = 0x079,
  INVLPGA = 0x07a, IOIO = 0x07b, MSR = 0x07c, TASK_SWITCH = 0x07d, FERR_FREEZE = 0x07e,
  SHUTDOWN = 0x07f, VMRUN = 0x080, VMMCALL = 0x081, VMLOAD = 0x082, VMSAVE = 0x083,
  STGI = 0x084, CLGI = 0x085, SKINIT = 0x086, RDTSCP = 0x087, ICEBP = 0x088, WBINVD = 0x089,
  MONITOR = 0x08a, MWAIT = 0x08b, MWAIT_COND = 0x08c, XSETBV = 0x08d, RDPRU = 0x08e,
  EFER_WRITE_TRAP = 0x08f, CR0_WRITE_TRAP = 0x090, CR4_WRITE_TRAP = 0x094, CR8_WRITE_TRAP = 0x098,
  INVLPGB = 0x0a0, INVLPGB_ILLEGAL = 0x0a1, INVPCID = 0x0a2, MCOMMIT = 0x0a3, TLBSYNC = 0x0a4,
  NPF = 0x400, AVIC_INCOMPLETE_IPI = 0x401, AVIC_UNACCELERATED_ACCESS = 0x402, VMGEXIT = 0x403,
}

/** VMEXIT_INVALID: EXITCODE after a VMRUN whose consistency checks failed (APM 15.5.1). */
export const SVM_EXIT_ERR = -1n;
/** The 64-bit EXITCODE field value of VMEXIT_INVALID. */
export const SVM_EXIT_ERR_U64 = 0xffff_ffff_ffff_ffffn;

const EXCP_NAMES = ['DE', 'DB', 'NMI', 'BP', 'OF', 'BR', 'UD', 'NM', 'DF', 'CSO', 'TS', 'NP', 'SS', 'GP', 'PF', '15',
  'MF', 'AC', 'MC', 'XM', 'VE', 'CP'];

const NAMES = new Map<number, string>([
  [SvmExit.INTR, 'interrupt'], [SvmExit.NMI, 'nmi'], [SvmExit.SMI, 'smi'], [SvmExit.INIT, 'init'],
  [SvmExit.VINTR, 'vintr'], [SvmExit.CR0_SEL_WRITE, 'cr0_sel_write'],
  [SvmExit.IDTR_READ, 'read_idtr'], [SvmExit.GDTR_READ, 'read_gdtr'], [SvmExit.LDTR_READ, 'read_ldtr'],
  [SvmExit.TR_READ, 'read_rt'], [SvmExit.IDTR_WRITE, 'write_idtr'], [SvmExit.GDTR_WRITE, 'write_gdtr'],
  [SvmExit.LDTR_WRITE, 'write_ldtr'], [SvmExit.TR_WRITE, 'write_rt'],
  [SvmExit.RDTSC, 'rdtsc'], [SvmExit.RDPMC, 'rdpmc'], [SvmExit.PUSHF, 'pushf'], [SvmExit.POPF, 'popf'],
  [SvmExit.CPUID, 'cpuid'], [SvmExit.RSM, 'rsm'], [SvmExit.IRET, 'iret'], [SvmExit.SWINT, 'swint'],
  [SvmExit.INVD, 'invd'], [SvmExit.PAUSE, 'pause'], [SvmExit.HLT, 'hlt'], [SvmExit.INVLPG, 'invlpg'],
  [SvmExit.INVLPGA, 'invlpga'], [SvmExit.IOIO, 'io'], [SvmExit.MSR, 'msr'], [SvmExit.TASK_SWITCH, 'task_switch'],
  [SvmExit.FERR_FREEZE, 'ferr_freeze'], [SvmExit.SHUTDOWN, 'shutdown'], [SvmExit.VMRUN, 'vmrun'],
  [SvmExit.VMMCALL, 'hypercall'], [SvmExit.VMLOAD, 'vmload'], [SvmExit.VMSAVE, 'vmsave'],
  [SvmExit.STGI, 'stgi'], [SvmExit.CLGI, 'clgi'], [SvmExit.SKINIT, 'skinit'], [SvmExit.RDTSCP, 'rdtscp'],
  [SvmExit.ICEBP, 'icebp'], [SvmExit.WBINVD, 'wbinvd'], [SvmExit.MONITOR, 'monitor'], [SvmExit.MWAIT, 'mwait'],
  [SvmExit.MWAIT_COND, 'mwait_cond'], [SvmExit.XSETBV, 'xsetbv'], [SvmExit.RDPRU, 'rdpru'],
  [SvmExit.EFER_WRITE_TRAP, 'write_efer_trap'], [SvmExit.INVPCID, 'invpcid'], [SvmExit.NPF, 'npf'],
  [SvmExit.AVIC_INCOMPLETE_IPI, 'avic_incomplete_ipi'], [SvmExit.AVIC_UNACCELERATED_ACCESS, 'avic_unaccelerated_access'],
  [SvmExit.VMGEXIT, 'vmgexit'],
]);

/** KVM's name for an exit code ("cpuid", "io", "hypercall", "read_cr4", "UD excp", "write_cr0_trap" …). */
export function svmExitName(code: number | bigint): string {
  // The exit path names every exit (vcpu.countExit): codes below 0x1000 come from a table.
  if (typeof code === 'bigint' ? code >= 0n && code < NAMED_CODES_BIG : code >= 0 && code < NAMED_CODES) {
    const n = Number(code);
    return (NAME_OF[n] ??= exitName(n));
  }
  const c = typeof code === 'bigint' ? code : BigInt(code);
  if (c === SVM_EXIT_ERR_U64 || c === SVM_EXIT_ERR) return 'invalid';
  return exitName(Number(c));
}
/** svmExitName's table: codes 0..NAMED_CODES-1, filled on first use. */
const NAMED_CODES = 0x1000;
const NAMED_CODES_BIG = BigInt(NAMED_CODES);
const NAME_OF: (string | undefined)[] = new Array<string | undefined>(NAMED_CODES).fill(undefined);

function exitName(n: number): string {
  const known = NAMES.get(n);
  if (known) return known;
  if (n >= 0x00 && n <= 0x0f) return `read_cr${n}`;
  if (n >= 0x10 && n <= 0x1f) return `write_cr${n - 0x10}`;
  if (n >= 0x20 && n <= 0x2f) return `read_dr${n - 0x20}`;
  if (n >= 0x30 && n <= 0x3f) return `write_dr${n - 0x30}`;
  if (n >= 0x40 && n <= 0x5f) return `${EXCP_NAMES[n - 0x40] ?? String(n - 0x40)} excp`;
  if (n >= 0x90 && n <= 0x9f) return `write_cr${n - 0x90}_trap`;
  return `0x${n.toString(16)}`;
}

// ---------------------------------------------------------------- EXITINFO formats

/** IOIO EXITINFO1 (APM 15.10.2, Figure 15-2). */
export const SVM_IOIO_TYPE_IN = 1 << 0;
export const SVM_IOIO_STR = 1 << 2;
export const SVM_IOIO_REP = 1 << 3;
export const SVM_IOIO_SIZE_SHIFT = 4;
export const SVM_IOIO_SZ8 = 1 << 4;
export const SVM_IOIO_SZ16 = 1 << 5;
export const SVM_IOIO_SZ32 = 1 << 6;
export const SVM_IOIO_SIZE_MASK = 7 << 4;
export const SVM_IOIO_A16 = 1 << 7;
export const SVM_IOIO_A32 = 1 << 8;
export const SVM_IOIO_A64 = 1 << 9;
export const SVM_IOIO_SEG_SHIFT = 10;
export const SVM_IOIO_SEG_MASK = 7 << 10;
export const SVM_IOIO_PORT_SHIFT = 16;

/** CR/DR access EXITINFO1 with decode assists (APM 15.8.1): bit 63 valid, bits 3:0 the GPR. */
export const SVM_EXITINFO_REG_MASK = 0xfn;
export const SVM_CR_VALID = 1n << 63n;
/** CR0 selective-write/LMSW: decode-assist bit for "MOV CR" vs "LMSW/CLTS" (bit 63 only for MOV). */

/** #NPF EXITINFO1 error-code bits (APM 15.25.6). */
export const NPF_P = 1n << 0n;
export const NPF_RW = 1n << 1n;
export const NPF_US = 1n << 2n;
export const NPF_RSVD = 1n << 3n;
export const NPF_ID = 1n << 4n;
export const NPF_GUEST_FINAL = 1n << 32n;
export const NPF_GUEST_PAGE = 1n << 33n;

/** EVENTINJ / EXITINTINFO (APM 15.20, Figure 15-4). */
export const SVM_EVTINJ_VEC_MASK = 0xff;
export const SVM_EVTINJ_TYPE_SHIFT = 8;
export const SVM_EVTINJ_TYPE_MASK = 7 << 8;
export enum SvmEventType { INTR = 0, NMI = 2, EXEPT = 3, SOFT = 4 }
export const SVM_EVTINJ_VALID_ERR = 1 << 11;
export const SVM_EVTINJ_VALID = 1 << 31;

/** Task-switch EXITINFO2 bits (APM 15.10.3? — C-1 notes): IRET 36, JMP 38, error code valid 44. */
export const SVM_EXITINFOSHIFT_TS_REASON_IRET = 36n;
export const SVM_EXITINFOSHIFT_TS_REASON_JMP = 38n;
export const SVM_EXITINFOSHIFT_TS_HAS_ERROR_CODE = 44n;
