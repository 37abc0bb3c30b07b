/**
 * The LAPIC timer in real guests on both backends (test-only use of the backend packages; core's
 * sources never import them). The guest halts with interrupts on; the virtual clock skips the
 * idle time to the timer deadline and the interrupt wakes it, exactly at 100 000 ns of guest time.
 */
import { KvmExitReason, BackendClass } from '@tsvisor/core';
import { bootGuest, buildLongModeGuest, runUntilStop } from '@tsvisor/testkit';
import { SvmBackend } from '@tsvisor/svm';
import { VmxBackend } from '@tsvisor/vmx';
import { lapicTimerGuest, TIMER_COUNT } from './lapic-timer-guest';

const backends: [string, BackendClass][] = [['svm', SvmBackend], ['vmx', VmxBackend]];

describe.each(backends)('LAPIC timer interrupt in a guest (%s)', (_name, backend) => {
  it('one-shot x2APIC timer wakes HLT at its deadline, handler runs once', () => {
    const guest = buildLongModeGuest((a) => lapicTimerGuest(a));
    const { kvm, vcpu } = bootGuest(backend, guest);
    kvm.createIrqchip();
    const out = runUntilStop(vcpu);
    expect(KvmExitReason[out.exitReason]).toBe('KVM_EXIT_HLT');
    expect(vcpu.getRegs().r15).toBe(1n);
    expect(kvm.stats.irqInjections).toBe(1);
    const now = kvm.clock.nowNs(vcpu);
    // Armed after the boot stub's couple of thousand instructions; the ~100 000 ns in HLT were skipped.
    expect(now).toBeGreaterThan(TIMER_COUNT);
    expect(now).toBeLessThan(TIMER_COUNT + 5000);
    expect(vcpu.cpu.state.instructionsRetired).toBeLessThan(5000);
  });
});
