/**
 * The PC's I/O port space as userspace sees it on KVM_EXIT_IO (v86's io.js habit): each
 * device registers 8-, 16- and/or 32-bit read and write handlers for a range of ports. An
 * access whose width the owning device has no handler for is split into narrower accesses
 * to consecutive ports, as the ISA bus does; a port nobody claims reads all-ones and drops
 * writes, as on a PC with nothing decoding that address.
 */
import { KVM_EXIT_IO_OUT, KvmRun } from '../kvm/run';

export interface PortHandlers {
  read8?(port: number): number;
  read16?(port: number): number;
  read32?(port: number): number;
  write8?(port: number, value: number): void;
  write16?(port: number, value: number): void;
  write32?(port: number, value: number): void;
}

interface PortEntry {
  readonly name: string;
  readonly start: number;
  readonly len: number;
  readonly h: PortHandlers;
}

export class PortConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PortConflictError';
  }
}

export class IoPortBus {
  /** Owner of each of the 65536 ports (undefined: nobody). */
  private readonly owners: (PortEntry | undefined)[] = new Array(0x10000);
  private readonly entries: PortEntry[] = [];

  register(name: string, start: number, len: number, handlers: PortHandlers): void {
    if (!Number.isInteger(start) || !Number.isInteger(len) || len <= 0 || start < 0 || start + len > 0x10000) {
      throw new PortConflictError(`${name}: port range 0x${start.toString(16)}+${len} is not inside 0..0xffff`);
    }
    for (let p = start; p < start + len; p++) {
      const o = this.owners[p];
      if (o) throw new PortConflictError(`${name}: port 0x${p.toString(16)} is already claimed by ${o.name}`);
    }
    const e: PortEntry = { name, start, len, h: handlers };
    this.entries.push(e);
    for (let p = start; p < start + len; p++) this.owners[p] = e;
  }

  /** Release every range `name` registered (PCI BAR remapping). */
  unregister(name: string): void {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i];
      if (e.name !== name) continue;
      for (let p = e.start; p < e.start + e.len; p++) this.owners[p] = undefined;
      this.entries.splice(i, 1);
    }
  }

  /** The device answering `port`, for diagnostics. */
  owner(port: number): string | undefined {
    return this.owners[port & 0xffff]?.name;
  }

  read(port: number, size: 1 | 2 | 4): number {
    port &= 0xffff;
    const e = this.owners[port];
    if (size === 1) {
      if (!e || !e.h.read8) return 0xff;
      return e.h.read8(port) & 0xff;
    }
    if (size === 2) {
      if (e?.h.read16) return e.h.read16(port) & 0xffff;
      return this.read(port, 1) | (this.read(port + 1, 1) << 8);
    }
    if (e?.h.read32) return e.h.read32(port) >>> 0;
    if (e?.h.read16 && !e.h.read8) return (this.read(port, 2) | (this.read(port + 2, 2) << 16)) >>> 0;
    return (this.read(port, 1) | (this.read(port + 1, 1) << 8) | (this.read(port + 2, 1) << 16) | (this.read(port + 3, 1) << 24)) >>> 0;
  }

  write(port: number, size: 1 | 2 | 4, value: number): void {
    port &= 0xffff;
    const e = this.owners[port];
    if (size === 1) {
      e?.h.write8?.(port, value & 0xff);
      return;
    }
    if (size === 2) {
      if (e?.h.write16) return e.h.write16(port, value & 0xffff);
      this.write(port, 1, value);
      this.write(port + 1, 1, value >>> 8);
      return;
    }
    if (e?.h.write32) return e.h.write32(port, value >>> 0);
    if (e?.h.write16 && !e.h.write8) {
      this.write(port, 2, value);
      this.write(port + 2, 2, value >>> 16);
      return;
    }
    for (let i = 0; i < 4; i++) this.write(port + i, 1, value >>> (8 * i));
  }

  /** Userspace's half of KVM_EXIT_IO: `count` elements of `size` bytes at run.ioData (string I/O has count > 1). */
  handleExit(run: KvmRun): void {
    const { direction, port, count } = run.io;
    const size = run.io.size as 1 | 2 | 4;
    const data = run.ioData;
    for (let i = 0; i < count; i++) {
      const at = i * size;
      if (direction === KVM_EXIT_IO_OUT) {
        let v = 0;
        for (let b = 0; b < size; b++) v |= data[at + b] << (8 * b);
        this.write(port, size, v >>> 0);
      } else {
        const v = this.read(port, size);
        for (let b = 0; b < size; b++) data[at + b] = (v >>> (8 * b)) & 0xff;
      }
    }
  }
}
