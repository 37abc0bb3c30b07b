/**
 * handle_task_switch (arch/x86/kvm/vmx/vmx.c): exit reason 9. Task switches always exit in
 * VMX non-root operation (SDM 26.4.2), after the checks the SDM lists there (gate P and DPL,
 * TSS descriptor DPL, the IRET back link); core's kvmTaskSwitch then performs the switch.
 *
 * Exit qualification (SDM 28.2.1, Table 28-2): bits 15:0 the TSS selector, bits 31:30 the
 * source (0 CALL, 1 IRET, 2 JMP, 3 task gate in the IDT) — the same numbering as KVM's
 * TASK_SWITCH_*. For a task gate the IDT-vectoring information (SDM 28.2.4) names the event
 * being delivered: vmxCompleteInterrupts re-queued it, and since the switch delivers it, its
 * pending-injection state is cleared here; an exception's error code comes from the
 * IDT-vectoring error-code field and goes on the new task's stack.
 */
import { KvmVcpu, TASK_SWITCH_GATE, kvmClearExceptionQueue, kvmClearInterruptQueue, kvmTaskSwitch } from '@tsvisor/core';
import { F } from './vmcs/fields';
import { toVmx } from './vcpu-vmx';
import * as D from './vmx-defs';
import { vmxSetNmiMask } from './events';

export function handleTaskSwitch(vcpu: KvmVcpu): number {
  const vmx = toVmx(vcpu);
  const v = vmx.vmcs;
  const info = vmx.idtVectoringInfo;
  const idtV = (info & D.INTR_INFO_VALID_MASK) !== 0;
  const idtIndex = info & D.INTR_INFO_VECTOR_MASK;
  const type = info & D.INTR_INFO_INTR_TYPE_MASK;
  const q = Number(v.readNat(F.EXIT_QUALIFICATION) & 0xffffffffn);
  const reason = q >>> 30;
  const tssSelector = q & 0xffff;
  let hasErrorCode = false;
  let errorCode = 0;
  if (vcpu.kvm.tracing('kvm_task_switch')) {
    vcpu.kvm.trace('kvm_task_switch', vcpu, () => `vmx qualification 0x${(q >>> 0).toString(16)} idt_vectoring_info 0x${(info >>> 0).toString(16)}` +
      (idtV && info & D.INTR_INFO_DELIVER_CODE_MASK ? ` idt_vectoring_error_code 0x${v.read32(F.IDT_VECTORING_ERROR_CODE).toString(16)}` : ''));
  }
  if (reason === TASK_SWITCH_GATE && idtV) {
    switch (type) {
      case D.INTR_TYPE_NMI_INTR:
        // The NMI is delivered by the switch: it now blocks further NMIs (SDM 6.7.1).
        vcpu.arch.nmiInjected = false;
        vmxSetNmiMask(vcpu, true);
        break;
      case D.INTR_TYPE_EXT_INTR:
      case D.INTR_TYPE_SOFT_INTR:
        kvmClearInterruptQueue(vcpu);
        break;
      case D.INTR_TYPE_HARD_EXCEPTION:
        if (info & D.INTR_INFO_DELIVER_CODE_MASK) {
          hasErrorCode = true;
          errorCode = v.read32(F.IDT_VECTORING_ERROR_CODE);
        }
        kvmClearExceptionQueue(vcpu);
        break;
      case D.INTR_TYPE_SOFT_EXCEPTION:
      case D.INTR_TYPE_PRIV_SW_EXCEPTION:
        kvmClearExceptionQueue(vcpu);
        break;
      default:
        break;
    }
  }
  // JMP/CALL/IRET and software interrupts/exceptions: the old task resumes after the
  // instruction (SDM 27.2.5 gives its length), so skip it before its EIP is saved.
  let insnRip: bigint | undefined;
  if (!idtV || (type !== D.INTR_TYPE_HARD_EXCEPTION && type !== D.INTR_TYPE_EXT_INTR && type !== D.INTR_TYPE_NMI_INTR)) {
    insnRip = vcpu.rip;
    if (!vcpu.kvm.ops.skipEmulatedInstruction(vcpu)) return 0;
  }
  return kvmTaskSwitch(vcpu, tssSelector, type === D.INTR_TYPE_SOFT_INTR && idtV ? idtIndex : -1, reason, hasErrorCode, errorCode, insnRip);
}
