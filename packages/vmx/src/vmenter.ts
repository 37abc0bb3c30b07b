/**
 * vmx_vcpu_run: VM entry (SDM Vol. 3C ch. 27) on the emulated processor, guest execution,
 * and VM exit (ch. 28): guest state saved to the VMCS and exit information recorded.
 */
import {
  CpuState, EventType, ExitFastpathCompletion, GuestExitKind, KvmReg, KvmVcpu, kvmQueueInterrupt, kvmRequeueException, KvmReq,
  handleFastpathCpuid, handleFastpathInvd,
} from '@tsvisor/core';
import { checkControls, checkGuestRip, checkGuestState, checkHostState, resumeChecksPass } from './entry-checks';
import { encodeExit, recordExit, recordPlainInstructionExit } from './exit-info';
import { SEGMENT_FIELDS } from './segments';
import { F } from './vmcs/fields';
import { Vmcs } from './vmcs/vmcs';
import { VcpuVmx, toVmx } from './vcpu-vmx';
import * as D from './vmx-defs';
import { PREEMPTION_TIMER_RATE } from './capabilities';
import { vmxVirtualInterruptAtEntry } from './apicv';
import { loadMsrList, storeMsrList } from './msr-lists';

const GPR_MASK = 0xffff & ~(1 << KvmReg.RSP);
// @tsvisor/core's exports are getters on a dictionary-mode object: the hot path reads these copies.
const EXIT_HALTED = GuestExitKind.HALTED;
const FASTPATH_NONE = ExitFastpathCompletion.EXIT_FASTPATH_NONE;
const FASTPATH_CPUID = handleFastpathCpuid;
const FASTPATH_INVD = handleFastpathInvd;
/** The register-cache bits a VM exit invalidates (GPRs live in the processor until read). */
const EXIT_INVALIDATES = ((1 << 17) - 1) | (1 << KvmReg.CR0) | (1 << KvmReg.CR3) | (1 << KvmReg.CR4) |
  (1 << KvmReg.PDPTR) | (1 << KvmReg.EXIT_INFO_1) | (1 << KvmReg.EXIT_INFO_2);

/**
 * Load the VMCS guest-state area into the processor (SDM 27.3.2). When nothing was written
 * to the VMCS since the last exit saved it (its generation is unchanged), the processor still
 * holds exactly that state and only RIP/RSP (written outside the generation) are reloaded.
 */
function loadGuestState(vmx: VcpuVmx, vcpu: KvmVcpu): void {
  const v = vmx.vmcs;
  const s = vcpu.cpu.state;
  if (v.stateGeneration === vmx.storedGeneration) {
    const lo = v.lo, hi = v.hi;
    s.gprLo[REG_RSP] = lo[S_RSP] | 0;
    s.gprHi[REG_RSP] = hi[S_RSP] | 0;
    s.ripLo = lo[S_RIP] | 0;
    s.ripHi = hi[S_RIP] | 0;
    // Re-entry straight from the exit fastpath: KVM's copies are still the processor's.
    if (!vmx.switchedInSync) loadSwitchedState(vmx, vcpu);
    else vmx.switchedInSync = false;
    return;
  }
  for (let i = 0; i < 8; i++) {
    const f = SEGMENT_FIELDS[i];
    s.segSel[i] = v.read16(f.sel);
    s.segBaseLo[i] = v.readLow(f.base) | 0;
    s.segBaseHi[i] = v.readHigh(f.base) | 0;
    s.segLimit[i] = v.read32(f.limit);
    s.segAttr[i] = v.read32(f.ar) & D.VMX_AR_DEFINED;
  }
  s.segWrites++;
  s.sysWrites++;
  s.gdtrBase = v.readNat(F.GUEST_GDTR_BASE);
  s.gdtrLimit = v.read32(F.GUEST_GDTR_LIMIT);
  s.idtrBase = v.readNat(F.GUEST_IDTR_BASE);
  s.idtrLimit = v.read32(F.GUEST_IDTR_LIMIT);
  s.cr0 = v.readNat(F.GUEST_CR0);
  s.cr3 = v.readNat(F.GUEST_CR3);
  s.cr4 = v.readNat(F.GUEST_CR4);
  const entry = v.read32(F.VM_ENTRY_CONTROLS);
  if (entry & D.VM_ENTRY_LOAD_IA32_EFER) s.efer = v.read64(F.GUEST_IA32_EFER);
  else {
    // SDM 27.3.2.1: without "load IA32_EFER", LMA and LME follow "IA-32e mode guest".
    const lm = entry & D.VM_ENTRY_IA32E_MODE ? 0x500n : 0n;
    s.efer = (s.efer & ~0x500n) | lm;
  }
  if (entry & D.VM_ENTRY_LOAD_IA32_PAT) s.pat = v.read64(F.GUEST_IA32_PAT);
  if (entry & D.VM_ENTRY_LOAD_DEBUG_CONTROLS) {
    s.dr7 = v.readNat(F.GUEST_DR7);
    s.debugctl = v.read64(F.GUEST_IA32_DEBUGCTL);
  }
  s.sysenterCs = BigInt(v.read32(F.GUEST_SYSENTER_CS));
  s.sysenterEsp = v.readNat(F.GUEST_SYSENTER_ESP);
  s.sysenterEip = v.readNat(F.GUEST_SYSENTER_EIP);
  s.gprLo[KvmReg.RSP] = v.readLow(F.GUEST_RSP) | 0;
  s.gprHi[KvmReg.RSP] = v.readHigh(F.GUEST_RSP) | 0;
  s.ripLo = v.readLow(F.GUEST_RIP) | 0;
  s.ripHi = v.readHigh(F.GUEST_RIP) | 0;
  s.rflags = v.readLow(F.GUEST_RFLAGS);
  const st = v.read32(F.GUEST_INTERRUPTIBILITY_INFO);
  s.stiShadow = (st & D.GUEST_INTR_STATE_STI) !== 0;
  s.movSsShadow = (st & D.GUEST_INTR_STATE_MOV_SS) !== 0;
  s.nmiBlocked = (st & D.GUEST_INTR_STATE_NMI) !== 0;
  s.activity = v.read32(F.GUEST_ACTIVITY_STATE);
  // SDM 27.3.2.2: CPL is SS.DPL.
  s.cpl = (s.segAttr[2] >> 5) & 3;
  const proc = v.read32(F.CPU_BASED_VM_EXEC_CONTROL);
  s.tscOffset = proc & D.CPU_BASED_USE_TSC_OFFSETTING ? v.read64(F.TSC_OFFSET) : 0n;
  const sy = vmx.synced;
  sy.cr0 = s.cr0; sy.cr3 = s.cr3; sy.cr4 = s.cr4; sy.gdtrBase = s.gdtrBase; sy.idtrBase = s.idtrBase;
  sy.efer = s.efer; sy.pat = s.pat; sy.dr7 = s.dr7; sy.debugctl = s.debugctl;
  sy.sysenterCs = s.sysenterCs; sy.sysenterEsp = s.sysenterEsp; sy.sysenterEip = s.sysenterEip;
  vmx.switchedInSync = false;
  loadSwitchedState(vmx, vcpu);
}

/**
 * State KVM switches by hand around VM entry, not in the VMCS: CR2, DR0-3, DR6, XCR0 (the
 * user-return MSRs: prepareGuestSwitch). They rarely change between two entries, and storing
 * a bigint into an object costs a write barrier: only changed registers are stored.
 */
function loadSwitchedState(vmx: VcpuVmx, vcpu: KvmVcpu): void {
  const s = vcpu.cpu.state;
  const a = vcpu.arch;
  if (s.cr2 !== a.cr2) s.cr2 = a.cr2;
  if (s.dr6 !== a.dr6) s.dr6 = a.dr6;
  const dr = s.dr, db = a.db;
  for (let i = 0; i < 4; i++) if (dr[i] !== db[i]) dr[i] = db[i];
  if (s.xcr0 !== a.xcr0) s.xcr0 = a.xcr0;
  vmx.switchedLoadWrites = s.sysWrites;
}

/** Storage slots of the segment registers' fields, ES..LDTR × (selector, base, limit, AR). */
const SEG_SLOTS = new Int16Array(32);
for (let i = 0; i < 8; i++) {
  const f = SEGMENT_FIELDS[i];
  SEG_SLOTS[4 * i] = Vmcs.slotOf(f.sel);
  SEG_SLOTS[4 * i + 1] = Vmcs.slotOf(f.base);
  SEG_SLOTS[4 * i + 2] = Vmcs.slotOf(f.limit);
  SEG_SLOTS[4 * i + 3] = Vmcs.slotOf(f.ar);
}
const S_GDTR_LIMIT = Vmcs.slotOf(F.GUEST_GDTR_LIMIT);
const S_IDTR_LIMIT = Vmcs.slotOf(F.GUEST_IDTR_LIMIT);
const S_RSP = Vmcs.slotOf(F.GUEST_RSP);
const S_RIP = Vmcs.slotOf(F.GUEST_RIP);
const S_RFLAGS = Vmcs.slotOf(F.GUEST_RFLAGS);
const S_INTERRUPTIBILITY = Vmcs.slotOf(F.GUEST_INTERRUPTIBILITY_INFO);
const S_ACTIVITY = Vmcs.slotOf(F.GUEST_ACTIVITY_STATE);
const S_GDTR_BASE = Vmcs.slotOf(F.GUEST_GDTR_BASE);
const S_IDTR_BASE = Vmcs.slotOf(F.GUEST_IDTR_BASE);
const S_CR0 = Vmcs.slotOf(F.GUEST_CR0);
const S_CR3 = Vmcs.slotOf(F.GUEST_CR3);
const S_CR4 = Vmcs.slotOf(F.GUEST_CR4);
const S_EFER = Vmcs.slotOf(F.GUEST_IA32_EFER);
const S_PAT = Vmcs.slotOf(F.GUEST_IA32_PAT);
const S_DR7 = Vmcs.slotOf(F.GUEST_DR7);
const S_DEBUGCTL = Vmcs.slotOf(F.GUEST_IA32_DEBUGCTL);
const S_SYSENTER_CS = Vmcs.slotOf(F.GUEST_SYSENTER_CS);
const S_SYSENTER_ESP = Vmcs.slotOf(F.GUEST_SYSENTER_ESP);
const S_SYSENTER_EIP = Vmcs.slotOf(F.GUEST_SYSENTER_EIP);
const S_PREEMPTION_TIMER = Vmcs.slotOf(F.VMX_PREEMPTION_TIMER_VALUE);
const S_EXIT_CONTROLS = Vmcs.slotOf(F.VM_EXIT_CONTROLS);
const S_ENTRY_CONTROLS = Vmcs.slotOf(F.VM_ENTRY_CONTROLS);
const S_PIN_CONTROLS = Vmcs.slotOf(F.PIN_BASED_VM_EXEC_CONTROL);
const S_ENTRY_MSR_LOAD_COUNT = Vmcs.slotOf(F.VM_ENTRY_MSR_LOAD_COUNT);
const S_EXIT_MSR_STORE_COUNT = Vmcs.slotOf(F.VM_EXIT_MSR_STORE_COUNT);
const S_ENTRY_INTR_INFO = Vmcs.slotOf(F.VM_ENTRY_INTR_INFO_FIELD);
const S_PDPTR = [F.GUEST_PDPTR0, F.GUEST_PDPTR1, F.GUEST_PDPTR2, F.GUEST_PDPTR3].map((f) => Vmcs.slotOf(f));
const REG_RSP = KvmReg.RSP;
const REG_RIP = KvmReg.RIP;

/**
 * Save the processor's guest state into the VMCS (SDM 28.3). These are the processor's own
 * stores, not VMWRITEs: they leave the VMCS generation alone, so the next entry re-runs neither
 * the entry checks nor the guest-mode rules for state the exit itself produced.
 */
function storeGuestState(vmx: VcpuVmx, vcpu: KvmVcpu, resumed: boolean): void {
  const v = vmx.vmcs;
  const lo = v.lo, hi = v.hi;
  const cpu = vcpu.cpu;
  const s = cpu.state;
  // SDM 28.3.1 stores all eight segment registers at every exit. When nothing has written the
  // VMCS since the last exit stored them (stateGeneration) and the processor has loaded no
  // segment register since (segWrites), that store would write the values the fields hold.
  // A resume (`resumed`) entered with no VMWRITE to any of these fields since the last exit
  // (Vmcs.heldGeneration; only RIP/RSP/RFLAGS/interruptibility/timer value may have changed).
  const unwritten = resumed || (v.segSavedGeneration === v.stateGeneration && v.segSavedBy === s);
  if (!unwritten || v.segSavedWrites !== s.segWrites) storeSegments(v, s);
  const exit = lo[S_EXIT_CONTROLS];
  // The same skip for the system registers: nothing wrote the VMCS since the last exit stored
  // them and the processor wrote none of them since (CpuState.sysWrites). CR0, CR4 and EFER.LMA
  // are among them: unwritten, they still equal what that exit stored (and synced).
  const sysHeld = unwritten && v.sysSavedWrites === s.sysWrites;
  if (!sysHeld) storeSystemRegisters(vmx, s, exit);
  lo[S_RSP] = s.gprLo[REG_RSP];
  hi[S_RSP] = s.gprHi[REG_RSP];
  lo[S_RIP] = s.ripLo;
  hi[S_RIP] = s.ripHi;
  lo[S_RFLAGS] = s.rflags;
  hi[S_RFLAGS] = 0;
  lo[S_INTERRUPTIBILITY] = (s.stiShadow ? D.GUEST_INTR_STATE_STI : 0) | (s.movSsShadow ? D.GUEST_INTR_STATE_MOV_SS : 0) |
    (s.nmiBlocked ? D.GUEST_INTR_STATE_NMI : 0);
  lo[S_ACTIVITY] = s.activity;
  // SDM 28.3.4: the remaining preemption-timer value, when asked to save it.
  if (lo[S_PIN_CONTROLS] & D.PIN_BASED_VMX_PREEMPTION_TIMER && exit & D.VM_EXIT_SAVE_VMX_PREEMPTION_TIMER) {
    const left = vmx.rules.preemptionDeadlineTsc - s.tsc;
    lo[S_PREEMPTION_TIMER] = left > 0n ? Number(left >> BigInt(PREEMPTION_TIMER_RATE)) : 0;
  }
  // SDM 28.3.4: with EPT, an exit from PAE paging stores the PDPTE registers in GUEST_PDPTR0-3.
  if (vmx.rules.tdp !== null && cpu.pg && cpu.pae && !cpu.lma) {
    for (let i = 0; i < 4; i++) v.saveSlotHalves(S_PDPTR[i], s.pdptrLo[i], s.pdptrHi[i]);
  }
  // KVM's copies of the registers it switches by hand (loadSwitchedState). Exception delivery
  // writes CR2 and DR6 without counting (CpuState.sysWrites): compared at every exit, and
  // stored only when changed (a bigint store costs a write barrier). XCR0 is not copied back:
  // XSETBV always exits (SDM 26.1.2), so the guest cannot change what entry loaded.
  const a = vcpu.arch;
  if (a.cr2 !== s.cr2) a.cr2 = s.cr2;
  if (a.dr6 !== s.dr6) a.dr6 = s.dr6;
  // DR0-3 are written only by MOV DR (a counted system-register write), XCR0 never in guest
  // mode: unless the count moved since entry loaded them, the processor's are still KVM's.
  vmx.switchedHeld = vmx.switchedLoadWrites === s.sysWrites;
  if (!sysHeld) {
    // SWAPGS and WRMSR count as system-register writes.
    if (vmx.kernelGsBase !== s.kernelGsBase) vmx.kernelGsBase = s.kernelGsBase;
    // The guest owns CR0.PE/PG here (unrestricted guest), so EFER.LMA may have changed without an exit.
    if (exit & D.VM_EXIT_SAVE_IA32_EFER && a.efer !== s.efer) a.efer = s.efer;
  }
  v.segSavedGeneration = v.stateGeneration;
  v.segSavedWrites = s.segWrites;
  v.sysSavedWrites = s.sysWrites;
  if (v.segSavedBy !== s) v.segSavedBy = s;
}

/** SDM 28.3.1: the segment registers' selector, base, limit and access rights. */
function storeSegments(v: Vmcs, s: CpuState): void {
  for (let i = 0; i < 8; i++) {
    const k = 4 * i;
    v.saveSlot(SEG_SLOTS[k], s.segSel[i] & 0xffff);
    v.saveSlotHalves(SEG_SLOTS[k + 1], s.segBaseLo[i], s.segBaseHi[i]);
    v.saveSlot(SEG_SLOTS[k + 2], s.segLimit[i]);
    let ar = s.segAttr[i] & D.VMX_AR_DEFINED;
    // A loaded code/data descriptor is always "accessed" (SDM 3.4.5.1: the processor sets the A
    // bit when it loads the descriptor); store it that way whatever the cached copy says.
    if (!(ar & D.VMX_AR_UNUSABLE_MASK) && ar & 0x10) ar |= 1;
    v.saveSlot(SEG_SLOTS[k + 3], ar);
  }
}

/**
 * SDM 28.3.1–28.3.2: CR0/CR3/CR4, GDTR/IDTR, SYSENTER and, as the exit controls ask, EFER,
 * PAT, DR7 and DEBUGCTL; and (28.2, IA32_VMX_MISC bit 5) EFER.LMA into "IA-32e mode guest".
 * 64-bit registers go through a typed-array conversion (save64: no BigInt operation).
 */
function storeSystemRegisters(vmx: VcpuVmx, s: CpuState, exit: number): void {
  const v = vmx.vmcs;
  save64(v, S_GDTR_BASE, s.gdtrBase);
  v.saveSlot(S_GDTR_LIMIT, s.gdtrLimit);
  save64(v, S_IDTR_BASE, s.idtrBase);
  v.saveSlot(S_IDTR_LIMIT, s.idtrLimit);
  save64(v, S_CR3, s.cr3);
  if (exit & D.VM_EXIT_SAVE_IA32_EFER) save64(v, S_EFER, s.efer);
  if (exit & D.VM_EXIT_SAVE_IA32_PAT) save64(v, S_PAT, s.pat);
  if (exit & D.VM_EXIT_SAVE_DEBUG_CONTROLS) {
    save64(v, S_DR7, s.dr7);
    save64(v, S_DEBUGCTL, s.debugctl);
  }
  CONV64[0] = s.sysenterCs;
  v.saveSlot(S_SYSENTER_CS, CONV32[0]);
  save64(v, S_SYSENTER_ESP, s.sysenterEsp);
  save64(v, S_SYSENTER_EIP, s.sysenterEip);
  // SDM 26.3: guest writes never change host-owned CR0/CR4 bits (a differing write exits
  // instead), so those keep the value VM entry loaded; the merge is done only when the
  // register differs from what was last synced.
  const sy = vmx.synced;
  if (s.cr0 !== sy.cr0) {
    const m0 = vmx.rules.cr0Mask;
    v.saveSlotBig(S_CR0, (s.cr0 & ~m0) | (v.big(S_CR0) & m0));
    sy.cr0 = s.cr0;
  }
  if (s.cr4 !== sy.cr4) {
    const m4 = vmx.rules.cr4Mask;
    v.saveSlotBig(S_CR4, (s.cr4 & ~m4) | (v.big(S_CR4) & m4));
    sy.cr4 = s.cr4;
  }
  const entry = v.loadSlot(S_ENTRY_CONTROLS);
  CONV64[0] = s.efer;
  const lma = (CONV32[0] & 0x400) !== 0;
  if (lma !== ((entry & D.VM_ENTRY_IA32E_MODE) !== 0)) v.write32(F.VM_ENTRY_CONTROLS, entry ^ D.VM_ENTRY_IA32E_MODE);
}

/** BigInt → 32-bit halves through a typed array: no BigInt operation and no allocation. */
const CONV64 = new BigUint64Array(1);
const CONV32 = new Uint32Array(CONV64.buffer);
/** Save a 64-bit register (stored modulo 2^64, as VMWRITE of a 64-bit field). */
function save64(v: Vmcs, slot: number, x: bigint): void {
  CONV64[0] = x;
  v.saveSlotHalves(slot, CONV32[0], CONV32[1]);
}

/** Flush the dirty register cache into the VMCS and the processor (the GPR half of __vmx_vcpu_run). */
function syncDirtyRegs(vmx: VcpuVmx, vcpu: KvmVcpu): void {
  const a = vcpu.arch;
  const dirty = a.regsDirty;
  if (dirty === 0) return;
  const v = vmx.vmcs;
  const r32 = a.regs32;
  if (dirty & (1 << REG_RSP)) v.saveSlotHalves(S_RSP, r32[2 * REG_RSP], r32[2 * REG_RSP + 1]);
  if (dirty & (1 << REG_RIP)) v.saveSlotHalves(S_RIP, r32[2 * REG_RIP], r32[2 * REG_RIP + 1]);
  const s = vcpu.cpu.state;
  let m = dirty & GPR_MASK;
  while (m) {
    const r = 31 - Math.clz32(m & -m);
    m &= m - 1;
    s.gprLo[r] = r32[2 * r] | 0;
    s.gprHi[r] = r32[2 * r + 1] | 0;
  }
  a.regsDirty = 0;
}

/** The VM-entry half: checks (27.2–27.3), then load. Returns false when the entry failed. */
export function vmxVmEntry(vmx: VcpuVmx, vcpu: KvmVcpu): boolean {
  const v = vmx.vmcs;
  vmx.fail = false;
  vmx.failWhy = '';
  const gen = v.stateGeneration;
  if (gen === vmx.checkedGeneration) {
    // No VMWRITE since the last checked entry or the last exit's save, except RIP/RSP (and the
    // preemption timer value, which no check reads): only RIP needs checking (27.3.1.4).
    const r = checkGuestRip(v);
    if (!r.ok && r.kind === 'guest') return guestStateInvalid(vmx, r.exitReason, r.qualification, r.why);
  } else {
    // Controls and host state (27.2) again only when one of their fields was written.
    if (v.ctlGeneration !== vmx.checkedCtlGeneration) {
      const c = checkControls(v);
      const r = c.ok ? checkHostState(v) : c;
      if (!r.ok && r.kind !== 'guest') {
        vmx.fail = true;
        vmx.failWhy = r.why;
        v.exitWrite32(F.VM_INSTRUCTION_ERROR, r.error);
        return false;
      }
      vmx.checkedCtlGeneration = v.ctlGeneration;
    }
    const g = checkGuestState(v);
    if (!g.ok && g.kind === 'guest') return guestStateInvalid(vmx, g.exitReason, g.qualification, g.why);
    vmx.checkedGeneration = gen;
  }
  return true;
}

/**
 * SDM 27.3.2.4: with EPT, VM entry to a guest using PAE paging (GUEST_CR0.PG, GUEST_CR4.PAE,
 * not "IA-32e mode guest") loads the PDPTE registers from GUEST_PDPTR0-3 (27.3.1.6 checked
 * them), not from the PDPT in memory. Unless something was VMWRITten since the last exit, the
 * registers still hold what that exit stored. Returns whether the registers were supplied.
 */
function loadGuestPdptrs(vmx: VcpuVmx, vcpu: KvmVcpu): boolean {
  const v = vmx.vmcs;
  const lo = v.lo;
  if (!(lo[S_CR0] & 0x80000000) || !(lo[S_CR4] & 0x20) || lo[S_ENTRY_CONTROLS] & D.VM_ENTRY_IA32E_MODE) return false;
  if (v.stateGeneration !== vmx.storedGeneration) {
    const s = vcpu.cpu.state;
    for (let i = 0; i < 4; i++) {
      s.pdptrLo[i] = lo[S_PDPTR[i]] | 0;
      s.pdptrHi[i] = v.hi[S_PDPTR[i]] | 0;
    }
  }
  return true;
}

/** SDM 27.8: a failed guest-state check is an exit with bit 31 set; the processor state is not loaded. */
function guestStateInvalid(vmx: VcpuVmx, exitReason: number, qualification: number, why: string): boolean {
  const v = vmx.vmcs;
  vmx.failWhy = why;
  vmx.exitReason = exitReason;
  v.exitWrite32(F.VM_EXIT_REASON, exitReason);
  v.exitWriteNat(F.EXIT_QUALIFICATION, BigInt(qualification));
  v.exitWrite32(F.IDT_VECTORING_INFO_FIELD, 0);
  vmx.idtVectoringInfo = 0;
  vmx.checkedGeneration = -1;
  return false;
}

/** vmx_vcpu_run up to the exit fastpath: true when the guest ran and exited, false when VM entry failed. */
export function vmxVcpuRun(vcpu: KvmVcpu): boolean {
  const vmx = toVmx(vcpu);
  const v = vmx.vmcs;
  const cpu = vcpu.cpu;
  syncDirtyRegs(vmx, vcpu);
  vmx.reqImmediateExit = vmx.immediateExit;
  if (vmx.immediateExit) {
    // request_immediate_exit: a zero preemption timer makes the entry exit at once.
    vmx.immediateExit = false;
    if (v.read32(F.PIN_BASED_VM_EXEC_CONTROL) & D.PIN_BASED_VMX_PREEMPTION_TIMER) v.write32(F.VMX_PREEMPTION_TIMER_VALUE, 0);
    else cpu.kick = true;
  } else updateHvTimer(vmx, vcpu);
  // The resume (see vmxResume): VMRESUME of the VMCS this processor last exited from, with the
  // processor having run nothing else since (X86Cpu.stateEpoch) and loaded no segment or system
  // register since (CpuState.segWrites / sysWrites, as that exit left them); no VMWRITE since
  // that exit but of RIP, RSP, RFLAGS, the interruptibility state and the preemption-timer value
  // (Vmcs.heldGeneration, which VMCLEAR also bumps; the exit recorded -1 when its guest-mode
  // rules were not the current controls' or an MSR list was in use); no event injection (SDM
  // 27.6: the VM-entry interruption-information valid bit clear); and those five fields passing
  // the entry checks that read them (resumeChecksPass). Everything else the general path would
  // check and load is what the processor holds.
  if (v.resumeEnabled === true && v.heldGeneration === v.resumeHeld && cpu.stateEpoch === v.resumeEpoch &&
    v.launched === true && cpu.state.segWrites === v.segSavedWrites && cpu.state.sysWrites === v.sysSavedWrites &&
    (v.lo[S_ENTRY_INTR_INFO] & INTR_VALID) === 0 && resumeChecksPass(v)) {
    return vmxResume(vmx, vcpu);
  }
  v.resumeHeld = -1;
  if (!vmxVmEntry(vmx, vcpu)) return false;
  loadGuestState(vmx, vcpu);
  // SDM 27.4: the VM-entry MSR-load list, after the guest state.
  const msrLoads = v.loadSlot(S_ENTRY_MSR_LOAD_COUNT);
  if (msrLoads) {
    const bad = loadMsrList(vcpu.kvm.hostMemory, v.readNum(F.VM_ENTRY_MSR_LOAD_ADDR), msrLoads, cpu.state);
    if (bad) {
      vmx.storedGeneration = -1;
      guestStateInvalid(vmx, (D.ExitReason.MSR_LOAD_FAIL | D.VMX_EXIT_REASONS_FAILED_VMENTRY) >>> 0, bad,
        `VM-entry MSR-load list entry ${bad} cannot be loaded`);
      return false;
    }
  }
  // The guest TSC only matters to an armed VMX-preemption timer (SDM 26.5.1; the rules read
  // the same pin-based control and timer value, and treat 2^32 - 1 as never): the bigint is
  // built only then.
  const timerArmed = v.loadSlot(S_PIN_CONTROLS) & D.PIN_BASED_VMX_PREEMPTION_TIMER && v.loadSlotInt(S_PREEMPTION_TIMER) !== -1;
  vmx.rules.load(v, vcpu.kvm.hostMemory, timerArmed ? cpu.state.tsc : 0n);
  // EPT is on when "enable EPT" is set and the secondary controls are active (rules.proc2 is 0 otherwise).
  const tdp = vmx.rules.proc2 & D.SECONDARY_EXEC_ENABLE_EPT ? vmx.ept : null;
  if (vmx.rules.tdp !== tdp) vmx.rules.tdp = tdp;
  vmx.rules.pdptrsLoaded = vmx.rules.tdp !== null && loadGuestPdptrs(vmx, vcpu);
  // SDM 29.4.3.3: without VPID, VM entry invalidates linear and combined mappings of VPID 0.
  if (vmx.rules.tlbTag === 0) cpu.flushTlbTag(0);
  // SDM 27.6: event injection from the VM-entry interruption-information field.
  const intr = v.loadSlot(S_ENTRY_INTR_INFO);
  const inj = cpu.injection;
  inj.valid = (intr & D.INTR_INFO_VALID_MASK) !== 0;
  if (!inj.valid && vmx.rules.proc2 & D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY) {
    virtualInterruptAtEntry(vcpu);
  } else if (inj.valid) {
    inj.type = ((intr >> 8) & 7) as EventType;
    inj.vector = intr & 0xff;
    inj.hasErrorCode = (intr & D.INTR_INFO_DELIVER_CODE_MASK) !== 0;
    inj.errorCode = v.read32(F.VM_ENTRY_EXCEPTION_ERROR_CODE);
    inj.insnLength = v.read32(F.VM_ENTRY_INSTRUCTION_LEN);
  }
  v.launched = true;

  // What is left of this KVM_RUN's time slice (the run loop returns KVM_EXIT_INTR when it is spent).
  const budget = Math.max(1, vcpu.runBudget - (cpu.state.instructionsRetired - vmx.runStartRetired));
  const kind = cpu.runGuest(vmx.rules, budget);


  storeGuestState(vmx, vcpu, false);
  const lo = v.lo;
  // SDM 28.4: the VM-exit MSR-store list (an entry that cannot be stored would be a VMX abort; it was validated at entry).
  const msrStores = lo[S_EXIT_MSR_STORE_COUNT];
  if (msrStores) storeMsrList(vcpu.kvm.hostMemory, v.readNum(F.VM_EXIT_MSR_STORE_ADDR), msrStores, cpu.state);
  const idtInfo = recordExitInfo(vmx, vcpu, kind);
  // SDM 25.8.3: every VM exit clears the valid bit of the VM-entry interruption-information field.
  // The processor's own store, not a VMWRITE: with the valid bit clear the field passes every
  // entry check (27.2.1.3) and no guest-mode rule reads it, so nothing need be checked again.
  if (intr & D.INTR_INFO_VALID_MASK) v.saveSlot(S_ENTRY_INTR_INFO, intr & ~D.INTR_INFO_VALID_MASK);
  return exitDone(vmx, vcpu, idtInfo);
}

/**
 * The exit-information fields (SDM 28.2) for the exit the processor just took. An intercepted
 * instruction that reports only its reason and length is written directly
 * (recordPlainInstructionExit); anything else is encoded first (encodeExit). Returns the
 * IDT-vectoring information.
 */
function recordExitInfo(vmx: VcpuVmx, vcpu: KvmVcpu, kind: GuestExitKind): number {
  const v = vmx.vmcs;
  const e = vcpu.cpu.exit;
  // A guest halted in guest mode (HLT not intercepted) waits for the host's next tick.
  const halted = kind === EXIT_HALTED;
  if (vmx.haltedInGuest !== halted) vmx.haltedInGuest = halted;
  if (!halted) {
    const reason = recordPlainInstructionExit(v, e);
    if (reason >= 0) {
      vmx.exitReason = reason;
      vmx.idtVectoringInfo = 0;
      return 0;
    }
  }
  const rec = encodeExit(e, (v.lo[S_EXIT_CONTROLS] & D.VM_EXIT_ACK_INTR_ON_EXIT) !== 0, vmx.exitRecord);
  if (halted) rec.reason = D.ExitReason.EXTERNAL_INTERRUPT;
  const idtInfo = recordExit(v, rec, e);
  vmx.exitReason = rec.reason;
  vmx.idtVectoringInfo = idtInfo;
  return idtInfo;
}

/**
 * The end of every VM exit: the generations the next entry compares, the resume record
 * (Vmcs.resumeHeld/resumeEpoch), the register cache and __vmx_complete_interrupts.
 */
function exitDone(vmx: VcpuVmx, vcpu: KvmVcpu, idtInfo: number): boolean {
  const v = vmx.vmcs;
  const cpu = vcpu.cpu;
  // What the exit stored is the processor's own state, valid by construction (the entry checks
  // passed, and the processor only makes architecturally consistent changes).
  const gen = v.stateGeneration;
  vmx.checkedGeneration = gen;
  vmx.checkedCtlGeneration = v.ctlGeneration;
  vmx.storedGeneration = gen;
  // The next entry may resume unless the rules the guest ran under are no longer the controls'
  // (this exit itself rewrote one: "IA-32e mode guest" from EFER.LMA, SDM 28.2) or an
  // MSR-load/store list is in use (27.4 / 28.4 read memory at every entry and exit).
  const lo = v.lo;
  v.resumeHeld = vmx.rules.loadedFrom(v) && (lo[S_ENTRY_MSR_LOAD_COUNT] | lo[S_EXIT_MSR_STORE_COUNT]) === 0 ? v.heldGeneration : -1;
  v.resumeEpoch = cpu.stateEpoch;
  const a = vcpu.arch;
  a.regsAvail &= ~EXIT_INVALIDATES;
  vmxCompleteInterrupts(vcpu, idtInfo, F.VM_EXIT_INSTRUCTION_LEN, F.IDT_VECTORING_ERROR_CODE);
  if (cpu.hostError) {
    const e = cpu.hostError;
    cpu.hostError = null;
    throw e;
  }
  return true;
}

/**
 * The resume: VM entry, guest execution and VM exit for the common re-entry (the condition is
 * in vmxVcpuRun), with the general path's architectural result. Entry (SDM 27.3.2) loads only
 * RSP, RIP, RFLAGS (27.3.2.3) and the interruptibility state (27.7.1), plus what KVM switches by
 * hand (loadSwitchedState); every other guest-state field is what the last exit stored from the
 * processor, which still holds it. The guest-mode rules are that exit's (no control written
 * since: rules.loadedFrom held at the exit), with the preemption-timer deadline recomputed
 * (26.5.1), the EPT and PDPTE-supply settings re-derived (27.3.2.4), VPID 0's mappings flushed
 * without VPID (29.4.3.3) and no event injected (27.6), APICv's virtual-interrupt evaluation
 * aside (30.2). The exit (28.2–28.3) is the general one, whose store skips are sound here
 * (storeGuestState's `resumed`). vmentry-resume.test.ts runs each case both ways and compares
 * the VMCS after every exit.
 */
function vmxResume(vmx: VcpuVmx, vcpu: KvmVcpu): boolean {
  const v = vmx.vmcs;
  const cpu = vcpu.cpu;
  const s = cpu.state;
  const lo = v.lo, hi = v.hi;
  v.resumes++;
  vmx.fail = false;
  if (vmx.failWhy !== '') vmx.failWhy = '';
  s.gprLo[REG_RSP] = lo[S_RSP] | 0;
  s.gprHi[REG_RSP] = hi[S_RSP] | 0;
  s.ripLo = lo[S_RIP] | 0;
  s.ripHi = hi[S_RIP] | 0;
  s.rflags = lo[S_RFLAGS];
  const st = lo[S_INTERRUPTIBILITY];
  s.stiShadow = (st & INTR_STATE_STI) !== 0;
  s.movSsShadow = (st & INTR_STATE_MOV_SS) !== 0;
  s.nmiBlocked = (st & INTR_STATE_NMI) !== 0;
  // Re-entry straight from the exit fastpath: KVM's copies are still the processor's.
  if (vmx.switchedInSync === false) loadSwitchedState(vmx, vcpu);
  else vmx.switchedInSync = false;
  const rules = vmx.rules;
  // rules.load's work for unchanged controls: the preemption-timer deadline (as vmxVcpuRun's general path passes the TSC).
  if ((rules.pin & PIN_TIMER) !== 0) rules.loadTimer(v, v.loadSlotInt(S_PREEMPTION_TIMER) !== -1 ? s.tsc : 0n);
  const tdp = (rules.proc2 & PROC2_EPT) !== 0 ? vmx.ept : null;
  if (rules.tdp !== tdp) rules.tdp = tdp;
  // SDM 27.3.2.4: the PDPTE registers come from GUEST_PDPTR0-3, which hold what the last exit
  // stored from the processor (28.3.4): the processor has them already.
  const pae = tdp !== null && (lo[S_CR0] & 0x80000000) !== 0 && (lo[S_CR4] & 0x20) !== 0 && (lo[S_ENTRY_CONTROLS] & ENTRY_IA32E) === 0;
  if (rules.pdptrsLoaded !== pae) rules.pdptrsLoaded = pae;
  if (rules.tlbTag === 0) cpu.flushTlbTag(0);
  cpu.injection.valid = false;
  if ((rules.proc2 & PROC2_VID) !== 0) virtualInterruptAtEntry(vcpu);

  const budget = Math.max(1, vcpu.runBudget - (s.instructionsRetired - vmx.runStartRetired));
  const kind = cpu.runGuest(rules, budget);

  storeGuestState(vmx, vcpu, true);
  return exitDone(vmx, vcpu, recordExitInfo(vmx, vcpu, kind));
}

/** Without an injected event, APICv may deliver a virtual interrupt at VM entry (SDM 30.2). */
function virtualInterruptAtEntry(vcpu: KvmVcpu): void {
  const vector = vmxVirtualInterruptAtEntry(vcpu);
  if (vector >= 0) {
    const inj = vcpu.cpu.injection;
    inj.valid = true;
    inj.type = EventType.EXTERNAL_INTERRUPT;
    inj.vector = vector;
    inj.hasErrorCode = false;
    inj.errorCode = 0;
    inj.insnLength = 0;
  }
}
const INTR_VALID = D.INTR_INFO_VALID_MASK;
const INTR_STATE_STI = D.GUEST_INTR_STATE_STI;
const INTR_STATE_MOV_SS = D.GUEST_INTR_STATE_MOV_SS;
const INTR_STATE_NMI = D.GUEST_INTR_STATE_NMI;
const PIN_TIMER = D.PIN_BASED_VMX_PREEMPTION_TIMER;
const PROC2_EPT = D.SECONDARY_EXEC_ENABLE_EPT;
const PROC2_VID = D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY;
const ENTRY_IA32E = D.VM_ENTRY_IA32E_MODE;

/**
 * vmx_exit_handlers_fastpath: exits completed right after the VM exit, before the slow path
 * (CPUID and INVD). An exit that interrupted event delivery (IDT-vectoring information valid)
 * takes the slow path, which re-injects the event; so does every exit while a tracepoint is
 * enabled, so that each is traced in order. The exit is counted as handleExit would count it.
 */
export function vmxExitHandlersFastpath(vcpu: KvmVcpu): ExitFastpathCompletion {
  const vmx = toVmx(vcpu);
  if (vmx.idtVectoringInfo & D.INTR_INFO_VALID_MASK || vcpu.kvm.traceActive) return FASTPATH_NONE;
  switch (vmx.exitReason) {
    case D.ExitReason.CPUID:
      vcpu.countExit(CPUID_NAME);
      return fastpathDone(vmx, vcpu, FASTPATH_CPUID(vcpu));
    case D.ExitReason.INVD:
      vcpu.countExit(INVD_NAME);
      return fastpathDone(vmx, vcpu, FASTPATH_INVD(vcpu));
    default:
      return FASTPATH_NONE;
  }
}
const CPUID_NAME = D.exitReasonName(D.ExitReason.CPUID);
const FASTPATH_REENTER = ExitFastpathCompletion.EXIT_FASTPATH_REENTER_GUEST;

/**
 * A fastpath handler re-entering the guest leaves CR2, DR0-3, DR6 and XCR0 as the exit synced
 * them (CPUID and INVD emulation touch only GPRs and RIP; a single-step #DB it queues changes
 * DR6 but makes a request, and the run loop then takes the slow path, whose prepareGuestSwitch
 * clears the mark): the next entry need not load them again.
 */
function fastpathDone(vmx: VcpuVmx, vcpu: KvmVcpu, r: ExitFastpathCompletion): ExitFastpathCompletion {
  vmx.switchedInSync = r === FASTPATH_REENTER && vmx.switchedHeld && vcpu.requests === 0;
  return r;
}
const INVD_NAME = D.exitReasonName(D.ExitReason.INVD);

/** Arm the preemption timer for setHvTimer (vmx_update_hv_timer). */
export function updateHvTimer(vmx: VcpuVmx, vcpu: KvmVcpu): void {
  const v = vmx.vmcs;
  if (!(v.loadSlot(S_PIN_CONTROLS) & D.PIN_BASED_VMX_PREEMPTION_TIMER)) return;
  if (vmx.hvDeadlineTsc < 0n) {
    if (v.loadSlotInt(S_PREEMPTION_TIMER) !== -1) v.write32(F.VMX_PREEMPTION_TIMER_VALUE, 0xffffffff);
    return;
  }
  const guestTsc = vcpu.cpu.state.tsc + vcpu.arch.tscOffset;
  const delta = vmx.hvDeadlineTsc - guestTsc;
  const ticks = delta <= 0n ? 0n : delta >> BigInt(PREEMPTION_TIMER_RATE);
  v.write32(F.VMX_PREEMPTION_TIMER_VALUE, ticks > 0xffffffffn ? 0xffffffff : Number(ticks));
}

/**
 * __vmx_complete_interrupts: an event that was being delivered when the exit happened goes
 * back into KVM's queues to be re-injected (SDM 28.2.4, IDT-vectoring information).
 */
export function vmxCompleteInterrupts(
  vcpu: KvmVcpu, idtVectoringInfo: number,
  lenField: typeof F.VM_EXIT_INSTRUCTION_LEN | typeof F.VM_ENTRY_INSTRUCTION_LEN,
  errField: typeof F.IDT_VECTORING_ERROR_CODE | typeof F.VM_ENTRY_EXCEPTION_ERROR_CODE,
): void {
  const a = vcpu.arch;
  a.nmiInjected = false;
  // kvm_clear_exception_queue + kvm_clear_interrupt_queue.
  a.exception.pending = false;
  a.exception.injected = false;
  a.interrupt.injected = false;
  // (A small body V8 inlines into the exit: the usual exit, no event being delivered, ends here.)
  if (idtVectoringInfo & INTR_VALID) requeueVectoredEvent(vcpu, idtVectoringInfo, lenField, errField);
}

/** __vmx_complete_interrupts' requeue of the event the exit interrupted (IDT-vectoring information valid). */
function requeueVectoredEvent(
  vcpu: KvmVcpu, idtVectoringInfo: number,
  lenField: typeof F.VM_EXIT_INSTRUCTION_LEN | typeof F.VM_ENTRY_INSTRUCTION_LEN,
  errField: typeof F.IDT_VECTORING_ERROR_CODE | typeof F.VM_ENTRY_EXCEPTION_ERROR_CODE,
): void {
  const vmx = toVmx(vcpu);
  const v: Vmcs = vmx.vmcs;
  vcpu.makeRequest(KvmReq.EVENT);
  const vector = idtVectoringInfo & D.INTR_INFO_VECTOR_MASK;
  const type = idtVectoringInfo & D.INTR_INFO_INTR_TYPE_MASK;
  if (type === D.INTR_TYPE_NMI_INTR) {
    vcpu.arch.nmiInjected = true;
    // The NMI was not delivered, so it does not block NMIs yet (SDM 28.3.4, virtual-NMI blocking).
    setNmiBlocked(v, false);
  } else if (type === D.INTR_TYPE_SOFT_EXCEPTION || type === D.INTR_TYPE_HARD_EXCEPTION) {
    if (type === D.INTR_TYPE_SOFT_EXCEPTION) vmx.eventExitInstLen = v.read32(lenField);
    const hasCode = (idtVectoringInfo & D.INTR_INFO_DELIVER_CODE_MASK) !== 0;
    kvmRequeueException(vcpu, vector, hasCode, hasCode ? v.read32(errField) : 0);
  } else if (type === D.INTR_TYPE_SOFT_INTR || type === D.INTR_TYPE_EXT_INTR) {
    if (type === D.INTR_TYPE_SOFT_INTR) vmx.eventExitInstLen = v.read32(lenField);
    kvmQueueInterrupt(vcpu, vector, type === D.INTR_TYPE_SOFT_INTR);
  }
}

export function setNmiBlocked(v: Vmcs, masked: boolean): void {
  const st = v.read32(F.GUEST_INTERRUPTIBILITY_INFO);
  v.write32(F.GUEST_INTERRUPTIBILITY_INFO, masked ? st | D.GUEST_INTR_STATE_NMI : st & ~D.GUEST_INTR_STATE_NMI);
}
