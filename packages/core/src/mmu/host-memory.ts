import { KvmError } from '../kvm/errors';

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;

/** One contiguous range of host-physical space and the bytes behind it. */
export interface HostRegion {
  readonly base: number;
  readonly bytes: Uint8Array;
  readonly name: string;
}

/**
 * Host-physical memory: everything the emulated hardware reaches by physical address.
 * Guest RAM (each memslot's userspace bytes) is mapped here, and so are the pages a backend
 * allocates for its control structures (VMCB, MSR/I/O bitmaps, EPT/NPT tables, PML buffer),
 * so those are found by host-physical address as on real hardware.
 *
 * Addresses are numbers (host-physical space stays below 2^52). Regions never overlap and
 * are kept sorted by base; `find` is a binary search used on TLB misses only.
 */
export class HostMemory {
  private regions: HostRegion[] = [];
  /** Host-physical allocation cursor; starts above 4 GiB so HPAs never look like GPAs. */
  private next = 0x1_0000_0000;
  /** Bytes mapped in total (for the resource bound). */
  private mapped = 0;

  constructor(readonly limitBytes = 64 * 2 ** 30) {}

  /** Map `bytes` (length a multiple of 4 KiB) at a fresh host-physical address. */
  map(bytes: Uint8Array, name: string): number {
    if (bytes.length % PAGE_SIZE !== 0) {
      throw new KvmError('EINVAL', `host memory region ${name}: size ${bytes.length} is not a multiple of 4096`);
    }
    if (this.mapped + bytes.length > this.limitBytes) {
      throw new KvmError('ENOMEM', `host memory region ${name}: ${bytes.length} bytes would exceed the host limit of ${this.limitBytes}`);
    }
    const base = this.next;
    // Leave a guard page between regions so an off-by-one walk never lands in a neighbour.
    this.next += bytes.length + PAGE_SIZE;
    this.regions.push({ base, bytes, name });
    this.mapped += bytes.length;
    return base;
  }

  /** Allocate `pages` zeroed host pages (for control structures and TDP tables). */
  allocPages(pages: number, name: string): number {
    return this.map(new Uint8Array(pages * PAGE_SIZE), name);
  }

  unmap(base: number): void {
    const i = this.regions.findIndex((r) => r.base === base);
    if (i < 0) throw new KvmError('EINVAL', `host memory: no region at ${base.toString(16)}`);
    this.mapped -= this.regions[i].bytes.length;
    this.regions.splice(i, 1);
  }

  /** The region holding `hpa`, or null. */
  find(hpa: number): HostRegion | null {
    const rs = this.regions;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = rs[mid];
      if (hpa < r.base) hi = mid - 1;
      else if (hpa >= r.base + r.bytes.length) lo = mid + 1;
      else return r;
    }
    return null;
  }

  /** Bytes and offset for an access of `len` bytes at `hpa`; throws on a stray access (a host bug). */
  slice(hpa: number, len: number): { bytes: Uint8Array; offset: number } {
    const r = this.find(hpa);
    if (!r || hpa + len > r.base + r.bytes.length) {
      throw new KvmError('EFAULT', `host-physical access of ${len} bytes at 0x${hpa.toString(16)} is outside host memory`);
    }
    return { bytes: r.bytes, offset: hpa - r.base };
  }

  read64(hpa: number): bigint {
    const { bytes, offset } = this.slice(hpa, 8);
    return new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(offset, true);
  }
  write64(hpa: number, v: bigint): void {
    const { bytes, offset } = this.slice(hpa, 8);
    new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(offset, BigInt.asUintN(64, v), true);
  }
  read32(hpa: number): number {
    const { bytes, offset } = this.slice(hpa, 4);
    return new DataView(bytes.buffer, bytes.byteOffset).getUint32(offset, true);
  }
  write32(hpa: number, v: number): void {
    const { bytes, offset } = this.slice(hpa, 4);
    new DataView(bytes.buffer, bytes.byteOffset).setUint32(offset, v >>> 0, true);
  }
  get bytesMapped(): number {
    return this.mapped;
  }
}
