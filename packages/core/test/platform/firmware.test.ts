import {
  IoPortBus, MmioRegionBus, FwCfg, FW_CFG_PORT_SEL, FW_CFG_PORT_DATA, FW_CFG_SIGNATURE, FW_CFG_ID, FW_CFG_FILE_DIR,
  FW_CFG_RAM_SIZE, FW_CFG_NB_CPUS, PciBus, q35HostBridge, PciTestdev, PCI_CONFIG_ADDRESS, PCI_CONFIG_DATA,
  installFirmware, findRsdp, checksum, e820Map, ramLayout, GuestRam, PcTestdev, RecordingIrqLine, PC_TESTDEV_IOMEM,
  SystemControl, LAPIC_BASE, IOAPIC_BASE,
} from '../../src';

describe('fw_cfg', () => {
  it('answers the signature, ID, RAM size, CPU count and a big-endian file directory with etc/e820', () => {
    const fw = new FwCfg();
    const bus = new IoPortBus();
    fw.attach(bus);
    fw.setU64(FW_CFG_RAM_SIZE, 256n * 2n ** 20n);
    fw.setU16(FW_CFG_NB_CPUS, 4);
    fw.setE820(e820Map(ramLayout(256 * 2 ** 20)));
    const read = (sel: number, n: number) => {
      bus.write(FW_CFG_PORT_SEL, 2, sel);
      return Uint8Array.from({ length: n }, () => bus.read(FW_CFG_PORT_DATA, 1));
    };
    expect(Buffer.from(read(FW_CFG_SIGNATURE, 4)).toString()).toBe('QEMU');
    expect(new DataView(read(FW_CFG_ID, 4).buffer).getUint32(0, true)).toBe(1);
    expect(new DataView(read(FW_CFG_RAM_SIZE, 8).buffer).getBigUint64(0, true)).toBe(256n * 2n ** 20n);
    expect(new DataView(read(FW_CFG_NB_CPUS, 2).buffer).getUint16(0, true)).toBe(4);
    const dir = read(FW_CFG_FILE_DIR, 4 + 64);
    const dv = new DataView(dir.buffer);
    expect(dv.getUint32(0, false)).toBe(1);
    expect(dv.getUint32(4, false)).toBe(20 * 4); // 4 e820 entries
    const sel = dv.getUint16(8, false);
    expect(Buffer.from(dir.subarray(12, 20)).toString()).toBe('etc/e820');
    const e820 = new DataView(read(sel, 80).buffer);
    expect(e820.getBigUint64(60, true)).toBe(0x100000n);
    expect(e820.getUint32(76, true)).toBe(1);
    expect(read(FW_CFG_SIGNATURE, 6)[5]).toBe(0); // past the end
  });
});

describe('PCI configuration mechanism #1', () => {
  function setup() {
    const ports = new IoPortBus();
    const mmio = new MmioRegionBus();
    const pci = new PciBus(ports, mmio);
    pci.attach();
    pci.plug(q35HostBridge(), 0);
    const td = new PciTestdev();
    pci.plug(td, 3);
    const cfg = (dev: number, off: number, size: 1 | 2 | 4 = 4) => {
      ports.write(PCI_CONFIG_ADDRESS, 4, (0x80000000 | (dev << 11) | (off & 0xfc)) >>> 0);
      return ports.read(PCI_CONFIG_DATA + (off & 3), size);
    };
    const cfgw = (dev: number, off: number, v: number) => {
      ports.write(PCI_CONFIG_ADDRESS, 4, (0x80000000 | (dev << 11) | off) >>> 0);
      ports.write(PCI_CONFIG_DATA, 4, v);
    };
    return { ports, mmio, pci, td, cfg, cfgw };
  }

  it('shows the q35 host bridge and pci-testdev, and all-ones for empty slots', () => {
    const { cfg } = setup();
    expect(cfg(0, 0)).toBe(0x29c08086);
    expect(cfg(0, 8) >>> 8).toBe(0x060000);
    expect(cfg(3, 0)).toBe(0x00051b36);
    expect(cfg(3, 2, 2)).toBe(0x0005);
    expect(cfg(5, 0)).toBe(0xffffffff);
    expect(cfg(3, 0x3d, 1)).toBe(0); // no interrupt pin
  });

  it('sizes and maps pci-testdev BARs and runs its I/O tests', () => {
    const { cfg, cfgw, ports, mmio, td } = setup();
    cfgw(3, 0x10, 0xffffffff);
    expect(cfg(3, 0x10)).toBe(0xfffff000); // 4 KiB memory BAR
    cfgw(3, 0x14, 0xffffffff);
    expect(cfg(3, 0x14)).toBe(0xffffff01); // 256-byte I/O BAR
    cfgw(3, 0x10, 0xfebf0000);
    cfgw(3, 0x14, 0xc000);
    cfgw(3, 0x04, 0x3);
    // MMIO test 0 (no-eventfd): select, read the header, write the offset it names.
    mmio.write(0xfebf0000, 1, 0);
    expect(mmio.read(0xfebf0000, 1)).toBe(0);
    const off = mmio.read(0xfebf0004, 4);
    expect(off).toBe(2048);
    const data = mmio.read(0xfebf0008, 1);
    expect(data).toBe(0xfa);
    const name = Buffer.from(Array.from({ length: 15 }, (_, i) => mmio.read(0xfebf0010 + i, 1))).toString();
    expect(name).toBe('mmio-no-eventfd');
    mmio.write(0xfebf0000 + off, 1, data);
    mmio.write(0xfebf0000 + off, 1, 0x11); // no match
    expect(td.count).toBe(1);
    // Port I/O test 1 (wildcard): any value counts.
    ports.write(0xc000, 1, 1);
    const poff = ports.read(0xc004, 4);
    expect(poff).toBe(128 + 4);
    ports.write(0xc000 + poff, 1, 0x99);
    expect(ports.read(0xc00c, 4)).toBe(1);
  });
});

describe('pc-testdev and system control', () => {
  it('has the scratch port, the IRQ lines, the MMIO window and a no-op flush port', () => {
    const ports = new IoPortBus();
    const mmio = new MmioRegionBus();
    const line = new RecordingIrqLine();
    new PcTestdev(line).attach(ports, mmio);
    ports.write(0xe0, 4, 0x12345678);
    expect(ports.read(0xe0, 1)).toBe(0x78);
    expect(ports.read(0xe2, 2)).toBe(0x1234);
    ports.write(0xe1, 1, 0xaa);
    expect(ports.read(0xe0, 4)).toBe(0x1234aa78);
    expect(ports.read(0xe8, 1)).toBe(0x78);
    expect(ports.read(0xea, 2)).toBe(0x1234);
    ports.write(0xe4, 4, 0x1000);
    expect(ports.read(0xe4, 4)).toBe(0);
    ports.write(0x2000 + 10, 1, 1);
    expect(line.level(10)).toBe(true);
    ports.write(0x2000 + 10, 1, 0);
    expect(line.level(10)).toBe(false);
    mmio.write(PC_TESTDEV_IOMEM + 0x100, 4, 0xcafef00d);
    expect(mmio.read(PC_TESTDEV_IOMEM + 0x102, 2)).toBe(0xcafe);
  });

  it('resets through 0x64 (0xFE), 0xCF9 and 0x92, and gates A20', () => {
    const events: string[] = [];
    const sc = new SystemControl((k, why) => events.push(`${k}: ${why}`));
    const bus = new IoPortBus();
    sc.attach(bus);
    bus.write(0x92, 1, 0);
    expect(bus.read(0x92, 1) & 2).toBe(0);
    bus.write(0x92, 1, 2);
    expect(sc.a20).toBe(true);
    expect(events).toEqual([]);
    bus.write(0x64, 1, 0xfe);
    bus.write(0xcf9, 1, 0x06);
    bus.write(0x92, 1, 3);
    expect(events.length).toBe(3);
    expect(events[0]).toMatch(/^reset: keyboard controller/);
  });
});

describe('firmware and ACPI', () => {
  function boot(cpus: number) {
    const ram = new GuestRam();
    const mem = new Uint8Array(2 * 2 ** 20);
    ram.add(0, mem);
    const info = installFirmware(ram, { apicIds: Array.from({ length: cpus }, (_, i) => i), hpetBlockId: 0x8086a201 });
    return { mem, info };
  }
  const u32 = (m: Uint8Array, a: number) => new DataView(m.buffer).getUint32(a, true);
  const sig = (m: Uint8Array, a: number) => Buffer.from(m.subarray(a, a + 4)).toString();

  it('leaves an IVT with PIC-acknowledging handlers and a BIOS data area', () => {
    const { mem } = boot(1);
    const vec = (v: number) => { const p = u32(mem, v * 4); return ((p >>> 16) << 4) + (p & 0xffff); };
    expect(mem[vec(0x08)]).toBe(0x50); // push ax …
    expect([...mem.subarray(vec(0x08), vec(0x08) + 7)]).toEqual([0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf]);
    expect([...mem.subarray(vec(0x70) + 3, vec(0x70) + 7)]).toEqual([0xe6, 0xa0, 0xe6, 0x20]);
    expect(mem[vec(0x10)]).toBe(0xcf);
    expect(new DataView(mem.buffer).getUint16(0x400, true)).toBe(0x3f8);
    expect(new DataView(mem.buffer).getUint16(0x413, true)).toBe(639);
    expect(new DataView(mem.buffer).getUint16(0x40e, true)).toBe(0x9fc0);
  });

  it('puts an RSDP a scan of 0xE0000-0xFFFFF finds, with valid checksums, and a MADT listing every vCPU', () => {
    const { mem } = boot(4);
    const rsdp = findRsdp(mem);
    expect(rsdp).toBeGreaterThanOrEqual(0xe0000);
    expect(checksum(mem, rsdp, rsdp + 20)).toBe(0);
    expect(checksum(mem, rsdp, rsdp + 36)).toBe(0);
    const xsdt = Number(new DataView(mem.buffer).getBigUint64(rsdp + 24, true));
    const rsdt = u32(mem, rsdp + 16);
    const tables: Record<string, number> = {};
    for (const [t, w] of [[rsdt, 4], [xsdt, 8]] as const) {
      const len = u32(mem, t + 4);
      expect(checksum(mem, t, t + len)).toBe(0);
      for (let a = t + 36; a < t + len; a += w) {
        const p = u32(mem, a);
        tables[sig(mem, p)] = p;
        expect(checksum(mem, p, p + u32(mem, p + 4))).toBe(0);
      }
    }
    expect(Object.keys(tables).sort()).toEqual(['APIC', 'FACP', 'HPET']);
    const fadt = tables.FACP;
    expect(u32(mem, fadt + 76)).toBe(0x608); // PM_TMR_BLK
    expect(mem[fadt + 91]).toBe(4);
    expect(checksum(mem, u32(mem, fadt + 40), u32(mem, fadt + 40) + 36)).toBe(0); // DSDT
    const madt = tables.APIC;
    expect(u32(mem, madt + 36)).toBe(LAPIC_BASE);
    const entries: number[][] = [];
    for (let a = madt + 44; a < madt + u32(mem, madt + 4); a += mem[a + 1]) entries.push([...mem.subarray(a, a + mem[a + 1])]);
    const lapics = entries.filter((e) => e[0] === 0);
    expect(lapics.map((e) => e[3])).toEqual([0, 1, 2, 3]);
    const ioapic = entries.find((e) => e[0] === 1)!;
    expect(new DataView(Uint8Array.from(ioapic).buffer).getUint32(4, true)).toBe(IOAPIC_BASE);
    const isos = entries.filter((e) => e[0] === 2).map((e) => [e[3], e[4], e[8] | (e[9] << 8)]);
    expect(isos).toEqual([[0, 2, 0], [9, 9, 0x0d]]);
    expect(u32(mem, tables.HPET + 44)).toBe(0xfed00000);
  });
});
