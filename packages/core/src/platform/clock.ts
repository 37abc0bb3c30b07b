/**
 * Guest time for the platform's devices (PIT, RTC, HPET, PM timer). Time is in nanoseconds
 * as a plain number (2^53 ns is 104 days of guest time).
 *
 * - VirtualClock: time follows retired instructions (deterministic: the same guest sees the
 *   same times at the same instructions) plus whatever idle time the Machine skips when
 *   every vCPU is halted and a timer is the next thing that can happen.
 * - HostClock: time follows the host's monotonic clock.
 * - ManualClock: time moves only when a test says so.
 *
 * Timers fire from `runDue()`, which the Machine calls after every exit; in the virtual mode
 * it also ends each KVM_RUN slice exactly at the next deadline, so a timer fires at the
 * instruction its deadline names.
 */
export interface PlatformClock {
  /** Guest time now, in ns. */
  now(): number;
  /** Call `cb` once when guest time reaches `atNs`; returns a handle for cancelTimer. */
  setTimer(atNs: number, cb: () => void): number;
  cancelTimer(handle: number): void;
}

interface Timer {
  id: number;
  at: number;
  cb: () => void;
}

/** The timer list every clock shares: ordered by deadline, then by creation (determinism). */
export abstract class TimerClock implements PlatformClock {
  private timers: Timer[] = [];
  private nextId = 1;

  abstract now(): number;

  setTimer(atNs: number, cb: () => void): number {
    const t: Timer = { id: this.nextId++, at: atNs, cb };
    let i = this.timers.length;
    while (i > 0 && this.timers[i - 1].at > atNs) i--;
    this.timers.splice(i, 0, t);
    return t.id;
  }

  cancelTimer(handle: number): void {
    const i = this.timers.findIndex((t) => t.id === handle);
    if (i >= 0) this.timers.splice(i, 1);
  }

  /** Deadline of the earliest timer, or Infinity. */
  nextDeadline(): number {
    return this.timers.length ? this.timers[0].at : Infinity;
  }

  get pendingTimers(): number {
    return this.timers.length;
  }

  /** Fire every timer whose deadline has passed (callbacks may add timers). Returns how many fired. */
  runDue(): number {
    let n = 0;
    // Bounded: a callback that keeps re-arming in the past cannot loop forever here.
    while (this.timers.length && this.timers[0].at <= this.now() && n < 10_000) {
      const t = this.timers.shift()!;
      t.cb();
      n++;
    }
    return n;
  }
}

export class ManualClock extends TimerClock {
  private t = 0;
  now(): number {
    return this.t;
  }
  /** Move time forward by `ns`, firing timers in deadline order at their own times. */
  advance(ns: number): void {
    const end = this.t + ns;
    for (;;) {
      const d = this.nextDeadline();
      if (d > end) break;
      this.t = Math.max(this.t, d);
      this.runDue();
    }
    this.t = end;
  }
  set(ns: number): void {
    this.advance(Math.max(0, ns - this.t));
  }
}

/**
 * Time from an instruction counter: `instructions() * nsPerInstruction + skipped`, where
 * `skipped` grows when the Machine fast-forwards over idle time.
 */
export class VirtualClock extends TimerClock {
  private skipped = 0;
  constructor(private readonly instructions: () => number, readonly nsPerInstruction = 1) {
    super();
  }
  now(): number {
    return this.instructions() * this.nsPerInstruction + this.skipped;
  }
  /** Instructions until the next timer is due (Infinity when none): the Machine's slice bound. */
  instructionsUntilNextTimer(): number {
    const d = this.nextDeadline();
    if (d === Infinity) return Infinity;
    return Math.max(1, Math.ceil((d - this.now()) / this.nsPerInstruction));
  }
  /** All vCPUs idle: jump to the next deadline and fire what is due. False when no timer is armed. */
  skipToNextTimer(): boolean {
    const d = this.nextDeadline();
    if (d === Infinity) return false;
    const now = this.now();
    if (d > now) this.skipped += d - now;
    this.runDue();
    return true;
  }
}

export class HostClock extends TimerClock {
  private readonly start = process.hrtime.bigint();
  now(): number {
    return Number(process.hrtime.bigint() - this.start);
  }
}

/** The structural part of core's KvmClock (kvm/clock.ts) the platform uses. */
export interface KvmClockLike {
  nowNs(vcpu?: unknown): number;
  addTimer(deadlineNs: number, callback: () => void, vcpu?: null): { cancel(): void };
}

/** Platform devices on the VM's own clock (kvm.clock): timers fire in core's run loop, idle time is skipped by the irqchip. */
export class KvmPlatformClock implements PlatformClock {
  private readonly handles = new Map<number, { cancel(): void }>();
  private nextId = 1;
  constructor(readonly kvmClock: KvmClockLike) {}
  now(): number {
    return this.kvmClock.nowNs();
  }
  setTimer(atNs: number, cb: () => void): number {
    const id = this.nextId++;
    this.handles.set(id, this.kvmClock.addTimer(atNs, () => {
      this.handles.delete(id);
      cb();
    }, null));
    return id;
  }
  cancelTimer(handle: number): void {
    this.handles.get(handle)?.cancel();
    this.handles.delete(handle);
  }
}
