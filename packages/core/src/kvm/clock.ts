/**
 * The VM's clock: guest time for the LAPIC timer, TSC deadline and the platform's timers
 * (PIT, RTC, HPET, PM timer), and the timer queue they arm. KVM gets all this from the host
 * (ktime, hrtimers); tsvisor has two modes:
 *
 * - `virtual` (default): guest time is derived from retired instructions, so a run is
 *   reproducible — the same guest gives the same output and exit counts every time.
 *   **One retired instruction is one nanosecond** of a vCPU's time, and time that a vCPU
 *   spends halted passes instantly (the halted vCPU skips to the next timer deadline).
 *   Each vCPU has its own time line, `nowNs(vcpu)` = its retired instructions + the idle
 *   time it skipped; the VM's time, `nowNs()`, is the furthest any vCPU has got (monotonic).
 * - `host`: guest time is the host's monotonic clock (`process.hrtime`), shared by every vCPU.
 *   A halted vCPU sleeps (Atomics.wait, bounded) until the next deadline.
 *
 * The guest TSC is this clock, at 1 GHz in both modes (TSC ticks = nanoseconds; what CPUID
 * leaves 0x15/0x16 should report, `tscHz`), so RDTSC and the TSC-deadline timer agree:
 * - virtual: the processor's counter (`CpuState.tsc`) advances by one per retired instruction,
 *   exactly as the vCPU's time line does, and `skipTo` adds the idle time it skips;
 * - host: the processor reads the counter from the host clock (`X86Cpu.tscSource`, installed
 *   by this class), so it advances in real time, halted or not.
 * The APIC timer's bus clock is 1 GHz too (KVM's APIC_BUS_CYCLE_NS = 1).
 *
 * Timers fire from the run loop at instruction-boundary granularity (`runExpired`, called by
 * vcpu_run before each entry); a backend keeps a timer interrupt on time by entering the guest
 * for no more than `entryBudget(vcpu)` instructions.
 *
 * Who touches what: devices and the irqchip arm timers; core's run loop fires them and
 * sets `kvm.currentVcpu`; backends only call `entryBudget`.
 */
import type { Kvm } from './kvm';
import type { KvmVcpu } from './vcpu';
import type { TscSource } from '../cpu/x86-cpu';
import { KvmError } from './errors';

export type KvmClockMode = 'virtual' | 'host';

/** Frequency of the guest TSC (and of the APIC bus): 1 GHz, so TSC ticks are nanoseconds. */
export const KVM_TSC_HZ = 1_000_000_000;

/** Host mode: instructions per entry while a timer is armed, so timers are polled often enough. */
const HOST_SLICE_INSNS = 20_000;
/** Host mode: the longest a halted vCPU sleeps in one wait (the run loop then re-checks). */
const HOST_MAX_SLEEP_MS = 50;

export type KvmTimerCallback = (timer: KvmTimer) => void;

/**
 * One timer (KVM's hrtimer). A timer with a vCPU is that vCPU's (the LAPIC timer): it compares
 * against that vCPU's time and fires in its run loop. A timer without one is the VM's
 * (platform devices): it fires in whichever vCPU's run loop first sees VM time pass it.
 */
export class KvmTimer {
  /** Absolute deadline in ns of guest time; meaningful while `armed`. */
  deadlineNs = 0;
  armed = false;

  constructor(private readonly clock: KvmClock, readonly callback: KvmTimerCallback, readonly vcpu: KvmVcpu | null) {}

  /** Arm (or re-arm) for `deadlineNs`. A deadline already past fires at the next check. */
  arm(deadlineNs: number): this {
    if (!Number.isFinite(deadlineNs)) throw new KvmError('EINVAL', `timer deadline must be a finite number of ns, got ${deadlineNs}`);
    this.deadlineNs = deadlineNs;
    if (!this.armed) {
      this.armed = true;
      this.clock.timers.push(this);
    }
    this.clock.recomputeEarliest();
    return this;
  }

  cancel(): void {
    if (!this.armed) return;
    this.armed = false;
    const t = this.clock.timers;
    const i = t.indexOf(this);
    if (i >= 0) t.splice(i, 1);
    this.clock.recomputeEarliest();
  }
}

/** Per-vCPU clock bookkeeping. */
interface VcpuTime {
  /** Virtual mode: idle time skipped while halted (ns). */
  skippedNs: number;
  /** Host mode: the vCPU's TSC counter is host time + this (set at the switch and by WRMSR). */
  hostTscBias: number;
  /** Host mode: the processor's TSC source (reads host time + bias). */
  hostTsc: TscSource | null;
  /** Retired-instruction count at which the current KVM_RUN's budget runs out. */
  runEnd: number;
}

function hostNowNs(): number {
  const [s, ns] = process.hrtime();
  return s * 1e9 + ns;
}

export class KvmClock {
  /** Armed timers (few: one LAPIC timer per vCPU plus a handful of devices). */
  readonly timers: KvmTimer[] = [];
  /** Smallest armed deadline (Infinity when none): the run loop's cheap pre-check. */
  earliest = Infinity;
  readonly tscHz = KVM_TSC_HZ;
  private modeValue: KvmClockMode = 'virtual';
  private vmNs = 0;
  private hostEpoch = hostNowNs();
  private readonly perVcpu = new WeakMap<KvmVcpu, VcpuTime>();
  private sleepCell: Int32Array | null = null;

  constructor(private readonly kvm: Kvm) {}

  get mode(): KvmClockMode {
    return this.modeValue;
  }

  /** Choose the clock (before the first KVM_RUN; switching later re-bases host time at now). */
  setMode(mode: KvmClockMode): void {
    if (mode !== 'virtual' && mode !== 'host') throw new KvmError('EINVAL', `clock mode must be 'virtual' or 'host', got '${String(mode)}'`);
    if (mode === this.modeValue) return;
    const now = this.nowNs();
    this.modeValue = mode;
    if (mode === 'host') this.hostEpoch = hostNowNs() - now;
    for (const v of this.kvm.vcpus) {
      const t = this.vcpuTime(v);
      if (mode === 'host') {
        // The counter continues from where the vCPU's TSC is, then follows host time.
        t.hostTscBias = Number(v.cpu.state.tsc) - now;
        this.attachHostTsc(v, t);
      } else {
        // Back to counting instructions from the counter's current value.
        v.cpu.state.tsc = BigInt(Math.floor(this.hostCounter(t)));
        v.cpu.tscSource = null;
        t.skippedNs = Math.max(0, now - v.cpu.state.instructionsRetired);
      }
    }
  }

  /** Host mode: the TSC counter of the vCPU with bookkeeping `t`. */
  private hostCounter(t: VcpuTime): number {
    return hostNowNs() - this.hostEpoch + t.hostTscBias;
  }

  /** Host mode: make the vCPU's processor read its TSC from host time. */
  private attachHostTsc(vcpu: KvmVcpu, t: VcpuTime): void {
    t.hostTsc ??= {
      now: () => this.hostCounter(t),
      set: (value: number) => { t.hostTscBias += value - this.hostCounter(t); },
    };
    vcpu.cpu.tscSource = t.hostTsc;
    vcpu.cpu.state.tsc = BigInt(Math.floor(this.hostCounter(t)));
  }

  private vcpuTime(vcpu: KvmVcpu): VcpuTime {
    let t = this.perVcpu.get(vcpu);
    if (!t) {
      t = { skippedNs: 0, hostTscBias: 0, hostTsc: null, runEnd: Infinity };
      this.perVcpu.set(vcpu, t);
    }
    return t;
  }

  /**
   * Guest time in ns. With a vCPU: that vCPU's time (the LAPIC's view). Without: the VM's
   * time — the furthest any vCPU has got, including the one running now (devices' view).
   */
  nowNs(vcpu?: KvmVcpu | null): number {
    if (this.modeValue === 'host') return hostNowNs() - this.hostEpoch;
    if (vcpu) return this.vcpuNs(vcpu);
    for (const v of this.kvm.vcpus) {
      const t = this.vcpuNs(v);
      if (t > this.vmNs) this.vmNs = t;
    }
    return this.vmNs;
  }

  /** Virtual mode: a vCPU's own time line. */
  private vcpuNs(v: KvmVcpu): number {
    return v.cpu.state.instructionsRetired + (this.perVcpu.get(v)?.skippedNs ?? 0);
  }

  /** The guest TSC as RDTSC / RDMSR(IA32_TSC) on `vcpu` (outside runGuest) report it now. */
  guestTsc(vcpu: KvmVcpu): bigint {
    if (this.modeValue === 'host') this.syncHostTsc(vcpu);
    return BigInt.asUintN(64, vcpu.cpu.state.tsc + vcpu.arch.tscOffset);
  }

  /** Convert a guest-TSC value on `vcpu` to an absolute deadline in ns on its time line. */
  tscToNs(vcpu: KvmVcpu, tsc: bigint): number {
    const delta = BigInt.asIntN(64, tsc - this.guestTsc(vcpu));
    return this.nowNs(vcpu) + Number(delta) * (1e9 / this.tscHz);
  }

  // ---------------------------------------------------------------- timers

  /** A new, unarmed timer (arm it with `timer.arm(deadlineNs)`). */
  createTimer(callback: KvmTimerCallback, vcpu: KvmVcpu | null = null): KvmTimer {
    return new KvmTimer(this, callback, vcpu);
  }

  /** A timer armed for `deadlineNs` (absolute guest ns, compare `nowNs()`). */
  addTimer(deadlineNs: number, callback: KvmTimerCallback, vcpu: KvmVcpu | null = null): KvmTimer {
    return this.createTimer(callback, vcpu).arm(deadlineNs);
  }

  cancelTimer(timer: KvmTimer): void {
    timer.cancel();
  }

  /** internal (KvmTimer): keep `earliest` current. */
  recomputeEarliest(): void {
    let e = Infinity;
    for (const t of this.timers) if (t.deadlineNs < e) e = t.deadlineNs;
    this.earliest = e;
  }

  /**
   * The earliest deadline that matters to `vcpu` (its own timers and the VM's), or to the VM
   * as a whole when no vCPU is given. Infinity when nothing is armed.
   */
  nextDeadline(vcpu?: KvmVcpu): number {
    let e = Infinity;
    for (const t of this.timers) {
      if (vcpu && t.vcpu && t.vcpu !== vcpu) continue;
      if (t.deadlineNs < e) e = t.deadlineNs;
    }
    return e;
  }

  /**
   * Fire every timer that is due as seen from `vcpu` (its own timers against its time, the
   * VM's timers against VM time). Called by the run loop at instruction boundaries. Returns the
   * number fired. A callback may re-arm its timer (periodic timers).
   */
  runExpired(vcpu: KvmVcpu): number {
    if (this.modeValue === 'host') this.syncHostTsc(vcpu);
    if (this.earliest === Infinity) return 0;
    const own = this.nowNs(vcpu);
    const vm = this.nowNs();
    if (Math.max(own, vm) < this.earliest) return 0;
    let fired = 0;
    // Fire in deadline order, one at a time: a callback may arm or cancel other timers.
    for (let guard = 0; guard < 10_000; guard++) {
      let best: KvmTimer | null = null;
      for (const t of this.timers) {
        if (t.vcpu && t.vcpu !== vcpu) continue;
        const now = t.vcpu ? own : vm;
        if (t.deadlineNs <= now && (!best || t.deadlineNs < best.deadlineNs)) best = t;
      }
      if (!best) break;
      best.cancel();
      fired++;
      best.callback(best);
    }
    return fired;
  }

  /** KVM_RUN starts: its instruction budget (vcpu.runBudget) counts from `start` (the retired count when it began). */
  beginRun(vcpu: KvmVcpu, start = vcpu.cpu.state.instructionsRetired): void {
    this.vcpuTime(vcpu).runEnd = start + vcpu.runBudget;
  }

  /**
   * How many instructions a backend may let `vcpu` run in this entry (at most `max`): what is
   * left of this KVM_RUN's budget and, in the virtual mode, no further than its next timer
   * deadline, so the timer's interrupt arrives on time; in the host mode a short slice while
   * any timer is armed. Backends pass this as the processor's runGuest budget. Always ≥ 1.
   */
  entryBudget(vcpu: KvmVcpu, max = Infinity): number {
    const left = (this.perVcpu.get(vcpu)?.runEnd ?? Infinity) - vcpu.cpu.state.instructionsRetired;
    if (left < max) max = Math.max(1, left);
    if (max === Infinity) max = vcpu.runBudget;
    if (this.earliest === Infinity) return max;
    if (this.modeValue === 'host') return Math.min(max, HOST_SLICE_INSNS);
    const d = this.nextDeadline(vcpu);
    if (d === Infinity) return max;
    return Math.max(1, Math.min(max, Math.ceil(d - this.nowNs(vcpu))));
  }

  // ---------------------------------------------------------------- idle

  /**
   * Virtual mode: let an idle `vcpu`'s time pass up to `ns` (no instructions retire; the TSC
   * keeps counting, as it does in HLT on real hardware). Never moves time backwards.
   */
  skipTo(vcpu: KvmVcpu, ns: number): void {
    if (this.modeValue !== 'virtual') return;
    const now = this.nowNs(vcpu);
    if (ns <= now) return;
    const delta = Math.ceil(ns - now);
    this.vcpuTime(vcpu).skippedNs += delta;
    vcpu.cpu.state.tsc += BigInt(delta);
  }

  /** Virtual mode: bring an idle vCPU's time up to the VM's (time passed while it was blocked). */
  catchUp(vcpu: KvmVcpu): void {
    this.skipTo(vcpu, this.nowNs());
  }

  /**
   * Host mode: sleep until `deadlineNs` of guest time, at most HOST_MAX_SLEEP_MS. Returns true
   * if the deadline has passed on return.
   */
  sleepUntil(deadlineNs: number): boolean {
    const left = deadlineNs - this.nowNs();
    if (left <= 0) return true;
    const ms = Math.min(HOST_MAX_SLEEP_MS, left / 1e6);
    if (ms >= 0.05) {
      this.sleepCell ??= new Int32Array(new SharedArrayBuffer(4));
      Atomics.wait(this.sleepCell, 0, 0, ms);
    }
    return this.nowNs() >= deadlineNs;
  }

  /**
   * Host mode: refresh the vCPU's TSC counter (`CpuState.tsc`, which backends and KVM_GET_MSRS
   * read between entries) from host time, attaching the host time source to a vCPU created
   * after the switch.
   */
  private syncHostTsc(vcpu: KvmVcpu): void {
    const t = this.vcpuTime(vcpu);
    if (vcpu.cpu.tscSource !== t.hostTsc || t.hostTsc === null) {
      t.hostTscBias = Number(vcpu.cpu.state.tsc) - (hostNowNs() - this.hostEpoch);
      this.attachHostTsc(vcpu, t);
      return;
    }
    vcpu.cpu.state.tsc = BigInt(Math.floor(this.hostCounter(t)));
  }
}
