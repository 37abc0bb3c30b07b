/**
 * VMCS component encodings, Intel SDM Vol. 3D Appendix B, as typed constants.
 *
 * An encoding (SDM Vol. 3C 25.11.2, "VMREAD, VMWRITE, and Encodings of VMCS Fields") is
 *   bit 0      access type (0 full, 1 high: the upper 32 bits of a 64-bit field)
 *   bits 9:1   index
 *   bits 11:10 type  (0 control, 1 VM-exit information (read-only), 2 guest state, 3 host state)
 *   bit 12     reserved (0)
 *   bits 14:13 width (0 16-bit, 1 64-bit, 2 32-bit, 3 natural-width)
 *
 * Each constant carries its width and writability in its TypeScript type, so that
 * `vmcs.read16(F.GUEST_RIP)` or `vmcs.write32(F.VM_EXIT_REASON, …)` is a build error. The
 * width and type given here are declared by hand (the helper's name), not derived from the
 * encoding; test/vmcs-fields.test.ts checks every one against bits 14:13 and 11:10.
 */

export type VmcsWidth = '16' | '32' | '64' | 'nat';
export type VmcsAccess = 'rw' | 'ro';

declare const vmcsBrand: unique symbol;
/** A VMCS encoding whose accessor width is W and whose VMWRITE-ability is A. */
export type VmcsField<W extends VmcsWidth = VmcsWidth, A extends VmcsAccess = VmcsAccess> = number & {
  readonly [vmcsBrand]: { readonly width: W; readonly access: A };
};

/** SDM field type, bits 11:10. */
export enum VmcsFieldType {
  CONTROL = 0,
  EXIT_INFO = 1,
  GUEST = 2,
  HOST = 3,
}

/** SDM width code, bits 14:13. */
export enum VmcsWidthCode {
  W16 = 0,
  W64 = 1,
  W32 = 2,
  NATURAL = 3,
}

export interface VmcsFieldInfo {
  readonly name: string;
  readonly encoding: number;
  /** The accessor width: '32' for the HIGH half of a 64-bit field. */
  readonly width: VmcsWidth;
  readonly type: VmcsFieldType;
  /** The encoding is the HIGH half (access type 1) of a 64-bit field. */
  readonly high: boolean;
}

const declared: { enc: number; width: VmcsWidth; type: VmcsFieldType }[] = [];
function def<W extends VmcsWidth, A extends VmcsAccess>(enc: number, width: W, type: VmcsFieldType): VmcsField<W, A> {
  declared.push({ enc, width, type });
  return enc as VmcsField<W, A>;
}
const C = VmcsFieldType.CONTROL;
const R = VmcsFieldType.EXIT_INFO;
const G = VmcsFieldType.GUEST;
const H = VmcsFieldType.HOST;
const c16 = (e: number) => def<'16', 'rw'>(e, '16', C);
const g16 = (e: number) => def<'16', 'rw'>(e, '16', G);
const h16 = (e: number) => def<'16', 'rw'>(e, '16', H);
const c64 = (e: number) => def<'64', 'rw'>(e, '64', C);
const r64 = (e: number) => def<'64', 'ro'>(e, '64', R);
const g64 = (e: number) => def<'64', 'rw'>(e, '64', G);
const h64 = (e: number) => def<'64', 'rw'>(e, '64', H);
const c32 = (e: number) => def<'32', 'rw'>(e, '32', C);
const r32 = (e: number) => def<'32', 'ro'>(e, '32', R);
const g32 = (e: number) => def<'32', 'rw'>(e, '32', G);
const h32 = (e: number) => def<'32', 'rw'>(e, '32', H);
const cN = (e: number) => def<'nat', 'rw'>(e, 'nat', C);
const rN = (e: number) => def<'nat', 'ro'>(e, 'nat', R);
const gN = (e: number) => def<'nat', 'rw'>(e, 'nat', G);
const hN = (e: number) => def<'nat', 'rw'>(e, 'nat', H);

/** Every VMCS component this processor implements (SDM Vol. 3D App. B, tables B-1 … B-14). */
export const F = {
  // B.1.1 16-bit control fields
  VIRTUAL_PROCESSOR_ID: c16(0x0000),
  POSTED_INTR_NV: c16(0x0002),
  EPTP_INDEX: c16(0x0004),
  // B.1.2 16-bit guest-state fields
  GUEST_ES_SELECTOR: g16(0x0800),
  GUEST_CS_SELECTOR: g16(0x0802),
  GUEST_SS_SELECTOR: g16(0x0804),
  GUEST_DS_SELECTOR: g16(0x0806),
  GUEST_FS_SELECTOR: g16(0x0808),
  GUEST_GS_SELECTOR: g16(0x080a),
  GUEST_LDTR_SELECTOR: g16(0x080c),
  GUEST_TR_SELECTOR: g16(0x080e),
  GUEST_INTR_STATUS: g16(0x0810),
  GUEST_PML_INDEX: g16(0x0812),
  // B.1.3 16-bit host-state fields
  HOST_ES_SELECTOR: h16(0x0c00),
  HOST_CS_SELECTOR: h16(0x0c02),
  HOST_SS_SELECTOR: h16(0x0c04),
  HOST_DS_SELECTOR: h16(0x0c06),
  HOST_FS_SELECTOR: h16(0x0c08),
  HOST_GS_SELECTOR: h16(0x0c0a),
  HOST_TR_SELECTOR: h16(0x0c0c),
  // B.2.1 64-bit control fields
  IO_BITMAP_A: c64(0x2000),
  IO_BITMAP_B: c64(0x2002),
  MSR_BITMAP: c64(0x2004),
  VM_EXIT_MSR_STORE_ADDR: c64(0x2006),
  VM_EXIT_MSR_LOAD_ADDR: c64(0x2008),
  VM_ENTRY_MSR_LOAD_ADDR: c64(0x200a),
  EXECUTIVE_VMCS_POINTER: c64(0x200c),
  PML_ADDRESS: c64(0x200e),
  TSC_OFFSET: c64(0x2010),
  VIRTUAL_APIC_PAGE_ADDR: c64(0x2012),
  APIC_ACCESS_ADDR: c64(0x2014),
  POSTED_INTR_DESC_ADDR: c64(0x2016),
  VM_FUNCTION_CONTROL: c64(0x2018),
  EPT_POINTER: c64(0x201a),
  EOI_EXIT_BITMAP0: c64(0x201c),
  EOI_EXIT_BITMAP1: c64(0x201e),
  EOI_EXIT_BITMAP2: c64(0x2020),
  EOI_EXIT_BITMAP3: c64(0x2022),
  EPTP_LIST_ADDRESS: c64(0x2024),
  VMREAD_BITMAP: c64(0x2026),
  VMWRITE_BITMAP: c64(0x2028),
  VE_INFORMATION_ADDRESS: c64(0x202a),
  XSS_EXIT_BITMAP: c64(0x202c),
  ENCLS_EXITING_BITMAP: c64(0x202e),
  SPP_TABLE_POINTER: c64(0x2030),
  TSC_MULTIPLIER: c64(0x2032),
  TERTIARY_VM_EXEC_CONTROL: c64(0x2034),
  ENCLV_EXITING_BITMAP: c64(0x2036),
  // B.2.2 64-bit read-only data field
  GUEST_PHYSICAL_ADDRESS: r64(0x2400),
  // B.2.3 64-bit guest-state fields
  VMCS_LINK_POINTER: g64(0x2800),
  GUEST_IA32_DEBUGCTL: g64(0x2802),
  GUEST_IA32_PAT: g64(0x2804),
  GUEST_IA32_EFER: g64(0x2806),
  GUEST_IA32_PERF_GLOBAL_CTRL: g64(0x2808),
  GUEST_PDPTR0: g64(0x280a),
  GUEST_PDPTR1: g64(0x280c),
  GUEST_PDPTR2: g64(0x280e),
  GUEST_PDPTR3: g64(0x2810),
  GUEST_BNDCFGS: g64(0x2812),
  GUEST_IA32_RTIT_CTL: g64(0x2814),
  GUEST_IA32_LBR_CTL: g64(0x2816),
  GUEST_IA32_PKRS: g64(0x2818),
  // B.2.4 64-bit host-state fields
  HOST_IA32_PAT: h64(0x2c00),
  HOST_IA32_EFER: h64(0x2c02),
  HOST_IA32_PERF_GLOBAL_CTRL: h64(0x2c04),
  HOST_IA32_PKRS: h64(0x2c06),
  // B.3.1 32-bit control fields
  PIN_BASED_VM_EXEC_CONTROL: c32(0x4000),
  CPU_BASED_VM_EXEC_CONTROL: c32(0x4002),
  EXCEPTION_BITMAP: c32(0x4004),
  PAGE_FAULT_ERROR_CODE_MASK: c32(0x4006),
  PAGE_FAULT_ERROR_CODE_MATCH: c32(0x4008),
  CR3_TARGET_COUNT: c32(0x400a),
  VM_EXIT_CONTROLS: c32(0x400c),
  VM_EXIT_MSR_STORE_COUNT: c32(0x400e),
  VM_EXIT_MSR_LOAD_COUNT: c32(0x4010),
  VM_ENTRY_CONTROLS: c32(0x4012),
  VM_ENTRY_MSR_LOAD_COUNT: c32(0x4014),
  VM_ENTRY_INTR_INFO_FIELD: c32(0x4016),
  VM_ENTRY_EXCEPTION_ERROR_CODE: c32(0x4018),
  VM_ENTRY_INSTRUCTION_LEN: c32(0x401a),
  TPR_THRESHOLD: c32(0x401c),
  SECONDARY_VM_EXEC_CONTROL: c32(0x401e),
  PLE_GAP: c32(0x4020),
  PLE_WINDOW: c32(0x4022),
  // B.3.2 32-bit read-only data fields
  VM_INSTRUCTION_ERROR: r32(0x4400),
  VM_EXIT_REASON: r32(0x4402),
  VM_EXIT_INTR_INFO: r32(0x4404),
  VM_EXIT_INTR_ERROR_CODE: r32(0x4406),
  IDT_VECTORING_INFO_FIELD: r32(0x4408),
  IDT_VECTORING_ERROR_CODE: r32(0x440a),
  VM_EXIT_INSTRUCTION_LEN: r32(0x440c),
  VMX_INSTRUCTION_INFO: r32(0x440e),
  // B.3.3 32-bit guest-state fields
  GUEST_ES_LIMIT: g32(0x4800),
  GUEST_CS_LIMIT: g32(0x4802),
  GUEST_SS_LIMIT: g32(0x4804),
  GUEST_DS_LIMIT: g32(0x4806),
  GUEST_FS_LIMIT: g32(0x4808),
  GUEST_GS_LIMIT: g32(0x480a),
  GUEST_LDTR_LIMIT: g32(0x480c),
  GUEST_TR_LIMIT: g32(0x480e),
  GUEST_GDTR_LIMIT: g32(0x4810),
  GUEST_IDTR_LIMIT: g32(0x4812),
  GUEST_ES_AR_BYTES: g32(0x4814),
  GUEST_CS_AR_BYTES: g32(0x4816),
  GUEST_SS_AR_BYTES: g32(0x4818),
  GUEST_DS_AR_BYTES: g32(0x481a),
  GUEST_FS_AR_BYTES: g32(0x481c),
  GUEST_GS_AR_BYTES: g32(0x481e),
  GUEST_LDTR_AR_BYTES: g32(0x4820),
  GUEST_TR_AR_BYTES: g32(0x4822),
  GUEST_INTERRUPTIBILITY_INFO: g32(0x4824),
  GUEST_ACTIVITY_STATE: g32(0x4826),
  GUEST_SMBASE: g32(0x4828),
  GUEST_SYSENTER_CS: g32(0x482a),
  VMX_PREEMPTION_TIMER_VALUE: g32(0x482e),
  // B.3.4 32-bit host-state field
  HOST_IA32_SYSENTER_CS: h32(0x4c00),
  // B.4.1 natural-width control fields
  CR0_GUEST_HOST_MASK: cN(0x6000),
  CR4_GUEST_HOST_MASK: cN(0x6002),
  CR0_READ_SHADOW: cN(0x6004),
  CR4_READ_SHADOW: cN(0x6006),
  CR3_TARGET_VALUE0: cN(0x6008),
  CR3_TARGET_VALUE1: cN(0x600a),
  CR3_TARGET_VALUE2: cN(0x600c),
  CR3_TARGET_VALUE3: cN(0x600e),
  // B.4.2 natural-width read-only data fields
  EXIT_QUALIFICATION: rN(0x6400),
  IO_RCX: rN(0x6402),
  IO_RSI: rN(0x6404),
  IO_RDI: rN(0x6406),
  IO_RIP: rN(0x6408),
  GUEST_LINEAR_ADDRESS: rN(0x640a),
  // B.4.3 natural-width guest-state fields
  GUEST_CR0: gN(0x6800),
  GUEST_CR3: gN(0x6802),
  GUEST_CR4: gN(0x6804),
  GUEST_ES_BASE: gN(0x6806),
  GUEST_CS_BASE: gN(0x6808),
  GUEST_SS_BASE: gN(0x680a),
  GUEST_DS_BASE: gN(0x680c),
  GUEST_FS_BASE: gN(0x680e),
  GUEST_GS_BASE: gN(0x6810),
  GUEST_LDTR_BASE: gN(0x6812),
  GUEST_TR_BASE: gN(0x6814),
  GUEST_GDTR_BASE: gN(0x6816),
  GUEST_IDTR_BASE: gN(0x6818),
  GUEST_DR7: gN(0x681a),
  GUEST_RSP: gN(0x681c),
  GUEST_RIP: gN(0x681e),
  GUEST_RFLAGS: gN(0x6820),
  GUEST_PENDING_DBG_EXCEPTIONS: gN(0x6822),
  GUEST_SYSENTER_ESP: gN(0x6824),
  GUEST_SYSENTER_EIP: gN(0x6826),
  GUEST_S_CET: gN(0x6828),
  GUEST_SSP: gN(0x682a),
  GUEST_INTR_SSP_TABLE: gN(0x682c),
  // B.4.4 natural-width host-state fields
  HOST_CR0: hN(0x6c00),
  HOST_CR3: hN(0x6c02),
  HOST_CR4: hN(0x6c04),
  HOST_FS_BASE: hN(0x6c06),
  HOST_GS_BASE: hN(0x6c08),
  HOST_TR_BASE: hN(0x6c0a),
  HOST_GDTR_BASE: hN(0x6c0c),
  HOST_IDTR_BASE: hN(0x6c0e),
  HOST_IA32_SYSENTER_ESP: hN(0x6c10),
  HOST_IA32_SYSENTER_EIP: hN(0x6c12),
  HOST_RSP: hN(0x6c14),
  HOST_RIP: hN(0x6c16),
  HOST_S_CET: hN(0x6c18),
  HOST_SSP: hN(0x6c1a),
  HOST_INTR_SSP_TABLE: hN(0x6c1c),
} as const;

export type VmcsFieldName = keyof typeof F;

/** The HIGH half (access type 1) of a 64-bit field, accessed as a 32-bit component (SDM 25.11.2). */
export function highOf<A extends VmcsAccess>(field: VmcsField<'64', A>): VmcsField<'32', A> {
  return (field | 1) as VmcsField<'32', A>;
}

/** Every implemented encoding, HIGH halves included, by encoding. */
export const VMCS_FIELDS: ReadonlyMap<number, VmcsFieldInfo> = (() => {
  const byEnc = new Map<number, string>();
  for (const [name, enc] of Object.entries(F)) byEnc.set(enc, name);
  const m = new Map<number, VmcsFieldInfo>();
  for (const d of declared) {
    const name = byEnc.get(d.enc)!;
    m.set(d.enc, { name, encoding: d.enc, width: d.width, type: d.type, high: false });
    if (d.width === '64') {
      m.set(d.enc | 1, { name: `${name}_HIGH`, encoding: d.enc | 1, width: '32', type: d.type, high: true });
    }
  }
  return m;
})();

/** Field name for diagnostics; unknown encodings print as hex. */
export function vmcsFieldName(enc: number): string {
  return VMCS_FIELDS.get(enc)?.name ?? `0x${enc.toString(16).padStart(4, '0')}`;
}

/** The width an encoding's bits 14:13 and access type say (SDM 25.11.2). */
export function widthFromEncoding(enc: number): VmcsWidth {
  switch ((enc >> 13) & 3) {
    case VmcsWidthCode.W16: return '16';
    case VmcsWidthCode.W64: return enc & 1 ? '32' : '64';
    case VmcsWidthCode.W32: return '32';
    default: return 'nat';
  }
}
