/**
 * The in-kernel 8254 (KVM_CREATE_PIT2) with real guests on both backends: counter 0's
 * interrupts reach the guest through the 8259 and through IOAPIC pin 2 (GSI 0's default
 * routes), periodic (modes 2 and 3) and one-shot (mode 0), at the guest time the count names;
 * every PIT and port-0x61 access is served in the kernel (no KVM_EXIT_IO reaches userspace),
 * and under the Machine a PIT-calibration loop costs no userspace exits.
 */
import { BackendClass, KvmExitReason, KVM_PIT_FREQ, KVM_PIT_SPEAKER_DUMMY, Machine } from '@tsvisor/core';
import { bootGuest, buildLongModeGuest, buildMultibootKernel, runUntilStop, Assembler, al, eax, ecx, dx } from '@tsvisor/testkit';
import { SvmBackend } from '@tsvisor/svm';
import { VmxBackend } from '@tsvisor/vmx';
import { pitGuest, PitGuestOptions } from './pit-guest';

const BACKENDS: [string, BackendClass][] = [['vmx', VmxBackend], ['svm', SvmBackend]];
const IOAPIC = 0xfec00000;
const CAL_COUNT = 60;

/** ns for `ticks` input clocks. */
const ns = (ticks: number) => (ticks * 1e9) / KVM_PIT_FREQ;

function runPitGuest(backend: BackendClass, o: PitGuestOptions) {
  const { kvm, vcpu } = bootGuest(backend, buildLongModeGuest((a) => pitGuest(a, o)));
  kvm.createIrqchip();
  kvm.createPit2(KVM_PIT_SPEAKER_DUMMY);
  if (o.route === 'ioapic') {
    // Redirection entry for pin 2 (GSI 0): vector 0x20, fixed, physical, edge, destination APIC 0.
    const w = (addr: number, v: number) => kvm.mmioBus.write(addr, 4, new Uint8Array(new Uint32Array([v]).buffer));
    w(IOAPIC, 0x10 + 2 * 2 + 1);
    w(IOAPIC + 0x10, 0);
    w(IOAPIC, 0x10 + 2 * 2);
    w(IOAPIC + 0x10, 0x20);
  }
  const ioPorts: number[] = [];
  const out = runUntilStop(vcpu, {
    onExit: (run) => {
      if (run.exitReason === KvmExitReason.KVM_EXIT_IO) ioPorts.push(run.io.port);
    },
  });
  return { kvm, vcpu, out, ioPorts, regs: vcpu.getRegs() };
}

describe.each(BACKENDS)('in-kernel 8254 with a guest (%s)', (_name, backend) => {
  it.each([
    ['mode 2, through the 8259', { mode: 2, count: 1193, irqs: 5, route: 'pic' }],
    ['mode 3, through the 8259', { mode: 3, count: 2386, irqs: 3, route: 'pic' }],
    ['mode 2, through IOAPIC pin 2', { mode: 2, count: 1193, irqs: 4, route: 'ioapic' }],
  ] as [string, PitGuestOptions][])('periodic IRQ 0 (%s) at every period, no KVM_EXIT_IO', (_what, o) => {
    const { kvm, out, ioPorts, regs } = runPitGuest(backend, o);
    expect(KvmExitReason[out.exitReason]).toBe('KVM_EXIT_HLT');
    expect(ioPorts).toEqual([]); // 0x20/0x21, 0x40–0x43 and 0x61 all answered in the kernel
    expect(regs.r15).toBe(BigInt(o.irqs));
    expect(kvm.stats.irqInjections).toBe(o.irqs);
    // The last interrupt came `irqs` periods after the count was written (a few instructions' slack).
    const dt = Number(regs.r14 - regs.r13);
    expect(dt).toBeGreaterThanOrEqual(Math.floor(ns(o.count * o.irqs)) - 50);
    expect(dt).toBeLessThan(ns(o.count * o.irqs) + 200);
    // Read-back: status (OUT, loaded, lobyte/hibyte, the mode, binary), then the count.
    expect(Number(regs.r12) & 0x7f).toBe(0x30 | (o.mode << 1));
    expect(Number(regs.rbx)).toBeGreaterThan(0);
    expect(Number(regs.rbx)).toBeLessThanOrEqual(o.count);
    expect(Number(regs.rbp) & 0x01).toBe(0); // port 0x61: counter 2's gate is off
  });

  it('mode 0 interrupts once, at terminal count', () => {
    const o: PitGuestOptions = { mode: 0, count: 5000, irqs: 1, route: 'pic' };
    const { kvm, out, ioPorts, regs } = runPitGuest(backend, o);
    expect(KvmExitReason[out.exitReason]).toBe('KVM_EXIT_HLT'); // halted with interrupts on: nothing more came
    expect(ioPorts).toEqual([]);
    expect(regs.r15).toBe(1n);
    expect(kvm.stats.irqInjections).toBe(1);
    const dt = Number(regs.r14 - regs.r13);
    expect(dt).toBeGreaterThanOrEqual(Math.floor(ns(5000)) - 50);
    expect(dt).toBeLessThan(ns(5000) + 200);
    expect(Number(regs.r12) & 0xff).toBe(0x80 | 0x30); // OUT high after terminal count, mode 0
  });
});

/** Linux's pit_calibrate_tsc loop (on a 60-clock count, ~50 µs): gate counter 2 on, mode 0, poll port 0x61 bit 5; report the polls. */
function calibrationKernel() {
  return buildMultibootKernel((a: Assembler) => {
    const poll = a.label('poll');
    a.in(al, 0x61);
    a.and(al, 0xfd);
    a.or(al, 0x01);
    a.out(0x61, al);
    a.mov(al, 0xb0); // counter 2, lobyte/hibyte, mode 0
    a.out(0x43, al);
    a.mov(al, CAL_COUNT);
    a.out(0x42, al);
    a.mov(al, 0);
    a.out(0x42, al);
    a.xor(ecx, ecx);
    a.bind(poll);
    a.inc(ecx);
    a.in(al, 0x61);
    a.test(al, 0x20);
    a.jz(poll);
    a.mov(dx, 0xf4);
    a.mov(eax, ecx);
    a.out(dx, eax);
    a.hlt();
  });
}

describe.each(BACKENDS)('Machine with the in-kernel PIT (%s)', (_name, backend) => {
  it('a PIT calibration loop runs without userspace exits and lasts the count\'s guest time', () => {
    const m = Machine.create({ backend, memory: 16 * 2 ** 20, kernel: { name: 'pit-calibrate', data: calibrationKernel().image } });
    try {
      const r = m.runSync();
      expect(r.reason).toBe('debug-exit');
      // Only the write to 0xF4 (a userspace PIT would add two exits per poll); KVM_EXIT_INTR ends each slice.
      expect(r.vcpus[0].userspaceExits.KVM_EXIT_IO).toBe(1);
      // The loop polled many times and ended as the count ran out (plus the few instructions around it).
      expect(r.debugExitValue!).toBeGreaterThan(ns(CAL_COUNT) / 4 - 500);
      expect(r.guestTimeNs).toBeGreaterThanOrEqual(ns(CAL_COUNT));
      expect(r.guestTimeNs).toBeLessThan(ns(CAL_COUNT) + 2000);
      expect(m.kvm.getPit2().channels[2]).toMatchObject({ mode: 0, count: CAL_COUNT, gate: 1 });
    } finally {
      m.destroy();
    }
  });
});
