/**
 * MC146818 real-time clock and CMOS NVRAM at 0x70 (index; bit 7 is the NMI mask) and 0x71
 * (data), IRQ 8 (Motorola MC146818A data sheet; QEMU hw/rtc/mc146818rtc.c).
 *
 * The clock reads `base + guest time`: the date the Machine gives (a fixed date under the
 * virtual clock, so runs are reproducible; the host's date under the host clock) plus the
 * platform clock. Register A's rate selects the periodic interrupt (PF, with PIE), an update
 * completes every second (UF, with UIE; AF when the alarm matches, with AIE); each sets IRQF
 * in register C and raises IRQ 8, which stays high until the guest reads register C.
 * Memory-size bytes are those QEMU's pc_cmos_init writes.
 */
import type { PlatformClock } from '../clock';
import type { IrqPin } from '../irq';
import type { IoPortBus } from '../port-bus';

export const RTC_INDEX_PORT = 0x70;
export const RTC_DATA_PORT = 0x71;
export const RTC_IRQ = 8;

export const RTC_SECONDS = 0x00;
export const RTC_SECONDS_ALARM = 0x01;
export const RTC_MINUTES = 0x02;
export const RTC_MINUTES_ALARM = 0x03;
export const RTC_HOURS = 0x04;
export const RTC_HOURS_ALARM = 0x05;
export const RTC_DAY_OF_WEEK = 0x06;
export const RTC_DAY_OF_MONTH = 0x07;
export const RTC_MONTH = 0x08;
export const RTC_YEAR = 0x09;
export const RTC_REG_A = 0x0a;
export const RTC_REG_B = 0x0b;
export const RTC_REG_C = 0x0c;
export const RTC_REG_D = 0x0d;
export const RTC_CENTURY = 0x32;

export const REG_A_UIP = 0x80;
export const REG_B_SET = 0x80;
export const REG_B_PIE = 0x40;
export const REG_B_AIE = 0x20;
export const REG_B_UIE = 0x10;
export const REG_B_DM = 0x04; // binary (not BCD)
export const REG_B_24H = 0x02;
export const REG_C_IRQF = 0x80;
export const REG_C_PF = 0x40;
export const REG_C_AF = 0x20;
export const REG_C_UF = 0x10;
export const REG_D_VRT = 0x80;

const NS_PER_S = 1_000_000_000;
/** UIP is set for the 244 µs before each update (data sheet, "update cycle"). */
const UIP_WINDOW_NS = 244_000;

export interface CmosMemoryLayout {
  /** RAM below 4 GiB, bytes. */
  belowFourG: number;
  /** RAM at and above 4 GiB, bytes. */
  aboveFourG: number;
  cpus: number;
}

export class RtcCmos {
  readonly nvram = new Uint8Array(128);
  private index = 0;
  /** Wall-clock ms at guest time 0 (adjusted when the guest sets the time). */
  private baseMs: number;
  /** Time fields frozen while register B's SET bit is on. */
  private frozenMs: number | null = null;
  private periodicTimer = 0;
  private updateTimer = 0;
  nmiMasked = false;

  constructor(
    private readonly clock: PlatformClock,
    private readonly irq8: IrqPin | null,
    /** Date and time the RTC shows at guest time 0. */
    startDate: Date,
    mem?: CmosMemoryLayout,
  ) {
    this.baseMs = startDate.getTime();
    this.nvram[RTC_REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz rate (what BIOSes program)
    this.nvram[RTC_REG_B] = REG_B_24H;
    this.nvram[RTC_REG_D] = REG_D_VRT; // battery good
    if (mem) setCmosMemory(this.nvram, mem);
  }

  attach(bus: IoPortBus): void {
    bus.register('rtc-cmos', RTC_INDEX_PORT, 2, {
      read8: (p) => (p === RTC_INDEX_PORT ? 0xff : this.readData()),
      write8: (p, v) => {
        if (p === RTC_INDEX_PORT) {
          this.index = v & 0x7f;
          this.nmiMasked = (v & 0x80) !== 0;
        } else {
          this.writeData(v);
        }
      },
    });
  }

  private nowMs(): number {
    if (this.frozenMs !== null) return this.frozenMs;
    return this.baseMs + Math.floor(this.clock.now() / 1e6);
  }

  private enc(v: number): number {
    return this.nvram[RTC_REG_B] & REG_B_DM ? v : ((Math.floor(v / 10) << 4) | (v % 10));
  }

  private dec(v: number): number {
    return this.nvram[RTC_REG_B] & REG_B_DM ? v : ((v >> 4) * 10 + (v & 0xf));
  }

  private hoursOut(h: number): number {
    if (this.nvram[RTC_REG_B] & REG_B_24H) return this.enc(h);
    const pm = h >= 12;
    const h12 = h % 12 === 0 ? 12 : h % 12;
    return this.enc(h12) | (pm ? 0x80 : 0);
  }

  /** Register index as the guest reads it now. */
  readRegister(i: number): number {
    const d = new Date(this.nowMs());
    switch (i) {
      case RTC_SECONDS: return this.enc(d.getUTCSeconds());
      case RTC_MINUTES: return this.enc(d.getUTCMinutes());
      case RTC_HOURS: return this.hoursOut(d.getUTCHours());
      case RTC_DAY_OF_WEEK: return this.enc(d.getUTCDay() + 1);
      case RTC_DAY_OF_MONTH: return this.enc(d.getUTCDate());
      case RTC_MONTH: return this.enc(d.getUTCMonth() + 1);
      case RTC_YEAR: return this.enc(d.getUTCFullYear() % 100);
      case RTC_CENTURY: return this.enc(Math.floor(d.getUTCFullYear() / 100));
      case RTC_REG_A: {
        const frac = ((this.clock.now() + (this.baseMs % 1000) * 1e6) % NS_PER_S);
        const uip = this.frozenMs === null && frac >= NS_PER_S - UIP_WINDOW_NS;
        return (this.nvram[RTC_REG_A] & 0x7f) | (uip ? REG_A_UIP : 0);
      }
      case RTC_REG_C: {
        const v = this.nvram[RTC_REG_C];
        this.nvram[RTC_REG_C] = 0; // reading C acknowledges every flag and lowers IRQ 8
        this.irq8?.set(false);
        return v;
      }
      default:
        return this.nvram[i];
    }
  }

  private readData(): number {
    return this.readRegister(this.index);
  }

  private writeData(v: number): void {
    const i = this.index;
    switch (i) {
      case RTC_SECONDS: case RTC_MINUTES: case RTC_HOURS: case RTC_DAY_OF_WEEK:
      case RTC_DAY_OF_MONTH: case RTC_MONTH: case RTC_YEAR: case RTC_CENTURY:
        this.setTimeField(i, v);
        return;
      case RTC_REG_A:
        this.nvram[RTC_REG_A] = (this.nvram[RTC_REG_A] & REG_A_UIP) | (v & 0x7f);
        this.armPeriodic();
        return;
      case RTC_REG_B: {
        const old = this.nvram[RTC_REG_B];
        this.nvram[RTC_REG_B] = v;
        if (v & REG_B_SET && !(old & REG_B_SET)) this.frozenMs = this.nowMs();
        if (!(v & REG_B_SET) && old & REG_B_SET && this.frozenMs !== null) {
          this.baseMs = this.frozenMs - Math.floor(this.clock.now() / 1e6);
          this.frozenMs = null;
        }
        this.armPeriodic();
        this.armUpdate();
        this.updateIrq();
        return;
      }
      case RTC_REG_C: case RTC_REG_D:
        return; // read-only
      default:
        this.nvram[i] = v;
    }
  }

  private setTimeField(i: number, raw: number): void {
    const d = new Date(this.nowMs());
    let v = i === RTC_HOURS ? this.dec(raw & 0x7f) : this.dec(raw);
    if (i === RTC_HOURS && !(this.nvram[RTC_REG_B] & REG_B_24H)) v = (v % 12) + (raw & 0x80 ? 12 : 0);
    switch (i) {
      case RTC_SECONDS: d.setUTCSeconds(v); break;
      case RTC_MINUTES: d.setUTCMinutes(v); break;
      case RTC_HOURS: d.setUTCHours(v); break;
      case RTC_DAY_OF_MONTH: d.setUTCDate(v); break;
      case RTC_MONTH: d.setUTCMonth(v - 1); break;
      case RTC_YEAR: d.setUTCFullYear(Math.floor(d.getUTCFullYear() / 100) * 100 + v); break;
      case RTC_CENTURY: d.setUTCFullYear(v * 100 + (d.getUTCFullYear() % 100)); break;
      default: return; // day of week follows from the date
    }
    if (this.frozenMs !== null) this.frozenMs = d.getTime();
    else this.baseMs = d.getTime() - Math.floor(this.clock.now() / 1e6);
  }

  /** Periodic interrupt period in ns for register A's rate select, or 0 when off. */
  periodNs(): number {
    let rs = this.nvram[RTC_REG_A] & 0x0f;
    if (rs === 0) return 0;
    if (rs <= 2) rs += 7; // rates 1 and 2 alias 8 and 9 with the 32.768 kHz time base
    return (NS_PER_S * (1 << (rs - 1))) / 32768;
  }

  private armPeriodic(): void {
    if (this.periodicTimer) this.clock.cancelTimer(this.periodicTimer);
    this.periodicTimer = 0;
    const p = this.periodNs();
    if (!p || !(this.nvram[RTC_REG_B] & REG_B_PIE)) return;
    // Periods are aligned to guest time 0, like the divider chain's free-running counter.
    const next = (Math.floor(this.clock.now() / p) + 1) * p;
    this.periodicTimer = this.clock.setTimer(Math.round(next), () => {
      this.periodicTimer = 0;
      this.raise(REG_C_PF);
      this.armPeriodic();
    });
  }

  private armUpdate(): void {
    if (this.updateTimer) this.clock.cancelTimer(this.updateTimer);
    this.updateTimer = 0;
    if (!(this.nvram[RTC_REG_B] & (REG_B_UIE | REG_B_AIE)) || this.nvram[RTC_REG_B] & REG_B_SET) return;
    const now = this.clock.now();
    const offset = (this.baseMs % 1000) * 1e6;
    const next = Math.floor((now + offset) / NS_PER_S + 1) * NS_PER_S - offset;
    this.updateTimer = this.clock.setTimer(next, () => {
      this.updateTimer = 0;
      let flags = REG_C_UF;
      if (this.alarmMatches()) flags |= REG_C_AF;
      this.raise(flags);
      this.armUpdate();
    });
  }

  private alarmMatches(): boolean {
    const f = (alarm: number, cur: number) => (this.nvram[alarm] & 0xc0) === 0xc0 || this.nvram[alarm] === this.readRegister(cur);
    return f(RTC_SECONDS_ALARM, RTC_SECONDS) && f(RTC_MINUTES_ALARM, RTC_MINUTES) && f(RTC_HOURS_ALARM, RTC_HOURS);
  }

  private raise(flags: number): void {
    this.nvram[RTC_REG_C] |= flags;
    this.updateIrq();
  }

  private updateIrq(): void {
    const b = this.nvram[RTC_REG_B];
    const c = this.nvram[RTC_REG_C];
    const enabled = ((b & REG_B_PIE) && (c & REG_C_PF)) || ((b & REG_B_AIE) && (c & REG_C_AF)) || ((b & REG_B_UIE) && (c & REG_C_UF));
    if (enabled) {
      this.nvram[RTC_REG_C] |= REG_C_IRQF;
      this.irq8?.set(true);
    }
  }
}

/** The memory-size bytes QEMU's pc_cmos_init writes (hw/i386/pc.c), and the CPU count at 0x5F. */
export function setCmosMemory(nvram: Uint8Array, m: CmosMemoryLayout): void {
  // 0x15/0x16: base memory in KiB (640).
  nvram[0x15] = 640 & 0xff;
  nvram[0x16] = 640 >> 8;
  // 0x17/0x18 and 0x30/0x31: KiB of extended memory above 1 MiB, capped at 65535.
  const ext = Math.min(65535, Math.max(0, Math.floor(m.belowFourG / 1024) - 1024));
  nvram[0x17] = nvram[0x30] = ext & 0xff;
  nvram[0x18] = nvram[0x31] = ext >> 8;
  // 0x34/0x35: 64 KiB units above 16 MiB (below 4 GiB), capped at 65535.
  const above16 = m.belowFourG > 16 * 2 ** 20 ? Math.min(65535, Math.floor((m.belowFourG - 16 * 2 ** 20) / 65536)) : 0;
  nvram[0x34] = above16 & 0xff;
  nvram[0x35] = above16 >> 8;
  // 0x5B..0x5D: 64 KiB units above 4 GiB.
  const high = Math.floor(m.aboveFourG / 65536);
  nvram[0x5b] = high & 0xff;
  nvram[0x5c] = (high >> 8) & 0xff;
  nvram[0x5d] = (high >> 16) & 0xff;
  // 0x5F: number of CPUs minus one (SeaBIOS reads it).
  nvram[0x5f] = Math.max(0, m.cpus - 1) & 0xff;
  // 0x14: equipment byte — no floppy, 80x25 color display, math coprocessor present.
  nvram[0x14] = 0x06;
}
