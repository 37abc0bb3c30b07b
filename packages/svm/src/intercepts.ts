/**
 * Intercept-vector helpers (svm.h's set_intercept / clr_intercept family). Every change
 * clears the VMCB_INTERCEPTS clean bit: the processor may otherwise keep using its copy.
 */
import { Intercept1, Intercept2, Intercept3, V_INTR_PRIO_MASK, V_INTR_PRIO_SHIFT, V_IRQ_MASK, VMCB_CONTROL, VmcbCleanBit } from './vmcb/layout';
import type { VcpuSvm } from './vcpu-svm';

const WORD = {
  CR: VMCB_CONTROL.INTERCEPT_CR,
  DR: VMCB_CONTROL.INTERCEPT_DR,
  EXCEPTIONS: VMCB_CONTROL.INTERCEPT_EXCEPTIONS,
  MISC1: VMCB_CONTROL.INTERCEPT_MISC1,
  MISC2: VMCB_CONTROL.INTERCEPT_MISC2,
  MISC3: VMCB_CONTROL.INTERCEPT_MISC3,
} as const;
export type InterceptWord = keyof typeof WORD;

export function svmSetInterceptBit(svm: VcpuSvm, word: InterceptWord, bit: number, on: boolean): void {
  const fld = WORD[word];
  const before = svm.vmcb.read32(fld);
  svm.vmcb.setBit32(fld, bit, on);
  if (svm.vmcb.read32(fld) !== before) svm.vmcb.markDirty(VmcbCleanBit.I);
}

export function svmTestInterceptBit(svm: VcpuSvm, word: InterceptWord, bit: number): boolean {
  return svm.vmcb.testBit32(WORD[word], bit);
}

export const crReadBit = (cr: number) => cr;
export const crWriteBit = (cr: number) => 16 + cr;

export function setCrIntercept(svm: VcpuSvm, bit: number, on: boolean): void {
  svmSetInterceptBit(svm, 'CR', bit, on);
}
export function setExceptionIntercept(svm: VcpuSvm, vector: number, on: boolean): void {
  svmSetInterceptBit(svm, 'EXCEPTIONS', vector, on);
}
export function setIntercept1(svm: VcpuSvm, bit: Intercept1, on: boolean): void {
  svmSetInterceptBit(svm, 'MISC1', bit, on);
}
export function setIntercept2(svm: VcpuSvm, bit: Intercept2, on: boolean): void {
  svmSetInterceptBit(svm, 'MISC2', bit, on);
}
export function setIntercept3(svm: VcpuSvm, bit: Intercept3, on: boolean): void {
  svmSetInterceptBit(svm, 'MISC3', bit, on);
}

/**
 * svm_set_vintr: request a virtual interrupt (V_IRQ, highest priority, V_IGN_TPR clear) and
 * intercept VINTR, so the guest exits as soon as it can take an interrupt (APM 15.21.4).
 */
export function svmSetVintr(svm: VcpuSvm): void {
  setIntercept1(svm, Intercept1.VINTR, true);
  const v = svm.vmcb;
  const ctl = v.read32(VMCB_CONTROL.INT_CTL);
  v.write32(VMCB_CONTROL.INT_CTL, (ctl & ~V_INTR_PRIO_MASK) | V_IRQ_MASK | (0xf << V_INTR_PRIO_SHIFT));
  v.write8(VMCB_CONTROL.V_INTR_VECTOR, 0);
  v.markDirty(VmcbCleanBit.TPR);
}

/** svm_clear_vintr. */
export function svmClearVintr(svm: VcpuSvm): void {
  setIntercept1(svm, Intercept1.VINTR, false);
  const v = svm.vmcb;
  v.write32(VMCB_CONTROL.INT_CTL, v.read32(VMCB_CONTROL.INT_CTL) & ~V_IRQ_MASK);
  v.markDirty(VmcbCleanBit.TPR);
}
