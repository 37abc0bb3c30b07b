import {
  IoPortBus, MmioRegionBus, IrqPin, RecordingIrqLine, ManualClock, RtcCmos, RTC_IRQ,
  REG_B_PIE, REG_B_UIE, REG_B_24H, REG_B_DM, REG_C_PF, REG_C_UF, REG_C_IRQF, AcpiPm, PM_TMR_BLK, PM_TIMER_HZ, PM1A_CNT_BLK,
  Hpet, HPET_BASE, HPET_CFG, HPET_COUNTER, HPET_TN_CFG, HPET_TN_CMP, HPET_STATUS, TN_ENABLE, TN_PERIODIC, TN_LEVEL, TN_SETVAL, TN_32BIT,
  setCmosMemory,
} from '../../src';

const ns = (ticks: number, hz: number) => Math.ceil((ticks * 1e9) / hz);

describe('CMOS RTC', () => {
  function setup(mem = { belowFourG: 256 * 2 ** 20, aboveFourG: 0, cpus: 2 }) {
    const clock = new ManualClock();
    const line = new RecordingIrqLine();
    const rtc = new RtcCmos(clock, new IrqPin(line, RTC_IRQ), new Date(Date.UTC(2024, 1, 29, 23, 59, 58)), mem);
    const bus = new IoPortBus();
    rtc.attach(bus);
    const rd = (i: number) => { bus.write(0x70, 1, i); return bus.read(0x71, 1); };
    const wr = (i: number, v: number) => { bus.write(0x70, 1, i); bus.write(0x71, 1, v); };
    return { clock, line, rd, wr };
  }

  it('reports the memory-size bytes as QEMU sets them', () => {
    const { rd } = setup();
    expect(rd(0x15) | (rd(0x16) << 8)).toBe(640);
    expect(rd(0x17) | (rd(0x18) << 8)).toBe(65535); // 255 MiB of extended memory, capped
    expect(rd(0x30) | (rd(0x31) << 8)).toBe(65535);
    expect(rd(0x34) | (rd(0x35) << 8)).toBe((256 - 16) * 16); // 64 KiB units above 16 MiB
    expect(rd(0x5b) | (rd(0x5c) << 8) | (rd(0x5d) << 16)).toBe(0);
    expect(rd(0x5f)).toBe(1);
    const nv = new Uint8Array(128);
    setCmosMemory(nv, { belowFourG: 0x80000000, aboveFourG: 2 ** 32, cpus: 1 });
    expect(nv[0x5b] | (nv[0x5c] << 8) | (nv[0x5d] << 16)).toBe(2 ** 32 / 65536);
    setCmosMemory(nv, { belowFourG: 8 * 2 ** 20, aboveFourG: 0, cpus: 1 });
    expect(nv[0x17] | (nv[0x18] << 8)).toBe(7 * 1024);
    expect(nv[0x34] | (nv[0x35] << 8)).toBe(0);
  });

  it('keeps time in BCD from the start date and rolls over with guest time', () => {
    const { clock, rd, wr } = setup();
    expect([rd(9), rd(8), rd(7), rd(4), rd(2), rd(0), rd(0x32)]).toEqual([0x24, 0x02, 0x29, 0x23, 0x59, 0x58, 0x20]);
    clock.advance(2e9);
    expect([rd(8), rd(7), rd(4), rd(2), rd(0)]).toEqual([0x03, 0x01, 0x00, 0x00, 0x00]);
    wr(0x0b, REG_B_24H | REG_B_DM);
    expect(rd(7)).toBe(1); // binary mode
    expect(rd(0x0d)).toBe(0x80); // VRT
  });

  it('raises the periodic interrupt on IRQ 8 at register A rate until C is read', () => {
    const { clock, line, rd, wr } = setup();
    wr(0x0a, 0x26); // 1024 Hz
    wr(0x0b, REG_B_24H | REG_B_PIE);
    clock.advance(976_563); // one period
    expect(line.level(RTC_IRQ)).toBe(true);
    expect(rd(0x0c) & (REG_C_IRQF | REG_C_PF)).toBe(REG_C_IRQF | REG_C_PF);
    expect(line.level(RTC_IRQ)).toBe(false);
    expect(rd(0x0c)).toBe(0);
    let n = 0;
    for (let i = 0; i < 100; i++) {
      clock.advance(976_563);
      if (rd(0x0c) & REG_C_PF) n++;
    }
    expect(n).toBe(100);
  });

  it('raises update-ended once a second with UIE', () => {
    const { clock, line, rd, wr } = setup();
    wr(0x0b, REG_B_24H | REG_B_UIE);
    clock.advance(999_000_000);
    expect(line.level(RTC_IRQ)).toBe(false);
    clock.advance(2_000_000);
    expect(rd(0x0c) & REG_C_UF).toBe(REG_C_UF);
  });
});

describe('ACPI PM timer and PM1 control', () => {
  it('counts at 3.579545 MHz in 24 bits and powers off on SLP_EN', () => {
    const clock = new ManualClock();
    const off: string[] = [];
    const pm = new AcpiPm(clock, (why) => off.push(why));
    const bus = new IoPortBus();
    pm.attach(bus);
    expect(PM_TMR_BLK).toBe(0x608);
    expect(bus.read(PM_TMR_BLK, 4)).toBe(0);
    clock.advance(1e9);
    expect(bus.read(PM_TMR_BLK, 4)).toBe(PM_TIMER_HZ & 0xffffff);
    clock.advance(10e9);
    expect(bus.read(PM_TMR_BLK, 4)).toBe(Math.floor(11 * PM_TIMER_HZ) & 0xffffff);
    expect(bus.read(PM_TMR_BLK, 4)).toBeLessThan(1 << 24);
    bus.write(PM1A_CNT_BLK, 2, (5 << 10) | (1 << 13));
    expect(off[0]).toMatch(/ACPI sleep/);
  });
});

describe('HPET', () => {
  function setup() {
    const clock = new ManualClock();
    const line = new RecordingIrqLine();
    const hpet = new Hpet(clock, line);
    const bus = new MmioRegionBus();
    hpet.attach(bus);
    const r32 = (o: number) => bus.read(HPET_BASE + o, 4);
    const w32 = (o: number, v: number) => bus.write(HPET_BASE + o, 4, v);
    return { clock, line, r32, w32, hpet };
  }

  it('reports capabilities (100 MHz, 3 timers, legacy routing, 64-bit) and counts when enabled', () => {
    const { clock, r32, w32 } = setup();
    expect(r32(0)).toBe(0x8086a201);
    expect(r32(4)).toBe(10_000_000);
    clock.advance(1000);
    expect(r32(HPET_COUNTER)).toBe(0); // halted
    w32(HPET_CFG, 1);
    clock.advance(1000);
    expect(r32(HPET_COUNTER)).toBe(100);
    w32(HPET_CFG, 0);
    clock.advance(1000);
    expect(r32(HPET_COUNTER)).toBe(100);
  });

  it('fires a periodic timer on its IOAPIC route and a level timer until status is cleared', () => {
    const { clock, line, r32, w32 } = setup();
    expect(r32(HPET_TN_CFG + 4)).toBe(0x00ff0104);
    w32(HPET_TN_CFG, TN_ENABLE | TN_PERIODIC | TN_SETVAL | TN_32BIT | (20 << 9)); // as Linux programs it
    w32(HPET_TN_CMP, 1000); // first at 10 µs
    w32(HPET_TN_CMP, 1000); // then every 10 µs
    w32(HPET_CFG, 1);
    clock.advance(100_000);
    expect(line.edges(20)).toBe(10);
    // Timer 1, one-shot, level-triggered on GSI 8 (legacy routing).
    w32(HPET_TN_CFG + 0x20, TN_ENABLE | TN_LEVEL);
    w32(HPET_TN_CMP + 0x20, r32(HPET_COUNTER) + 50);
    w32(HPET_TN_CMP + 0x24, 0); // the high half of a 64-bit comparator
    w32(HPET_CFG, 3);
    clock.advance(1000);
    expect(line.level(8)).toBe(true);
    expect(r32(HPET_STATUS) & 2).toBe(2);
    w32(HPET_STATUS, 2);
    expect(line.level(8)).toBe(false);
    expect(r32(HPET_STATUS) & 2).toBe(0);
  });
});
