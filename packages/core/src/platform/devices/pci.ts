/**
 * PCI bus 0 behind configuration mechanism #1 (PCI Local Bus Spec 3.0, 3.2.2.3.2):
 * CONFIG_ADDRESS at 0xCF8 (32-bit only: enable bit 31, bus 23:16, device 15:11, function
 * 10:8, register 7:2) and CONFIG_DATA at 0xCFC–0xCFF (8/16/32-bit at register + port & 3).
 * Absent functions read all-ones. Devices have a 256-byte configuration space with a
 * write mask; BARs are sized the standard way (write all-ones, read back the mask) and are
 * decoded on the port/MMIO buses while the command register enables I/O or memory space.
 */
import type { MmioRegionBus, MmioHandlers } from '../mmio-bus';
import type { IoPortBus } from '../port-bus';

export const PCI_CONFIG_ADDRESS = 0xcf8;
export const PCI_CONFIG_DATA = 0xcfc;

export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_REVISION_ID = 0x08;
export const PCI_CLASS_PROG = 0x09;
export const PCI_CLASS_DEVICE = 0x0a;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_SUBSYSTEM_ID = 0x2e;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;

export const PCI_COMMAND_IO = 1;
export const PCI_COMMAND_MEMORY = 2;

export interface PciBar {
  kind: 'io' | 'mem';
  /** Power of two; I/O BARs at least 4 bytes, memory BARs at least 16. */
  size: number;
  /** 8/16/32-bit handlers at offsets into the BAR. */
  handlers: MmioHandlers;
}

export interface PciIds {
  vendor: number;
  device: number;
  revision?: number;
  /** class code: base class << 16 | subclass << 8 | prog-if */
  classCode: number;
  subsystemVendor?: number;
  subsystem?: number;
  headerType?: number;
}

export class PciDevice {
  readonly config = new Uint8Array(256);
  private readonly wmask = new Uint8Array(256);
  readonly bars: (PciBar | undefined)[] = [];
  /** Where each BAR is decoded right now (-1: not). */
  private readonly mapped: number[] = [];
  private bus: PciBus | null = null;

  constructor(readonly name: string, ids: PciIds, bars: PciBar[] = []) {
    const dv = new DataView(this.config.buffer);
    dv.setUint16(PCI_VENDOR_ID, ids.vendor, true);
    dv.setUint16(PCI_DEVICE_ID, ids.device, true);
    this.config[PCI_REVISION_ID] = ids.revision ?? 0;
    this.config[PCI_CLASS_PROG] = ids.classCode & 0xff;
    dv.setUint16(PCI_CLASS_DEVICE, ids.classCode >>> 8, true);
    this.config[PCI_HEADER_TYPE] = ids.headerType ?? 0;
    dv.setUint16(PCI_SUBSYSTEM_VENDOR_ID, ids.subsystemVendor ?? 0x1af4, true);
    dv.setUint16(PCI_SUBSYSTEM_ID, ids.subsystem ?? 0x1100, true);
    this.wmask[PCI_COMMAND] = 0x07; // I/O, memory, bus master
    this.wmask[PCI_COMMAND + 1] = 0x05; // SERR#, INTx disable
    this.wmask[PCI_INTERRUPT_LINE] = 0xff;
    bars.forEach((b, i) => {
      if (b.size & (b.size - 1) || b.size < (b.kind === 'io' ? 4 : 16)) throw new Error(`${name}: BAR${i} size ${b.size} is not a power of two large enough`);
      this.bars[i] = b;
      this.mapped[i] = -1;
      dv.setUint32(PCI_BASE_ADDRESS_0 + 4 * i, b.kind === 'io' ? 1 : 0, true);
      const mask = ~(b.size - 1) >>> 0;
      new DataView(this.wmask.buffer).setUint32(PCI_BASE_ADDRESS_0 + 4 * i, b.kind === 'io' ? mask & ~3 : mask & ~0xf, true);
    });
  }

  /** Called when plugged into a bus. */
  plugged(bus: PciBus): void {
    this.bus = bus;
  }

  readConfig(off: number, size: number): number {
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.config[(off + i) & 0xff] << (8 * i);
    return v >>> 0;
  }

  writeConfig(off: number, size: number, value: number): void {
    for (let i = 0; i < size; i++) {
      const o = (off + i) & 0xff;
      const m = this.wmask[o];
      this.config[o] = (this.config[o] & ~m) | ((value >>> (8 * i)) & m);
    }
    if (off < PCI_BASE_ADDRESS_0 + 24 && off + size > PCI_COMMAND) this.remapBars();
  }

  /** Set a BAR's address (what firmware does when it assigns resources). */
  setBar(i: number, addr: number): void {
    const b = this.bars[i];
    if (!b) throw new Error(`${this.name}: no BAR${i}`);
    new DataView(this.config.buffer).setUint32(PCI_BASE_ADDRESS_0 + 4 * i, (addr & ~(b.size - 1)) | (b.kind === 'io' ? 1 : 0), true);
    this.remapBars();
  }

  barAddress(i: number): number {
    const raw = new DataView(this.config.buffer).getUint32(PCI_BASE_ADDRESS_0 + 4 * i, true);
    return this.bars[i]?.kind === 'io' ? raw & ~3 : (raw & ~0xf) >>> 0;
  }

  private remapBars(): void {
    if (!this.bus) return;
    const cmd = this.config[PCI_COMMAND];
    this.bars.forEach((b, i) => {
      if (!b) return;
      const addr = this.barAddress(i);
      const on = b.kind === 'io' ? cmd & PCI_COMMAND_IO : cmd & PCI_COMMAND_MEMORY;
      // While a guest sizes a BAR it reads back the mask: never decode an all-ones address.
      const want = on && addr !== 0 && addr !== (~(b.size - 1) & (b.kind === 'io' ? 0xfffc : 0xfffffff0)) >>> 0 ? addr : -1;
      if (want === this.mapped[i]) return;
      this.bus!.unmapBar(this, i, b);
      this.mapped[i] = -1;
      if (want >= 0 && this.bus!.mapBar(this, i, b, want)) this.mapped[i] = want;
    });
  }
}

export class PciBus {
  private readonly slots: (PciDevice | undefined)[] = new Array(32 * 8);
  private address = 0;

  constructor(private readonly ports: IoPortBus, private readonly mmio: MmioRegionBus) {}

  attach(): void {
    // CONFIG_ADDRESS answers 32-bit accesses only; byte 0xCF9 belongs to the reset control register.
    this.ports.register('pci-config-address', PCI_CONFIG_ADDRESS, 1, {
      read32: () => this.address,
      write32: (_p, v) => {
        this.address = v & 0x80fffffc;
      },
    });
    this.ports.register('pci-config-data', PCI_CONFIG_DATA, 4, {
      read8: (p) => this.dataRead(p, 1),
      read16: (p) => this.dataRead(p, 2),
      read32: (p) => this.dataRead(p, 4),
      write8: (p, v) => this.dataWrite(p, 1, v),
      write16: (p, v) => this.dataWrite(p, 2, v),
      write32: (p, v) => this.dataWrite(p, 4, v),
    });
  }

  plug(dev: PciDevice, slot: number, fn = 0): void {
    const devfn = (slot << 3) | fn;
    if (this.slots[devfn]) throw new Error(`PCI 00:${slot.toString(16).padStart(2, '0')}.${fn} is taken by ${this.slots[devfn]!.name}`);
    this.slots[devfn] = dev;
    dev.plugged(this);
  }

  device(slot: number, fn = 0): PciDevice | undefined {
    return this.slots[(slot << 3) | fn];
  }

  /** Configuration read as mechanism #1 would do it (for firmware and tests). */
  configRead(bus: number, slot: number, fn: number, off: number, size: number): number {
    const dev = bus === 0 ? this.slots[(slot << 3) | fn] : undefined;
    if (!dev) return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    return dev.readConfig(off, size);
  }

  configWrite(bus: number, slot: number, fn: number, off: number, size: number, value: number): void {
    const dev = bus === 0 ? this.slots[(slot << 3) | fn] : undefined;
    dev?.writeConfig(off, size, value);
  }

  private target(port: number): { bus: number; slot: number; fn: number; off: number } | null {
    const a = this.address;
    if (!(a & 0x80000000)) return null;
    return { bus: (a >> 16) & 0xff, slot: (a >> 11) & 0x1f, fn: (a >> 8) & 7, off: (a & 0xfc) + (port & 3) };
  }

  private dataRead(port: number, size: number): number {
    const t = this.target(port);
    if (!t) return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    return this.configRead(t.bus, t.slot, t.fn, t.off, size);
  }

  private dataWrite(port: number, size: number, v: number): void {
    const t = this.target(port);
    if (t) this.configWrite(t.bus, t.slot, t.fn, t.off, size, v);
  }

  mapBar(dev: PciDevice, i: number, b: PciBar, addr: number): boolean {
    const name = `${dev.name}-bar${i}`;
    try {
      if (b.kind === 'mem') {
        this.mmio.register(name, addr, b.size, b.handlers);
      } else {
        if (addr + b.size > 0x10000) return false;
        const h = b.handlers;
        this.ports.register(name, addr, b.size, {
          read8: (p) => h.read(p - addr, 1), read16: (p) => h.read(p - addr, 2), read32: (p) => h.read(p - addr, 4),
          write8: (p, v) => h.write(p - addr, 1, v), write16: (p, v) => h.write(p - addr, 2, v), write32: (p, v) => h.write(p - addr, 4, v),
        });
      }
      return true;
    } catch {
      // A guest may program a BAR over another device; real hardware would decode both, we keep the first.
      return false;
    }
  }

  unmapBar(dev: PciDevice, i: number, b: PciBar): void {
    const name = `${dev.name}-bar${i}`;
    if (b.kind === 'mem') this.mmio.unregister(name);
    else this.ports.unregister(name);
  }
}

/** The q35 host bridge (Intel 82G33/P35 MCH, 8086:29C0) at 00:00.0, as QEMU's q35 machine has it. */
export function q35HostBridge(): PciDevice {
  return new PciDevice('q35-host', { vendor: 0x8086, device: 0x29c0, classCode: 0x060000, subsystemVendor: 0x1af4, subsystem: 0x1100 });
}
