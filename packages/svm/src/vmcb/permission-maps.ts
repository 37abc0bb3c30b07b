import type { HostMemory } from '@tsvisor/core';

/**
 * The I/O permission map (APM 15.10.1): 12 KiB, one bit per port; a set bit intercepts.
 * A multi-byte access is intercepted when the bit of any byte it touches is set — which is
 * why the map is 12 KiB, not 8 KiB: port 0xFFFF with a 4-byte access checks bits past 65535.
 */
export const IOPM_SIZE = 3 * 4096;
export const IOPM_PAGES = 3;

/**
 * The MSR permission map (APM 15.11): 8 KiB, two bits per MSR (even bit: read, odd bit: write)
 * in three 2 KiB vectors: MSRs 0000_0000–0000_1FFF, C000_0000–C000_1FFF, C001_0000–C001_1FFF;
 * the fourth 2 KiB is reserved. MSRs outside the three ranges are always intercepted.
 */
export const MSRPM_SIZE = 2 * 4096;
export const MSRPM_PAGES = 2;
const MSRPM_RANGES = [0x0000_0000, 0xc000_0000, 0xc001_0000];
const MSRS_PER_RANGE = 0x2000;
/** 2 KiB per range (8192 MSRs × 2 bits). */
const MSRPM_RANGE_BYTES = 0x800;

/** Byte offset and bit (0, 2, 4, 6 = read; +1 = write) of an MSR in the MSRPM, or null when outside the ranges. */
export function msrpmOffset(msr: number): { byte: number; bit: number } | null {
  const m = msr >>> 0;
  for (let i = 0; i < MSRPM_RANGES.length; i++) {
    const rel = m - MSRPM_RANGES[i];
    if (rel >= 0 && rel < MSRS_PER_RANGE) {
      return { byte: i * MSRPM_RANGE_BYTES + (rel >> 2), bit: (rel & 3) * 2 };
    }
  }
  return null;
}

/** A view on a permission map in host memory (the "hardware" reads it at its physical address). */
abstract class PermissionMap {
  readonly bytes: Uint8Array;
  constructor(readonly host: HostMemory, readonly pa: number, size: number) {
    // A base pointing at no memory reads as all-ones: every port / MSR intercepted.
    this.bytes = host.sliceOrOnes(pa, size);
  }
  protected bit(index: number): boolean {
    return ((this.bytes[index >> 3] >> (index & 7)) & 1) === 1;
  }
  protected setBitTo(index: number, on: boolean): void {
    if (on) this.bytes[index >> 3] |= 1 << (index & 7);
    else this.bytes[index >> 3] &= ~(1 << (index & 7));
  }
}

export class Iopm extends PermissionMap {
  constructor(host: HostMemory, pa: number) {
    super(host, pa, IOPM_SIZE);
  }
  static alloc(host: HostMemory): Iopm {
    return new Iopm(host, host.allocPages(IOPM_PAGES, 'svm iopm'));
  }
  /** Does an access of `size` bytes at `port` exit? Every byte's bit is checked (APM 15.10.1). */
  intercepts(port: number, size: number): boolean {
    for (let i = 0; i < size; i++) if (this.bit(port + i)) return true;
    return false;
  }
  setIntercept(port: number, on: boolean): void {
    this.setBitTo(port, on);
  }
  /** KVM's iopm: every port intercepted. */
  interceptAll(): void {
    this.bytes.fill(0xff);
  }
}

export class Msrpm extends PermissionMap {
  constructor(host: HostMemory, pa: number) {
    super(host, pa, MSRPM_SIZE);
  }
  static alloc(host: HostMemory): Msrpm {
    return new Msrpm(host, host.allocPages(MSRPM_PAGES, 'svm msrpm'));
  }
  intercepts(msr: number, isWrite: boolean): boolean {
    const o = msrpmOffset(msr);
    if (!o) return true;
    return ((this.bytes[o.byte] >> (o.bit + (isWrite ? 1 : 0))) & 1) === 1;
  }
  /** set_msr_interception: `read`/`write` true means the access is passed through (not intercepted). */
  setPassthrough(msr: number, read: boolean, write: boolean): void {
    const o = msrpmOffset(msr);
    if (!o) throw new RangeError(`MSR 0x${(msr >>> 0).toString(16)} is outside the MSRPM ranges (APM 15.11)`);
    const r = 1 << o.bit;
    const w = 1 << (o.bit + 1);
    let b = this.bytes[o.byte];
    b = read ? b & ~r : b | r;
    b = write ? b & ~w : b | w;
    this.bytes[o.byte] = b;
  }
  interceptAll(): void {
    this.bytes.fill(0xff);
  }
}
