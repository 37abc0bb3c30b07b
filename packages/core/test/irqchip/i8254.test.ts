/**
 * The in-kernel 8254 (KVM_CREATE_PIT2) through the KVM API: its ports on kvm.pioBus, counter 0
 * driving GSI 0 into the 8259 (vector base 0x20) on the virtual clock, KVM_GET/SET_PIT2.
 * Time passes by running the scripted guest (1 retired instruction = 1 ns).
 */
import {
  Kvm, KvmError, KvmVcpu, KVM_PIT_FREQ, KVM_PIT_SPEAKER_DUMMY, KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON,
} from '../../src';
import { guest, inb, irqVm, outb } from './helpers';

/** The first ns at which `ticks` input clocks have elapsed. */
const ns = (ticks: number) => Math.ceil((ticks * 1e9) / KVM_PIT_FREQ);

function pitVm(flags = KVM_PIT_SPEAKER_DUMMY) {
  const r = irqVm();
  const { kvm } = r;
  const v = r.vcpus[0];
  // BIOS-style 8259 set-up: master vectors 0x20–0x27, only IRQ 0 unmasked.
  outb(kvm, 0x20, 0x11); outb(kvm, 0x21, 0x20); outb(kvm, 0x21, 0x04); outb(kvm, 0x21, 0x01); outb(kvm, 0x21, 0xfe);
  guest(v).onIrq = () => outb(kvm, 0x20, 0x20); // the handler's EOI
  const pit = kvm.createPit2(flags);
  return { kvm, v, pit };
}

/** Let `n` ns of guest time pass on the vCPU. */
function advance(v: KvmVcpu, n: number): void {
  v.runBudget = n;
  v.runVcpu();
}

const irqTimes = (v: KvmVcpu) => guest(v).injected.filter((i) => i.vector === 0x20).map((i) => i.at);
const word = (kvm: Kvm, port: number) => inb(kvm, port) | (inb(kvm, port) << 8);

describe('in-kernel 8254 PIT (KVM_CREATE_PIT2)', () => {
  it('claims 0x40–0x43 (and 0x61 with KVM_PIT_SPEAKER_DUMMY) on the in-kernel port bus', () => {
    const { kvm: bare } = irqVm();
    const d = new Uint8Array(1);
    expect(bare.pioBus.read(0x40, 1, d)).toBe(false); // before KVM_CREATE_PIT2: userspace's
    bare.createPit2(0);
    for (const p of [0x40, 0x41, 0x42, 0x43]) expect(bare.pioBus.read(p, 1, d)).toBe(true);
    expect(bare.pioBus.read(0x61, 1, d)).toBe(false); // without SPEAKER_DUMMY port 0x61 stays in userspace
    const { kvm } = pitVm();
    expect(kvm.pioBus.read(0x61, 1, d)).toBe(true);
    expect(kvm.pioBus.read(0x60, 1, d)).toBe(false); // the 8042 is userspace's
  });

  it('counts down at 1.193182 MHz; a counter latch freezes the value read', () => {
    const { kvm, v } = pitVm();
    outb(kvm, 0x43, 0x34); // counter 0, lobyte/hibyte, mode 2
    outb(kvm, 0x40, 0x00);
    outb(kvm, 0x40, 0x10); // 0x1000
    advance(v, ns(0x100));
    outb(kvm, 0x43, 0x00); // counter latch
    advance(v, ns(0x200)); // the latched value does not move
    expect(word(kvm, 0x40)).toBe(0x1000 - 0x100);
    expect(word(kvm, 0x40)).toBe(0x1000 - 0x300);
    outb(kvm, 0x43, 0x00);
    outb(kvm, 0x43, 0x00); // a second latch before the first is read is ignored
    advance(v, ns(0x10));
    expect(word(kvm, 0x40)).toBe(0x1000 - 0x300);
  });

  it('mode 2 (rate generator) pulses IRQ 0 once per period, at the period boundaries', () => {
    const { kvm, v } = pitVm();
    outb(kvm, 0x43, 0x34);
    outb(kvm, 0x40, 1193 & 0xff);
    outb(kvm, 0x40, 1193 >> 8); // ~1 kHz
    advance(v, 10_000_000); // 10 ms
    expect(irqTimes(v)).toEqual(Array.from({ length: 10 }, (_, k) => ns(1193 * (k + 1))));
  });

  it('mode 3 (square wave) counts by two, reads back its status, and pulses IRQ 0 every period', () => {
    const { kvm, v } = pitVm();
    outb(kvm, 0x43, 0x36); // counter 0, lobyte/hibyte, mode 3
    outb(kvm, 0x40, 0x00);
    outb(kvm, 0x40, 0x01); // 256
    advance(v, ns(10));
    outb(kvm, 0x43, 0xe2); // read-back: status only, counter 0
    expect(inb(kvm, 0x40)).toBe(0x80 | 0x36); // OUT high (first half), rw = 3, mode 3, binary
    outb(kvm, 0x43, 0x00);
    expect(word(kvm, 0x40)).toBe(256 - 20);
    advance(v, ns(600));
    expect(irqTimes(v)).toEqual([ns(256), ns(512)]);
  });

  it('mode 0 raises IRQ 0 once at terminal count; its OUT then stays high; the counter wraps', () => {
    const { kvm, v } = pitVm();
    outb(kvm, 0x43, 0x30); // mode 0
    outb(kvm, 0x40, 100);
    outb(kvm, 0x40, 0);
    advance(v, ns(99));
    expect(irqTimes(v)).toEqual([]);
    outb(kvm, 0x43, 0xe2);
    expect(inb(kvm, 0x40) & 0xc0).toBe(0x00); // OUT low, count loaded
    advance(v, 1_000_000);
    expect(irqTimes(v)).toEqual([ns(100)]);
    outb(kvm, 0x43, 0xe2);
    expect(inb(kvm, 0x40) & 0x80).toBe(0x80);
    outb(kvm, 0x43, 0x00);
    const elapsed = Math.floor((kvm.clock.nowNs() * KVM_PIT_FREQ) / 1e9);
    expect(word(kvm, 0x40)).toBe((100 - elapsed) & 0xffff);
  });

  it('a control word stops the counter until a count arrives (null count), and mode 4 strobes one clock late', () => {
    const { kvm, v } = pitVm();
    outb(kvm, 0x43, 0x38); // mode 4
    outb(kvm, 0x43, 0xe2);
    expect(inb(kvm, 0x40)).toBe(0x80 | 0x40 | 0x38); // OUT high, null count
    advance(v, 1_000_000);
    expect(irqTimes(v)).toEqual([]);
    const t0 = kvm.clock.nowNs();
    outb(kvm, 0x40, 50);
    outb(kvm, 0x40, 0);
    advance(v, 1_000_000);
    expect(irqTimes(v)).toEqual([t0 + ns(51)]);
  });

  it('read-back latches count and status together; status comes first; lobyte- and hibyte-only access', () => {
    const { kvm, v } = pitVm();
    outb(kvm, 0x43, 0x94); // counter 2, lobyte only, mode 2
    outb(kvm, 0x42, 200);
    outb(kvm, 0x61, 1); // gate counter 2 on: counting starts
    advance(v, ns(50));
    outb(kvm, 0x43, 0xc8); // read-back: count and status of counter 2
    advance(v, ns(20));
    expect(inb(kvm, 0x42)).toBe(0x80 | 0x14); // status: OUT high, lobyte, mode 2
    expect(inb(kvm, 0x42)).toBe(150); // then the latched count
    expect(inb(kvm, 0x42)).toBe(130); // then live
    outb(kvm, 0x43, 0xa4); // counter 2, hibyte only, mode 2
    outb(kvm, 0x42, 0x12); // 0x1200
    advance(v, ns(0x100));
    expect(inb(kvm, 0x42)).toBe(0x11);
  });

  it('BCD counters load and read back in BCD', () => {
    const { kvm, v } = pitVm();
    outb(kvm, 0x43, 0x31); // counter 0, lobyte/hibyte, mode 0, BCD
    outb(kvm, 0x40, 0x00);
    outb(kvm, 0x40, 0x10); // 1000 decimal
    advance(v, ns(1));
    outb(kvm, 0x43, 0x00);
    expect(word(kvm, 0x40)).toBe(0x0999);
    expect(kvm.getPit2().channels[0]).toMatchObject({ count: 1000, bcd: 1, mode: 0 });
    advance(v, 1_000_000);
    expect(irqTimes(v)).toEqual([ns(1000)]);
  });

  it('port 0x61: bit 0 gates counter 2, bit 5 is its output, bit 4 toggles every 15.085 µs', () => {
    const { kvm, v } = pitVm();
    outb(kvm, 0x61, 0x03); // gate on, speaker data on
    outb(kvm, 0x43, 0xb0); // counter 2, lo/hi, mode 0
    outb(kvm, 0x42, 100);
    outb(kvm, 0x42, 0);
    expect(inb(kvm, 0x61) & 0x23).toBe(0x03);
    advance(v, ns(40));
    outb(kvm, 0x61, 0x00); // gate low: mode 0 suspends counting
    advance(v, ns(1000));
    expect(inb(kvm, 0x61) & 0x23).toBe(0x00);
    expect(kvm.getPit2().flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON).toBe(0);
    outb(kvm, 0x43, 0x80);
    expect(word(kvm, 0x42)).toBe(60); // held while the gate was low
    outb(kvm, 0x61, 0x01); // resume
    advance(v, ns(61));
    expect(inb(kvm, 0x61) & 0x21).toBe(0x21);
    // The refresh toggle follows guest time.
    const t = kvm.clock.nowNs();
    const bit = (inb(kvm, 0x61) >> 4) & 1;
    expect(bit).toBe(Math.floor(t / 15085) & 1);
    advance(v, 15085);
    expect((inb(kvm, 0x61) >> 4) & 1).toBe(bit ^ 1);
  });

  it('counter 2 in mode 1 (hardware one-shot) waits for the gate\'s rising edge, then goes low until terminal count', () => {
    const { kvm, v } = pitVm();
    outb(kvm, 0x43, 0x92); // counter 2, lobyte, mode 1
    outb(kvm, 0x42, 30);
    advance(v, ns(100));
    expect(inb(kvm, 0x61) & 0x20).toBe(0x20); // loaded, not triggered: OUT high
    outb(kvm, 0x61, 0x01); // trigger
    advance(v, ns(10));
    expect(inb(kvm, 0x61) & 0x20).toBe(0x00);
    outb(kvm, 0x61, 0x00); // the gate falling does not stop mode 1
    advance(v, ns(25));
    expect(inb(kvm, 0x61) & 0x20).toBe(0x20);
  });

  it('a periodic rate faster than KVM\'s 200 µs floor is slowed to it', () => {
    const { kvm, v } = pitVm();
    outb(kvm, 0x43, 0x34);
    outb(kvm, 0x40, 10);
    outb(kvm, 0x40, 0);
    advance(v, 450_000);
    expect(irqTimes(v)).toEqual([ns(239), ns(478)]);
  });

  it('KVM_GET_PIT2 / KVM_SET_PIT2 round-trip the state; SET reloads the counts from now', () => {
    const a = pitVm();
    outb(a.kvm, 0x43, 0x34);
    outb(a.kvm, 0x40, 0xa9);
    outb(a.kvm, 0x40, 0x04); // 1193
    outb(a.kvm, 0x43, 0xb6); // counter 2: mode 3, lo/hi
    outb(a.kvm, 0x42, 0x34); // first byte only: write latch pending
    advance(a.v, 123_456);
    outb(a.kvm, 0x43, 0xc2); // read-back latch count and status of counter 0
    outb(a.kvm, 0x61, 0x02);
    const s = a.kvm.getPit2();
    expect(s.flags).toBe(KVM_PIT_FLAGS_SPEAKER_DATA_ON);
    expect(s.channels[0]).toMatchObject({ count: 1193, mode: 2, rwMode: 3, countLatched: 3, statusLatched: 1, gate: 1, countLoadTime: 0 });
    expect(s.channels[2]).toMatchObject({ mode: 3, writeState: 4, writeLatch: 0x34, gate: 0 });

    const b = pitVm();
    advance(b.v, 5000);
    b.kvm.setPit2(s);
    const back = b.kvm.getPit2();
    expect(back).toEqual({ ...s, channels: s.channels.map((c) => ({ ...c, countLoadTime: 5000 })) });
    // The latched status and count read back as they were latched.
    expect(inb(b.kvm, 0x40)).toBe(s.channels[0].status);
    expect(word(b.kvm, 0x40)).toBe(s.channels[0].latchedCount);
    // Counter 0 runs from the restore: IRQ 0 one period after it.
    advance(b.v, 2_500_000);
    expect(irqTimes(b.v)).toEqual([5000 + ns(1193), 5000 + ns(2386)]);
  });

  it('KVM_PIT_FLAGS_HPET_LEGACY silences counter 0 until cleared', () => {
    const { kvm, v } = pitVm();
    outb(kvm, 0x43, 0x34);
    outb(kvm, 0x40, 0xa9);
    outb(kvm, 0x40, 0x04);
    kvm.setPit2({ ...kvm.getPit2(), flags: KVM_PIT_FLAGS_HPET_LEGACY });
    advance(v, 3_000_000);
    expect(irqTimes(v)).toEqual([]);
    kvm.setPit2({ ...kvm.getPit2(), flags: 0 });
    advance(v, 1_000_000);
    expect(irqTimes(v)).toEqual([3_000_000 + ns(1193)]);
  });

  it('API misuse: errnos as KVM returns them, fields named', () => {
    const { kvm: noChip } = irqVm({ irqchip: false });
    expect(() => noChip.createPit2()).toThrow(expect.objectContaining({ code: 'ENXIO' }));
    expect(() => noChip.getPit2()).toThrow(expect.objectContaining({ code: 'ENXIO' }));
    expect(() => noChip.setPit2({ channels: [], flags: 0 })).toThrow(expect.objectContaining({ code: 'ENXIO' }));
    const { kvm } = irqVm();
    expect(() => kvm.createPit2(4)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    kvm.createPit2(KVM_PIT_SPEAKER_DUMMY);
    expect(() => kvm.createPit2(0)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    const s = kvm.getPit2();
    expect(() => kvm.setPit2({ ...s, channels: s.channels.slice(0, 2) })).toThrow(KvmError);
    const bad = (patch: object, field: RegExp) => {
      const channels = s.channels.map((c, i) => (i === 1 ? { ...c, ...patch } : c));
      expect(() => kvm.setPit2({ ...s, channels })).toThrow(field);
    };
    bad({ mode: 6 }, /channels\[1\]\.mode/);
    bad({ count: 0 }, /channels\[1\]\.count/);
    bad({ bcd: 1, count: 0x10000 }, /channels\[1\]\.count/);
    bad({ readState: 5 }, /channels\[1\]\.readState/);
    expect(() => kvm.setPit2({ ...s, flags: 4 })).toThrow(/flags/);
    expect(kvm.getPit2()).toEqual(s); // nothing was taken
  });
});
