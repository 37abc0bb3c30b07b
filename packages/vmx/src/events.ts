/**
 * Event injection (SDM Vol. 3C 27.6) through the VM-entry interruption-information field,
 * interrupt/NMI windows (25.6.2) and the guest interruptibility state (25.4.2).
 */
import { KvmVcpu, X86Vector } from '@tsvisor/core';
import { F } from './vmcs/fields';
import { toVmx } from './vcpu-vmx';
import * as D from './vmx-defs';
import { vmxCompleteInterrupts } from './vmenter';

/** KVM_X86_SHADOW_INT_* (the interrupt-shadow mask core uses). */
export const KVM_X86_SHADOW_INT_MOV_SS = 1;
export const KVM_X86_SHADOW_INT_STI = 2;

/** vmx_get_interrupt_shadow. */
export function vmxGetInterruptShadow(vcpu: KvmVcpu): number {
  const st = toVmx(vcpu).vmcs.read32(F.GUEST_INTERRUPTIBILITY_INFO);
  let r = 0;
  if (st & D.GUEST_INTR_STATE_STI) r |= KVM_X86_SHADOW_INT_STI;
  if (st & D.GUEST_INTR_STATE_MOV_SS) r |= KVM_X86_SHADOW_INT_MOV_SS;
  return r;
}

/** vmx_set_interrupt_shadow. */
export function vmxSetInterruptShadow(vcpu: KvmVcpu, mask: number): void {
  const v = toVmx(vcpu).vmcs;
  const old = v.read32(F.GUEST_INTERRUPTIBILITY_INFO);
  let st = old & ~(D.GUEST_INTR_STATE_STI | D.GUEST_INTR_STATE_MOV_SS);
  if (mask & KVM_X86_SHADOW_INT_MOV_SS) st |= D.GUEST_INTR_STATE_MOV_SS;
  else if (mask & KVM_X86_SHADOW_INT_STI) st |= D.GUEST_INTR_STATE_STI;
  if (st !== old) v.write32(F.GUEST_INTERRUPTIBILITY_INFO, st);
}

/** vmx_inject_irq. */
export function vmxInjectIrq(vcpu: KvmVcpu): void {
  const vmx = toVmx(vcpu);
  const v = vmx.vmcs;
  const irq = vcpu.arch.interrupt.nr & 0xff;
  let info = irq | D.INTR_INFO_VALID_MASK;
  if (vcpu.arch.interrupt.soft) {
    info |= D.INTR_TYPE_SOFT_INTR;
    v.write32(F.VM_ENTRY_INSTRUCTION_LEN, vmx.eventExitInstLen);
  } else info |= D.INTR_TYPE_EXT_INTR;
  v.write32(F.VM_ENTRY_INTR_INFO_FIELD, info >>> 0);
}

/** vmx_inject_nmi (virtual NMIs are always on). */
export function vmxInjectNmi(vcpu: KvmVcpu): void {
  toVmx(vcpu).vmcs.write32(F.VM_ENTRY_INTR_INFO_FIELD, (D.INTR_TYPE_NMI_INTR | D.INTR_INFO_VALID_MASK | X86Vector.NMI) >>> 0);
}

/** vmx_queue_exception: #BP and #OF are software exceptions and need the instruction length. */
export function vmxQueueException(vcpu: KvmVcpu): void {
  const vmx = toVmx(vcpu);
  const v = vmx.vmcs;
  const ex = vcpu.arch.exception;
  const nr = ex.nr;
  // kvm_deliver_exception_payload: a #PF's payload is CR2, a #DB's is DR6 (set before delivery).
  if (ex.hasPayload) {
    if (nr === X86Vector.PF) vcpu.arch.cr2 = ex.payload;
    else if (nr === X86Vector.DB) vcpu.arch.dr6 = (vcpu.arch.dr6 & ~0x4000fn) | ex.payload;
    ex.hasPayload = false;
  }
  let info = nr | D.INTR_INFO_VALID_MASK;
  // Real mode pushes no error code (kvm_inject_exception; SDM 27.2.1.3 forbids one with CR0.PE = 0).
  const protectedMode = (vcpu.readCr0() & 1n) !== 0n;
  if (ex.hasErrorCode && protectedMode) {
    v.write32(F.VM_ENTRY_EXCEPTION_ERROR_CODE, ex.errorCode);
    info |= D.INTR_INFO_DELIVER_CODE_MASK;
  }
  if (nr === X86Vector.BP || nr === X86Vector.OF) {
    v.write32(F.VM_ENTRY_INSTRUCTION_LEN, vmx.eventExitInstLen || 1);
    info |= D.INTR_TYPE_SOFT_EXCEPTION;
  } else info |= D.INTR_TYPE_HARD_EXCEPTION;
  v.write32(F.VM_ENTRY_INTR_INFO_FIELD, info >>> 0);
}

/** vmx_cancel_injection: take back what was about to be injected. */
export function vmxCancelInjection(vcpu: KvmVcpu): void {
  const v = toVmx(vcpu).vmcs;
  vmxCompleteInterrupts(vcpu, v.read32(F.VM_ENTRY_INTR_INFO_FIELD), F.VM_ENTRY_INSTRUCTION_LEN, F.VM_ENTRY_EXCEPTION_ERROR_CODE);
  v.write32(F.VM_ENTRY_INTR_INFO_FIELD, 0);
}

/** vmx_interrupt_blocked. */
export function vmxInterruptBlocked(vcpu: KvmVcpu): boolean {
  const v = toVmx(vcpu).vmcs;
  if (!(v.readLow(F.GUEST_RFLAGS) & 0x200)) return true;
  return (v.read32(F.GUEST_INTERRUPTIBILITY_INFO) & (D.GUEST_INTR_STATE_STI | D.GUEST_INTR_STATE_MOV_SS)) !== 0;
}

export function vmxInterruptAllowed(vcpu: KvmVcpu, _forInjection: boolean): number {
  return vmxInterruptBlocked(vcpu) ? 0 : 1;
}

/** vmx_nmi_blocked. */
export function vmxNmiBlocked(vcpu: KvmVcpu): boolean {
  return (toVmx(vcpu).vmcs.read32(F.GUEST_INTERRUPTIBILITY_INFO) &
    (D.GUEST_INTR_STATE_MOV_SS | D.GUEST_INTR_STATE_STI | D.GUEST_INTR_STATE_NMI)) !== 0;
}

export function vmxNmiAllowed(vcpu: KvmVcpu, _forInjection: boolean): number {
  return vmxNmiBlocked(vcpu) ? 0 : 1;
}

export function vmxGetNmiMask(vcpu: KvmVcpu): boolean {
  return (toVmx(vcpu).vmcs.read32(F.GUEST_INTERRUPTIBILITY_INFO) & D.GUEST_INTR_STATE_NMI) !== 0;
}

export function vmxSetNmiMask(vcpu: KvmVcpu, masked: boolean): void {
  const v = toVmx(vcpu).vmcs;
  const st = v.read32(F.GUEST_INTERRUPTIBILITY_INFO);
  v.write32(F.GUEST_INTERRUPTIBILITY_INFO, masked ? st | D.GUEST_INTR_STATE_NMI : st & ~D.GUEST_INTR_STATE_NMI);
}

function setExecControl(vcpu: KvmVcpu, bit: number): void {
  const v = toVmx(vcpu).vmcs;
  v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) | bit);
}

/** enable_irq_window. */
export function vmxEnableIrqWindow(vcpu: KvmVcpu): void {
  setExecControl(vcpu, D.CPU_BASED_INTR_WINDOW_EXITING);
}

/** enable_nmi_window: under STI blocking an NMI window would be immediate, so wait for the IRQ window. */
export function vmxEnableNmiWindow(vcpu: KvmVcpu): void {
  if (toVmx(vcpu).vmcs.read32(F.GUEST_INTERRUPTIBILITY_INFO) & D.GUEST_INTR_STATE_STI) {
    vmxEnableIrqWindow(vcpu);
    return;
  }
  setExecControl(vcpu, D.CPU_BASED_NMI_WINDOW_EXITING);
}

/** vmx_update_cr8_intercept: exit when the guest lowers its TPR below the highest pending IRR (SDM 29.1.2). */
export function vmxUpdateCr8Intercept(vcpu: KvmVcpu, tpr: number, irr: number): void {
  const v = toVmx(vcpu).vmcs;
  if (!(v.read32(F.CPU_BASED_VM_EXEC_CONTROL) & D.CPU_BASED_TPR_SHADOW)) return;
  v.write32(F.TPR_THRESHOLD, irr === -1 || tpr < irr ? 0 : irr & 0xf);
}
