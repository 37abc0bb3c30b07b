/**
 * The in-kernel Intel 8254 programmable interval timer (KVM_CREATE_PIT2; arch/x86/kvm/i8254.c
 * for the KVM side, the Intel 82C54 data sheet for the counter itself): three counters at
 * 0x40–0x42 and the control word register at 0x43, input clock 1.193182 MHz, and — with
 * KVM_PIT_SPEAKER_DUMMY — port 0x61 (bit 0 gate of counter 2, bit 1 speaker data, bit 4
 * refresh toggle, bit 5 output of counter 2).
 *
 * Counters are computed from guest time (kvm.clock), never ticked: the count at time t follows
 * from the time the count was loaded (`countLoadTime`). Counter 0's output drives GSI 0 through
 * the irqchip's routing (8259 IRQ 0 and IOAPIC pin 2): a VM timer is armed for the output's
 * next rising edge and the line is pulsed then, as KVM's pit_do_work does (modes 0 and 1 once,
 * 2 and 3 every period, 4 and 5 once, one clock after terminal count). As in KVM, a periodic
 * interrupt is never faster than min_timer_period_us (200 µs), and nothing is raised while
 * userspace has set KVM_PIT_FLAGS_HPET_LEGACY (the HPET drives IRQ 0 then).
 *
 * Where KVM's model is coarser than the data sheet, this one follows the data sheet: writing a
 * control word stops the counter until a count is written (null count, status bit 6), the
 * first byte of a two-byte count stops mode 0, counter 2's gate suspends modes 0 and 4, holds
 * modes 2 and 3 with OUT high and (re)triggers modes 1, 2, 3 and 5 on its rising edge, BCD
 * counters count and read back in BCD, and mode 1's output is low while it counts.
 *
 * Missed periodic ticks coalesce in the 8259's / IOAPIC's edge latch: this is KVM with
 * KVM_REINJECT_CONTROL's pit_reinject = 0. With the default virtual clock no tick is ever
 * missed unless the guest keeps interrupts off for longer than a period.
 */
import type { Kvm } from '../kvm/kvm';
import { KvmError } from '../kvm/errors';
import type { KvmIoDevice } from '../kvm/io-bus';
import type { KvmTimer } from '../kvm/clock';

/** Input clock of the counters (KVM_PIT_FREQ). */
export const KVM_PIT_FREQ = 1193182;
export const KVM_PIT_BASE_ADDRESS = 0x40;
export const KVM_PIT_MEM_LENGTH = 4;
export const KVM_SPEAKER_BASE_ADDRESS = 0x61;

/** kvm_pit_config.flags: emulate port 0x61 in the kernel too. */
export const KVM_PIT_SPEAKER_DUMMY = 1;
/** kvm_pit_state2.flags: the HPET has taken over IRQ 0 (legacy replacement); counter 0 raises nothing. */
export const KVM_PIT_FLAGS_HPET_LEGACY = 0x1;
/** kvm_pit_state2.flags: port 0x61 bit 1 (speaker data enable). */
export const KVM_PIT_FLAGS_SPEAKER_DATA_ON = 0x2;

/** read_state / write_state / count_latched values (i8254.c's RW_STATE_*). */
export const RW_STATE_LSB = 1;
export const RW_STATE_MSB = 2;
export const RW_STATE_WORD0 = 3;
export const RW_STATE_WORD1 = 4;

/**
 * One counter of struct kvm_pit_state2 (struct kvm_pit_channel_state), camelCased. `count` is
 * the reload value in input clocks (1..0x10000; 1..10000 for BCD counters — 0 is written as
 * the largest count); `countLoadTime` is guest time in ns.
 */
export interface KvmPitChannelState {
  count: number;
  latchedCount: number;
  countLatched: number;
  statusLatched: number;
  status: number;
  readState: number;
  writeState: number;
  writeLatch: number;
  rwMode: number;
  mode: number;
  bcd: number;
  gate: number;
  countLoadTime: number;
}

/** struct kvm_pit_state2 (KVM_GET_PIT2 / KVM_SET_PIT2). */
export interface KvmPitState2 {
  channels: KvmPitChannelState[];
  flags: number;
}

/** KVM's min_timer_period_us for periodic timers, in input clocks (200 µs, rounded up). */
const MIN_PERIOD_TICKS = Math.ceil((200_000 * KVM_PIT_FREQ) / 1e9);
/** DRAM refresh requests (port 0x61 bit 4) toggle every 15.085 µs on a PC. */
const REFRESH_TOGGLE_NS = 15085;

/** struct kvm_kpit_channel_state plus the data-sheet state KVM does not keep. */
class KvmKpitChannelState implements KvmPitChannelState {
  count = 0x10000;
  latchedCount = 0;
  countLatched = 0;
  statusLatched = 0;
  status = 0;
  readState = RW_STATE_WORD0;
  writeState = RW_STATE_WORD0;
  writeLatch = 0;
  rwMode = RW_STATE_WORD0;
  mode = 0;
  bcd = 0;
  gate: number;
  countLoadTime = 0;
  /** No count has been loaded since the last control word (status bit 6, "null count"). */
  nullCount = true;
  /** The counting element is running; when not, it holds at `heldTicks` elapsed clocks. */
  counting = false;
  heldTicks = 0;

  constructor(readonly index: number) {
    this.gate = index === 2 ? 0 : 1; // counters 0 and 1 have GATE tied high on a PC
  }
}

/** Input clocks in `ns` of guest time, exactly (split so that no product passes 2^53). */
function nsToTicks(ns: number): number {
  const s = Math.floor(ns / 1e9);
  return s * KVM_PIT_FREQ + Math.floor(((ns - s * 1e9) * KVM_PIT_FREQ) / 1e9);
}

/** The first ns at which `nsToTicks` reaches `ticks`. */
function ticksToNs(ticks: number): number {
  const s = Math.floor(ticks / KVM_PIT_FREQ);
  return s * 1e9 + Math.ceil(((ticks - s * KVM_PIT_FREQ) * 1e9) / KVM_PIT_FREQ);
}

function fromBcd16(v: number): number {
  return ((v >> 12) & 0xf) * 1000 + ((v >> 8) & 0xf) * 100 + ((v >> 4) & 0xf) * 10 + (v & 0xf);
}

function toBcd16(v: number): number {
  return (Math.floor(v / 1000) % 10 << 12) | (Math.floor(v / 100) % 10 << 8) | (Math.floor(v / 10) % 10 << 4) | (v % 10);
}

/** struct kvm_pit: the 8254 of one VM. */
export class KvmPit {
  private readonly channels = [new KvmKpitChannelState(0), new KvmKpitChannelState(1), new KvmKpitChannelState(2)];
  /** kvm_kpit_state.flags (KVM_PIT_FLAGS_*). */
  private flags = 0;
  /** Counter 0's interrupt timer (kvm_kpit_state.timer). */
  private readonly timer: KvmTimer;

  /** The counters and control word at 0x40–0x43 (pit_dev_ops). */
  readonly dev: KvmIoDevice = {
    name: 'kvm-pit',
    read: (addr, len, data) => {
      for (let i = 0; i < len; i++) data[i] = addr + i < KVM_PIT_BASE_ADDRESS + KVM_PIT_MEM_LENGTH ? this.ioportRead((addr + i) & 3) : 0xff;
      return true;
    },
    write: (addr, len, data) => {
      // An ISA bus splits a wider access into byte cycles at consecutive ports.
      for (let i = 0; i < len && addr + i < KVM_PIT_BASE_ADDRESS + KVM_PIT_MEM_LENGTH; i++) this.ioportWrite((addr + i) & 3, data[i]);
      return true;
    },
  };

  /** Port 0x61 (speaker_dev_ops), on the bus only with KVM_PIT_SPEAKER_DUMMY. */
  readonly speakerDev: KvmIoDevice = {
    name: 'kvm-pit-speaker',
    read: (_addr, len, data) => {
      data.fill(0, 0, len);
      data[0] = this.speakerRead();
      return true;
    },
    write: (_addr, _len, data) => {
      this.speakerWrite(data[0]);
      return true;
    },
  };

  constructor(private readonly kvm: Kvm, readonly configFlags: number) {
    this.timer = kvm.clock.createTimer(() => this.timerExpired(), null);
  }

  // ---------------------------------------------------------------- time

  private now(): number {
    return this.kvm.clock.nowNs();
  }

  /** Input clocks the counting element has counted since its count was loaded. */
  private elapsed(c: KvmKpitChannelState): number {
    return c.counting ? nsToTicks(this.now() - c.countLoadTime) : c.heldTicks;
  }

  /** pit_get_count: the counting element (binary, or the BCD digits of a BCD counter). */
  private getCount(c: KvmKpitChannelState): number {
    const n = c.count;
    const d = this.elapsed(c);
    let v: number;
    switch (c.mode) {
      case 2: v = n - (d % n); break;
      case 3: v = n - ((2 * d) % n); break; // counts down by two (odd counts: the data sheet's first half is one clock longer)
      default: v = n - d; // 0, 1, 4, 5: after terminal count the counter wraps and keeps counting
    }
    if (c.bcd) return toBcd16(((v % 10000) + 10000) % 10000);
    return v & 0xffff;
  }

  /** pit_get_out: the OUT pin (data sheet figures for modes 0–5). */
  private getOut(c: KvmKpitChannelState): boolean {
    if (c.nullCount && !c.counting) return c.mode !== 0; // after a control word: mode 0 low, the others high
    if (c.mode === 1 && !c.counting) return true; // mode 1 loaded, waiting for its trigger: high
    if (!c.gate && (c.mode === 2 || c.mode === 3)) return true; // GATE low forces OUT high
    const n = c.count;
    const d = this.elapsed(c);
    switch (c.mode) {
      case 0: case 1: return d >= n; // mode 1: low from the trigger to terminal count
      case 2: return n === 1 || d % n !== n - 1; // low for the one clock at count 1
      case 3: return d % n < (n + 1) >> 1; // high for the first half (the longer one for odd counts)
      default: return d !== n; // 4, 5: a one-clock low strobe at terminal count
    }
  }

  // ---------------------------------------------------------------- counter 0's interrupt

  /** Arm counter 0's timer for its output's next rising edge (create_pit_timer). */
  private armTimer(): void {
    const c = this.channels[0];
    if (!c.counting || this.flags & KVM_PIT_FLAGS_HPET_LEGACY) {
      this.timer.cancel();
      return;
    }
    const d = this.elapsed(c);
    const n = c.count;
    let edge: number;
    switch (c.mode) {
      case 0: case 1:
        if (d >= n) return this.timer.cancel();
        edge = n;
        break;
      case 4: case 5:
        if (d > n) return this.timer.cancel();
        edge = n + 1;
        break;
      default: { // 2, 3: a rising edge at each reload; KVM's 200 µs floor on the period
        const p = Math.max(n, MIN_PERIOD_TICKS);
        edge = (Math.floor(d / p) + 1) * p;
      }
    }
    this.timer.arm(c.countLoadTime + ticksToNs(edge));
  }

  /** pit_timer_fn + pit_do_work: an edge on GSI 0, then the next one for a periodic mode. */
  private timerExpired(): void {
    const irqchip = this.kvm.irqchip;
    if (irqchip) {
      const ctx = this.kvm.currentVcpu ?? this.kvm.vcpus[0];
      // The kvm_set_irq tracepoint; the PIT's irq_source_id follows userspace's (0) and irqfd resampling's (1).
      if (ctx) this.kvm.trace('kvm_set_irq', ctx, 'gsi 0 level 1 source 2');
      irqchip.setIrq(0, true);
      irqchip.setIrq(0, false);
    }
    const m = this.channels[0].mode;
    if (m === 2 || m === 3) this.armTimer();
  }

  // ---------------------------------------------------------------- loading and gating

  /** pit_load_count: a new reload value; counting starts now if GATE allows. */
  private loadCount(c: KvmKpitChannelState, value: number): void {
    let n = c.bcd ? fromBcd16(value) : value;
    if (n === 0) n = c.bcd ? 10000 : 0x10000; // 0 is the largest count: 2^16 binary, 10^4 BCD
    c.count = n;
    c.nullCount = false;
    c.countLoadTime = this.now();
    c.counting = c.gate !== 0;
    c.heldTicks = 0;
    if (c.index === 0) this.armTimer();
  }

  /** Stop the counting element where it is (its value and OUT hold). */
  private hold(c: KvmKpitChannelState, ticks: number): void {
    c.heldTicks = ticks;
    c.counting = false;
    if (c.index === 0) this.armTimer();
  }

  /** pit_set_gate. */
  private setGate(c: KvmKpitChannelState, gate: number): void {
    if (gate === c.gate) return;
    c.gate = gate;
    if (c.nullCount) return; // nothing loaded: nothing to start or stop
    if (gate) {
      if (c.mode === 0 || c.mode === 4) {
        // Resume from the held value: back-date the load by the clocks already counted.
        c.countLoadTime = this.now() - ticksToNs(c.heldTicks);
      } else {
        c.countLoadTime = this.now(); // modes 1, 2, 3, 5: the rising edge (re)starts from the reload value
      }
      c.counting = true;
      c.heldTicks = 0;
      if (c.index === 0) this.armTimer();
    } else if (c.mode !== 1 && c.mode !== 5 && c.counting) {
      this.hold(c, this.elapsed(c)); // modes 0, 2, 3, 4: GATE low disables counting
    }
  }

  // ---------------------------------------------------------------- ports

  private latchCount(c: KvmKpitChannelState): void {
    if (c.countLatched) return; // a second latch before the first is read is ignored
    c.latchedCount = this.getCount(c);
    c.countLatched = c.rwMode;
  }

  private latchStatus(c: KvmKpitChannelState): void {
    if (c.statusLatched) return;
    c.status = (this.getOut(c) ? 0x80 : 0) | (c.nullCount ? 0x40 : 0) | (c.rwMode << 4) | (c.mode << 1) | c.bcd;
    c.statusLatched = 1;
  }

  /** pit_ioport_write. */
  private ioportWrite(port: number, val: number): void {
    if (port === 3) {
      const sel = val >> 6;
      if (sel === 3) {
        // Read-back: bit 5 clear latches the counts, bit 4 clear the status, bits 3..1 pick counters.
        for (let i = 0; i < 3; i++) {
          if (!(val & (2 << i))) continue;
          if (!(val & 0x20)) this.latchCount(this.channels[i]);
          if (!(val & 0x10)) this.latchStatus(this.channels[i]);
        }
        return;
      }
      const c = this.channels[sel];
      const access = (val >> 4) & 3;
      if (access === 0) {
        this.latchCount(c); // counter latch command
        return;
      }
      c.rwMode = access;
      c.readState = access;
      c.writeState = access;
      c.mode = (val >> 1) & 7;
      if (c.mode > 5) c.mode -= 4; // modes 6 and 7 are 2 and 3
      c.bcd = val & 1;
      c.countLatched = 0;
      // A control word resets the counter's logic: it stops until a count is written.
      c.nullCount = true;
      this.hold(c, 0);
      return;
    }
    const c = this.channels[port];
    switch (c.writeState) {
      case RW_STATE_LSB: this.loadCount(c, val); break;
      case RW_STATE_MSB: this.loadCount(c, val << 8); break;
      case RW_STATE_WORD0:
        c.writeLatch = val;
        c.writeState = RW_STATE_WORD1;
        if (c.mode === 0) this.hold(c, 0); // mode 0: writing the first byte stops the count, OUT low
        break;
      default:
        c.writeState = RW_STATE_WORD0;
        this.loadCount(c, c.writeLatch | (val << 8));
    }
  }

  /** pit_ioport_read. */
  private ioportRead(port: number): number {
    if (port === 3) return 0xff; // the control word register cannot be read: the bus floats
    const c = this.channels[port];
    if (c.statusLatched) {
      c.statusLatched = 0;
      return c.status;
    }
    if (c.countLatched) {
      switch (c.countLatched) {
        case RW_STATE_MSB:
          c.countLatched = 0;
          return c.latchedCount >> 8;
        case RW_STATE_WORD0:
          c.countLatched = RW_STATE_MSB;
          return c.latchedCount & 0xff;
        default:
          c.countLatched = 0;
          return c.latchedCount & 0xff;
      }
    }
    switch (c.readState) {
      case RW_STATE_MSB: return this.getCount(c) >> 8;
      case RW_STATE_WORD0:
        c.readState = RW_STATE_WORD1;
        return this.getCount(c) & 0xff;
      case RW_STATE_WORD1:
        c.readState = RW_STATE_WORD0;
        return this.getCount(c) >> 8;
      default: return this.getCount(c) & 0xff;
    }
  }

  /** speaker_ioport_read: port 0x61. */
  private speakerRead(): number {
    const refresh = Math.floor(this.now() / REFRESH_TOGGLE_NS) & 1;
    const c2 = this.channels[2];
    return (this.flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON ? 2 : 0) | c2.gate | (refresh << 4) | (this.getOut(c2) ? 0x20 : 0);
  }

  /** speaker_ioport_write: bit 0 gates counter 2, bit 1 enables speaker data. */
  private speakerWrite(val: number): void {
    if (val & 2) this.flags |= KVM_PIT_FLAGS_SPEAKER_DATA_ON;
    else this.flags &= ~KVM_PIT_FLAGS_SPEAKER_DATA_ON;
    this.setGate(this.channels[2], val & 1);
  }

  // ---------------------------------------------------------------- KVM_GET_PIT2 / KVM_SET_PIT2

  /** kvm_vm_ioctl_get_pit2. */
  getState(): KvmPitState2 {
    return {
      channels: this.channels.map((c) => ({
        count: c.count, latchedCount: c.latchedCount, countLatched: c.countLatched, statusLatched: c.statusLatched,
        status: c.status, readState: c.readState, writeState: c.writeState, writeLatch: c.writeLatch, rwMode: c.rwMode,
        mode: c.mode, bcd: c.bcd, gate: c.gate, countLoadTime: c.countLoadTime,
      })),
      flags: this.flags,
    };
  }

  /**
   * kvm_vm_ioctl_set_pit2: take the state, then reload every counter with its `count` as KVM
   * does (kvm_pit_load_count), so each counts from now (`countLoadTime` is not restored) and
   * counter 0's interrupt is re-armed — unless KVM_PIT_FLAGS_HPET_LEGACY is set.
   */
  setState(s: KvmPitState2): void {
    validatePitState(s);
    this.flags = s.flags;
    s.channels.forEach((from, i) => {
      const c = this.channels[i];
      c.latchedCount = from.latchedCount;
      c.countLatched = from.countLatched;
      c.statusLatched = from.statusLatched;
      c.status = from.status;
      c.readState = from.readState;
      c.writeState = from.writeState;
      c.writeLatch = from.writeLatch;
      c.rwMode = from.rwMode;
      c.mode = from.mode;
      c.bcd = from.bcd;
      c.gate = from.gate;
      c.nullCount = false;
      c.count = from.count;
      c.countLoadTime = this.now();
      c.counting = c.gate !== 0;
      c.heldTicks = 0;
    });
    this.armTimer();
  }
}

/** KVM copies kvm_pit_state2 blindly; tsvisor refuses values its counters cannot hold, naming the field. */
function validatePitState(s: KvmPitState2): void {
  const bad = (what: string, v: unknown) => new KvmError('EINVAL', `KVM_SET_PIT2: ${what} = ${String(v)} is out of range`);
  if (!s || !Array.isArray(s.channels) || s.channels.length !== 3) {
    throw new KvmError('EINVAL', 'KVM_SET_PIT2: channels must be an array of the 3 counters');
  }
  if (!Number.isInteger(s.flags) || s.flags & ~(KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON)) throw bad('flags', s.flags);
  const ranges: [keyof KvmPitChannelState, number, number][] = [
    ['latchedCount', 0, 0xffff], ['countLatched', 0, RW_STATE_WORD0], ['statusLatched', 0, 1], ['status', 0, 0xff],
    ['readState', RW_STATE_LSB, RW_STATE_WORD1], ['writeState', RW_STATE_LSB, RW_STATE_WORD1], ['writeLatch', 0, 0xff],
    ['rwMode', RW_STATE_LSB, RW_STATE_WORD0], ['mode', 0, 5], ['bcd', 0, 1], ['gate', 0, 1],
  ];
  s.channels.forEach((c, i) => {
    for (const [k, lo, hi] of ranges) {
      const v = c?.[k];
      if (!Number.isInteger(v) || (v as number) < lo || (v as number) > hi) throw bad(`channels[${i}].${k}`, v);
    }
    const max = c.bcd ? 10000 : 0x10000;
    if (!Number.isInteger(c.count) || c.count < 1 || c.count > max) throw bad(`channels[${i}].count`, c.count);
  });
}
