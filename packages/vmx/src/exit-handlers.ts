/**
 * kvm_vmx_exit_handlers: the exit-handler table indexed by basic exit reason, and
 * vmx_handle_exit, which dispatches through it. An exit with no handler is reported with a
 * full VMCS dump and KVM_EXIT_INTERNAL_ERROR — never ignored.
 */
import {
  internalError, KvmExitReason, KvmInternalError, KvmReg, KvmReq, KvmVcpu, X86Vector, kvmEmulateCpuid, kvmEmulateHalt,
  kvmEmulateHypercall, kvmEmulateInstruction, kvmEmulateRdmsr, kvmEmulateWrmsr, kvmFastPio, kvmInjectGp, kvmMmuPageFault,
  kvmQueueException, kvmQueueUd, PFERR_FETCH_MASK, PFERR_PRESENT_MASK, PFERR_RSVD_MASK, PFERR_USER_MASK, PFERR_WRITE_MASK,
  ExitFastpathCompletion, exceptionHasErrorCode, kvmCpuHasInjectableIntr,
} from '@tsvisor/core';
import { F } from './vmcs/fields';
import { dumpVmcs } from './vmcs/dump';
import { toVmx, VcpuVmx } from './vcpu-vmx';
import * as D from './vmx-defs';
import { handleCr, handleDr } from './cr';
import { handleUd } from './hypercall';
import { vmxFlushPmlBuffer } from './pml';
import { handleTaskSwitch } from './task-switch';
import { handleInvpcid } from './invpcid';
import { handleApicAccess, handleApicEoiInduced, handleApicWrite, handleTprBelowThreshold } from './apic-exits';

export type ExitHandler = (vcpu: KvmVcpu) => number;

/** PFERR_GUEST_FINAL / PFERR_GUEST_PAGE (bits 32/33 of KVM's 64-bit error code; not needed by core's MMU). */

function handleExceptionNmi(vcpu: KvmVcpu): number {
  const vmx = toVmx(vcpu);
  const v = vmx.vmcs;
  const info = v.read32(F.VM_EXIT_INTR_INFO);
  const type = info & D.INTR_INFO_INTR_TYPE_MASK;
  const vector = info & D.INTR_INFO_VECTOR_MASK;
  // A host NMI or machine check was dealt with in handleExitIrqoff.
  if (type === D.INTR_TYPE_NMI_INTR || (type === D.INTR_TYPE_HARD_EXCEPTION && vector === X86Vector.MC)) return 1;
  if (vector === X86Vector.UD) return handleUd(vcpu);
  const errorCode = info & D.INTR_INFO_DELIVER_CODE_MASK ? v.read32(F.VM_EXIT_INTR_ERROR_CODE) : 0;
  if (vmx.idtVectoringInfo & D.INTR_INFO_VALID_MASK && vector !== X86Vector.PF) {
    // An exception while delivering another event, which KVM cannot sort out (SIMUL_EX).
    internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_SIMUL_EX,
      `exception ${vector} while delivering IDT-vectoring info 0x${vmx.idtVectoringInfo.toString(16)}`);
    vcpu.run.internal.data = [BigInt(vmx.idtVectoringInfo >>> 0), BigInt(info >>> 0), BigInt(errorCode)];
    return 0;
  }
  switch (vector) {
    case X86Vector.PF:
      // With EPT, #PF is intercepted only when userspace asks (error-code mask/match); reflect it.
      kvmQueueException(vcpu, X86Vector.PF, errorCode, v.readNat(F.EXIT_QUALIFICATION));
      return 1;
    case X86Vector.AC:
      // Alignment checks belong to the guest (KVM intercepts #AC only for split-lock detection).
      kvmQueueException(vcpu, X86Vector.AC, errorCode);
      return 1;
    case X86Vector.DB: {
      const dr6 = v.readNat(F.EXIT_QUALIFICATION);
      const run = vcpu.run;
      run.exitReason = KvmExitReason.KVM_EXIT_DEBUG;
      run.debug.exception = vector;
      run.debug.dr6 = dr6 | 0xffff0ff0n;
      run.debug.dr7 = v.readNat(F.GUEST_DR7);
      run.debug.pc = v.readNat(F.GUEST_CS_BASE) + v.readNat(F.GUEST_RIP);
      return 0;
    }
    case X86Vector.BP: {
      vmx.eventExitInstLen = v.read32(F.VM_EXIT_INSTRUCTION_LEN);
      const run = vcpu.run;
      run.exitReason = KvmExitReason.KVM_EXIT_DEBUG;
      run.debug.exception = vector;
      run.debug.pc = v.readNat(F.GUEST_CS_BASE) + v.readNat(F.GUEST_RIP);
      return 0;
    }
    default:
      vcpu.run.exitReason = KvmExitReason.KVM_EXIT_EXCEPTION;
      vcpu.run.ex.exception = vector;
      vcpu.run.ex.errorCode = exceptionHasErrorCode(vector) ? errorCode : 0;
      return 0;
  }
}

function handleExternalInterrupt(vcpu: KvmVcpu): number {
  // The host's tick (the time slice or a kick). If the guest sits in HLT with nothing to
  // deliver, re-entering would only halt again: return to userspace as a signal would.
  if (toVmx(vcpu).haltedInGuest && !vcpu.arch.nmiPending && !kvmCpuHasInjectableIntr(vcpu)) {
    vcpu.run.exitReason = KvmExitReason.KVM_EXIT_INTR;
    return 0;
  }
  return 1;
}

function handleTripleFault(vcpu: KvmVcpu): number {
  vcpu.run.exitReason = KvmExitReason.KVM_EXIT_SHUTDOWN;
  return 0;
}

function clearExecControl(vmx: VcpuVmx, bit: number): void {
  const v = vmx.vmcs;
  v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) & ~bit);
}

function handleInterruptWindow(vcpu: KvmVcpu): number {
  clearExecControl(toVmx(vcpu), D.CPU_BASED_INTR_WINDOW_EXITING);
  vcpu.makeRequest(KvmReq.EVENT);
  return 1;
}

function handleNmiWindow(vcpu: KvmVcpu): number {
  clearExecControl(toVmx(vcpu), D.CPU_BASED_NMI_WINDOW_EXITING);
  vcpu.makeRequest(KvmReq.EVENT);
  return 1;
}

/** handle_io: string I/O goes through the emulator, the rest through kvm_fast_pio. */
function handleIo(vcpu: KvmVcpu): number {
  const q = Number(toVmx(vcpu).vmcs.readNat(F.EXIT_QUALIFICATION) & 0xffffffffn);
  if (q & (1 << 4)) return kvmEmulateInstruction(vcpu);
  const size = (q & 7) + 1;
  const isIn = (q & (1 << 3)) !== 0;
  const port = q >>> 16;
  return kvmFastPio(vcpu, size, port, isIn);
}

function handleInvd(vcpu: KvmVcpu): number {
  // INVD discards caches; the emulated machine has none to lose (KVM emulates it as a NOP).
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

function handleInvlpg(vcpu: KvmVcpu): number {
  vcpu.kvm.ops.tlbFlushGva(vcpu, toVmx(vcpu).vmcs.readNat(F.EXIT_QUALIFICATION));
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

/** kvm_emulate_rdpmc through the vendor PMU. */
function handleRdpmc(vcpu: KvmVcpu): number {
  const ecx = Number(vcpu.registerRead(KvmReg.RCX) & 0xffffffffn);
  const pmu = vcpu.kvm.ops.pmuOps;
  const r = pmu.rdpmcEcxToPmc(vcpu, ecx);
  if (!r || ((vcpu.readCr4() & 0x100n) === 0n && vcpu.kvm.ops.getCpl(vcpu) !== 0)) {
    kvmInjectGp(vcpu, 0);
    return 1;
  }
  const val = r.pmc.counter & r.mask;
  vcpu.registerWrite(KvmReg.RAX, val & 0xffffffffn);
  vcpu.registerWrite(KvmReg.RDX, val >> 32n);
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

function handleRdtsc(vcpu: KvmVcpu, rdtscp: boolean): number {
  const tsc = BigInt.asUintN(64, vcpu.cpu.state.tsc + vcpu.arch.tscOffset);
  vcpu.registerWrite(KvmReg.RAX, tsc & 0xffffffffn);
  vcpu.registerWrite(KvmReg.RDX, tsc >> 32n);
  if (rdtscp) vcpu.registerWrite(KvmReg.RCX, toVmx(vcpu).guestMsrs.get(0xc0000103) ?? 0n);
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

/** The VMX instructions: nested VMX is not offered, so they are #UD (handle_vmx_instruction). */
function handleVmxInstruction(vcpu: KvmVcpu): number {
  kvmQueueUd(vcpu);
  return 1;
}


/** kvm_set_xcr (SDM Vol. 1 13.3): XCR0 bit 0 always, AVX needs SSE, only what CPUID.0DH allows. */
function handleXsetbv(vcpu: KvmVcpu): number {
  const index = Number(vcpu.registerRead(KvmReg.RCX) & 0xffffffffn);
  const value = ((vcpu.registerRead(KvmReg.RDX) & 0xffffffffn) << 32n) | (vcpu.registerRead(KvmReg.RAX) & 0xffffffffn);
  const supported = 0x3n; // x87 | SSE: what the emulated processor's XSAVE area holds
  if (index !== 0 || vcpu.kvm.ops.getCpl(vcpu) !== 0 || !(value & 1n) || value & ~supported || ((value & 4n) && !(value & 2n))) {
    kvmInjectGp(vcpu, 0);
    return 1;
  }
  vcpu.arch.xcr0 = value;
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

function handleNop(vcpu: KvmVcpu): number {
  // WBINVD, PAUSE, MWAIT and MONITOR: no caches to flush, no other vCPU to yield to; KVM treats MWAIT/MONITOR as NOPs.
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

function handleInvalidOp(vcpu: KvmVcpu): number {
  kvmQueueUd(vcpu);
  return 1;
}

function handleEmulate(vcpu: KvmVcpu): number {
  return kvmEmulateInstruction(vcpu);
}

/** handle_ept_violation: turn the qualification into a page-fault error code for the MMU. */
function handleEptViolation(vcpu: KvmVcpu): number {
  const vmx = toVmx(vcpu);
  const v = vmx.vmcs;
  const q = Number(v.readNat(F.EXIT_QUALIFICATION) & 0xffffffffn);
  // SDM 28.2.1 Table 28-7 bit 12: NMI unblocking due to IRET — re-block NMIs before retrying.
  if (q & (1 << 12) && !(vmx.idtVectoringInfo & D.INTR_INFO_VALID_MASK)) {
    v.write32(F.GUEST_INTERRUPTIBILITY_INFO, v.read32(F.GUEST_INTERRUPTIBILITY_INFO) | D.GUEST_INTR_STATE_NMI);
  }
  const gpa = v.read64(F.GUEST_PHYSICAL_ADDRESS);
  let ec = q & 1 ? PFERR_USER_MASK : 0;
  if (q & 2) ec |= PFERR_WRITE_MASK;
  if (q & 4) ec |= PFERR_FETCH_MASK;
  if (q & 0x38) ec |= PFERR_PRESENT_MASK;
  return kvmMmuPageFault(vcpu, gpa, ec);
}

/** handle_ept_misconfig: KVM's MMIO entries are deliberate misconfigurations. */
function handleEptMisconfig(vcpu: KvmVcpu): number {
  return kvmMmuPageFault(vcpu, toVmx(vcpu).vmcs.read64(F.GUEST_PHYSICAL_ADDRESS), PFERR_RSVD_MASK, true);
}

function handlePmlFull(vcpu: KvmVcpu): number {
  // The buffer was drained at the top of vmx_handle_exit; the write is retried.
  const vmx = toVmx(vcpu);
  const q = Number(vmx.vmcs.readNat(F.EXIT_QUALIFICATION) & 0xffffffffn);
  if (q & (1 << 12) && !(vmx.idtVectoringInfo & D.INTR_INFO_VALID_MASK)) {
    vmx.vmcs.write32(F.GUEST_INTERRUPTIBILITY_INFO, vmx.vmcs.read32(F.GUEST_INTERRUPTIBILITY_INFO) | D.GUEST_INTR_STATE_NMI);
  }
  return 1;
}

/** handle_preemption_timer: an immediate exit, or the hv timer (the LAPIC timer's deadline) expired. */
function handlePreemptionTimer(vcpu: KvmVcpu): number {
  const vmx = toVmx(vcpu);
  if (vmx.reqImmediateExit) return 1;
  // The timer counts in units of 2^rate TSC ticks, so it may fire just before the exact deadline:
  // its firing is the expiry, as for kvm_lapic_expired_hv_timer.
  if (vmx.hvDeadlineTsc >= 0n) {
    vmx.hvDeadlineTsc = -1n;
    vmx.hvTimerExpired = true;
    vcpu.makeRequest(KvmReq.EVENT);
  }
  return 1;
}

function handleMonitorTrap(_vcpu: KvmVcpu): number {
  return 1;
}


function handleMachineCheck(_vcpu: KvmVcpu): number {
  return 1;
}

/** kvm_vmx_exit_handlers. */
export const kvmVmxExitHandlers: readonly (ExitHandler | undefined)[] = (() => {
  const t: (ExitHandler | undefined)[] = new Array(D.VMX_EXIT_REASON_MAX).fill(undefined);
  const E = D.ExitReason;
  t[E.EXCEPTION_NMI] = handleExceptionNmi;
  t[E.EXTERNAL_INTERRUPT] = handleExternalInterrupt;
  t[E.TRIPLE_FAULT] = handleTripleFault;
  t[E.NMI_WINDOW] = handleNmiWindow;
  t[E.IO_INSTRUCTION] = handleIo;
  t[E.CR_ACCESS] = handleCr;
  t[E.DR_ACCESS] = handleDr;
  t[E.CPUID] = kvmEmulateCpuid;
  t[E.MSR_READ] = kvmEmulateRdmsr;
  t[E.MSR_WRITE] = kvmEmulateWrmsr;
  t[E.INTERRUPT_WINDOW] = handleInterruptWindow;
  t[E.HLT] = kvmEmulateHalt;
  t[E.INVD] = handleInvd;
  t[E.INVLPG] = handleInvlpg;
  t[E.RDPMC] = handleRdpmc;
  t[E.RDTSC] = (v) => handleRdtsc(v, false);
  t[E.RDTSCP] = (v) => handleRdtsc(v, true);
  t[E.VMCALL] = kvmEmulateHypercall;
  for (const r of [E.VMCLEAR, E.VMLAUNCH, E.VMPTRLD, E.VMPTRST, E.VMREAD, E.VMRESUME, E.VMWRITE, E.VMOFF, E.VMON,
    E.INVEPT, E.INVVPID, E.VMFUNC]) t[r] = handleVmxInstruction;
  t[E.TPR_BELOW_THRESHOLD] = handleTprBelowThreshold;
  t[E.APIC_ACCESS] = handleApicAccess;
  t[E.APIC_WRITE] = handleApicWrite;
  t[E.EOI_INDUCED] = handleApicEoiInduced;
  t[E.WBINVD] = handleNop;
  t[E.XSETBV] = handleXsetbv;
  t[E.MCE_DURING_VMENTRY] = handleMachineCheck;
  t[E.GDTR_IDTR] = handleEmulate;
  t[E.LDTR_TR] = handleEmulate;
  t[E.EPT_VIOLATION] = handleEptViolation;
  t[E.EPT_MISCONFIG] = handleEptMisconfig;
  t[E.PAUSE_INSTRUCTION] = handleNop;
  t[E.MWAIT_INSTRUCTION] = handleNop;
  t[E.MONITOR_TRAP_FLAG] = handleMonitorTrap;
  t[E.MONITOR_INSTRUCTION] = handleNop;
  t[E.RDRAND] = handleInvalidOp;
  t[E.RDSEED] = handleInvalidOp;
  t[E.PML_FULL] = handlePmlFull;
  t[E.INVPCID] = handleInvpcid;
  t[E.PREEMPTION_TIMER] = handlePreemptionTimer;
  t[E.TASK_SWITCH] = handleTaskSwitch;
  return t;
})();

const FASTPATH_NONE = ExitFastpathCompletion.EXIT_FASTPATH_NONE;
const FASTPATH_EXIT_USERSPACE = ExitFastpathCompletion.EXIT_FASTPATH_EXIT_USERSPACE;

/** vmx_handle_exit. */
export function vmxHandleExit(vcpu: KvmVcpu, fastpath: ExitFastpathCompletion): number {
  const vmx = toVmx(vcpu);
  const v = vmx.vmcs;
  const run = vcpu.run;
  // The PML buffer is drained on every exit so the dirty bitmap is current (vmx_flush_pml_buffer).
  if (v.read32(F.SECONDARY_VM_EXEC_CONTROL) & D.SECONDARY_EXEC_ENABLE_PML) vmxFlushPmlBuffer(vcpu);
  if (vmx.fail) {
    vcpu.countExit('VM_ENTRY_FAILURE');
    run.exitReason = KvmExitReason.KVM_EXIT_FAIL_ENTRY;
    run.failEntry.hardwareEntryFailureReason = BigInt(v.read32(F.VM_INSTRUCTION_ERROR));
    run.failEntry.cpu = vcpu.vcpuId;
    run.internalMessage = `VM entry failed with VM-instruction error ${v.read32(F.VM_INSTRUCTION_ERROR)}: ${vmx.failWhy}\n${dumpVmcs(v)}`;
    return 0;
  }
  // The exit fastpath completed (and counted) the exit already (__vmx_handle_exit).
  if (fastpath === FASTPATH_EXIT_USERSPACE) return 0;
  if (fastpath !== FASTPATH_NONE) return 1;
  const reason = vmx.exitReason;
  const basic = reason & 0xffff;
  vcpu.countExit(D.exitReasonName(basic));
  if (reason & D.VMX_EXIT_REASONS_FAILED_VMENTRY) {
    run.exitReason = KvmExitReason.KVM_EXIT_FAIL_ENTRY;
    run.failEntry.hardwareEntryFailureReason = BigInt(reason >>> 0);
    run.failEntry.cpu = vcpu.vcpuId;
    run.internalMessage = `VM entry failed: exit reason ${basic} (${D.exitReasonName(basic)}), qualification ` +
      `${v.readNat(F.EXIT_QUALIFICATION)}: ${vmx.failWhy}\n${dumpVmcs(v)}`;
    return 0;
  }
  const vectoring = vmx.idtVectoringInfo;
  if (vectoring & D.INTR_INFO_VALID_MASK && basic !== D.ExitReason.EXCEPTION_NMI && basic !== D.ExitReason.EPT_VIOLATION &&
    basic !== D.ExitReason.PML_FULL && basic !== D.ExitReason.TASK_SWITCH && basic !== D.ExitReason.APIC_ACCESS) {
    internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_DELIVERY_EV,
      `exit reason ${D.exitReasonName(basic)} while delivering an event (IDT-vectoring info 0x${(vectoring >>> 0).toString(16)})`);
    run.internal.data = [BigInt(vectoring >>> 0), BigInt(reason >>> 0), v.readNat(F.EXIT_QUALIFICATION)];
    return 0;
  }
  const handler = basic < kvmVmxExitHandlers.length ? kvmVmxExitHandlers[basic] : undefined;
  if (handler) return handler(vcpu);
  internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
    `vmx: unexpected exit reason 0x${(reason >>> 0).toString(16)} (${D.exitReasonName(basic)})\n${dumpVmcs(v)}`);
  run.internal.data = [BigInt(reason >>> 0), BigInt(vcpu.vcpuId)];
  return 0;
}
