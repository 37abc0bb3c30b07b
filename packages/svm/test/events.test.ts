/**
 * Event injection on SVM: EVENTINJ (APM 15.20), the interrupt window through V_IRQ + the
 * VINTR intercept (15.21.4), NMIs masked until the guest's IRET (IRET intercept).
 */
import { KvmExitReason, KvmReq } from '@tsvisor/core';
import { Assembler, al, eax, rax, rdi, word, dword, mem } from '@tsvisor/testkit';
import { svmOf, VMCB_CONTROL, Intercept1, V_IRQ_MASK, SvmExit } from '@tsvisor/svm';
import { longModeGuest, exitCount } from './helpers';

const IDT = 0x60000;


function buildIdtGuest(vectors: number[], body: (a: Assembler) => void) {
  return longModeGuest((a) => {
    const handler = a.label('irq_handler');
    const idtr = a.label('idtr');
    const start = a.label('start');
    a.jmp(start);
    a.bind(handler);
    a.mov(al, 0x55);
    a.out(0x81, al);
    a.iretq();
    a.align(8, 0);
    a.bind(idtr);
    a.dw(256 * 16 - 1);
    a.dq(IDT);
    a.bind(start);
    for (const v of vectors) {
      a.mov(eax, IDT + v * 16);
      a.mov(rdi, rax);
      a.lea(rax, mem(handler));
      a.mov(dword(rdi), eax); // offset 15:0 (selector written next overwrites 31:16)
      a.mov(word(rdi, 2), 0x18);
      a.mov(word(rdi, 4), 0x8e00);
      a.shr(rax, 16);
      a.mov(dword(rdi, 6), eax); // offset 63:16 (stub code lies below 4 GiB)
      a.mov(dword(rdi, 12), 0);
    }
    a.lidt(mem(idtr));
    body(a);
  });
}

function runToExit(vcpu: ReturnType<typeof longModeGuest>['vcpu']) {
  let run = vcpu.runVcpu();
  while (run.exitReason === KvmExitReason.KVM_EXIT_INTR) run = vcpu.runVcpu();
  return run;
}

describe('SVM event injection', () => {
  test('interrupt window through V_IRQ + VINTR, then KVM_INTERRUPT delivered through EVENTINJ', () => {
    const { vcpu } = buildIdtGuest([0x30], (a) => {
      a.mov(al, 1);
      a.out(0x80, al); // checkpoint: IF is still 0
      a.sti();
      a.nop();
      const spin = a.here('spin');
      a.jmp(spin);
    });
    let run = runToExit(vcpu);
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.io.port).toBe(0x80);
    expect(run.readyForInterruptInjection).toBe(false);
    run.requestInterruptWindow = true;
    const svm = svmOf(vcpu);
    run = runToExit(vcpu);
    // enable_irq_window set V_IRQ and the VINTR intercept; the guest's STI opened the window.
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IRQ_WINDOW_OPEN);
    expect(exitCount(vcpu, 'vintr')).toBe(1);
    expect(svm.vmcb.read32(VMCB_CONTROL.INT_CTL) & V_IRQ_MASK).toBe(0);
    expect(svm.vmcb.testBit32(VMCB_CONTROL.INTERCEPT_MISC1, Intercept1.VINTR)).toBe(false);
    run.requestInterruptWindow = false;
    vcpu.interrupt(0x30);
    run = runToExit(vcpu);
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.io.port).toBe(0x81);
    expect(run.ioData[0]).toBe(0x55);
    // EVENTINJ was consumed at VMRUN.
    expect(svm.vmcb.read64(VMCB_CONTROL.EVENTINJ)).toBe(0n);
  });

  test('an NMI is injected through EVENTINJ and masks further NMIs until the IRET intercept fires', () => {
    const { vcpu } = buildIdtGuest([2], (a) => {
      a.mov(al, 1);
      a.out(0x80, al);
      const spin = a.here('spin');
      a.jmp(spin);
    });
    let run = runToExit(vcpu);
    expect(run.io.port).toBe(0x80);
    const svm = svmOf(vcpu);
    vcpu.nmi();
    vcpu.nmi();
    run = runToExit(vcpu);
    // The handler ran for the first NMI…
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.io.port).toBe(0x81);
    expect(vcpu.kvm.ops.getNmiMask(vcpu)).toBe(true);
    expect(svm.vmcb.testBit32(VMCB_CONTROL.INTERCEPT_MISC1, Intercept1.IRET)).toBe(true);
    expect(vcpu.kvm.ops.nmiAllowed(vcpu, true)).toBe(0);
    // …and the second waits for its IRET: one IRET exit, then the second NMI's handler.
    run = runToExit(vcpu);
    expect(exitCount(vcpu, 'iret')).toBe(1);
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.io.port).toBe(0x81);
  });

  test('queueException → EVENTINJ with the error code; cancelInjection moves it back to the queue', () => {
    const { vcpu } = longModeGuest((a) => a.hlt());
    const ops = vcpu.kvm.ops;
    const svm = svmOf(vcpu);
    vcpu.arch.exception.nr = 13;
    vcpu.arch.exception.hasErrorCode = true;
    vcpu.arch.exception.errorCode = 0x28;
    vcpu.arch.exception.injected = true;
    ops.queueException(vcpu);
    expect(svm.vmcb.read64(VMCB_CONTROL.EVENTINJ)).toBe((0x28n << 32n) | (1n << 31n) | (1n << 11n) | (3n << 8n) | 13n);
    ops.cancelInjection(vcpu);
    expect(svm.vmcb.read64(VMCB_CONTROL.EVENTINJ)).toBe(0n);
    expect(vcpu.arch.exception).toMatchObject({ injected: true, nr: 13, hasErrorCode: true, errorCode: 0x28 });
    expect(vcpu.requests & KvmReq.EVENT).toBeTruthy();
    vcpu.arch.interrupt.nr = 0x41;
    ops.setIrq(vcpu);
    expect(svm.vmcb.read64(VMCB_CONTROL.EVENTINJ)).toBe((1n << 31n) | 0x41n);
    ops.cancelInjection(vcpu);
    expect(vcpu.arch.interrupt).toMatchObject({ injected: true, nr: 0x41, soft: false });
  });

  test('interruptAllowed follows RFLAGS.IF and the VMCB interrupt shadow', () => {
    const { vcpu } = longModeGuest((a) => a.hlt());
    const ops = vcpu.kvm.ops;
    ops.setRflags(vcpu, 0x202n);
    expect(ops.interruptAllowed(vcpu, false)).toBe(1);
    ops.setInterruptShadow(vcpu, 1);
    expect(svmOf(vcpu).vmcb.read64(VMCB_CONTROL.INTERRUPT_SHADOW)).toBe(1n);
    expect(ops.getInterruptShadow(vcpu)).toBe(3);
    expect(ops.interruptAllowed(vcpu, false)).toBe(0);
    expect(ops.nmiAllowed(vcpu, false)).toBe(0);
    ops.setInterruptShadow(vcpu, 0);
    expect(ops.getInterruptShadow(vcpu)).toBe(0);
    ops.setRflags(vcpu, 0x2n);
    expect(ops.interruptAllowed(vcpu, false)).toBe(0);
  });

  test('updateCr8Intercept: CR8 writes exit only while the TPR masks the highest pending IRQ', () => {
    const { vcpu } = longModeGuest((a) => a.hlt());
    const v = svmOf(vcpu).vmcb;
    const cr8w = () => v.testBit32(VMCB_CONTROL.INTERCEPT_CR, 16 + 8);
    vcpu.kvm.ops.updateCr8Intercept!(vcpu, 5, -1);
    expect(cr8w()).toBe(false);
    vcpu.kvm.ops.updateCr8Intercept!(vcpu, 5, 4);
    expect(cr8w()).toBe(true);
    vcpu.kvm.ops.updateCr8Intercept!(vcpu, 3, 4);
    expect(cr8w()).toBe(false);
  });

  test('exit codes for events are counted with KVM names', () => {
    expect(SvmExit.VINTR).toBe(0x64);
    expect(SvmExit.IRET).toBe(0x74);
  });
});
