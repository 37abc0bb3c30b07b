/**
 * svm_handle_exit and svm_exit_handlers[]: a sparse table indexed by the #VMEXIT code
 * (AMD APM Vol. 2 Appendix C). An exit code without a handler is reported with a full VMCB
 * dump as KVM_EXIT_INTERNAL_ERROR, never ignored.
 */
import {
  ExitFastpathCompletion, KvmExitReason, KvmInternalError, KvmReg, KvmReq, KvmVcpu, X86Vector,
  kvmEmulateCpuid, kvmEmulateHalt, kvmEmulateHypercall, kvmEmulateRdmsr, kvmEmulateWrmsr, kvmFastPio,
  kvmMmuPageFault, kvmEmulateInstruction, kvmQueueException, internalError,
} from '@tsvisor/core';
import { Intercept1, VMCB_CONTROL, VMCB_SAVE, VmcbCleanBit } from './vmcb/layout';
import {
  SVM_CR_VALID, SVM_EXITINFO_REG_MASK, SVM_EXIT_ERR_U64, SVM_IOIO_REP, SVM_IOIO_SIZE_MASK, SVM_IOIO_SIZE_SHIFT,
  SVM_IOIO_STR, SVM_IOIO_TYPE_IN, SvmExit, svmExitName, NPF_RSVD,
} from './vmcb/exit-codes';
import { svmOf, VcpuSvm } from './vcpu-svm';
import { kvmGetDr, kvmSetCr0, kvmSetCr3, kvmSetCr4, kvmSetCr8, kvmSetDr, cr4De } from './cr';
import { dumpVmcb } from './dump';
import { svmClearVintr, svmSetInterceptBit } from './intercepts';
import { svmHandleUd } from './hypercall';
import { avicIncompleteIpiInterception, avicUnacceleratedAccessInterception } from './avic';
import { crTrap, eferTrap } from './write-traps';
import { taskSwitchInterception } from './task-switch';

export type SvmExitHandler = (vcpu: KvmVcpu, svm: VcpuSvm) => number;

/** kvm_complete_insn_gp: #GP on error, else skip the instruction. */
function completeInsnGp(vcpu: KvmVcpu, err: number): number {
  if (err) {
    kvmQueueException(vcpu, X86Vector.GP, 0);
    return 1;
  }
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

function exitInfo1(svm: VcpuSvm): bigint {
  return svm.vmcb.read64(VMCB_CONTROL.EXITINFO1);
}
function exitInfo2(svm: VcpuSvm): bigint {
  return svm.vmcb.read64(VMCB_CONTROL.EXITINFO2);
}

/** Exits that only need to re-enter (the host side of the event already happened). */
const nopOnInterception: SvmExitHandler = () => 1;

/** Instructions KVM emulates as a no-op: skip them. */
const skipInterception: SvmExitHandler = (vcpu) => vcpu.kvm.skipEmulatedInstruction(vcpu);

/** SVM instructions with nested SVM not offered: #UD, since EFER.SVME cannot be set (nested_svm_check_permissions). */
const svmInstructionUd: SvmExitHandler = (vcpu) => {
  kvmQueueException(vcpu, X86Vector.UD);
  return 1;
};

/** cr_interception, with decode assists (APM 15.8.1): EXITINFO1 bit 63 + GPR number. */
function crInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const code = Number(svm.vmcb.read64(VMCB_CONTROL.EXITCODE));
  const info = exitInfo1(svm);
  const ex = vcpu.cpu.exit;
  let cr = code === SvmExit.CR0_SEL_WRITE ? 16 : code - SvmExit.READ_CR0;
  if (!(info & SVM_CR_VALID)) {
    // LMSW / CLTS carry no decode information: emulate from the processor's decode, as
    // KVM's emulate_on_interception would. LMSW changes only PE, MP, EM, TS and cannot clear PE.
    const cr0 = vcpu.readCr0();
    let v: bigint;
    if (ex.crAccessType === 2 /* CLTS */) v = cr0 & ~8n;
    else v = (cr0 & ~0xen) | (ex.value & 0xfn) | (cr0 & 1n);
    return completeInsnGp(vcpu, kvmSetCr0(vcpu, v));
  }
  const reg = Number(info & SVM_EXITINFO_REG_MASK) as KvmReg;
  let err = 0;
  if (cr >= 16) {
    cr -= 16;
    const val = vcpu.registerRead(reg);
    switch (cr) {
      case 0: err = kvmSetCr0(vcpu, val); break;
      case 3: err = kvmSetCr3(vcpu, val); break;
      case 4: err = kvmSetCr4(vcpu, val); break;
      case 8: err = kvmSetCr8(vcpu, val); break;
      default:
        kvmQueueException(vcpu, X86Vector.UD);
        return 1;
    }
  } else {
    let val: bigint;
    switch (cr) {
      case 0: val = vcpu.readCr0(); break;
      case 2: val = vcpu.arch.cr2; break;
      case 3: val = vcpu.readCr3(); break;
      case 4: val = vcpu.readCr4(); break;
      case 8: val = vcpu.arch.cr8; break;
      default:
        kvmQueueException(vcpu, X86Vector.UD);
        return 1;
    }
    // MOV from CR in 32-bit mode writes only the low half (the register is zero-extended anyway).
    vcpu.registerWrite(reg, val);
  }
  return completeInsnGp(vcpu, err);
}

/** dr_interception with decode assists: EXITINFO1 bits 3:0 name the GPR. */
function drInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const code = Number(svm.vmcb.read64(VMCB_CONTROL.EXITCODE));
  const reg = Number(exitInfo1(svm) & SVM_EXITINFO_REG_MASK) as KvmReg;
  const write = code >= SvmExit.WRITE_DR0;
  const dr = code - (write ? SvmExit.WRITE_DR0 : SvmExit.READ_DR0);
  // DR4/DR5 are #UD with CR4.DE set; DR8–15 do not exist.
  if (dr > 7 || ((dr === 4 || dr === 5) && cr4De(vcpu))) {
    kvmQueueException(vcpu, X86Vector.UD);
    return 1;
  }
  if (vcpu.kvm.ops.getCpl(vcpu) !== 0) {
    kvmQueueException(vcpu, X86Vector.GP, 0);
    return 1;
  }
  if (write) return completeInsnGp(vcpu, kvmSetDr(vcpu, dr, vcpu.registerRead(reg)));
  vcpu.registerWrite(reg, kvmGetDr(vcpu, dr));
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

/** io_interception: EXITINFO1 per APM 15.10.2, EXITINFO2 the next RIP. */
function ioInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const info = Number(exitInfo1(svm) & 0xffffffffn);
  const isIn = (info & SVM_IOIO_TYPE_IN) !== 0;
  const string = (info & (SVM_IOIO_STR | SVM_IOIO_REP)) !== 0;
  if (string) return kvmEmulateInstruction(vcpu);
  const size = (info & SVM_IOIO_SIZE_MASK) >>> SVM_IOIO_SIZE_SHIFT; // SZ8=1, SZ16=2, SZ32=4
  const port = info >>> 16;
  svm.nextRip = exitInfo2(svm);
  return kvmFastPio(vcpu, size, port, isIn);
}

/** msr_interception: EXITINFO1 = 0 RDMSR, 1 WRMSR. */
function msrInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  return exitInfo1(svm) ? kvmEmulateWrmsr(vcpu) : kvmEmulateRdmsr(vcpu);
}

/** npf_interception: EXITINFO1 the #NPF error code, EXITINFO2 the guest-physical address. */
function npfInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const ec = exitInfo1(svm);
  const gpa = exitInfo2(svm);
  vcpu.kvm.trace('kvm_page_fault', vcpu, () => `npf gpa 0x${gpa.toString(16)} ec 0x${ec.toString(16)}`);
  // RSVD: the MMIO leaf core's MMU installed (or no NPT at all): emulate the access.
  const mmio = (ec & NPF_RSVD) !== 0n || vcpu.kvm.mmu === null;
  return kvmMmuPageFault(vcpu, gpa, Number(ec & 0xffffffffn), mmio);
}

/** interrupt_window_interception: V_IRQ was taken as a VINTR exit; the window is open. */
function interruptWindowInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  svmClearVintr(svm);
  vcpu.makeRequest(KvmReq.EVENT);
  return 1;
}

/** iret_interception: NMIs open once the IRET has executed (detected in completeInterrupts). */
function iretInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  svmSetInterceptBit(svm, 'MISC1', Intercept1.IRET, false);
  svm.iretMasked = true;
  svm.nmiIretRip = vcpu.rip;
  vcpu.makeRequest(KvmReq.EVENT);
  return 1;
}

/** shutdown_interception: the VMCB is undefined after SHUTDOWN; reinitialise it and report. */
function shutdownInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  svm.vmcb.bytes.fill(0);
  svm.hw.invalidateCache();
  vcpu.kvm.ops.vcpuReset(vcpu, false);
  vcpu.run.exitReason = KvmExitReason.KVM_EXIT_SHUTDOWN;
  return 0;
}

/** invlpg_interception: decode assists put the linear address in EXITINFO1. */
function invlpgInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  vcpu.kvm.ops.tlbFlushGva(vcpu, exitInfo1(svm));
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

/** invlpga_interception: RAX is the address, ECX the ASID (flushed in the guest's own ASID). */
function invlpgaInterception(vcpu: KvmVcpu): number {
  vcpu.kvm.ops.tlbFlushGva(vcpu, vcpu.registerRead(KvmReg.RAX));
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

/** xsetbv_interception → kvm_set_xcr: XCR0 bit 0 must stay set; AVX needs SSE; only XCR0 exists. */
function xsetbvInterception(vcpu: KvmVcpu): number {
  const index = Number(vcpu.registerRead(KvmReg.RCX) & 0xffffffffn);
  const v = ((vcpu.registerRead(KvmReg.RDX) & 0xffffffffn) << 32n) | (vcpu.registerRead(KvmReg.RAX) & 0xffffffffn);
  const supported = 0x7n; // x87, SSE, AVX
  const bad = index !== 0 || !(v & 1n) || (v & ~supported) !== 0n || ((v & 4n) !== 0n && !(v & 2n)) ||
    vcpu.kvm.ops.getCpl(vcpu) !== 0;
  if (!bad) vcpu.arch.xcr0 = v;
  return completeInsnGp(vcpu, bad ? 1 : 0);
}

/** #MC intercepted: the host would handle the machine check; the guest resumes. */
const mcInterception: SvmExitHandler = nopOnInterception;

/** #UD intercepted: VMCALL from a guest written for Intel is patched to VMMCALL; the rest is reflected. */
function udInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  return svmHandleUd(vcpu, svm);
}

/** disable_nmi_singlestep: restore the guest's own TF/RF and drop the #DB intercept. */
export function disableNmiSinglestep(svm: VcpuSvm): void {
  svm.nmiSinglestep = false;
  const v = svm.vmcb;
  let r = v.read64(VMCB_SAVE.RFLAGS);
  if (!(svm.nmiSinglestepGuestRflags & 0x100n)) r &= ~0x100n;
  if (!(svm.nmiSinglestepGuestRflags & 0x10000n)) r &= ~0x10000n;
  v.write64(VMCB_SAVE.RFLAGS, r);
  svmSetInterceptBit(svm, 'EXCEPTIONS', X86Vector.DB, false);
}

/** #DB / #BP intercepted: the NMI-window single step, else userspace debugging (KVM_EXIT_DEBUG). */
function debugInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const code = Number(svm.vmcb.read64(VMCB_CONTROL.EXITCODE));
  if (code === SvmExit.EXCP_BASE + X86Vector.DB && svm.nmiSinglestep) {
    // db_interception: the single step over the NMI handler's IRET is done (the trap's DR6.BS is the processor's, not the guest's).
    disableNmiSinglestep(svm);
    svm.vmcb.write64(VMCB_SAVE.DR6, svm.vmcb.read64(VMCB_SAVE.DR6) & ~0x4000n);
    vcpu.makeRequest(KvmReq.EVENT);
    return 1;
  }
  const run = vcpu.run;
  run.exitReason = KvmExitReason.KVM_EXIT_DEBUG;
  run.debug.exception = code - SvmExit.EXCP_BASE;
  run.debug.pc = svm.vmcb.segBase(VMCB_SAVE.CS) + svm.vmcb.read64(VMCB_SAVE.RIP);
  run.debug.dr6 = vcpu.arch.dr6;
  run.debug.dr7 = vcpu.arch.dr7;
  return 0;
}

/** #AC intercepted: reflect it to the guest with its error code. */
function acInterception(vcpu: KvmVcpu): number {
  kvmQueueException(vcpu, X86Vector.AC, 0);
  return 1;
}

/** pause_interception: grow the PAUSE filter count (grow_ple_window) and let other vCPUs run. */
function pauseInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const v = svm.vmcb;
  const old = v.read16(VMCB_CONTROL.PAUSE_FILTER_COUNT);
  // pause_filter_count_grow = 2, capped at pause_filter_count_max (0xFFFF).
  const grown = Math.min(0xffff, Math.max(old, 1) * 2);
  if (grown !== old) {
    v.write16(VMCB_CONTROL.PAUSE_FILTER_COUNT, grown);
    v.markDirty(VmcbCleanBit.I);
  }
  vcpu.kvm.trace('kvm_ple_window_update', vcpu, () => `vcpu ${vcpu.vcpuId} old ${old} new ${grown}`);
  // The PAUSE was intercepted before it executed: re-entering executes it.
  return 1;
}

/** RDTSC intercepted: EDX:EAX = the guest's TSC (host TSC + TSC_OFFSET). */
function rdtscInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const tsc = BigInt.asUintN(64, vcpu.cpu.state.tsc + svm.vmcb.read64(VMCB_CONTROL.TSC_OFFSET));
  vcpu.registerWrite(KvmReg.RAX, tsc & 0xffffffffn);
  vcpu.registerWrite(KvmReg.RDX, tsc >> 32n);
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

/** rdpmc_interception → kvm_emulate_rdpmc: ECX selects the counter through the PMU sub-table. */
function rdpmcInterception(vcpu: KvmVcpu): number {
  const ecx = Number(vcpu.registerRead(KvmReg.RCX) & 0xffffffffn);
  const pmu = vcpu.kvm.ops.pmuOps;
  const r = pmu.isValidRdpmcEcx(vcpu, ecx) ? pmu.rdpmcEcxToPmc(vcpu, ecx) : null;
  if (!r) {
    kvmQueueException(vcpu, X86Vector.GP, 0);
    return 1;
  }
  const v = r.pmc.counter & r.mask;
  vcpu.registerWrite(KvmReg.RAX, v & 0xffffffffn);
  vcpu.registerWrite(KvmReg.RDX, v >> 32n);
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

/** The guest is never in SMM here (no SMI is injected): RSM is #UD (rsm_interception → emulator → #UD). */
const rsmInterception: SvmExitHandler = svmInstructionUd;

/** invpcid_interception: type in EXITINFO2, descriptor address in EXITINFO1; flushes go through the TLB hooks. */
function invpcidInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const type = exitInfo2(svm);
  if (type > 3n) {
    kvmQueueException(vcpu, X86Vector.GP, 0);
    return 1;
  }
  // With NPT the guest's mappings are in its own ASID: every INVPCID type is covered by
  // flushing that ASID (KVM flushes the current context or all for types 2 and 3).
  vcpu.kvm.ops.tlbFlushCurrent(vcpu);
  return vcpu.kvm.skipEmulatedInstruction(vcpu);
}

/** descriptor_access_interception: SGDT/SIDT/SLDT/STR/LGDT/LIDT/LLDT/LTR are emulated. */
function descriptorAccessInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const r = kvmEmulateInstruction(vcpu);
  // The emulator runs on the vCPU's processor: copy back the descriptor-table state a load changed.
  const s = vcpu.cpu.state;
  const code = Number(svm.vmcb.read64(VMCB_CONTROL.EXITCODE));
  const ops = vcpu.kvm.ops;
  if (code === SvmExit.GDTR_WRITE) ops.setGdt(vcpu, { size: s.gdtrLimit, address: s.gdtrBase });
  if (code === SvmExit.IDTR_WRITE) ops.setIdt(vcpu, { size: s.idtrLimit, address: s.idtrBase });
  if (code === SvmExit.LDTR_WRITE || code === SvmExit.TR_WRITE) {
    const sreg = code === SvmExit.TR_WRITE ? 6 : 7;
    const seg = { base: 0n, limit: 0, selector: 0, type: 0, present: 0, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 };
    s.getSegment(sreg, seg);
    ops.setSegment(vcpu, seg, sreg);
  }
  return r;
}

/** svm_exit_handlers[], indexed by #VMEXIT code. */
export const svmExitHandlers: ReadonlyMap<number, SvmExitHandler> = new Map<number, SvmExitHandler>([
  [SvmExit.READ_CR0, crInterception], [SvmExit.READ_CR3, crInterception], [SvmExit.READ_CR4, crInterception],
  [SvmExit.READ_CR8, crInterception], [SvmExit.CR0_SEL_WRITE, crInterception], [SvmExit.WRITE_CR0, crInterception],
  [SvmExit.WRITE_CR3, crInterception], [SvmExit.WRITE_CR4, crInterception], [SvmExit.WRITE_CR8, crInterception],
  ...Array.from({ length: 8 }, (_, i) => [SvmExit.READ_DR0 + i, drInterception] as [number, SvmExitHandler]),
  ...Array.from({ length: 8 }, (_, i) => [SvmExit.WRITE_DR0 + i, drInterception] as [number, SvmExitHandler]),
  [SvmExit.EXCP_BASE + X86Vector.DB, debugInterception],
  [SvmExit.EXCP_BASE + X86Vector.BP, debugInterception],
  [SvmExit.EXCP_BASE + X86Vector.UD, udInterception],
  [SvmExit.EXCP_BASE + X86Vector.MC, mcInterception],
  [SvmExit.EXCP_BASE + X86Vector.AC, acInterception],
  [SvmExit.INTR, nopOnInterception],
  [SvmExit.NMI, nopOnInterception],
  [SvmExit.SMI, nopOnInterception],
  [SvmExit.INIT, nopOnInterception],
  [SvmExit.VINTR, interruptWindowInterception],
  [SvmExit.CPUID, kvmEmulateCpuid], // (bound once: a wrapper would read the export getter at every exit)
  [SvmExit.IRET, iretInterception],
  [SvmExit.INVD, skipInterception],
  [SvmExit.HLT, (vcpu) => kvmEmulateHalt(vcpu)],
  [SvmExit.INVLPG, invlpgInterception],
  [SvmExit.INVLPGA, invlpgaInterception],
  [SvmExit.IOIO, ioInterception],
  [SvmExit.MSR, msrInterception],
  [SvmExit.SHUTDOWN, shutdownInterception],
  [SvmExit.VMRUN, svmInstructionUd],
  [SvmExit.VMMCALL, (vcpu) => kvmEmulateHypercall(vcpu)],
  [SvmExit.VMLOAD, svmInstructionUd],
  [SvmExit.VMSAVE, svmInstructionUd],
  [SvmExit.STGI, svmInstructionUd],
  [SvmExit.CLGI, svmInstructionUd],
  [SvmExit.SKINIT, svmInstructionUd],
  [SvmExit.RDPRU, svmInstructionUd],
  [SvmExit.WBINVD, skipInterception],
  [SvmExit.MONITOR, skipInterception],
  [SvmExit.MWAIT, skipInterception],
  [SvmExit.XSETBV, (vcpu) => xsetbvInterception(vcpu)],
  [SvmExit.NPF, npfInterception],
  [SvmExit.PAUSE, pauseInterception],
  [SvmExit.RDTSC, rdtscInterception],
  [SvmExit.RDTSCP, svmInstructionUd],
  [SvmExit.RDPMC, (vcpu) => rdpmcInterception(vcpu)],
  [SvmExit.RSM, rsmInterception],
  [SvmExit.INVPCID, invpcidInterception],
  [SvmExit.IDTR_READ, descriptorAccessInterception], [SvmExit.GDTR_READ, descriptorAccessInterception],
  [SvmExit.LDTR_READ, descriptorAccessInterception], [SvmExit.TR_READ, descriptorAccessInterception],
  [SvmExit.IDTR_WRITE, descriptorAccessInterception], [SvmExit.GDTR_WRITE, descriptorAccessInterception],
  [SvmExit.LDTR_WRITE, descriptorAccessInterception], [SvmExit.TR_WRITE, descriptorAccessInterception],
  [SvmExit.EFER_WRITE_TRAP, eferTrap], [SvmExit.CR0_WRITE_TRAP, crTrap], [SvmExit.CR4_WRITE_TRAP, crTrap], [SvmExit.CR8_WRITE_TRAP, crTrap],
  [SvmExit.AVIC_INCOMPLETE_IPI, avicIncompleteIpiInterception],
  [SvmExit.AVIC_UNACCELERATED_ACCESS, avicUnacceleratedAccessInterception],
  [SvmExit.TASK_SWITCH, taskSwitchInterception],
]);

/**
 * svmExitHandlers as an array indexed by exit code (every handled code is below 0x1000,
 * APM Appendix C): svmHandleExit dispatches on EXITCODE's low half without a BigInt.
 */
const HANDLER_OF_CODE: Array<SvmExitHandler | undefined> = [];
for (const [code, handler] of svmExitHandlers) HANDLER_OF_CODE[code] = handler;

/** svm_handle_exit. */
export function svmHandleExit(vcpu: KvmVcpu, fastpath: ExitFastpathCompletion): number {
  const svm = svmOf(vcpu);
  const v = svm.vmcb;
  // EXITCODE as halves: every code but VMEXIT_INVALID (-1) has a zero high half.
  const codeLo = v.readLo(VMCB_CONTROL.EXITCODE);
  const small = v.readHi(VMCB_CONTROL.EXITCODE) === 0;
  if (svm.hostError) {
    const err = svm.hostError;
    svm.hostError = null;
    internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_EMULATION, `svm: the processor failed during VMRUN: ${err.message}\n${dumpVmcb(svm.vmcb)}`);
    return 0;
  }
  // The exit fastpath completed (and counted) the exit already.
  if (fastpath === ExitFastpathCompletion.EXIT_FASTPATH_EXIT_USERSPACE) return 0;
  if (fastpath !== ExitFastpathCompletion.EXIT_FASTPATH_NONE) return 1;
  const code = small ? codeLo : v.read64(VMCB_CONTROL.EXITCODE);
  vcpu.countExit(svmExitName(code));
  vcpu.kvm.trace('kvm_exit', vcpu, () => `reason ${svmExitName(code)} rip 0x${svm.vmcb.read64(VMCB_SAVE.RIP).toString(16)} info 0x${exitInfo1(svm).toString(16)} 0x${exitInfo2(svm).toString(16)}`);
  if (code === SVM_EXIT_ERR_U64) {
    const run = vcpu.run;
    run.exitReason = KvmExitReason.KVM_EXIT_FAIL_ENTRY;
    // KVM reports the 32-bit exit_code field of struct vmcb_control_area: VMEXIT_INVALID reads 0xffffffff.
    run.failEntry.hardwareEntryFailureReason = BigInt(codeLo);
    run.failEntry.cpu = 0;
    const why = svm.lastFailure ? `${svm.lastFailure.rule} (${svm.lastFailure.detail})` : 'consistency check failed';
    run.internalMessage = `VMRUN failed with VMEXIT_INVALID: ${why} (AMD APM Vol. 2 15.5.1)\n${dumpVmcb(svm.vmcb)}`;
    return 0;
  }
  const handler = small ? HANDLER_OF_CODE[codeLo] : undefined;
  if (!handler) {
    internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
      `svm: unexpected exit reason 0x${code.toString(16)} (${svmExitName(code)})\n${dumpVmcb(svm.vmcb)}`);
    vcpu.run.internal.data = [BigInt(code), BigInt(vcpu.cpu.state.instructionsRetired)];
    return 0;
  }
  return handler(vcpu, svm);
}
