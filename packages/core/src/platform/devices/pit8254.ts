/**
 * Intel 8254 programmable interval timer at 0x40–0x43 (Intel 8254 data sheet; QEMU
 * hw/timer/i8254*.c), input clock 1.193182 MHz, plus port 0x61 (NMI status and control:
 * bit 0 gate of channel 2, bit 1 speaker data enable, bit 4 refresh toggle, bit 5 output of
 * channel 2).
 *
 * Counters are computed from guest time, never ticked: the count at time t follows from the
 * time the count was loaded. Channel 0's output drives IRQ 0: a timer on the platform clock
 * is armed for the output's next rising edge and the line is pulsed then (mode 0 once; modes
 * 2 and 3 every period; mode 4 once). Modes 1 and 5 (hardware-triggered) need a gate edge,
 * which only channel 2 has; they count like 0 and 4 from the gate's rising edge.
 */
import type { PlatformClock } from '../clock';
import type { IrqPin } from '../irq';
import type { IoPortBus } from '../port-bus';

export const PIT_FREQ_HZ = 1193182;
export const PIT_BASE = 0x40;
export const PORT_61 = 0x61;

const RW_LATCH = 0;
const RW_LSB = 1;
const RW_MSB = 2;
const RW_WORD = 3;

class Channel {
  /** Reload value (0 means 0x10000). */
  count = 0x10000;
  /** Guest time (ns) the count was loaded / the gate rose (for modes 1 and 5). */
  loadTime = 0;
  mode = 0;
  bcd = false;
  rwMode = RW_WORD;
  gate: boolean;
  /** A count was written but (mode 0/4) not yet loaded: reads see the old counter; "null count". */
  nullCount = true;
  armed = false;
  // read/write state machines
  readLsbNext = true;
  writeLsbNext = true;
  writeLatch = 0;
  latched: number[] = [];
  statusLatched = -1;
  timer = 0;

  constructor(readonly index: number) {
    this.gate = index !== 2;
  }
}

export class Pit8254 {
  readonly channels = [new Channel(0), new Channel(1), new Channel(2)];
  private speakerData = false;

  constructor(private readonly clock: PlatformClock, private readonly irq0: IrqPin | null = null) {}

  attach(bus: IoPortBus): void {
    bus.register('pit8254', PIT_BASE, 4, {
      read8: (p) => this.read(p - PIT_BASE),
      write8: (p, v) => this.write(p - PIT_BASE, v),
    });
    bus.register('port61', PORT_61, 1, {
      read8: () => this.readPort61(),
      write8: (_p, v) => this.writePort61(v),
    });
  }

  /** Ticks of the 1.193182 MHz clock since `since` (ns). */
  private ticksSince(since: number): number {
    return Math.floor(((this.clock.now() - since) * PIT_FREQ_HZ) / 1e9);
  }

  private tickTime(ch: Channel, ticks: number): number {
    return ch.loadTime + Math.ceil((ticks * 1e9) / PIT_FREQ_HZ);
  }

  /** Current counting element value (QEMU pit_get_count semantics). */
  counter(i: number): number {
    const ch = this.channels[i];
    if (!ch.armed) return ch.count & 0xffff;
    const d = this.ticksSince(ch.loadTime);
    const n = ch.count;
    switch (ch.mode) {
      case 0: case 1: case 4: case 5:
        return (n - d) & 0xffff;
      case 3:
        return (n - ((2 * d) % n)) & 0xffff;
      default: // 2
        return (n - (d % n)) & 0xffff;
    }
  }

  /** Output pin level (data sheet figures 8254-1..6). */
  output(i: number): boolean {
    const ch = this.channels[i];
    if (!ch.armed) return ch.mode !== 0;
    const d = this.ticksSince(ch.loadTime);
    const n = ch.count;
    switch (ch.mode) {
      case 0: return d >= n;
      case 1: return d >= n;
      case 2: return d % n !== n - 1 || n === 1;
      case 3: return d % n < (n + 1) >> 1;
      default: return d !== n; // 4, 5: a one-tick low pulse at terminal count
    }
  }

  private read(port: number): number {
    if (port === 3) return 0xff; // the control word register is write-only
    const ch = this.channels[port];
    if (ch.statusLatched >= 0) {
      const s = ch.statusLatched;
      ch.statusLatched = -1;
      return s;
    }
    if (ch.latched.length) return ch.latched.shift()!;
    const c = this.counter(port);
    switch (ch.rwMode) {
      case RW_LSB: return c & 0xff;
      case RW_MSB: return c >> 8;
      default: {
        const v = ch.readLsbNext ? c & 0xff : c >> 8;
        ch.readLsbNext = !ch.readLsbNext;
        return v;
      }
    }
  }

  private latchCount(ch: Channel): void {
    if (ch.latched.length) return; // a second latch before the first is read is ignored
    const c = this.counter(ch.index);
    if (ch.rwMode === RW_LSB) ch.latched = [c & 0xff];
    else if (ch.rwMode === RW_MSB) ch.latched = [c >> 8];
    else ch.latched = ch.readLsbNext ? [c & 0xff, c >> 8] : [c >> 8, c & 0xff];
  }

  private latchStatus(ch: Channel): void {
    if (ch.statusLatched >= 0) return;
    ch.statusLatched = (this.output(ch.index) ? 0x80 : 0) | (ch.nullCount ? 0x40 : 0) |
      (ch.rwMode << 4) | (ch.mode << 1) | (ch.bcd ? 1 : 0);
  }

  private write(port: number, v: number): void {
    if (port === 3) {
      const sel = v >> 6;
      if (sel === 3) {
        // Read-back command: bit 5 = 0 latches counts, bit 4 = 0 latches status, bits 3..1 pick channels.
        for (let i = 0; i < 3; i++) {
          if (!(v & (2 << i))) continue;
          const ch = this.channels[i];
          if (!(v & 0x20)) this.latchCount(ch);
          if (!(v & 0x10)) this.latchStatus(ch);
        }
        return;
      }
      const ch = this.channels[sel];
      const rw = (v >> 4) & 3;
      if (rw === RW_LATCH) {
        this.latchCount(ch);
        return;
      }
      ch.rwMode = rw;
      ch.mode = (v >> 1) & 7;
      if (ch.mode > 5) ch.mode -= 4; // modes 6 and 7 are 2 and 3
      ch.bcd = (v & 1) !== 0;
      ch.readLsbNext = true;
      ch.writeLsbNext = true;
      ch.latched = [];
      ch.nullCount = true;
      // Writing a control word stops the counter until a count arrives; mode 0's output goes low.
      ch.armed = false;
      this.cancel(ch);
      if (ch.index === 0 && this.irq0 && ch.mode === 0) this.irq0.set(false);
      return;
    }
    const ch = this.channels[port];
    switch (ch.rwMode) {
      case RW_LSB: this.load(ch, v & 0xff); break;
      case RW_MSB: this.load(ch, (v & 0xff) << 8); break;
      default:
        if (ch.writeLsbNext) {
          ch.writeLatch = v & 0xff;
          ch.writeLsbNext = false;
          // Mode 0: writing the first byte stops the count (data sheet).
          if (ch.mode === 0) {
            ch.armed = false;
            this.cancel(ch);
          }
        } else {
          ch.writeLsbNext = true;
          this.load(ch, ch.writeLatch | ((v & 0xff) << 8));
        }
    }
  }

  private load(ch: Channel, value: number): void {
    let n = value;
    if (ch.bcd) n = fromBcd16(n);
    if (n === 0) n = ch.bcd ? 10000 : 0x10000;
    ch.count = n;
    ch.nullCount = false;
    ch.loadTime = this.clock.now();
    // Counting needs the gate high (channels 0 and 1 have it tied high; channel 2 is port 0x61 bit 0).
    ch.armed = ch.gate;
    this.arm(ch);
  }

  private cancel(ch: Channel): void {
    if (ch.timer) this.clock.cancelTimer(ch.timer);
    ch.timer = 0;
  }

  /** Arm the IRQ 0 timer for channel 0's next rising output edge. */
  private arm(ch: Channel): void {
    this.cancel(ch);
    if (ch.index !== 0 || !ch.armed || !this.irq0) return;
    const d = this.ticksSince(ch.loadTime);
    const n = ch.count;
    let edge: number; // tick at which the output next rises
    switch (ch.mode) {
      case 0: case 1:
        if (d >= n) return; // already fired
        edge = n;
        break;
      case 4: case 5:
        if (d > n) return;
        edge = n + 1;
        break;
      default: // 2 and 3: a rising edge at each period boundary
        edge = (Math.floor(d / n) + 1) * n;
    }
    ch.timer = this.clock.setTimer(this.tickTime(ch, edge), () => {
      ch.timer = 0;
      if (ch.mode === 0 || ch.mode === 1) this.irq0!.set(true); // mode 0 output stays high
      else this.irq0!.pulse();
      if (ch.mode === 2 || ch.mode === 3) this.arm(ch);
    });
  }

  private readPort61(): number {
    const refresh = Math.floor(this.clock.now() / 15085) & 1; // DRAM refresh toggles every 15.085 µs
    return (this.channels[2].gate ? 1 : 0) | (this.speakerData ? 2 : 0) | (refresh << 4) | (this.output(2) ? 0x20 : 0);
  }

  private writePort61(v: number): void {
    const ch = this.channels[2];
    const gate = (v & 1) !== 0;
    this.speakerData = (v & 2) !== 0;
    if (gate === ch.gate) return;
    ch.gate = gate;
    if (gate) {
      // A rising gate (re)starts modes 1, 2, 3 and 5 from the reload value; mode 0/4 resume.
      if (!ch.nullCount) {
        ch.loadTime = this.clock.now();
        ch.armed = true;
      }
    } else if (ch.mode !== 1 && ch.mode !== 5 && ch.armed) {
      // Gate low halts counting in modes 0, 2, 3 and 4: freeze the count as the new reload base.
      ch.armed = false;
    }
  }
}

function fromBcd16(v: number): number {
  return ((v >> 12) & 0xf) * 1000 + ((v >> 8) & 0xf) * 100 + ((v >> 4) & 0xf) * 10 + (v & 0xf);
}
