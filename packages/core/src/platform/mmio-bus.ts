/**
 * Userspace MMIO (KVM_EXIT_MMIO): devices claim guest-physical ranges and answer 1-, 2- and
 * 4-byte accesses at an offset into their range; an 8-byte access is two 4-byte ones (low
 * half first). Unclaimed addresses read all-ones and drop writes.
 */
import { KvmRun } from '../kvm/run';

export interface MmioHandlers {
  /** `size` is 1, 2 or 4; return the value (little-endian). */
  read(offset: number, size: number): number;
  write(offset: number, size: number, value: number): void;
}

interface MmioEntry {
  readonly name: string;
  readonly base: number;
  readonly len: number;
  readonly h: MmioHandlers;
}

export class MmioRegionBus {
  private entries: MmioEntry[] = [];

  register(name: string, base: number, len: number, handlers: MmioHandlers): void {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(len) || base < 0 || len <= 0) {
      throw new Error(`${name}: MMIO range 0x${base.toString(16)}+0x${len.toString(16)} is invalid`);
    }
    for (const e of this.entries) {
      if (base < e.base + e.len && base + len > e.base) {
        throw new Error(`${name}: MMIO range 0x${base.toString(16)}+0x${len.toString(16)} overlaps ${e.name}`);
      }
    }
    this.entries.push({ name, base, len, h: handlers });
    this.entries.sort((a, b) => a.base - b.base);
  }

  unregister(name: string): void {
    this.entries = this.entries.filter((e) => e.name !== name);
  }

  private find(addr: number): MmioEntry | undefined {
    for (const e of this.entries) if (addr >= e.base && addr < e.base + e.len) return e;
    return undefined;
  }

  owner(addr: number): string | undefined {
    return this.find(addr)?.name;
  }

  read(addr: number, size: number): number {
    if (size === 8) throw new Error('MmioRegionBus.read: use readBytes for 8-byte accesses');
    const e = this.find(addr);
    if (!e || addr + size > e.base + e.len) return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    return e.h.read(addr - e.base, size) >>> 0;
  }

  write(addr: number, size: number, value: number): void {
    const e = this.find(addr);
    if (!e || addr + size > e.base + e.len) return;
    e.h.write(addr - e.base, size, value >>> 0);
  }

  /** An access of 1, 2, 4 or 8 bytes as raw little-endian bytes. */
  readBytes(addr: number, out: Uint8Array, len: number): void {
    if (len === 8) {
      this.readBytes(addr, out, 4);
      const hi = out.subarray(4);
      this.readBytes(addr + 4, hi, 4);
      return;
    }
    const v = this.read(addr, len);
    for (let i = 0; i < len; i++) out[i] = (v >>> (8 * i)) & 0xff;
  }

  writeBytes(addr: number, data: Uint8Array, len: number): void {
    if (len === 8) {
      this.writeBytes(addr, data, 4);
      this.writeBytes(addr + 4, data.subarray(4), 4);
      return;
    }
    let v = 0;
    for (let i = 0; i < len; i++) v |= data[i] << (8 * i);
    this.write(addr, len, v >>> 0);
  }

  /** Userspace's half of KVM_EXIT_MMIO: fill run.mmio.data on a read, apply it on a write. */
  handleExit(run: KvmRun): void {
    const { physAddr, len, isWrite, data } = run.mmio;
    if (physAddr >= 1n << 52n) {
      if (!isWrite) data.fill(0xff, 0, len);
      return;
    }
    const addr = Number(physAddr);
    if (len !== 1 && len !== 2 && len !== 4 && len !== 8) {
      // Unusual widths (e.g. 16-byte SSE moves) go byte by byte.
      for (let i = 0; i < len; i++) {
        if (isWrite) this.write(addr + i, 1, data[i]);
        else data[i] = this.read(addr + i, 1);
      }
      return;
    }
    if (isWrite) this.writeBytes(addr, data, len);
    else this.readBytes(addr, data, len);
  }
}
