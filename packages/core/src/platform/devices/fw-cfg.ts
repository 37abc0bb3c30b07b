/**
 * QEMU's firmware configuration interface (docs/specs/fw_cfg.txt) on x86's I/O ports: a
 * 16-bit selector at 0x510 and an 8-bit data port at 0x511. Writing the selector rewinds
 * the item to its first byte; each data read returns the next byte, 0 past the end.
 * Items: signature "QEMU" (0x0000), interface ID (0x0001: bit 0, traditional interface
 * only — no DMA), UUID (0x0002), RAM size (0x0003, 64-bit LE), NB_CPUS (0x0005), MAX_CPUS
 * (0x000F), the kernel command line (0x0014 size / 0x0015 data), the file directory
 * (0x0019: a big-endian count, then 64-byte big-endian entries {size, select, reserved,
 * name[56]}) and the files from 0x0020 on, among them "etc/e820".
 */
import type { IoPortBus } from '../port-bus';

export const FW_CFG_PORT_SEL = 0x510;
export const FW_CFG_PORT_DATA = 0x511;

export const FW_CFG_SIGNATURE = 0x0000;
export const FW_CFG_ID = 0x0001;
export const FW_CFG_UUID = 0x0002;
export const FW_CFG_RAM_SIZE = 0x0003;
export const FW_CFG_NOGRAPHIC = 0x0004;
export const FW_CFG_NB_CPUS = 0x0005;
export const FW_CFG_MACHINE_ID = 0x0006;
export const FW_CFG_MAX_CPUS = 0x000f;
export const FW_CFG_CMDLINE_SIZE = 0x0014;
export const FW_CFG_CMDLINE_DATA = 0x0015;
export const FW_CFG_FILE_DIR = 0x0019;
export const FW_CFG_FILE_FIRST = 0x0020;
export const FW_CFG_FILE_NAME_MAX = 56;

export interface E820Entry {
  base: number;
  length: number;
  /** 1 RAM, 2 reserved, 3 ACPI reclaimable, 4 ACPI NVS. */
  type: number;
}

export class FwCfg {
  private readonly items = new Map<number, Uint8Array>();
  private readonly files: { name: string; select: number }[] = [];
  private selector = 0;
  private offset = 0;

  constructor() {
    this.items.set(FW_CFG_SIGNATURE, new TextEncoder().encode('QEMU'));
    this.setU32(FW_CFG_ID, 1);
    this.items.set(FW_CFG_UUID, new Uint8Array(16));
    this.setU16(FW_CFG_NOGRAPHIC, 1);
    this.setU16(FW_CFG_MACHINE_ID, 0);
    this.rebuildDir();
  }

  attach(bus: IoPortBus): void {
    // The selector is a 16-bit register; an 8-bit write sets only its low byte.
    bus.register('fw_cfg', FW_CFG_PORT_SEL, 2, {
      write16: (p, v) => {
        if (p === FW_CFG_PORT_SEL) this.select(v);
      },
      write8: (p, v) => {
        if (p === FW_CFG_PORT_SEL) this.select(v);
        // a write to the data port is ignored (the write interface is deprecated)
      },
      read8: (p) => (p === FW_CFG_PORT_DATA ? this.readByte() : 0),
      read16: (p) => (p === FW_CFG_PORT_DATA ? this.readByte() | (this.readByte() << 8) : 0),
    });
  }

  select(v: number): void {
    this.selector = v & 0xffff;
    this.offset = 0;
  }

  readByte(): number {
    // Bit 14 (write) and bit 15 (arch-local) select nothing we have.
    const item = this.items.get(this.selector);
    if (!item || this.offset >= item.length) return 0;
    return item[this.offset++];
  }

  /** Read `n` bytes of item `sel` as a guest would. */
  readItem(sel: number, n: number): Uint8Array {
    this.select(sel);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.readByte();
    return out;
  }

  setBytes(sel: number, data: Uint8Array): void {
    this.items.set(sel, data);
  }

  setU16(sel: number, v: number): void {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, v, true);
    this.items.set(sel, b);
  }

  setU32(sel: number, v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    this.items.set(sel, b);
  }

  setU64(sel: number, v: bigint): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v, true);
    this.items.set(sel, b);
  }

  /** Add or replace a named file; returns its selector. */
  addFile(name: string, data: Uint8Array): number {
    if (name.length >= FW_CFG_FILE_NAME_MAX) throw new Error(`fw_cfg file name '${name}' is longer than ${FW_CFG_FILE_NAME_MAX - 1} characters`);
    let f = this.files.find((x) => x.name === name);
    if (!f) {
      f = { name, select: FW_CFG_FILE_FIRST + this.files.length };
      this.files.push(f);
    }
    this.items.set(f.select, data);
    this.rebuildDir();
    return f.select;
  }

  setCmdline(cmdline: string): void {
    const bytes = new TextEncoder().encode(cmdline + '\0');
    this.setU32(FW_CFG_CMDLINE_SIZE, bytes.length);
    this.items.set(FW_CFG_CMDLINE_DATA, bytes);
  }

  setE820(entries: readonly E820Entry[]): void {
    const b = new Uint8Array(entries.length * 20);
    const dv = new DataView(b.buffer);
    entries.forEach((e, i) => {
      dv.setBigUint64(i * 20, BigInt(e.base), true);
      dv.setBigUint64(i * 20 + 8, BigInt(e.length), true);
      dv.setUint32(i * 20 + 16, e.type, true);
    });
    this.addFile('etc/e820', b);
  }

  private rebuildDir(): void {
    // Sorted by name, as QEMU keeps the directory.
    const files = [...this.files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const dir = new Uint8Array(4 + 64 * files.length);
    const dv = new DataView(dir.buffer);
    dv.setUint32(0, files.length, false);
    files.forEach((f, i) => {
      const at = 4 + i * 64;
      dv.setUint32(at, this.items.get(f.select)?.length ?? 0, false);
      dv.setUint16(at + 4, f.select, false);
      dir.set(new TextEncoder().encode(f.name), at + 8);
    });
    this.items.set(FW_CFG_FILE_DIR, dir);
  }
}
