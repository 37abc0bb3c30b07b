import { Vmcb, SVM_SELECTOR_DB_SHIFT, SVM_SELECTOR_L_SHIFT } from './vmcb';
import { Intercept2, VMCB_CONTROL, VMCB_SAVE } from './layout';
import { IOPM_SIZE, MSRPM_SIZE } from './permission-maps';
import { SVM_EVTINJ_TYPE_MASK, SVM_EVTINJ_TYPE_SHIFT, SVM_EVTINJ_VALID, SVM_EVTINJ_VEC_MASK, SvmEventType } from './exit-codes';

/** The emulated processor's physical-address width (CPUID 8000_0008h EAX[7:0] of the host part). */
export const HOST_MAXPHYADDR = 48;

const CR0_PE = 1n, CR0_NW = 1n << 29n, CR0_CD = 1n << 30n, CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n, EFER_SVME = 1n << 12n;
/**
 * EFER bits this processor implements: SCE 0, LME 8, LMA 10, NXE 11, SVME 12, LMSLE 13,
 * FFXSR 14, TCE 15 (APM Vol. 2 3.1.7); everything else is MBZ.
 */
const EFER_VALID = 0xfd01n;
/**
 * CR4 bits this processor implements (APM Vol. 2 3.1.3): VME…OSXMMEXCPT (0–10), UMIP 11,
 * FSGSBASE 16, PCIDE 17, OSXSAVE 18, SMEP 20, SMAP 21, PKE 22. VMXE (13) is reserved on AMD.
 */
const CR4_VALID = 0x7ffn | (1n << 11n) | (1n << 16n) | (1n << 17n) | (1n << 18n) | (1n << 20n) | (1n << 21n) | (1n << 22n);

/** One failed check: which rule of APM 15.5.1 and the offending values, for the FAIL_ENTRY message. */
export interface VmrunCheckFailure {
  rule: string;
  detail: string;
}

/** EVENTINJ types the processor accepts (APM 15.20): INTR 0, NMI 2, exception 3, software interrupt 4. */
export function eventInjIsLegal(eventInj: bigint): boolean {
  const lo = Number(eventInj & 0xffffffffn);
  if (!(lo & SVM_EVTINJ_VALID)) return true;
  const type = (lo & SVM_EVTINJ_TYPE_MASK) >>> SVM_EVTINJ_TYPE_SHIFT;
  const vector = lo & SVM_EVTINJ_VEC_MASK;
  switch (type) {
    case SvmEventType.INTR: case SvmEventType.SOFT: return true;
    case SvmEventType.NMI: return true;
    // "Injecting an exception with vector 2 (NMI) is illegal", and so is a vector > 31.
    case SvmEventType.EXEPT: return vector !== 2 && vector < 32;
    default: return false;
  }
}

/**
 * The VMRUN consistency checks of AMD APM Vol. 2 15.5.1 ("Canonicalization and Consistency
 * Checks"), applied to the VMCB as the processor sees it. Returns the first failure, or null.
 * A failure makes VMRUN #VMEXIT immediately with EXITCODE = VMEXIT_INVALID.
 */
export function vmrunConsistencyCheck(v: Vmcb): VmrunCheckFailure | null {
  // The common case first, on 32-bit halves (no BigInt per VMRUN): every rule below passes.
  if (quickCheckPasses(v)) return null;
  return fullCheck(v);
}

/** EFER bits, low half (EFER_VALID has nothing above bit 15). */
const EFER_SVME_LO = Number(EFER_SVME), EFER_LME_LO = Number(EFER_LME), EFER_VALID_LO = Number(EFER_VALID);
const CR0_PE_LO = Number(CR0_PE), CR0_NW_LO = Number(CR0_NW), CR0_CD_LO = Number(CR0_CD), CR0_PG_LO = Number(CR0_PG) | 0;
const CR4_PAE_LO = Number(CR4_PAE), CR4_VALID_LO = Number(CR4_VALID);
/** Bits 47:32 of a physical address below 2^HOST_MAXPHYADDR. */
const CR3_LONG_HI_MBZ = ~((1 << (HOST_MAXPHYADDR - 32)) - 1);

/**
 * The rules of vmrunConsistencyCheck evaluated on 32-bit halves: true when all of them pass.
 * Any doubt (a rule fails) goes to fullCheck, which names the rule.
 */
function quickCheckPasses(v: Vmcb): boolean {
  const eferLo = v.readLo(VMCB_SAVE.EFER), eferHi = v.readHi(VMCB_SAVE.EFER);
  const cr0Lo = v.readLo(VMCB_SAVE.CR0), cr0Hi = v.readHi(VMCB_SAVE.CR0);
  const cr3Hi = v.readHi(VMCB_SAVE.CR3);
  const cr4Lo = v.readLo(VMCB_SAVE.CR4), cr4Hi = v.readHi(VMCB_SAVE.CR4);
  if (!(eferLo & EFER_SVME_LO) || eferHi !== 0 || (eferLo & ~EFER_VALID_LO) !== 0) return false;
  if (!(cr0Lo & CR0_CD_LO) && cr0Lo & CR0_NW_LO) return false;
  if (cr0Hi !== 0) return false;
  const longMode = (eferLo & EFER_LME_LO) !== 0 && (cr0Lo & CR0_PG_LO) !== 0;
  if (longMode ? (cr3Hi & CR3_LONG_HI_MBZ) !== 0 : cr3Hi !== 0) return false;
  if (cr4Hi !== 0 || (cr4Lo & ~CR4_VALID_LO) !== 0) return false;
  if (v.readHi(VMCB_SAVE.DR6) !== 0 || v.readHi(VMCB_SAVE.DR7) !== 0) return false;
  if (longMode) {
    if (!(cr4Lo & CR4_PAE_LO) || !(cr0Lo & CR0_PE_LO)) return false;
    const csAttr = v.segAttrib(VMCB_SAVE.CS);
    if ((csAttr >> SVM_SELECTOR_L_SHIFT) & 1 && (csAttr >> SVM_SELECTOR_DB_SHIFT) & 1) return false;
  }
  if (!v.testBit32(VMCB_CONTROL.INTERCEPT_MISC2, Intercept2.VMRUN)) return false;
  // The permission maps must end below 2^HOST_MAXPHYADDR: (base & ~0xfff) + size - 1 < 2^48.
  const limitHi = 2 ** (HOST_MAXPHYADDR - 32);
  const iopm = v.readHi(VMCB_CONTROL.IOPM_BASE_PA) * 0x1_0000_0000 + ((v.readLo(VMCB_CONTROL.IOPM_BASE_PA) & ~0xfff) >>> 0);
  const msrpm = v.readHi(VMCB_CONTROL.MSRPM_BASE_PA) * 0x1_0000_0000 + ((v.readLo(VMCB_CONTROL.MSRPM_BASE_PA) & ~0xfff) >>> 0);
  if (iopm + IOPM_SIZE - 1 >= limitHi * 0x1_0000_0000 || msrpm + MSRPM_SIZE - 1 >= limitHi * 0x1_0000_0000) return false;
  const evLo = v.readLo(VMCB_CONTROL.EVENTINJ);
  if (evLo & SVM_EVTINJ_VALID && !eventInjIsLegal(BigInt(evLo))) return false;
  return v.read32(VMCB_CONTROL.GUEST_ASID) !== 0;
}

/** Every rule in APM order, naming the first that fails. */
function fullCheck(v: Vmcb): VmrunCheckFailure | null {
  const efer = v.read64(VMCB_SAVE.EFER);
  const cr0 = v.read64(VMCB_SAVE.CR0);
  const cr3 = v.read64(VMCB_SAVE.CR3);
  const cr4 = v.read64(VMCB_SAVE.CR4);
  const dr6 = v.read64(VMCB_SAVE.DR6);
  const dr7 = v.read64(VMCB_SAVE.DR7);
  const hex = (x: bigint) => `0x${x.toString(16)}`;
  if (!(efer & EFER_SVME)) return { rule: 'EFER.SVME is zero', detail: `EFER=${hex(efer)}` };
  if (!(cr0 & CR0_CD) && (cr0 & CR0_NW)) return { rule: 'CR0.CD is zero and CR0.NW is set', detail: `CR0=${hex(cr0)}` };
  if (cr0 >> 32n) return { rule: 'CR0[63:32] are not zero', detail: `CR0=${hex(cr0)}` };
  const longMode = (efer & EFER_LME) !== 0n && (cr0 & CR0_PG) !== 0n;
  // CR3: in long mode bits 63:MAXPHYADDR are MBZ; otherwise bits 63:32 (APM 3.1.2).
  const cr3Mbz = longMode ? ~((1n << BigInt(HOST_MAXPHYADDR)) - 1n) : ~0xffffffffn;
  if (cr3 & cr3Mbz & 0xffff_ffff_ffff_ffffn) return { rule: 'an MBZ bit of CR3 is set', detail: `CR3=${hex(cr3)}` };
  if (cr4 & ~CR4_VALID & 0xffff_ffff_ffff_ffffn) return { rule: 'an MBZ bit of CR4 is set', detail: `CR4=${hex(cr4)}` };
  if (dr6 >> 32n) return { rule: 'DR6[63:32] are not zero', detail: `DR6=${hex(dr6)}` };
  if (dr7 >> 32n) return { rule: 'DR7[63:32] are not zero', detail: `DR7=${hex(dr7)}` };
  if (efer & ~EFER_VALID & 0xffff_ffff_ffff_ffffn) return { rule: 'an MBZ bit of EFER is set', detail: `EFER=${hex(efer)}` };
  if (longMode && !(cr4 & CR4_PAE)) return { rule: 'EFER.LME and CR0.PG are both set and CR4.PAE is zero', detail: `EFER=${hex(efer)} CR0=${hex(cr0)} CR4=${hex(cr4)}` };
  if (longMode && !(cr0 & CR0_PE)) return { rule: 'EFER.LME and CR0.PG are both non-zero and CR0.PE is zero', detail: `EFER=${hex(efer)} CR0=${hex(cr0)}` };
  const csAttr = v.segAttrib(VMCB_SAVE.CS);
  if (longMode && (cr4 & CR4_PAE) && (csAttr >> SVM_SELECTOR_L_SHIFT) & 1 && (csAttr >> SVM_SELECTOR_DB_SHIFT) & 1) {
    return { rule: 'EFER.LME, CR0.PG, CR4.PAE, CS.L and CS.D are all non-zero', detail: `CS.attrib=0x${csAttr.toString(16)}` };
  }
  if (!v.testBit32(VMCB_CONTROL.INTERCEPT_MISC2, Intercept2.VMRUN)) return { rule: 'the VMRUN intercept bit is clear', detail: `intercept vector 4 = 0x${v.read32(VMCB_CONTROL.INTERCEPT_MISC2).toString(16)}` };
  const maxPa = 1n << BigInt(HOST_MAXPHYADDR);
  const iopm = v.read64(VMCB_CONTROL.IOPM_BASE_PA) & ~0xfffn;
  const msrpm = v.read64(VMCB_CONTROL.MSRPM_BASE_PA) & ~0xfffn;
  if (iopm + BigInt(IOPM_SIZE) - 1n >= maxPa) return { rule: 'the IOIO intercept table extends beyond the maximum physical address', detail: `IOPM_BASE_PA=${hex(iopm)}` };
  if (msrpm + BigInt(MSRPM_SIZE) - 1n >= maxPa) return { rule: 'the MSR intercept table extends beyond the maximum physical address', detail: `MSRPM_BASE_PA=${hex(msrpm)}` };
  const evt = v.read64(VMCB_CONTROL.EVENTINJ);
  if (!eventInjIsLegal(evt)) return { rule: 'illegal event injection (APM 15.20)', detail: `EVENTINJ=${hex(evt)}` };
  if (v.read32(VMCB_CONTROL.GUEST_ASID) === 0) return { rule: 'ASID is equal to zero', detail: 'GUEST_ASID=0' };
  return null;
}
