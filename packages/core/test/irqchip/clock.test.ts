import { KVM_TSC_HZ } from '../../src';
import { guest, irqVm } from './helpers';

describe('the VM clock', () => {
  it('virtual time is retired instructions (1 ns each) per vCPU; VM time is the furthest vCPU', () => {
    const { kvm, vcpus: [a, b] } = irqVm({ vcpus: 2, irqchip: false });
    expect(kvm.clock.mode).toBe('virtual');
    expect(KVM_TSC_HZ).toBe(1e9);
    a.runBudget = 1234;
    a.runVcpu();
    b.runBudget = 99;
    b.runVcpu();
    expect(kvm.clock.nowNs(a)).toBe(1234);
    expect(kvm.clock.nowNs(b)).toBe(99);
    expect(kvm.clock.nowNs()).toBe(1234);
  });

  it('VM timers fire in deadline order from the run loop, and bound the entry budget', () => {
    const { kvm, vcpus: [v] } = irqVm({ irqchip: false });
    const fired: [string, number][] = [];
    kvm.clock.addTimer(700, () => fired.push(['b', kvm.clock.nowNs()]));
    const t = kvm.clock.addTimer(300, () => fired.push(['a', kvm.clock.nowNs()]));
    const c = kvm.clock.addTimer(500, () => fired.push(['c', kvm.clock.nowNs()]));
    c.cancel();
    expect(kvm.clock.nextDeadline()).toBe(300);
    expect(kvm.clock.entryBudget(v, 10_000)).toBe(300);
    v.runBudget = 1000;
    v.runVcpu();
    expect(fired).toEqual([['a', 300], ['b', 700]]);
    expect(t.armed).toBe(false);
    expect(kvm.clock.nextDeadline()).toBe(Infinity);
    expect(guest(v).entries).toBe(3); // 300, 400, 300: each entry stopped at the next deadline
    // A periodic device timer re-arms itself from its callback.
    let ticks = 0;
    kvm.clock.addTimer(kvm.clock.nowNs() + 100, (tm) => { ticks++; tm.arm(tm.deadlineNs + 100); });
    v.runVcpu();
    expect(ticks).toBe(9); // 1100..1900; the one due at 2000, where the budget ends, fires on the next KVM_RUN
  });

  it('host mode follows the host clock and sleeps until a deadline', () => {
    const { kvm, vcpus: [v] } = irqVm({ irqchip: false, clock: 'host' });
    const t0 = kvm.clock.nowNs();
    expect(kvm.clock.sleepUntil(t0 + 2e6)).toBe(true);
    expect(kvm.clock.nowNs() - t0).toBeGreaterThanOrEqual(2e6);
    kvm.clock.addTimer(kvm.clock.nowNs() + 1e9, () => undefined);
    expect(kvm.clock.entryBudget(v, 1e6)).toBe(20_000);
    expect(() => kvm.clock.setMode('fast' as never)).toThrow(/EINVAL: clock mode must be 'virtual' or 'host'/);
    expect(() => kvm.clock.addTimer(NaN, () => undefined)).toThrow(/finite/);
  });
});
