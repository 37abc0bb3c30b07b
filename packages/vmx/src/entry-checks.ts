/**
 * The checks VM entry performs before it loads guest state (SDM Vol. 3C 27.2–27.3).
 * A failed control or host-state check is VMfailValid with VM-instruction error 7 or 8 (the
 * guest is not entered and no exit is recorded); a failed guest-state check is a VM exit with
 * basic reason 33 and bit 31 set (SDM 27.8).
 */
import { MAXPHYADDR as CORE_MAXPHYADDR } from '@tsvisor/core';
import { F } from './vmcs/fields';
import { Vmcs, VmInstructionError } from './vmcs/vmcs';
import * as D from './vmx-defs';
import {
  allowedSettings, CR3_TARGET_COUNT_MAX, MSR_IA32_VMX_PROCBASED_CTLS2, MSR_IA32_VMX_TRUE_ENTRY_CTLS,
  MSR_IA32_VMX_TRUE_EXIT_CTLS, MSR_IA32_VMX_TRUE_PINBASED_CTLS, MSR_IA32_VMX_TRUE_PROCBASED_CTLS, VMX_CR0_FIXED0,
  VMX_CR0_FIXED1, VMX_CR4_FIXED0, VMX_CR4_FIXED1,
} from './capabilities';

/** Physical-address width of the emulated processor (CPUID.80000008H:EAX[7:0]): one value for the whole machine. */
export const MAXPHYADDR = CORE_MAXPHYADDR;

export type EntryCheckResult =
  | { ok: true }
  | { ok: false; kind: 'control' | 'host'; error: VmInstructionError; why: string }
  | { ok: false; kind: 'guest'; exitReason: number; qualification: number; why: string };

const OK: EntryCheckResult = { ok: true };
const control = (why: string): EntryCheckResult => ({ ok: false, kind: 'control', error: VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, why });
const host = (why: string): EntryCheckResult => ({ ok: false, kind: 'host', error: VmInstructionError.ENTRY_INVALID_HOST_STATE_FIELD, why });
/** SDM 27.8 Table: exit qualification 0 (no info), 2 PDPTE load, 3 NMI injection blocked, 4 VMCS link pointer. */
const guest = (why: string, qualification = 0): EntryCheckResult => ({
  ok: false, kind: 'guest', exitReason: (D.ExitReason.INVALID_STATE | D.VMX_EXIT_REASONS_FAILED_VMENTRY) >>> 0, qualification, why,
});

/** A 64-bit value is canonical for 48-bit linear addresses: bits 63:47 (all in the high half) agree. */
function canonicalHigh(hi: number): boolean {
  const top = (hi | 0) >> 15;
  return top === 0 || top === -1;
}
function natCanonical(v: Vmcs, f: Parameters<Vmcs['readHigh']>[0]): boolean {
  return canonicalHigh(v.readHigh(f));
}
/** Within the physical-address width and (optionally) aligned. */
function physOk(v: Vmcs, f: Parameters<Vmcs['readNum']>[0], align: number): boolean {
  const a = v.readNum(f);
  return a < 2 ** MAXPHYADDR && a % align === 0;
}
function ctlOk(value: number, msr: number): boolean {
  const { must1, may1 } = allowedSettings(msr);
  return ((value & must1) >>> 0) === must1 && (value & ~may1) === 0;
}

/** SDM 27.2.1: VM-execution, VM-exit and VM-entry control fields. */
export function checkControls(v: Vmcs): EntryCheckResult {
  const pin = v.read32(F.PIN_BASED_VM_EXEC_CONTROL);
  const proc = v.read32(F.CPU_BASED_VM_EXEC_CONTROL);
  const proc2 = proc & D.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS ? v.read32(F.SECONDARY_VM_EXEC_CONTROL) : 0;
  const exit = v.read32(F.VM_EXIT_CONTROLS);
  const entry = v.read32(F.VM_ENTRY_CONTROLS);
  // 27.2.1.1: reserved bits per the capability MSRs.
  if (!ctlOk(pin, MSR_IA32_VMX_TRUE_PINBASED_CTLS)) return control(`pin-based controls 0x${pin.toString(16)} violate IA32_VMX_TRUE_PINBASED_CTLS`);
  if (!ctlOk(proc, MSR_IA32_VMX_TRUE_PROCBASED_CTLS)) return control(`primary processor-based controls 0x${(proc >>> 0).toString(16)} violate IA32_VMX_TRUE_PROCBASED_CTLS`);
  if (proc & D.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS && !ctlOk(proc2, MSR_IA32_VMX_PROCBASED_CTLS2)) {
    return control(`secondary processor-based controls 0x${proc2.toString(16)} violate IA32_VMX_PROCBASED_CTLS2`);
  }
  if (v.read32(F.CR3_TARGET_COUNT) > CR3_TARGET_COUNT_MAX) return control(`CR3-target count ${v.read32(F.CR3_TARGET_COUNT)} exceeds ${CR3_TARGET_COUNT_MAX}`);
  if (proc & D.CPU_BASED_USE_IO_BITMAPS && (!physOk(v, F.IO_BITMAP_A, 4096) || !physOk(v, F.IO_BITMAP_B, 4096))) {
    return control('I/O bitmap addresses must be 4 KiB aligned and within the physical-address width');
  }
  if (proc & D.CPU_BASED_USE_MSR_BITMAPS && !physOk(v, F.MSR_BITMAP, 4096)) return control('MSR-bitmap address must be 4 KiB aligned');
  if (!(pin & D.PIN_BASED_NMI_EXITING) && pin & D.PIN_BASED_VIRTUAL_NMIS) return control('"virtual NMIs" requires "NMI exiting"');
  if (!(pin & D.PIN_BASED_VIRTUAL_NMIS) && proc & D.CPU_BASED_NMI_WINDOW_EXITING) return control('"NMI-window exiting" requires "virtual NMIs"');
  if (proc & D.CPU_BASED_TPR_SHADOW) {
    if (!physOk(v, F.VIRTUAL_APIC_PAGE_ADDR, 4096)) return control('virtual-APIC address must be 4 KiB aligned');
    if (v.read32(F.TPR_THRESHOLD) & 0xfffffff0) return control('TPR threshold bits 31:4 must be 0');
  } else if (proc2 & (D.SECONDARY_EXEC_VIRTUALIZE_X2APIC_MODE | D.SECONDARY_EXEC_APIC_REGISTER_VIRT | D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY)) {
    return control('x2APIC virtualization, APIC-register virtualization and virtual-interrupt delivery require "use TPR shadow"');
  }
  if (proc2 & D.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES && !physOk(v, F.APIC_ACCESS_ADDR, 4096)) return control('APIC-access address must be 4 KiB aligned');
  if (proc2 & D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY && !(pin & D.PIN_BASED_EXT_INTR_MASK)) {
    return control('"virtual-interrupt delivery" requires "external-interrupt exiting"');
  }
  if (pin & D.PIN_BASED_POSTED_INTR) {
    if (!(proc2 & D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY) || !(exit & D.VM_EXIT_ACK_INTR_ON_EXIT)) {
      return control('"process posted interrupts" requires virtual-interrupt delivery and acknowledge-interrupt-on-exit');
    }
    if (v.read16(F.POSTED_INTR_NV) & 0xff00) return control('posted-interrupt notification vector bits 15:8 must be 0');
    if (!physOk(v, F.POSTED_INTR_DESC_ADDR, 64)) return control('posted-interrupt descriptor address must be 64-byte aligned');
  }
  if (proc2 & D.SECONDARY_EXEC_ENABLE_VPID && v.read16(F.VIRTUAL_PROCESSOR_ID) === 0) return control('"enable VPID" requires a nonzero VPID');
  if (proc2 & D.SECONDARY_EXEC_ENABLE_EPT) {
    const why = checkEptp(v.read64(F.EPT_POINTER));
    if (why) return control(why);
  }
  if (proc2 & D.SECONDARY_EXEC_ENABLE_PML) {
    if (!(proc2 & D.SECONDARY_EXEC_ENABLE_EPT)) return control('"enable PML" requires "enable EPT"');
    if (!physOk(v, F.PML_ADDRESS, 4096)) return control('PML address must be 4 KiB aligned');
  }
  if (proc2 & D.SECONDARY_EXEC_UNRESTRICTED_GUEST && !(proc2 & D.SECONDARY_EXEC_ENABLE_EPT)) return control('"unrestricted guest" requires "enable EPT"');
  // 27.2.1.2: VM-exit control fields.
  if (!ctlOk(exit, MSR_IA32_VMX_TRUE_EXIT_CTLS)) return control(`VM-exit controls 0x${exit.toString(16)} violate IA32_VMX_TRUE_EXIT_CTLS`);
  if (!(pin & D.PIN_BASED_VMX_PREEMPTION_TIMER) && exit & D.VM_EXIT_SAVE_VMX_PREEMPTION_TIMER) {
    return control('"save VMX-preemption timer value" requires "activate VMX-preemption timer"');
  }
  if ((v.read32(F.VM_EXIT_MSR_STORE_COUNT) && !physOk(v, F.VM_EXIT_MSR_STORE_ADDR, 16)) ||
    (v.read32(F.VM_EXIT_MSR_LOAD_COUNT) && !physOk(v, F.VM_EXIT_MSR_LOAD_ADDR, 16))) {
    return control('VM-exit MSR-store/load addresses must be 16-byte aligned');
  }
  // 27.2.1.3: VM-entry control fields.
  if (!ctlOk(entry, MSR_IA32_VMX_TRUE_ENTRY_CTLS)) return control(`VM-entry controls 0x${entry.toString(16)} violate IA32_VMX_TRUE_ENTRY_CTLS`);
  if (v.read32(F.VM_ENTRY_MSR_LOAD_COUNT) && !physOk(v, F.VM_ENTRY_MSR_LOAD_ADDR, 16)) return control('VM-entry MSR-load address must be 16-byte aligned');
  const why = checkEntryInterruption(v, proc2);
  if (why) return control(why);
  return OK;
}

/** SDM 25.6.11 / 27.2.1.1: the EPTP. Returns why it is invalid, or null. */
export function checkEptp(eptp: bigint): string | null {
  const mt = Number(eptp & 7n);
  if (mt !== 0 && mt !== 6) return `EPTP memory type ${mt} is neither UC (0) nor WB (6)`;
  const walk = Number((eptp >> 3n) & 7n);
  if (walk !== 3 && walk !== 4) return `EPTP page-walk length ${walk + 1} is not 4 or 5`;
  if (eptp & 0xf00n) return 'EPTP bits 11:8 are reserved';
  if (eptp >> BigInt(MAXPHYADDR)) return 'EPTP address is beyond the physical-address width';
  return null;
}

/** SDM 27.2.1.3: the VM-entry interruption-information field. */
function checkEntryInterruption(v: Vmcs, proc2: number): string | null {
  const info = v.read32(F.VM_ENTRY_INTR_INFO_FIELD);
  if (!(info & D.INTR_INFO_VALID_MASK)) return null;
  const type = info & D.INTR_INFO_INTR_TYPE_MASK;
  const vector = info & D.INTR_INFO_VECTOR_MASK;
  if (type === 1 << 8) return 'interruption type 1 is reserved';
  if (type === D.INTR_TYPE_OTHER_EVENT && vector !== 0) return 'interruption type 7 (other event) needs vector 0';
  if (type === D.INTR_TYPE_OTHER_EVENT) return 'interruption type 7 (pending MTF) is not supported';
  if (type === D.INTR_TYPE_NMI_INTR && vector !== 2) return `NMI injection with vector ${vector}`;
  if (type === D.INTR_TYPE_HARD_EXCEPTION && vector > 31) return `hardware exception vector ${vector} > 31`;
  const unrestricted = (proc2 & D.SECONDARY_EXEC_UNRESTRICTED_GUEST) !== 0;
  const pe = (v.readLow(F.GUEST_CR0) & 1) !== 0;
  if (info & D.INTR_INFO_DELIVER_CODE_MASK) {
    if (unrestricted && !pe) return 'an error code cannot be delivered in real mode';
    const hasCode = vector === 8 || (vector >= 10 && vector <= 14) || vector === 17 || vector === 21;
    if (type !== D.INTR_TYPE_HARD_EXCEPTION || !hasCode) return `vector ${vector} of type ${type >> 8} does not deliver an error code`;
    if (v.read32(F.VM_ENTRY_EXCEPTION_ERROR_CODE) & 0xffff0000) return 'VM-entry exception error code bits 31:16 must be 0';
  }
  if (info & D.INTR_INFO_RESVD_BITS_MASK) return 'VM-entry interruption-information bits 30:12 are reserved';
  if (type === D.INTR_TYPE_SOFT_INTR || type === D.INTR_TYPE_PRIV_SW_EXCEPTION || type === D.INTR_TYPE_SOFT_EXCEPTION) {
    const len = v.read32(F.VM_ENTRY_INSTRUCTION_LEN);
    if (len < 1 || len > 15) return `software event with instruction length ${len} (must be 1..15)`;
  }
  return null;
}

/** SDM 27.2.2: host-state area (a 64-bit host: "host address-space size" must be 1). */
export function checkHostState(v: Vmcs): EntryCheckResult {
  const cr0 = v.readLow(F.HOST_CR0);
  const cr4 = v.readLow(F.HOST_CR4);
  if ((cr0 & VMX_CR0_FIXED0) >>> 0 !== VMX_CR0_FIXED0 || (cr0 & ~VMX_CR0_FIXED1) !== 0 || v.readHigh(F.HOST_CR0)) return host('HOST_CR0 violates IA32_VMX_CR0_FIXED0/1');
  if ((cr4 & VMX_CR4_FIXED0) !== VMX_CR4_FIXED0 || (cr4 & ~VMX_CR4_FIXED1) !== 0 || v.readHigh(F.HOST_CR4)) return host('HOST_CR4 violates IA32_VMX_CR4_FIXED0/1');
  if (v.readNum(F.HOST_CR3) >= 2 ** MAXPHYADDR) return host('HOST_CR3 is beyond the physical-address width');
  if (!natCanonical(v, F.HOST_IA32_SYSENTER_ESP) || !natCanonical(v, F.HOST_IA32_SYSENTER_EIP)) return host('host SYSENTER_ESP/EIP must be canonical');
  const exit = v.read32(F.VM_EXIT_CONTROLS);
  if (exit & D.VM_EXIT_LOAD_IA32_PAT && !patValid(v, F.HOST_IA32_PAT)) return host('HOST_IA32_PAT has an invalid memory type');
  if (exit & D.VM_EXIT_LOAD_IA32_EFER) {
    const efer = v.read64(F.HOST_IA32_EFER);
    if (efer & ~0xd01n) return host('HOST_IA32_EFER sets reserved bits');
    const hostLong = (exit & D.VM_EXIT_HOST_ADDR_SPACE_SIZE) !== 0;
    if (((efer & 0x400n) !== 0n) !== hostLong || ((efer & 0x100n) !== 0n) !== hostLong) return host('HOST_IA32_EFER.LMA/LME must equal "host address-space size"');
  }
  // 27.2.2: selectors.
  const sels = [F.HOST_ES_SELECTOR, F.HOST_CS_SELECTOR, F.HOST_SS_SELECTOR, F.HOST_DS_SELECTOR, F.HOST_FS_SELECTOR, F.HOST_GS_SELECTOR, F.HOST_TR_SELECTOR];
  for (const s of sels) if (v.read16(s) & 7) return host('host selector RPL and TI must be 0');
  if (v.read16(F.HOST_CS_SELECTOR) === 0) return host('HOST_CS_SELECTOR must not be 0');
  if (v.read16(F.HOST_TR_SELECTOR) === 0) return host('HOST_TR_SELECTOR must not be 0');
  if (!(exit & D.VM_EXIT_HOST_ADDR_SPACE_SIZE)) return host('this processor is in IA-32e mode: "host address-space size" must be 1');
  if (!(cr4 & 0x20)) return host('a 64-bit host needs HOST_CR4.PAE');
  for (const f of [F.HOST_FS_BASE, F.HOST_GS_BASE, F.HOST_GDTR_BASE, F.HOST_IDTR_BASE, F.HOST_TR_BASE, F.HOST_RIP]) {
    if (!natCanonical(v, f)) return host('host FS/GS/GDTR/IDTR/TR bases and RIP must be canonical');
  }
  return OK;
}

/** Every PAT entry a valid memory type (0, 1, 4, 5, 6, 7); checked on the two 32-bit halves. */
function patHalvesValid(lo: number, hi: number): boolean {
  for (const w of [lo, hi]) {
    for (let i = 0; i < 32; i += 8) {
      const t = (w >>> i) & 0xff;
      if (t === 2 || t === 3 || t > 7) return false;
    }
  }
  return true;
}
function patValid(v: Vmcs, f: typeof F.GUEST_IA32_PAT | typeof F.HOST_IA32_PAT): boolean {
  return patHalvesValid(v.readLow(f), v.readHigh(f));
}

const SEGS = [
  { name: 'ES', sel: F.GUEST_ES_SELECTOR, base: F.GUEST_ES_BASE, limit: F.GUEST_ES_LIMIT, ar: F.GUEST_ES_AR_BYTES },
  { name: 'CS', sel: F.GUEST_CS_SELECTOR, base: F.GUEST_CS_BASE, limit: F.GUEST_CS_LIMIT, ar: F.GUEST_CS_AR_BYTES },
  { name: 'SS', sel: F.GUEST_SS_SELECTOR, base: F.GUEST_SS_BASE, limit: F.GUEST_SS_LIMIT, ar: F.GUEST_SS_AR_BYTES },
  { name: 'DS', sel: F.GUEST_DS_SELECTOR, base: F.GUEST_DS_BASE, limit: F.GUEST_DS_LIMIT, ar: F.GUEST_DS_AR_BYTES },
  { name: 'FS', sel: F.GUEST_FS_SELECTOR, base: F.GUEST_FS_BASE, limit: F.GUEST_FS_LIMIT, ar: F.GUEST_FS_AR_BYTES },
  { name: 'GS', sel: F.GUEST_GS_SELECTOR, base: F.GUEST_GS_BASE, limit: F.GUEST_GS_LIMIT, ar: F.GUEST_GS_AR_BYTES },
  { name: 'TR', sel: F.GUEST_TR_SELECTOR, base: F.GUEST_TR_BASE, limit: F.GUEST_TR_LIMIT, ar: F.GUEST_TR_AR_BYTES },
  { name: 'LDTR', sel: F.GUEST_LDTR_SELECTOR, base: F.GUEST_LDTR_BASE, limit: F.GUEST_LDTR_LIMIT, ar: F.GUEST_LDTR_AR_BYTES },
] as const;

/** SDM 27.3.1.2: G must agree with the limit. */
function granularityOk(limit: number, ar: number): boolean {
  const g = (ar & 0x8000) !== 0;
  if ((limit & 0xfff) !== 0xfff && g) return false;
  if ((limit >>> 20) !== 0 && !g) return false;
  return true;
}

/** SDM 27.3.1: the guest-state area. */
export function checkGuestState(v: Vmcs): EntryCheckResult {
  const proc = v.read32(F.CPU_BASED_VM_EXEC_CONTROL);
  const proc2 = proc & D.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS ? v.read32(F.SECONDARY_VM_EXEC_CONTROL) : 0;
  const entry = v.read32(F.VM_ENTRY_CONTROLS);
  const unrestricted = (proc2 & D.SECONDARY_EXEC_UNRESTRICTED_GUEST) !== 0;
  const ia32e = (entry & D.VM_ENTRY_IA32E_MODE) !== 0;

  // 27.3.1.1: control registers, debug registers and MSRs.
  const cr0 = v.readLow(F.GUEST_CR0);
  const fixed0 = unrestricted ? VMX_CR0_FIXED0 & ~0x80000001 : VMX_CR0_FIXED0;
  if ((cr0 & fixed0) >>> 0 !== fixed0 >>> 0 || (cr0 & ~VMX_CR0_FIXED1) !== 0 || v.readHigh(F.GUEST_CR0)) {
    return guest(`GUEST_CR0 0x${(cr0 >>> 0).toString(16)} violates IA32_VMX_CR0_FIXED0/1${unrestricted ? ' (PE/PG exempt: unrestricted guest)' : ''}`);
  }
  if (cr0 & 0x80000000 && !(cr0 & 1)) return guest('GUEST_CR0.PG set without PE');
  const cr4 = v.readLow(F.GUEST_CR4);
  if ((cr4 & VMX_CR4_FIXED0) !== VMX_CR4_FIXED0 || (cr4 & ~VMX_CR4_FIXED1) !== 0 || v.readHigh(F.GUEST_CR4)) {
    return guest(`GUEST_CR4 0x${(cr4 >>> 0).toString(16)} violates IA32_VMX_CR4_FIXED0/1`);
  }
  if (entry & D.VM_ENTRY_LOAD_DEBUG_CONTROLS) {
    if ((v.readLow(F.GUEST_IA32_DEBUGCTL) & 0xffff003c) !== 0 || v.readHigh(F.GUEST_IA32_DEBUGCTL)) return guest('GUEST_IA32_DEBUGCTL sets reserved bits');
    if (v.readHigh(F.GUEST_DR7)) return guest('GUEST_DR7 bits 63:32 must be 0');
  }
  if (ia32e) {
    if (!(cr0 & 0x80000000) || !(cr4 & 0x20)) return guest('"IA-32e mode guest" requires CR0.PG and CR4.PAE');
  } else if (cr4 & 0x20000) return guest('CR4.PCIDE requires "IA-32e mode guest"');
  if (v.readNum(F.GUEST_CR3) >= 2 ** MAXPHYADDR) return guest('GUEST_CR3 is beyond the physical-address width');
  if (!natCanonical(v, F.GUEST_SYSENTER_ESP) || !natCanonical(v, F.GUEST_SYSENTER_EIP)) return guest('guest SYSENTER_ESP/EIP must be canonical');
  if (entry & D.VM_ENTRY_LOAD_IA32_PAT && !patValid(v, F.GUEST_IA32_PAT)) return guest('GUEST_IA32_PAT has an invalid memory type');
  if (entry & D.VM_ENTRY_LOAD_IA32_EFER) {
    const efer = v.read64(F.GUEST_IA32_EFER);
    if (efer & ~0xd01n) return guest('GUEST_IA32_EFER sets reserved bits');
    const lma = (efer & 0x400n) !== 0n;
    if (lma !== ia32e) return guest('GUEST_IA32_EFER.LMA must equal "IA-32e mode guest"');
    if (cr0 & 0x80000000 && lma !== ((efer & 0x100n) !== 0n)) return guest('with CR0.PG, GUEST_IA32_EFER.LME must equal LMA');
  }

  // 27.3.1.2: segment registers (this processor does not support virtual-8086 guests).
  const rflagsLo = v.readLow(F.GUEST_RFLAGS);
  if (rflagsLo & 0x20000) return guest('virtual-8086 guests are not supported (RFLAGS.VM)');
  const ar = SEGS.map((s) => v.read32(s.ar));
  const sel = SEGS.map((s) => v.read16(s.sel));
  const lim = SEGS.map((s) => v.read32(s.limit));
  const usable = (i: number) => !(ar[i] & D.VMX_AR_UNUSABLE_MASK);
  const [CS, SS, FS, GS, TR, LDTR] = [1, 2, 4, 5, 6, 7];
  if (sel[TR] & 4) return guest('TR selector TI flag must be 0');
  if (usable(LDTR) && sel[LDTR] & 4) return guest('LDTR selector TI flag must be 0');
  if (!unrestricted && (sel[SS] & 3) !== (sel[CS] & 3)) return guest('SS.RPL must equal CS.RPL');
  for (const i of [TR, FS, GS]) if (!natCanonical(v, SEGS[i].base)) return guest(`${SEGS[i].name} base must be canonical`);
  if (usable(LDTR) && !natCanonical(v, SEGS[LDTR].base)) return guest('LDTR base must be canonical');
  if (v.readHigh(F.GUEST_CS_BASE)) return guest('CS base bits 63:32 must be 0');
  for (const i of [SS, 3, 0]) if (usable(i) && v.readHigh(SEGS[i].base)) return guest(`${SEGS[i].name} base bits 63:32 must be 0`);
  // CS
  const csType = ar[CS] & 0xf;
  if (!(csType === 9 || csType === 11 || csType === 13 || csType === 15 || (unrestricted && csType === 3))) return guest(`CS type ${csType} is not an accessed code segment`);
  if (!(ar[CS] & 0x10)) return guest('CS.S must be 1');
  if (!(ar[CS] & 0x80)) return guest('CS must be present');
  if (ar[CS] & (D.VMX_AR_RESERVED_MASK | D.VMX_AR_UNUSABLE_MASK)) return guest('CS access rights set reserved bits (or CS is unusable)');
  const csDpl = (ar[CS] >> 5) & 3;
  const ssDpl = (ar[SS] >> 5) & 3;
  if (csType === 3 && csDpl !== 0) return guest('a data-type CS (unrestricted guest) must have DPL 0');
  if ((csType === 9 || csType === 11) && csDpl !== ssDpl) return guest('non-conforming CS.DPL must equal SS.DPL');
  if ((csType === 13 || csType === 15) && csDpl > ssDpl) return guest('conforming CS.DPL must not exceed SS.DPL');
  if (ia32e && ar[CS] & 0x2000 && ar[CS] & 0x4000) return guest('CS.L and CS.D both set in IA-32e mode');
  if (!granularityOk(lim[CS], ar[CS])) return guest('CS limit and G disagree');
  // SS
  if (usable(SS)) {
    const t = ar[SS] & 0xf;
    if (t !== 3 && t !== 7) return guest(`SS type ${t} is not a read/write accessed data segment`);
    if (!(ar[SS] & 0x10) || !(ar[SS] & 0x80)) return guest('a usable SS must have S=1 and P=1');
    if (ar[SS] & D.VMX_AR_RESERVED_MASK) return guest('SS access rights set reserved bits');
    if (!granularityOk(lim[SS], ar[SS])) return guest('SS limit and G disagree');
  }
  if (!unrestricted && ssDpl !== (sel[SS] & 3)) return guest('SS.DPL must equal SS.RPL');
  if (!(cr0 & 1) && ssDpl !== 0) return guest('SS.DPL must be 0 in real mode');
  // DS ES FS GS
  for (const i of [3, 0, FS, GS]) {
    if (!usable(i)) continue;
    const a = ar[i];
    const name = SEGS[i].name;
    if (!(a & 1)) return guest(`${name} must be accessed (type bit 0)`);
    if (a & 8 && !(a & 2)) return guest(`${name} is a code segment that is not readable`);
    if (!(a & 0x10) || !(a & 0x80)) return guest(`a usable ${name} must have S=1 and P=1`);
    if (!unrestricted && (a & 0xf) <= 11 && ((a >> 5) & 3) < (sel[i] & 3)) return guest(`${name}.DPL must not be below its RPL`);
    if (a & D.VMX_AR_RESERVED_MASK) return guest(`${name} access rights set reserved bits`);
    if (!granularityOk(lim[i], a)) return guest(`${name} limit and G disagree`);
  }
  // TR
  const trType = ar[TR] & 0xf;
  if (ia32e ? trType !== 11 : trType !== 3 && trType !== 11) return guest(`TR type ${trType} is not a busy TSS${ia32e ? ' (64-bit: 11)' : ''}`);
  if (ar[TR] & 0x10 || !(ar[TR] & 0x80)) return guest('TR must have S=0 and P=1');
  if (ar[TR] & (D.VMX_AR_RESERVED_MASK | D.VMX_AR_UNUSABLE_MASK)) return guest('TR access rights set reserved bits (TR must be usable)');
  if (!granularityOk(lim[TR], ar[TR])) return guest('TR limit and G disagree');
  // LDTR
  if (usable(LDTR)) {
    if ((ar[LDTR] & 0xf) !== 2 || ar[LDTR] & 0x10 || !(ar[LDTR] & 0x80)) return guest('a usable LDTR must be type 2, S=0, P=1');
    if (ar[LDTR] & D.VMX_AR_RESERVED_MASK) return guest('LDTR access rights set reserved bits');
    if (!granularityOk(lim[LDTR], ar[LDTR])) return guest('LDTR limit and G disagree');
  }

  // 27.3.1.3: descriptor-table registers.
  if (!natCanonical(v, F.GUEST_GDTR_BASE) || !natCanonical(v, F.GUEST_IDTR_BASE)) return guest('GDTR/IDTR base must be canonical');
  if (v.read32(F.GUEST_GDTR_LIMIT) >>> 16 || v.read32(F.GUEST_IDTR_LIMIT) >>> 16) return guest('GDTR/IDTR limit bits 31:16 must be 0');

  // 27.3.1.4: RIP and RFLAGS.
  const rip = checkGuestRip(v);
  if (!rip.ok) return rip;
  if (v.readHigh(F.GUEST_RFLAGS) || rflagsLo & 0xffc08028 || !(rflagsLo & 2)) return guest(`RFLAGS 0x${(rflagsLo >>> 0).toString(16)}: reserved bits must be 0 and bit 1 must be 1`);
  const intr = v.read32(F.VM_ENTRY_INTR_INFO_FIELD);
  const injecting = (intr & D.INTR_INFO_VALID_MASK) !== 0;
  const injType = intr & D.INTR_INFO_INTR_TYPE_MASK;
  if (injecting && injType === D.INTR_TYPE_EXT_INTR && !(rflagsLo & 0x200)) return guest('injecting an external interrupt requires RFLAGS.IF');

  // 27.3.1.5: non-register state.
  const activity = v.read32(F.GUEST_ACTIVITY_STATE);
  if (activity > 3) return guest(`activity state ${activity} is not supported`);
  if (activity === D.GUEST_ACTIVITY_HLT && ssDpl !== 0) return guest('HLT activity state requires SS.DPL = 0');
  const st = v.read32(F.GUEST_INTERRUPTIBILITY_INFO);
  if (st & 0xffffffe0) return guest('interruptibility-state bits 31:5 are reserved');
  if (st & D.GUEST_INTR_STATE_ENCLAVE_INTR) return guest('enclave interruption is not supported');
  if ((st & 3) === 3) return guest('blocking by STI and by MOV SS cannot both be set');
  if (st & D.GUEST_INTR_STATE_STI && !(rflagsLo & 0x200)) return guest('blocking by STI requires RFLAGS.IF');
  if (st & D.GUEST_INTR_STATE_SMI && !(entry & D.VM_ENTRY_SMM)) return guest('blocking by SMI outside SMM');
  if (activity === D.GUEST_ACTIVITY_HLT && st & 3) return guest('HLT activity with STI/MOV-SS blocking');
  if (injecting && injType === D.INTR_TYPE_EXT_INTR && st & 3) return guest('external-interrupt injection with STI/MOV-SS blocking');
  if (injecting && injType === D.INTR_TYPE_NMI_INTR) {
    if (st & D.GUEST_INTR_STATE_MOV_SS) return guest('NMI injection with MOV-SS blocking');
    const pin = v.read32(F.PIN_BASED_VM_EXEC_CONTROL);
    if (pin & D.PIN_BASED_VIRTUAL_NMIS && st & D.GUEST_INTR_STATE_NMI) return guest('NMI injection while virtual-NMI blocking is set', 3);
  }
  const pdeLo = v.readLow(F.GUEST_PENDING_DBG_EXCEPTIONS);
  if (v.readHigh(F.GUEST_PENDING_DBG_EXCEPTIONS) || pdeLo & 0xfffeaff0) return guest('pending debug exceptions set reserved bits');
  // 27.3.1.5: the VMCS link pointer must be all ones (this processor has no VMCS shadowing).
  if (v.readLow(F.VMCS_LINK_POINTER) !== 0xffffffff || v.readHigh(F.VMCS_LINK_POINTER) !== 0xffffffff) {
    return guest('VMCS link pointer must be FFFFFFFF_FFFFFFFF', 4);
  }
  // 27.3.1.6: entry to PAE paging with EPT checks the PDPTE fields (without EPT, 27.3.2.4 loads
  // them from CR3 instead).
  if (cr0 & 0x80000000 && cr4 & 0x20 && !ia32e && proc2 & D.SECONDARY_EXEC_ENABLE_EPT) {
    const bad = badGuestPdpte(v);
    if (bad >= 0) return guest(`GUEST_PDPTR${bad} sets reserved bits (PAE paging with EPT)`, 2);
  }
  return OK;
}

const GUEST_PDPTRS = [F.GUEST_PDPTR0, F.GUEST_PDPTR1, F.GUEST_PDPTR2, F.GUEST_PDPTR3] as const;
/** Reserved bits of a present PAE PDPTE (SDM Table 4-8): 2:1 and 8:5 (low half), 63:MAXPHYADDR (high half). */
const PDPTE_RSVD_LO = 0x1e6;
const PDPTE_RSVD_HI = ~((1 << (MAXPHYADDR - 32)) - 1);

/** The first GUEST_PDPTRn that is present (bit 0) with a reserved bit set, or -1 (SDM 27.3.1.6). */
function badGuestPdpte(v: Vmcs): number {
  for (let i = 0; i < 4; i++) {
    const lo = v.readLow(GUEST_PDPTRS[i]);
    if (lo & 1 && (lo & PDPTE_RSVD_LO || v.readHigh(GUEST_PDPTRS[i]) & PDPTE_RSVD_HI)) return i;
  }
  return -1;
}

/**
 * SDM 27.3.1.4: RIP bits 63:32 are 0 outside 64-bit mode, canonical in it. Checked on every
 * entry: RIP and RSP change at nearly every exit, so the VMCS generation ignores them.
 */
export function checkGuestRip(v: Vmcs): EntryCheckResult {
  // Every entry runs this: the fields are read by slot (no per-read encoding check).
  if (guestRipOk(v)) return OK;
  const longCs = (v.lo[S_ENTRY_CONTROLS] & D.VM_ENTRY_IA32E_MODE) !== 0 && (v.lo[S_CS_AR] & 0x2000) !== 0;
  return guest(longCs ? 'RIP must be canonical in 64-bit mode' : 'RIP bits 63:32 must be 0 outside 64-bit mode');
}
/** checkGuestRip's test alone (no result object). */
function guestRipOk(v: Vmcs): boolean {
  const ripHi = v.hi[S_RIP];
  const lo = v.lo;
  const longCs = (lo[S_ENTRY_CONTROLS] & D.VM_ENTRY_IA32E_MODE) !== 0 && (lo[S_CS_AR] & 0x2000) !== 0;
  return longCs ? canonicalHigh(ripHi) : ripHi === 0;
}
const S_RIP = Vmcs.slotOf(F.GUEST_RIP);
const S_ENTRY_CONTROLS = Vmcs.slotOf(F.VM_ENTRY_CONTROLS);
const S_CS_AR = Vmcs.slotOf(F.GUEST_CS_AR_BYTES);
const S_RFLAGS = Vmcs.slotOf(F.GUEST_RFLAGS);
const S_INTERRUPTIBILITY = Vmcs.slotOf(F.GUEST_INTERRUPTIBILITY_INFO);
const S_ACTIVITY = Vmcs.slotOf(F.GUEST_ACTIVITY_STATE);
const ENTRY_SMM = D.VM_ENTRY_SMM;
const ACTIVITY_HLT = D.GUEST_ACTIVITY_HLT;
const BLOCK_STI = D.GUEST_INTR_STATE_STI;
const BLOCK_SMI = D.GUEST_INTR_STATE_SMI;
const BLOCK_ENCLAVE = D.GUEST_INTR_STATE_ENCLAVE_INTR;

/**
 * The checks of checkGuestState that read the fields a resume (vmenter.ts) accepts VMWRITEs
 * of — RIP (27.3.1.4), RFLAGS (27.3.1.2: RFLAGS.VM; 27.3.1.4) and the interruptibility state
 * (27.3.1.5) — for an entry with no event injected (the VM-entry interruption-information
 * valid bit clear). A resume enters with every other guest-state, control and host-state field
 * as the last VM exit left it (Vmcs.heldGeneration): the processor's own stores, or fields that
 * passed the checks at the entry before. All of 27.2–27.3 then passes exactly when these do.
 * RSP and the preemption-timer value have no checks. False: the caller takes the general
 * path, whose full checks report the failure.
 */
export function resumeChecksPass(v: Vmcs): boolean {
  if (!guestRipOk(v)) return false;
  const lo = v.lo;
  const fl = lo[S_RFLAGS];
  // Reserved bits 0 and bit 1 set; VM clear (this processor has no virtual-8086 guests).
  if (v.hi[S_RFLAGS] !== 0 || (fl & 0xffc08028) !== 0 || (fl & 2) === 0 || (fl & 0x20000) !== 0) return false;
  const st = lo[S_INTERRUPTIBILITY];
  if ((st & 0xffffffe0) !== 0 || (st & BLOCK_ENCLAVE) !== 0 || (st & 3) === 3) return false;
  if ((st & BLOCK_STI) !== 0 && (fl & 0x200) === 0) return false;
  if ((st & BLOCK_SMI) !== 0 && (lo[S_ENTRY_CONTROLS] & ENTRY_SMM) === 0) return false;
  if ((st & 3) !== 0 && lo[S_ACTIVITY] === ACTIVITY_HLT) return false;
  return true;
}
