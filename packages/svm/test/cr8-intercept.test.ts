/**
 * update_cr8_intercept (KVM's generic run loop → svm_update_cr8_intercept): with the local APIC
 * in the kernel, CR8 writes land in V_TPR without an exit while no pending interrupt is
 * masked by the TPR, and are intercepted while one is (TPR class ≥ highest IRR class), so that
 * lowering the TPR is seen at once (APM 15.21.4 V_TPR; KVM's sync_cr8_to_lapic on #VMEXIT).
 */
import { KvmExitReason, KvmMpState, KvmVcpu } from '@tsvisor/core';
import { bootGuest, buildLongModeGuest, cr8, eax, ecx, edx, rax } from '@tsvisor/testkit';
import { SvmBackend } from '@tsvisor/svm';

const X2APIC_SVR = 0x80f, X2APIC_SELF_IPI = 0x83f, IA32_APIC_BASE = 0x1b;

function guest() {
  return buildLongModeGuest((a) => {
    // x2APIC on, APIC software-enabled (SVR.8); interrupts stay disabled (IF = 0) throughout.
    a.mov(ecx, IA32_APIC_BASE);
    a.rdmsr();
    a.or(eax, 0xc00);
    a.wrmsr();
    a.mov(ecx, X2APIC_SVR);
    a.mov(eax, 0x1ff);
    a.xor(edx, edx);
    a.wrmsr();
    a.out(0x80, eax); // phase A: nothing pending
    for (let i = 0; i < 20; i++) {
      a.mov(eax, 3); a.mov(cr8, rax);
      a.mov(eax, 0); a.mov(cr8, rax);
    }
    a.mov(eax, 15); a.mov(cr8, rax);
    a.out(0x80, eax); // phase B: vector 0x50 pending under TPR 15
    a.mov(ecx, X2APIC_SELF_IPI);
    a.mov(eax, 0x50);
    a.xor(edx, edx);
    a.wrmsr();
    a.mov(eax, 14); a.mov(cr8, rax); // still masks class 5: intercepted, seen by KVM
    a.mov(eax, 4); a.mov(cr8, rax); // unmasks it
    a.mov(eax, 3); a.mov(cr8, rax); // nothing masked any more: V_TPR only
    a.out(0x80, eax);
    a.hlt();
  });
}

function toOut(v: KvmVcpu): void {
  for (let i = 0; i < 100; i++) {
    const r = v.runVcpu();
    if (r.exitReason === KvmExitReason.KVM_EXIT_IO) return;
    if (r.exitReason !== KvmExitReason.KVM_EXIT_INTR) throw new Error(`unexpected exit ${KvmExitReason[r.exitReason]}: ${r.internalMessage}`);
  }
  throw new Error('no OUT');
}

test('CR8 writes exit only while the TPR masks a pending interrupt', () => {
  const g = guest();
  const { kvm, vcpu } = bootGuest(SvmBackend, g, { memory: 4 << 20 });
  kvm.createIrqchip();
  vcpu.setMpState(KvmMpState.RUNNABLE);
  const writes = () => vcpu.exitCounts.get('write_cr8') ?? 0;
  toOut(vcpu);
  const a0 = writes();
  toOut(vcpu);
  expect(writes() - a0).toBe(0); // 41 CR8 writes, none intercepted
  const b0 = writes();
  toOut(vcpu);
  // CR8 ← 14 and CR8 ← 4 exit (the TPR masked vector 0x50); CR8 ← 3 after that does not.
  expect(writes() - b0).toBe(2);
  expect(kvm.irqchip!.lapic(vcpu)!.getReg(0x80)).toBe(0x30);
  expect(kvm.irqchip!.lapic(vcpu)!.highestIrr()).toBe(0x50);
});
