/**
 * The ACPI fixed-hardware register block of QEMU's q35 machine (ICH9 LPC, PMBASE 0x600):
 * PM1a event block 0x600 (PM1_STS, PM1_EN; 16 bits each), PM1a control 0x604 (16 bits),
 * PM timer 0x608 (32-bit read; 24 bits of count at 3.579545 MHz), GPE0 0x620 (16 bytes,
 * status then enable). The FADT points here. Writing PM1_CNT with SLP_EN (bit 13) set puts
 * the machine to sleep; tsvisor treats every sleep state as S5, a power-off.
 * The PM timer's overflow status/interrupt (TMR_STS/TMR_EN through the SCI) is not raised.
 */
import type { PlatformClock } from '../clock';
import type { IoPortBus } from '../port-bus';

export const PM_BASE = 0x600;
export const PM1A_EVT_BLK = PM_BASE;
export const PM1A_CNT_BLK = PM_BASE + 4;
export const PM_TMR_BLK = PM_BASE + 8;
export const GPE0_BLK = PM_BASE + 0x20;
export const GPE0_BLK_LEN = 16;
export const PM_TIMER_HZ = 3579545;
export const SCI_IRQ = 9;

const SLP_EN = 1 << 13;
const SCI_EN = 1;

export class AcpiPm {
  private pm1Sts = 0;
  private pm1En = 0;
  private pm1Cnt = SCI_EN; // no SMM to hand over from: ACPI mode from the start
  private readonly gpe = new Uint8Array(GPE0_BLK_LEN);

  constructor(private readonly clock: PlatformClock, private readonly onPowerOff: (why: string) => void) {}

  /** The 24-bit PM timer count now. */
  timer(): number {
    return Math.floor((this.clock.now() * PM_TIMER_HZ) / 1e9) & 0xffffff;
  }

  attach(bus: IoPortBus): void {
    bus.register('acpi-pm1-evt', PM1A_EVT_BLK, 4, {
      read16: (p) => (p === PM1A_EVT_BLK ? this.pm1Sts : this.pm1En),
      read8: (p) => ((p < PM1A_EVT_BLK + 2 ? this.pm1Sts : this.pm1En) >> (8 * (p & 1))) & 0xff,
      write16: (p, v) => {
        if (p === PM1A_EVT_BLK) this.pm1Sts &= ~v; // write 1 to clear
        else this.pm1En = v;
      },
    });
    bus.register('acpi-pm1-cnt', PM1A_CNT_BLK, 2, {
      read16: () => this.pm1Cnt,
      read8: (p) => (this.pm1Cnt >> (8 * (p & 1))) & 0xff,
      write16: (_p, v) => this.writeCnt(v),
      write8: (p, v) => this.writeCnt(p & 1 ? (this.pm1Cnt & 0xff) | (v << 8) : (this.pm1Cnt & 0xff00) | v),
    });
    bus.register('acpi-pm-tmr', PM_TMR_BLK, 4, {
      read32: () => this.timer(),
      read8: (p) => (this.timer() >>> (8 * (p - PM_TMR_BLK))) & 0xff,
    });
    bus.register('acpi-gpe0', GPE0_BLK, GPE0_BLK_LEN, {
      read8: (p) => this.gpe[p - GPE0_BLK],
      write8: (p, v) => {
        const i = p - GPE0_BLK;
        if (i < GPE0_BLK_LEN / 2) this.gpe[i] &= ~v;
        else this.gpe[i] = v;
      },
    });
  }

  private writeCnt(v: number): void {
    this.pm1Cnt = (v & ~SLP_EN) | SCI_EN;
    if (v & SLP_EN) this.onPowerOff(`ACPI sleep (PM1a_CNT 0x${v.toString(16)}, SLP_TYP ${(v >> 10) & 7})`);
  }
}
