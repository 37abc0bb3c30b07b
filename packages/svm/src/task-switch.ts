/**
 * task_switch_interception (arch/x86/kvm/svm/svm.c): #VMEXIT 0x7D, TASK_SWITCH intercept
 * (AMD APM Vol. 2 15.14, Appendix C). KVM sets the intercept in every VMCB (init_vmcb); core's
 * kvmTaskSwitch performs the switch.
 *
 * EXITINFO1 bits 15:0: the new TSS selector. EXITINFO2: bit 36 the switch comes from IRET,
 * bit 38 from a far JMP, bit 44 an error code is pushed, bits 31:0 that error code (Linux
 * svm.h SVM_EXITINFOSHIFT_TS_*). Neither IRET nor JMP: a task gate in the IDT when EXITINTINFO
 * holds the event being delivered, else a far CALL. The intercept is fault-like and saves no
 * next RIP, so the instruction that started the switch is decoded to be skipped.
 */
import {
  KvmVcpu, TASK_SWITCH_CALL, TASK_SWITCH_GATE, TASK_SWITCH_IRET, TASK_SWITCH_JMP, X86Vector,
  kvmClearExceptionQueue, kvmClearInterruptQueue, kvmEmulatedInsnLength, kvmTaskSwitch, internalError, KvmInternalError, KvmReg,
} from '@tsvisor/core';
import { VMCB_CONTROL } from './vmcb/layout';
import {
  SVM_EVTINJ_TYPE_MASK, SVM_EVTINJ_TYPE_SHIFT, SVM_EVTINJ_VALID, SVM_EVTINJ_VEC_MASK, SvmEventType,
  SVM_EXITINFOSHIFT_TS_HAS_ERROR_CODE, SVM_EXITINFOSHIFT_TS_REASON_IRET, SVM_EXITINFOSHIFT_TS_REASON_JMP,
} from './vmcb/exit-codes';
import type { VcpuSvm } from './vcpu-svm';

export function taskSwitchInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const v = svm.vmcb;
  const info1 = v.read64(VMCB_CONTROL.EXITINFO1);
  const info2 = v.read64(VMCB_CONTROL.EXITINFO2);
  const intInfo = Number(v.read64(VMCB_CONTROL.EXITINTINFO) & 0xffffffffn);
  const idtV = (intInfo & SVM_EVTINJ_VALID) !== 0;
  const intType = (intInfo & SVM_EVTINJ_TYPE_MASK) >>> SVM_EVTINJ_TYPE_SHIFT;
  let intVec = intInfo & SVM_EVTINJ_VEC_MASK;
  const tssSelector = Number(info1 & 0xffffn);
  let hasErrorCode = false;
  let errorCode = 0;
  if (vcpu.kvm.tracing('kvm_task_switch')) {
    vcpu.kvm.trace('kvm_task_switch', vcpu, () => `svm exit_info1 0x${info1.toString(16)} exit_info2 0x${info2.toString(16)} exit_int_info 0x${(intInfo >>> 0).toString(16)}`);
  }
  let reason: number;
  if (info2 & (1n << SVM_EXITINFOSHIFT_TS_REASON_IRET)) reason = TASK_SWITCH_IRET;
  else if (info2 & (1n << SVM_EXITINFOSHIFT_TS_REASON_JMP)) reason = TASK_SWITCH_JMP;
  else if (idtV) reason = TASK_SWITCH_GATE;
  else reason = TASK_SWITCH_CALL;

  if (reason === TASK_SWITCH_GATE) {
    // The event svm's completeInterrupts re-queued is delivered by the switch itself.
    switch (intType) {
      case SvmEventType.NMI:
        vcpu.arch.nmiInjected = false;
        break;
      case SvmEventType.EXEPT:
        if (info2 & (1n << SVM_EXITINFOSHIFT_TS_HAS_ERROR_CODE)) {
          hasErrorCode = true;
          errorCode = Number(info2 & 0xffffffffn) >>> 0;
        }
        kvmClearExceptionQueue(vcpu);
        break;
      case SvmEventType.INTR:
      case SvmEventType.SOFT: // re-queued by completeInterrupts like an external one
        kvmClearInterruptQueue(vcpu);
        break;
      default:
        break;
    }
  }
  // The old task resumes after JMP/CALL/IRET, INT n, INT3 or INTO: skip it first.
  let insnRip: bigint | undefined;
  if (reason !== TASK_SWITCH_GATE || intType === SvmEventType.SOFT ||
    (intType === SvmEventType.EXEPT && (intVec === X86Vector.OF || intVec === X86Vector.BP))) {
    insnRip = vcpu.registerRead(KvmReg.RIP);
    const len = kvmEmulatedInsnLength(vcpu);
    if (len === 0) {
      internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_EMULATION, 'svm: cannot decode the instruction that started the task switch');
      return 0;
    }
    svm.nextRip = BigInt.asUintN(64, insnRip + BigInt(len));
    if (!vcpu.kvm.ops.skipEmulatedInstruction(vcpu)) return 0;
  }
  if (intType !== SvmEventType.SOFT) intVec = -1;
  return kvmTaskSwitch(vcpu, tssSelector, intVec, reason, hasErrorCode, errorCode, insnRip);
}
