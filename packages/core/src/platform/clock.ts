/**
 * Guest time for the platform's devices (PIT, RTC, HPET, PM timer), in nanoseconds as a plain
 * number (2^53 ns is 104 days of guest time).
 *
 * The Machine gives its devices the VM's own clock, `kvm.clock` (kvm/clock.ts), through
 * `KvmPlatformClock`: virtual time derived from retired instructions (reproducible) or host
 * time, timers that fire in core's run loop at instruction boundaries, idle time skipped by
 * the irqchip when every vCPU is halted. The platform keeps no clock of its own.
 *
 * `ManualClock` is for device tests: time moves only when the test says so.
 */
export interface PlatformClock {
  /** Guest time now, in ns. */
  now(): number;
  /** Call `cb` once when guest time reaches `atNs`; returns a handle for cancelTimer. */
  setTimer(atNs: number, cb: () => void): number;
  cancelTimer(handle: number): void;
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

interface ManualTimer {
  id: number;
  at: number;
  cb: () => void;
}

/** A clock for device tests: time moves only with `advance`/`set`, timers fire in deadline order. */
export class ManualClock implements PlatformClock {
  private t = 0;
  private timers: ManualTimer[] = [];
  private nextId = 1;

  now(): number {
    return this.t;
  }

  setTimer(atNs: number, cb: () => void): number {
    const timer: ManualTimer = { id: this.nextId++, at: atNs, cb };
    // Ordered by deadline, then by creation (determinism).
    let i = this.timers.length;
    while (i > 0 && this.timers[i - 1].at > atNs) i--;
    this.timers.splice(i, 0, timer);
    return timer.id;
  }

  cancelTimer(handle: number): void {
    const i = this.timers.findIndex((x) => x.id === handle);
    if (i >= 0) this.timers.splice(i, 1);
  }

  get pendingTimers(): number {
    return this.timers.length;
  }

  /** Move time forward by `ns`, firing timers in deadline order at their own times. */
  advance(ns: number): void {
    const end = this.t + ns;
    // Bounded: a callback that keeps re-arming in the past cannot loop forever here.
    for (let fired = 0; this.timers.length && this.timers[0].at <= end && fired < 1_000_000; fired++) {
      const timer = this.timers.shift()!;
      this.t = Math.max(this.t, timer.at);
      timer.cb();
    }
    this.t = end;
  }

  set(ns: number): void {
    this.advance(Math.max(0, ns - this.t));
  }
}
