/** The rest of the intercept list: PAUSE with its filter count, RDTSC, RDPMC, RSM, descriptor-table writes. */
import { KvmExitReason, KvmReg } from '@tsvisor/core';
import { eax, ecx, edx, mem, rax, cr4 } from '@tsvisor/testkit';
import { svmOf, svmModuleParams, VMCB_CONTROL, VMCB_SAVE, Intercept1, VmcbCleanBit } from '@tsvisor/svm';
import { longModeGuest, runToHlt, exitCount } from './helpers';

function pauseGuest() {
  return longModeGuest((a) => {
    for (let i = 0; i < 10; i++) a.pause();
    a.hlt();
  });
}

describe('PAUSE intercept with the pause filter (APM 15.14.4)', () => {
  test('the processor lets PAUSE_FILTER_COUNT PAUSEs through per VMRUN; KVM doubles the count on each exit', () => {
    svmModuleParams.pauseFilterCount = 3;
    let g;
    try {
      g = pauseGuest();
    } finally {
      svmModuleParams.pauseFilterCount = 0;
    }
    const { vcpu } = g;
    const svm = svmOf(vcpu);
    expect(svm.vmcb.testBit32(VMCB_CONTROL.INTERCEPT_MISC1, Intercept1.PAUSE)).toBe(true);
    runToHlt(vcpu);
    // 3 through, exit on the 4th; count 6: 4th–9th through, exit on the 10th; count 12: the rest.
    expect(exitCount(vcpu, 'pause')).toBe(2);
    expect(svm.vmcb.read16(VMCB_CONTROL.PAUSE_FILTER_COUNT)).toBe(12);
    // Every PAUSE retired exactly once, as without the intercept.
    const plain = pauseGuest();
    runToHlt(plain.vcpu);
    expect(exitCount(plain.vcpu, 'pause')).toBe(0);
    expect(vcpu.cpu.state.instructionsRetired).toBe(plain.vcpu.cpu.state.instructionsRetired);
  });
});

describe('RDTSC, RDPMC, RSM, descriptor tables', () => {
  test('RDTSC intercepted (0x6E): EDX:EAX = TSC + TSC_OFFSET', () => {
    const { vcpu } = longModeGuest((a) => {
      a.rdtsc();
      a.hlt();
    });
    const svm = svmOf(vcpu);
    svm.vmcb.setBit32(VMCB_CONTROL.INTERCEPT_MISC1, Intercept1.RDTSC, true);
    svm.vmcb.markDirty(VmcbCleanBit.I);
    vcpu.kvm.ops.writeL1TscOffset(vcpu, 0x1234_0000_0000n);
    runToHlt(vcpu);
    expect(exitCount(vcpu, 'rdtsc')).toBe(1);
    const r = vcpu.getRegs();
    const tsc = (r.rdx << 32n) | r.rax;
    expect(tsc >= 0x1234_0000_0000n).toBe(true);
    expect(tsc - 0x1234_0000_0000n <= vcpu.cpu.state.tsc).toBe(true);
  });

  test('RDPMC is intercepted (KVM default) and answered from the AMD PMU', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(ecx, 0xc0010004);
      a.mov(eax, 500);
      a.xor(edx, edx);
      a.wrmsr();
      a.xor(ecx, ecx);
      a.rdpmc();
      a.hlt();
    });
    runToHlt(vcpu);
    expect(exitCount(vcpu, 'rdpmc')).toBe(1);
    expect(vcpu.getRegs().rax).toBe(500n);
  });

  test('RSM outside SMM is #UD (the stub has no IDT: shutdown)', () => {
    const { vcpu } = longModeGuest((a) => {
      a.db(0x0f, 0xaa);
      a.hlt();
    });
    let run = vcpu.runVcpu();
    while (run.exitReason === KvmExitReason.KVM_EXIT_INTR) run = vcpu.runVcpu();
    expect(exitCount(vcpu, 'rsm')).toBe(1);
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_SHUTDOWN);
  });

  test('LIDT intercepted (IDTR write, 0x6A) is emulated and lands in the VMCB IDTR', () => {
    const { vcpu } = longModeGuest((a) => {
      const idtr = a.label('new_idtr');
      const go = a.label('go');
      a.jmp(go);
      a.align(8, 0);
      a.bind(idtr);
      a.dw(0x7ff);
      a.dq(0x123000);
      a.bind(go);
      a.lidt(mem(idtr));
      a.hlt();
    });
    const svm = svmOf(vcpu);
    svm.vmcb.setBit32(VMCB_CONTROL.INTERCEPT_MISC1, Intercept1.IDTR_WRITE, true);
    svm.vmcb.markDirty(VmcbCleanBit.I);
    runToHlt(vcpu);
    // The stub's real-mode LIDT (null IDT) and ours in long mode.
    expect(exitCount(vcpu, 'write_idtr')).toBe(2);
    expect(svm.vmcb.segBase(VMCB_SAVE.IDTR)).toBe(0x123000n);
    expect(svm.vmcb.segLimit(VMCB_SAVE.IDTR)).toBe(0x7ff);
    expect(vcpu.registerRead(KvmReg.RIP)).toBeGreaterThan(0n);
  });
});

describe('instructions KVM intercepts and emulates as no-ops or simple updates', () => {
  test('WBINVD (0x89), INVD (0x76), MONITOR (0x8A), MWAIT (0x8B), INVLPGA (0x7A) are skipped; XSETBV (0x8D) sets XCR0', () => {
    const { vcpu } = longModeGuest((a) => {
      a.wbinvd();
      a.invd();
      a.db(0x0f, 0x01, 0xc8); // MONITOR
      a.db(0x0f, 0x01, 0xc9); // MWAIT
      a.xor(eax, eax);
      a.db(0x0f, 0x01, 0xdf); // INVLPGA
      a.mov(rax, cr4);
      a.or(eax, 1 << 18); // CR4.OSXSAVE, so XSETBV does not #UD before its intercept
      a.mov(cr4, rax);
      a.xor(ecx, ecx);
      a.xor(edx, edx);
      a.mov(eax, 3);
      a.xsetbv();
      a.hlt();
    });
    runToHlt(vcpu);
    for (const n of ['wbinvd', 'invd', 'monitor', 'mwait', 'invlpga', 'xsetbv']) expect([n, exitCount(vcpu, n)]).toEqual([n, 1]);
    expect(vcpu.arch.xcr0).toBe(3n);
  });

  test('VMRUN/VMLOAD/VMSAVE/STGI/CLGI/SKINIT are #UD in the guest (nested SVM not offered)', () => {
    const { vcpu } = longModeGuest((a) => {
      a.db(0x0f, 0x01, 0xdc); // STGI
      a.hlt();
    });
    let run = vcpu.runVcpu();
    while (run.exitReason === KvmExitReason.KVM_EXIT_INTR) run = vcpu.runVcpu();
    expect(exitCount(vcpu, 'stgi')).toBe(1);
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_SHUTDOWN);
  });
});
