/**
 * Guest RAM as the platform lays it out, following QEMU's q35 machine: RAM starts at 0 and
 * runs up to 0xB0000000 (2.75 GiB); when there is that much RAM or more, the first 2 GiB
 * stay below 4 GiB and the rest is mapped from 4 GiB up, leaving [2 GiB, 4 GiB) for PCI
 * MMIO, the IOAPIC, HPET and LAPIC. Each piece is one memslot (slot 0 below, slot 1 above).
 */
import type { E820Entry } from './devices/fw-cfg';

export const FOUR_GIB = 0x1_0000_0000;
/** q35: RAM below this stays below 4 GiB when the whole of RAM fits under it. */
export const Q35_LOWMEM_LIMIT = 0xb000_0000;
/** q35: how much stays below 4 GiB when it does not. */
export const Q35_LOWMEM_SPLIT = 0x8000_0000;

export const EBDA_BASE = 0x9fc00;
export const BIOS_AREA_START = 0xe0000;
export const BIOS_AREA_END = 0x100000;

export interface RamLayout {
  belowFourG: number;
  aboveFourG: number;
}

export function ramLayout(size: number): RamLayout {
  const below = size >= Q35_LOWMEM_LIMIT ? Q35_LOWMEM_SPLIT : size;
  return { belowFourG: below, aboveFourG: size - below };
}

/** The BIOS memory map the firmware reports (fw_cfg "etc/e820", Multiboot mmap). */
export function e820Map(l: RamLayout): E820Entry[] {
  const m: E820Entry[] = [
    { base: 0, length: EBDA_BASE, type: 1 },
    { base: EBDA_BASE, length: 0xa0000 - EBDA_BASE, type: 2 },
    { base: BIOS_AREA_START, length: BIOS_AREA_END - BIOS_AREA_START, type: 2 },
  ];
  if (l.belowFourG > BIOS_AREA_END) m.push({ base: BIOS_AREA_END, length: l.belowFourG - BIOS_AREA_END, type: 1 });
  if (l.aboveFourG > 0) m.push({ base: FOUR_GIB, length: l.aboveFourG, type: 1 });
  return m;
}

/** Userspace's view of guest RAM: the memslots' bytes by guest-physical address. */
export class GuestRam {
  readonly regions: { gpa: number; bytes: Uint8Array }[] = [];

  add(gpa: number, bytes: Uint8Array): void {
    this.regions.push({ gpa, bytes });
    this.regions.sort((a, b) => a.gpa - b.gpa);
  }

  get size(): number {
    return this.regions.reduce((s, r) => s + r.bytes.length, 0);
  }

  /** Is [gpa, gpa+len) entirely RAM (in one region)? */
  contains(gpa: number, len: number): boolean {
    return this.regionOf(gpa, len) !== null;
  }

  private regionOf(gpa: number, len: number): { gpa: number; bytes: Uint8Array } | null {
    for (const r of this.regions) if (gpa >= r.gpa && gpa + len <= r.gpa + r.bytes.length) return r;
    return null;
  }

  /** The RAM ranges as text, for error messages. */
  describe(): string {
    return this.regions.map((r) => `[0x${r.gpa.toString(16)}, 0x${(r.gpa + r.bytes.length).toString(16)})`).join(' and ');
  }

  write(gpa: number, data: Uint8Array): void {
    const r = this.regionOf(gpa, data.length);
    if (!r) throw new RangeError(`guest RAM write of ${data.length} bytes at 0x${gpa.toString(16)} is outside RAM ${this.describe()}`);
    r.bytes.set(data, gpa - r.gpa);
  }

  fill(gpa: number, len: number, value = 0): void {
    const r = this.regionOf(gpa, len);
    if (!r) throw new RangeError(`guest RAM fill of ${len} bytes at 0x${gpa.toString(16)} is outside RAM ${this.describe()}`);
    r.bytes.fill(value, gpa - r.gpa, gpa - r.gpa + len);
  }

  read(gpa: number, len: number): Uint8Array {
    const r = this.regionOf(gpa, len);
    if (!r) throw new RangeError(`guest RAM read of ${len} bytes at 0x${gpa.toString(16)} is outside RAM ${this.describe()}`);
    return r.bytes.subarray(gpa - r.gpa, gpa - r.gpa + len);
  }

  view(gpa: number, len: number): DataView {
    const b = this.read(gpa, len);
    return new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  writeU16(gpa: number, v: number): void {
    this.view(gpa, 2).setUint16(0, v, true);
  }
  writeU32(gpa: number, v: number): void {
    this.view(gpa, 4).setUint32(0, v >>> 0, true);
  }
  writeU64(gpa: number, v: bigint): void {
    this.view(gpa, 8).setBigUint64(0, v, true);
  }
  readU32(gpa: number): number {
    return this.view(gpa, 4).getUint32(0, true);
  }
}
