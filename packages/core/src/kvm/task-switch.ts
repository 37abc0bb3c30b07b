/**
 * kvm_task_switch (arch/x86/kvm/x86.c): after a task-switch exit (VMX exit reason 9, SVM
 * TASK_SWITCH intercept) the vendor's handler decodes the exit and core performs the switch on
 * the guest's behalf with the instruction emulator, as KVM does with emulator_task_switch.
 *
 * tsvisor's emulator is the vCPU's own processor (emulator-state.ts): core loads the vCPU's
 * state into it through the hooks, runs the processor's task switch (cpu/task-switch.ts, SDM
 * Vol. 3A 7.3) outside guest mode, writes back everything a switch changes — GPRs, RIP, RFLAGS,
 * the six segment registers, TR, LDTR, CR0.TS, CR3, DR7 — through the hooks, and queues the
 * exception the switch raised (#TS, #GP, #NP, #SS, #PF, or the T-flag #DB). A switch the
 * emulator cannot complete (a TSS or descriptor table outside RAM) is
 * KVM_EXIT_INTERNAL_ERROR with suberror EMULATION, as in KVM.
 */
import { EmulationResult, MmioBus } from '../cpu/x86-cpu';
import { emulatedInsnLength, emulateTaskSwitch, taskSwitchStatus } from '../cpu/task-switch';
import { emptySegment, KvmReg, VcpuSreg, X86Vector } from '../ops/types';
import { loadEmulatorState, storeEmulatorState } from './emulator-state';
import { KvmInternalError } from './run';
import { KvmReq, KvmVcpu } from './vcpu';
import { internalError, kvmQueueException } from './x86';

/** enum x86_task_switch_reason (kvm_host.h); equal to the VMX qualification's source (SDM Table 28-2). */
export const TASK_SWITCH_CALL = 0;
export const TASK_SWITCH_IRET = 1;
export const TASK_SWITCH_JMP = 2;
export const TASK_SWITCH_GATE = 3;

const REASON_NAMES = ['CALL', 'IRET', 'JMP', 'GATE'];
/** DR6.BT: the #DB a switch raises comes from the new TSS's T flag (SDM Vol. 3B 18.2.3). */
const DR6_BT = 0x8000n;

/** The TSSs and the descriptor tables are read through the in-kernel MMIO bus only. */
class TaskSwitchMmio implements MmioBus {
  constructor(private readonly vcpu: KvmVcpu) {}
  read(gpa: bigint, size: number, out: Uint8Array): boolean {
    return gpa < 2n ** 52n && this.vcpu.kvm.mmioBus.read(Number(gpa), size, out);
  }
  write(gpa: bigint, size: number, data: Uint8Array): void {
    if (gpa < 2n ** 52n) this.vcpu.kvm.mmioBus.write(Number(gpa), size, data);
  }
}

const seg = emptySegment();
const SEGS: readonly VcpuSreg[] = [VcpuSreg.CS, VcpuSreg.SS, VcpuSreg.DS, VcpuSreg.ES, VcpuSreg.FS, VcpuSreg.GS, VcpuSreg.TR, VcpuSreg.LDTR];

/**
 * Write back what a committed task switch changed in the processor (emulator_task_switch's
 * set_segment / set_cr / set_dr / writeback_registers). Also used after an emulated
 * instruction that switched tasks (emulator-state.ts).
 */
export function storeTaskSwitchState(vcpu: KvmVcpu): void {
  const ops = vcpu.kvm.ops;
  const a = vcpu.arch;
  const s = vcpu.cpu.state;
  storeEmulatorState(vcpu);
  // CS before SS: a vendor that keeps CPL apart (SVM) takes it from SS.DPL (svm_set_segment).
  for (const i of SEGS) {
    s.getSegment(i, seg);
    ops.setSegment(vcpu, seg, i);
  }
  if (s.cr0 !== vcpu.readCr0()) {
    ops.setCr0(vcpu, s.cr0);
    a.cr0 = s.cr0;
  }
  if (s.cr3 !== vcpu.readCr3()) {
    a.cr3 = s.cr3;
    a.regsAvail |= 1 << KvmReg.CR3;
    // The PAE PDPTE registers the switch loaded (SDM 7.3 step 12) are in the processor's state.
    a.regsAvail |= 1 << KvmReg.PDPTR;
    a.regsDirty |= 1 << KvmReg.PDPTR;
    ops.loadMmuPgd(vcpu, BigInt(vcpu.kvm.mmu?.root ?? 0));
    vcpu.makeRequest(KvmReq.TLB_FLUSH_CURRENT);
  }
  if (s.dr7 !== a.dr7) {
    a.dr7 = s.dr7;
    ops.setDr7(vcpu, s.dr7);
  }
}

/**
 * kvm_task_switch: switch to the task of `tssSelector` for `reason` (TASK_SWITCH_*).
 * `idtIndex` >= 0 for a software interrupt through a task gate (its DPL is checked);
 * `hasErrorCode`/`errorCode`: the exception being delivered pushes an error code on the new
 * task's stack. The caller has already skipped the instruction that started the switch
 * (its EIP is saved in the old TSS); `insnRip` is where that instruction was: a fault before the
 * commit point is a fault of the instruction and is reported there (SDM 7.3: "the processor is
 * returned to its state prior to the execution of the instruction that initiated the task
 * switch" — KVM leaves RIP past it). Returns 1 to re-enter, 0 for an internal-error exit.
 */
export function kvmTaskSwitch(
  vcpu: KvmVcpu, tssSelector: number, idtIndex: number, reason: number, hasErrorCode: boolean, errorCode: number,
  insnRip?: bigint,
): number {
  const kvm = vcpu.kvm;
  const cpu = vcpu.cpu;
  if (kvm.tracing('kvm_task_switch')) {
    kvm.trace('kvm_task_switch', vcpu, () => `tss 0x${tssSelector.toString(16)} reason ${REASON_NAMES[reason & 3]} idt ${idtIndex}` +
      (hasErrorCode ? ` error_code 0x${(errorCode >>> 0).toString(16)}` : ''));
  }
  loadEmulatorState(vcpu);
  // DR7 is not among the emulator's inputs; after an exit the processor holds the guest's.
  const res = emulateTaskSwitch(cpu, new TaskSwitchMmio(vcpu), tssSelector & 0xffff, reason, idtIndex, hasErrorCode, errorCode >>> 0);
  if (res === EmulationResult.UNHANDLEABLE) {
    internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_EMULATION,
      `cannot emulate the task switch to TSS 0x${tssSelector.toString(16)} (${REASON_NAMES[reason & 3]})`);
    vcpu.run.internal.data = [];
    return 0;
  }
  // Before the commit point nothing changed; after it, the new task's state is written back
  // and any fault is delivered in the new task (SDM 7.3).
  if (taskSwitchStatus.committed) storeTaskSwitchState(vcpu);
  else if (res === EmulationResult.EXCEPTION && insnRip !== undefined) vcpu.registerWrite(KvmReg.RIP, insnRip);
  const inj = cpu.injection;
  if (inj.valid) {
    inj.valid = false;
    if (inj.vector === X86Vector.DB) kvmQueueException(vcpu, X86Vector.DB, undefined, DR6_BT);
    else if (inj.vector === X86Vector.PF) kvmQueueException(vcpu, X86Vector.PF, inj.errorCode, cpu.state.cr2);
    else kvmQueueException(vcpu, inj.vector, inj.hasErrorCode ? inj.errorCode : undefined);
  }
  vcpu.makeRequest(KvmReq.EVENT);
  return 1;
}

/**
 * The length of the guest instruction at RIP, found by decoding it (the decode half of KVM's
 * EMULTYPE_SKIP): for a vendor that saved no next RIP for the exit (SVM's task-switch
 * intercept). 0 when the instruction cannot be fetched.
 */
export function kvmEmulatedInsnLength(vcpu: KvmVcpu): number {
  loadEmulatorState(vcpu);
  return emulatedInsnLength(vcpu.cpu, new TaskSwitchMmio(vcpu));
}
