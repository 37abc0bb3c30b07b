/**
 * High Precision Event Timer at 0xFED00000 (IA-PC HPET specification 1.0a; QEMU
 * hw/timer/hpet.c): three timers, a 64-bit main counter at 100 MHz (period 10 ns =
 * 10,000,000 fs), legacy replacement routing (timer 0 → IRQ 0, timer 1 → IRQ 8) and
 * per-timer IOAPIC routing through Tn_INT_ROUTE_CNF, chosen among the GSIs of
 * Tn_INT_ROUTE_CAP (2, 8 and 16–23: 0x00FF0104, what QEMU's pc machines advertise).
 * All timers can be periodic and 64-bit; FSB (MSI) delivery is not offered.
 */
import type { PlatformClock } from '../clock';
import type { IrqLine } from '../irq';
import type { MmioRegionBus } from '../mmio-bus';

export const HPET_BASE = 0xfed00000;
export const HPET_SIZE = 0x400;
export const HPET_PERIOD_FS = 10_000_000;
export const HPET_NS_PER_TICK = 10;
export const HPET_NUM_TIMERS = 3;
export const HPET_VENDOR_ID = 0x8086;
export const HPET_ROUTE_CAP = 0x00ff0104;

export const HPET_ID = 0x000;
export const HPET_PERIOD = 0x004;
export const HPET_CFG = 0x010;
export const HPET_STATUS = 0x020;
export const HPET_COUNTER = 0x0f0;
export const HPET_TN_CFG = 0x100; // + 0x20 * n
export const HPET_TN_CMP = 0x108;
export const HPET_TN_FSB = 0x110;

export const HPET_CFG_ENABLE = 1;
export const HPET_CFG_LEGACY = 2;

export const TN_LEVEL = 1 << 1;
export const TN_ENABLE = 1 << 2;
export const TN_PERIODIC = 1 << 3;
export const TN_PERIODIC_CAP = 1 << 4;
export const TN_SIZE_CAP = 1 << 5;
export const TN_SETVAL = 1 << 6;
export const TN_32BIT = 1 << 8;
const TN_CFG_WRITABLE = TN_LEVEL | TN_ENABLE | TN_PERIODIC | TN_SETVAL | TN_32BIT | (0x1f << 9);

const MASK64 = (1n << 64n) - 1n;

class HpetTimer {
  config = TN_PERIODIC_CAP | TN_SIZE_CAP;
  comparator = MASK64;
  period = 0n;
  timer = 0;
  /** The level this timer drives on its line (level-triggered mode). */
  asserted = false;
  constructor(readonly index: number) {}
  get route(): number {
    return (this.config >> 9) & 0x1f;
  }
}

export class Hpet {
  readonly timers = Array.from({ length: HPET_NUM_TIMERS }, (_, i) => new HpetTimer(i));
  private config = 0;
  private isr = 0n;
  /** Counter value at `counterTime` (when the counter last stopped or was written). */
  private counterBase = 0n;
  private counterTime = 0;

  constructor(private readonly clock: PlatformClock, private readonly irq: IrqLine | null) {}

  attach(bus: MmioRegionBus, base = HPET_BASE): void {
    bus.register('hpet', base, HPET_SIZE, {
      read: (off, size) => this.read(off, size),
      write: (off, size, v) => this.write(off, size, v),
    });
  }

  private get enabled(): boolean {
    return (this.config & HPET_CFG_ENABLE) !== 0;
  }

  /** Main counter now. */
  counter(): bigint {
    if (!this.enabled) return this.counterBase;
    const ticks = Math.floor((this.clock.now() - this.counterTime) / HPET_NS_PER_TICK);
    return (this.counterBase + BigInt(ticks)) & MASK64;
  }

  capabilities(): bigint {
    return (BigInt(HPET_PERIOD_FS) << 32n) | BigInt(((HPET_VENDOR_ID << 16) | (1 << 15) | (1 << 13) | ((HPET_NUM_TIMERS - 1) << 8) | 0x01) >>> 0);
  }

  private reg64(off: number): bigint {
    if (off === HPET_ID) return this.capabilities();
    if (off === HPET_CFG) return BigInt(this.config);
    if (off === HPET_STATUS) return this.isr;
    if (off === HPET_COUNTER) return this.counter();
    if (off >= HPET_TN_CFG && off < HPET_TN_CFG + 0x20 * HPET_NUM_TIMERS) {
      const t = this.timers[(off - HPET_TN_CFG) >> 5];
      switch ((off - HPET_TN_CFG) & 0x1f) {
        case 0: return (BigInt(HPET_ROUTE_CAP) << 32n) | BigInt(t.config);
        case 8: return t.config & TN_32BIT ? t.comparator & 0xffffffffn : t.comparator;
        default: return 0n;
      }
    }
    return 0n;
  }

  read(off: number, size: number): number {
    const v = this.reg64(off & ~7);
    const shift = BigInt((off & 7) * 8);
    const mask = size === 4 ? 0xffffffffn : size === 2 ? 0xffffn : 0xffn;
    return Number((v >> shift) & mask);
  }

  write(off: number, size: number, value: number): void {
    const reg = off & ~7;
    const shift = BigInt((off & 7) * 8);
    const mask = (size === 4 ? 0xffffffffn : size === 2 ? 0xffffn : 0xffn) << shift;
    const merge = (old: bigint) => (old & ~mask) | ((BigInt(value >>> 0) << shift) & mask);
    if (reg === HPET_CFG) {
      const old = this.config;
      const now = Number(merge(BigInt(this.config))) & (HPET_CFG_ENABLE | HPET_CFG_LEGACY);
      if (!(old & HPET_CFG_ENABLE) && now & HPET_CFG_ENABLE) {
        this.counterTime = this.clock.now();
      } else if (old & HPET_CFG_ENABLE && !(now & HPET_CFG_ENABLE)) {
        this.counterBase = this.counter();
      }
      this.config = now;
      if ((old ^ now) & HPET_CFG_LEGACY) for (const t of this.timers) this.deassert(t);
      for (const t of this.timers) this.arm(t);
      return;
    }
    if (reg === HPET_STATUS) {
      // Write 1 to clear a level-triggered timer's status (and lower its line).
      const clear = merge(0n);
      for (const t of this.timers) {
        if (clear & (1n << BigInt(t.index))) {
          this.isr &= ~(1n << BigInt(t.index));
          this.deassert(t);
        }
      }
      return;
    }
    if (reg === HPET_COUNTER) {
      // Writable only while halted (spec 2.3.9.2.4); QEMU allows it always—we take it as written.
      this.counterBase = merge(this.counter());
      this.counterTime = this.clock.now();
      for (const t of this.timers) this.arm(t);
      return;
    }
    if (reg >= HPET_TN_CFG && reg < HPET_TN_CFG + 0x20 * HPET_NUM_TIMERS) {
      const t = this.timers[(reg - HPET_TN_CFG) >> 5];
      const which = (reg - HPET_TN_CFG) & 0x1f;
      if (which === 0) {
        if (shift >= 32n) return; // route capability is read-only
        const newCfg = Number(merge(BigInt(t.config)) & 0xffffffffn);
        const wasLevel = t.config & TN_LEVEL;
        t.config = (t.config & ~TN_CFG_WRITABLE) | (newCfg & TN_CFG_WRITABLE);
        // Only routes the capability lists are accepted.
        if (!((HPET_ROUTE_CAP >>> t.route) & 1)) t.config &= ~(0x1f << 9);
        if (wasLevel && !(t.config & TN_LEVEL)) this.deassert(t);
        if (!(t.config & TN_ENABLE)) this.deassert(t);
        this.arm(t);
      } else if (which === 8) {
        const w32 = (x: bigint) => (t.config & TN_32BIT ? x & 0xffffffffn : x);
        const periodic = (t.config & TN_PERIODIC) !== 0;
        // Periodic mode: with VAL_SET the write also moves the comparator; every write sets the period.
        if (!periodic || t.config & TN_SETVAL) t.comparator = w32(merge(t.comparator));
        if (periodic) t.period = w32(merge(t.period));
        // A 64-bit write arrives as two halves: VAL_SET lasts until the high half (or any write in 32-bit mode).
        if (t.config & TN_32BIT || shift + BigInt(size * 8) > 32n) t.config &= ~TN_SETVAL;
        this.arm(t);
      }
    }
  }

  /** GSI a timer interrupts on, given legacy routing. */
  private gsiOf(t: HpetTimer): number {
    if (this.config & HPET_CFG_LEGACY) {
      if (t.index === 0) return 0; // IRQ 0 (→ GSI 2 through the MADT override)
      if (t.index === 1) return 8;
    }
    return t.route;
  }

  private deassert(t: HpetTimer): void {
    if (!t.asserted) return;
    t.asserted = false;
    this.irq?.setIrq(this.gsiOf(t), false);
  }

  private fire(t: HpetTimer): void {
    if (!(t.config & TN_ENABLE)) return;
    const gsi = this.gsiOf(t);
    if (t.config & TN_LEVEL) {
      this.isr |= 1n << BigInt(t.index);
      if (!t.asserted) {
        t.asserted = true;
        this.irq?.setIrq(gsi, true);
      }
    } else {
      this.irq?.setIrq(gsi, true);
      this.irq?.setIrq(gsi, false);
    }
  }

  private arm(t: HpetTimer): void {
    if (t.timer) this.clock.cancelTimer(t.timer);
    t.timer = 0;
    if (!this.enabled || !(t.config & TN_ENABLE)) return;
    const now = this.counter();
    const wrap = t.config & TN_32BIT ? 1n << 32n : 1n << 64n;
    const cmp = t.comparator;
    const cur = now & (wrap - 1n);
    // Ticks until the counter equals the comparator (modulo the counter width).
    let delta = (cmp - cur + wrap) % wrap;
    if (delta === 0n) delta = wrap;
    if (delta > 1n << 50n) return; // beyond guest time we will ever reach
    const at = this.clock.now() + Number(delta) * HPET_NS_PER_TICK;
    t.timer = this.clock.setTimer(at, () => {
      t.timer = 0;
      this.fire(t);
      if (t.config & TN_PERIODIC && t.period > 0n) {
        t.comparator = (t.comparator + t.period) & (wrap - 1n);
        this.arm(t);
      }
    });
  }
}
