/**
 * QEMU's ISA `pc-testdev` (hw/misc/pc-testdev.c), which kvm-unit-tests rely on:
 * - 0xE0–0xE3: a 32-bit scratch register, readable and writable at any width and offset
 *   (string I/O included: `rep outsb` to 0xE0 writes its low byte repeatedly);
 * - 0xE4: the "flush page" port: a 32-bit write names a guest page QEMU re-protects; with no
 *   host mapping to shoot down here it is a no-op, reads return 0;
 * - 0xE8, 0xEA–0xEB: the same scratch register through byte-wide accesses (0xE9 is the debug console);
 * - 0x2000 + n (n < 24): writing sets ISA IRQ line n to (value != 0), reading returns 0;
 * - 0xFF000000: a 64 KiB MMIO window backed by a buffer (reads return what was written).
 */
import type { IrqLine } from '../irq';
import type { MmioRegionBus } from '../mmio-bus';
import type { IoPortBus } from '../port-bus';

export const PC_TESTDEV_IOPORT = 0xe0;
export const PC_TESTDEV_FLUSH = 0xe4;
export const PC_TESTDEV_IOPORT_BYTE = 0xe8;
export const PC_TESTDEV_IRQ_BASE = 0x2000;
export const PC_TESTDEV_IRQ_COUNT = 24;
export const PC_TESTDEV_IOMEM = 0xff000000;
export const PC_TESTDEV_IOMEM_LEN = 0x10000;

export class PcTestdev {
  /** The scratch register behind 0xE0 and 0xE8. */
  ioportData = 0;
  readonly iomem = new Uint8Array(PC_TESTDEV_IOMEM_LEN);
  /** Pages the guest asked to flush (for diagnostics). */
  flushes = 0;

  constructor(private readonly irq: IrqLine | null) {}

  attach(ports: IoPortBus, mmio: MmioRegionBus): void {
    const reg = (base: number) => ({
      read8: (p: number) => this.readScratch(p - base, 1),
      read16: (p: number) => this.readScratch(p - base, 2),
      read32: (p: number) => this.readScratch(p - base, 4),
      write8: (p: number, v: number) => this.writeScratch(p - base, 1, v),
      write16: (p: number, v: number) => this.writeScratch(p - base, 2, v),
      write32: (p: number, v: number) => this.writeScratch(p - base, 4, v),
    });
    ports.register('pc-testdev-ioport', PC_TESTDEV_IOPORT, 4, reg(PC_TESTDEV_IOPORT));
    ports.register('pc-testdev-flush', PC_TESTDEV_FLUSH, 4, {
      read32: () => 0,
      read8: () => 0,
      write32: () => {
        this.flushes++;
      },
    });
    const byteReg = reg(PC_TESTDEV_IOPORT_BYTE);
    // 0xE9 inside that window belongs to the debug console (QEMU lets the later region win; here debugcon keeps it).
    ports.register('pc-testdev-ioport-byte', PC_TESTDEV_IOPORT_BYTE, 1, { read8: byteReg.read8, write8: byteReg.write8 });
    ports.register('pc-testdev-ioport-byte-hi', PC_TESTDEV_IOPORT_BYTE + 2, 2, { read8: byteReg.read8, write8: byteReg.write8 });
    ports.register('pc-testdev-irq', PC_TESTDEV_IRQ_BASE, PC_TESTDEV_IRQ_COUNT, {
      read8: () => 0,
      write8: (p, v) => this.irq?.setIrq(p - PC_TESTDEV_IRQ_BASE, v !== 0),
    });
    mmio.register('pc-testdev-iomem', PC_TESTDEV_IOMEM, PC_TESTDEV_IOMEM_LEN, {
      read: (off, size) => {
        let v = 0;
        for (let i = 0; i < size && off + i < PC_TESTDEV_IOMEM_LEN; i++) v |= this.iomem[off + i] << (8 * i);
        return v >>> 0;
      },
      write: (off, size, v) => {
        for (let i = 0; i < size && off + i < PC_TESTDEV_IOMEM_LEN; i++) this.iomem[off + i] = (v >>> (8 * i)) & 0xff;
      },
    });
  }

  private readScratch(off: number, size: number): number {
    const shift = (off & 3) * 8;
    const mask = size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    return ((this.ioportData >>> shift) & mask) >>> 0;
  }

  private writeScratch(off: number, size: number, v: number): void {
    const shift = (off & 3) * 8;
    const mask = ((size === 4 ? 0xffffffff : (1 << (8 * size)) - 1) << shift) >>> 0;
    this.ioportData = ((this.ioportData & ~mask) | ((v << shift) & mask)) >>> 0;
  }
}
