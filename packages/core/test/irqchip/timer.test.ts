import { KvmExitReason, KvmMpState } from '../../src';
import { apicRead, apicWrite, guest, irqVm, swEnable, withTscDeadline, withoutTscDeadline, wrmsr, rdmsr } from './helpers';

const EOI = 0xb0, LVTT = 0x320, TMICT = 0x380, TMCCT = 0x390, TDCR = 0x3e0, LVT0 = 0x350;

/** A guest whose handler EOIs each interrupt (and records its arrival time). */
function timerVm() {
  const r = irqVm();
  const v = r.vcpus[0];
  swEnable(v);
  apicWrite(v, LVT0, 0x10000);
  guest(v).onIrq = () => apicWrite(v, EOI, 0);
  return { ...r, v };
}

describe('LAPIC timer on the virtual clock (1 instruction = 1 ns, APIC bus 1 GHz)', () => {
  it('one-shot fires after initial-count × divisor ns, at an instruction boundary', () => {
    const { v } = timerVm();
    apicWrite(v, TDCR, 0x1); // divide by 4
    apicWrite(v, LVTT, 0x40);
    apicWrite(v, TMICT, 2500); // 10 000 ns
    expect(apicRead(v, TMCCT)).toBe(2500);
    v.runBudget = 4000;
    v.runVcpu();
    expect(v.cpu.state.instructionsRetired).toBe(4000);
    expect(apicRead(v, TMCCT)).toBe(1500);
    v.runBudget = 20_000;
    v.runVcpu();
    expect(guest(v).injected).toEqual([{ vector: 0x40, at: 10_000 }]);
    expect(apicRead(v, TMCCT)).toBe(0);
  });

  it('periodic re-arms every period; a masked LVT counts but delivers nothing', () => {
    const { v } = timerVm();
    apicWrite(v, TDCR, 0xb); // divide by 1
    apicWrite(v, LVTT, 0x20041); // periodic, vector 0x41
    apicWrite(v, TMICT, 300_000);
    v.runBudget = 1_000_000;
    v.runVcpu();
    expect(guest(v).injected.map((i) => i.at)).toEqual([300_000, 600_000, 900_000]);
    apicWrite(v, LVTT, 0x30041); // masked
    v.runVcpu();
    expect(guest(v).injected).toHaveLength(3);
    expect(apicRead(v, TMCCT)).toBe(100_000); // at 2 000 000 the next tick is 2 100 000
  });

  it('periodic faster than KVM\'s 200 µs minimum is slowed to it', () => {
    const { v } = timerVm();
    apicWrite(v, TDCR, 0xb);
    apicWrite(v, LVTT, 0x20042);
    apicWrite(v, TMICT, 10);
    v.runBudget = 450_000;
    v.runVcpu();
    expect(guest(v).injected.map((i) => i.at)).toEqual([200_000, 400_000]);
  });

  it('TSC-deadline mode fires when the guest TSC reaches IA32_TSC_DEADLINE, then disarms', () => {
    const { v } = timerVm();
    // Without CPUID.TSC_DEADLINE the mode bit is not writable (one-shot stays).
    withoutTscDeadline(v);
    apicWrite(v, LVTT, 0x40043);
    expect(apicRead(v, LVTT)).toBe(0x43);
    withTscDeadline(v);
    apicWrite(v, LVTT, 0x40043);
    expect(apicRead(v, LVTT)).toBe(0x40043);
    apicWrite(v, TMICT, 5); // ignored in TSC-deadline mode
    expect(apicRead(v, TMICT)).toBe(0);
    v.setMsr(0x10, 1_000_000n); // guest TSC = 1e6 now (offset), time is still 0
    expect(wrmsr(v, 0x6e0, 1_050_000n)).toBe(0);
    expect(rdmsr(v, 0x6e0)).toBe(1_050_000n);
    v.runBudget = 100_000;
    v.runVcpu();
    expect(guest(v).injected).toEqual([{ vector: 0x43, at: 50_000 }]);
    expect(rdmsr(v, 0x6e0)).toBe(0n);
    // A deadline in the past fires at once; writing 0 disarms.
    wrmsr(v, 0x6e0, 5n);
    wrmsr(v, 0x6e0, 0n);
    v.runVcpu();
    expect(guest(v).injected).toHaveLength(1);
    wrmsr(v, 0x6e0, 5n);
    v.runVcpu();
    expect(guest(v).injected).toHaveLength(2);
    // Leaving TSC-deadline mode clears the deadline; the MSR reads 0 outside it.
    wrmsr(v, 0x6e0, 10_000_000n);
    apicWrite(v, LVTT, 0x43);
    expect(rdmsr(v, 0x6e0)).toBe(0n);
  });

  it('changing the divisor keeps the remaining count', () => {
    const { v } = timerVm();
    apicWrite(v, TDCR, 0xb);
    apicWrite(v, LVTT, 0x44);
    apicWrite(v, TMICT, 1000);
    v.runBudget = 400;
    v.runVcpu();
    expect(apicRead(v, TMCCT)).toBe(600);
    apicWrite(v, TDCR, 0x0); // divide by 2: 600 counts left = 1200 ns
    expect(apicRead(v, TMCCT)).toBe(600);
    v.runBudget = 2000;
    v.runVcpu();
    expect(guest(v).injected.map((i) => i.at)).toEqual([1600]);
  });
});

describe('HLT with the in-kernel irqchip', () => {
  it('skips idle time to the next timer and wakes on its interrupt', () => {
    const { v } = timerVm();
    apicWrite(v, TDCR, 0xb);
    apicWrite(v, LVTT, 0x45);
    apicWrite(v, TMICT, 1_000_000);
    guest(v).haltAt = 100;
    guest(v).onIrq = () => {
      apicWrite(v, EOI, 0);
      guest(v).haltAt = v.cpu.state.instructionsRetired + 50;
    };
    const r = v.runVcpu();
    expect(guest(v).injected).toEqual([{ vector: 0x45, at: 1_000_000 }]);
    // 100 instructions, the first HLT (KVM completes it: kvm_skip_emulated_instruction counts
    // it as retired), 50 more and the second HLT.
    expect(v.cpu.state.instructionsRetired).toBe(152);
    expect(v.kvm.clock.nowNs(v)).toBe(1_000_051);
    // The TSC kept counting while halted.
    expect(v.getMsr(0x10)).toBe(1_000_051n);
    // Halted with no timer and no other vCPU: nothing can wake it.
    expect(r.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(v.getMpState()).toBe(KvmMpState.HALTED);
  });

  it('with interrupts disabled a timer cannot wake the vCPU (cli; hlt)', () => {
    const { v } = timerVm();
    apicWrite(v, TDCR, 0xb);
    apicWrite(v, LVTT, 0x46);
    apicWrite(v, TMICT, 1000);
    guest(v).if = false;
    guest(v).haltAt = 10;
    expect(v.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(v.kvm.clock.nowNs(v)).toBe(11); // 10 instructions and the HLT
  });

  it('a halted vCPU yields (KVM_EXIT_INTR) while another vCPU can run, and catches up with VM time', () => {
    const { kvm, vcpus: [a, b] } = irqVm({ vcpus: 2 });
    swEnable(a);
    apicWrite(a, LVT0, 0x10000);
    apicWrite(a, TDCR, 0xb);
    apicWrite(a, LVTT, 0x47);
    apicWrite(a, TMICT, 50_000);
    guest(a).haltAt = 10;
    b.setMpState(KvmMpState.RUNNABLE);
    expect(a.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_INTR);
    expect(guest(a).injected).toHaveLength(0);
    b.runBudget = 60_000;
    b.runVcpu(); // the other vCPU moves VM time to 60 000
    expect(kvm.clock.nowNs()).toBe(60_000);
    guest(a).onIrq = () => apicWrite(a, 0xb0, 0);
    a.runVcpu();
    expect(guest(a).injected).toEqual([{ vector: 0x47, at: 60_000 }]);
  });

  it('the same program gives the same timeline on every run (virtual clock)', () => {
    const timeline = () => {
      const { v } = timerVm();
      apicWrite(v, TDCR, 0x3); // divide by 16
      apicWrite(v, LVTT, 0x20048);
      apicWrite(v, TMICT, 20_000);
      guest(v).onIrq = () => {
        apicWrite(v, EOI, 0);
        guest(v).haltAt = v.cpu.state.instructionsRetired + 777;
      };
      guest(v).haltAt = 5;
      v.runBudget = 10_000;
      for (let i = 0; i < 40; i++) v.runVcpu();
      return guest(v).injected.map((x) => x.at).join(',');
    };
    const t = timeline();
    expect(t.split(',').length).toBeGreaterThan(3);
    expect(timeline()).toBe(t);
  });
});
