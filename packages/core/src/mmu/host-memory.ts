import { KvmError } from '../kvm/errors';

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;

/** One contiguous range of host-physical space and the bytes behind it. */
export interface HostRegion {
  readonly base: number;
  readonly bytes: Uint8Array;
  readonly name: string;
  /**
   * The same bytes as little-endian 32-bit words (null when the buffer is not 4-byte aligned):
   * what the emulated hardware's table walkers read entries through, as two halves, with no
   * BigInt or DataView per access.
   */
  readonly words: Uint32Array | null;
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
    const words = bytes.byteOffset % 4 === 0 ? new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2) : null;
    this.regions.push({ base, bytes, name, words });
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

  /**
   * Physical-bus accessors for what the emulated hardware reads and writes on its own (page
   * tables, bitmaps, logs) at addresses that come from a control block — which a hostile or
   * broken VMCS/VMCB may point anywhere. As on a real bus, a read from no memory returns
   * all-ones and a write there is dropped; `strayAccesses` counts them so tests can see them.
   */
  read64(hpa: number): bigint {
    const r = this.find(hpa);
    if (!r || hpa + 8 > r.base + r.bytes.length) {
      this.strayAccesses++;
      return 0xffff_ffff_ffff_ffffn;
    }
    return new DataView(r.bytes.buffer, r.bytes.byteOffset).getBigUint64(hpa - r.base, true);
  }
  write64(hpa: number, v: bigint): void {
    const r = this.find(hpa);
    if (!r || hpa + 8 > r.base + r.bytes.length) {
      this.strayAccesses++;
      return;
    }
    new DataView(r.bytes.buffer, r.bytes.byteOffset).setBigUint64(hpa - r.base, BigInt.asUintN(64, v), true);
  }
  read32(hpa: number): number {
    const r = this.find(hpa);
    if (!r || hpa + 4 > r.base + r.bytes.length) {
      this.strayAccesses++;
      return 0xffffffff;
    }
    return new DataView(r.bytes.buffer, r.bytes.byteOffset).getUint32(hpa - r.base, true);
  }
  write32(hpa: number, v: number): void {
    const r = this.find(hpa);
    if (!r || hpa + 4 > r.base + r.bytes.length) {
      this.strayAccesses++;
      return;
    }
    new DataView(r.bytes.buffer, r.bytes.byteOffset).setUint32(hpa - r.base, v >>> 0, true);
  }
  /**
   * `len` bytes at `hpa` as the hardware would read them: a view when memory backs the whole
   * range, otherwise a private all-ones copy (a read from no memory; writes to it go nowhere).
   */
  sliceOrOnes(hpa: number, len: number): Uint8Array {
    const r = this.find(hpa);
    if (!r || hpa + len > r.base + r.bytes.length) {
      this.strayAccesses++;
      return new Uint8Array(len).fill(0xff);
    }
    return r.bytes.subarray(hpa - r.base, hpa - r.base + len);
  }
  /** Accesses by the emulated hardware to host-physical addresses no memory backs. */
  strayAccesses = 0;
  get bytesMapped(): number {
    return this.mapped;
  }
}

const NO_WORDS: Uint32Array = new Uint32Array(0);
const TWO32 = 0x1_0000_0000;

/**
 * How the emulated table walkers (EPT, NPT, a third-party backend's TDP) read and update
 * 8-byte entries in host-physical memory: as two 32-bit halves through the region's words,
 * remembering the last region so a walk's later levels (usually in the same region) cost no
 * search. Where no memory is, the entry reads as all-ones and writes are dropped, as the bus
 * behaves (HostMemory.read32/write32 count those as stray accesses).
 */
export class HostEntryCursor {
  /** The entry last read (`read`). */
  lo = 0;
  hi = 0;
  private words: Uint32Array = NO_WORDS;
  private base = 0;
  private len = 0;
  /** Word index of the entry last read in `words`, or -1 when no aligned memory backs it. */
  private wi = -1;
  private ea = 0;

  constructor(private readonly host: HostMemory) {}

  /** Read the 8-byte entry at host-physical `ea` into `lo`/`hi`. */
  read(ea: number): void {
    const wi = this.locate(ea);
    if (wi < 0) {
      this.lo = this.host.read32(ea);
      this.hi = this.host.read32(ea + 4);
      return;
    }
    this.lo = this.words[wi];
    this.hi = this.words[wi + 1];
  }

  /** Write the 8-byte entry at host-physical `ea` (a log record: PML). */
  write(ea: number, lo: number, hi: number): void {
    const wi = this.locate(ea);
    if (wi < 0) {
      this.host.write32(ea, lo);
      this.host.write32(ea + 4, hi);
      return;
    }
    this.words[wi] = lo;
    this.words[wi + 1] = hi;
  }

  /** Word index of `ea` in `words` (switching region), or -1 when no aligned memory backs it. */
  private locate(ea: number): number {
    this.ea = ea;
    const off = ea - this.base;
    if (off >= 0 && off + 8 <= this.len) return (this.wi = off >>> 2);
    const r = this.host.find(ea);
    // Only regions under 4 GiB long are remembered, so an offset into one is a 32-bit integer.
    if (r === null || r.words === null || ea + 8 > r.base + r.bytes.length || r.bytes.length >= TWO32) return (this.wi = -1);
    this.base = r.base;
    this.len = r.bytes.length;
    this.words = r.words;
    return (this.wi = (ea - r.base) >>> 2);
  }

  /** Replace the low half of the entry last read (accessed/dirty flags, write access). */
  writeLo(v: number): void {
    if (this.wi >= 0) this.words[this.wi] = v;
    else this.host.write32(this.ea, v);
  }
}

/**
 * Index (0..511) of the entry that translates an address at `level` (1 = page table, 2 = page
 * directory, 3 = PDPT, 4 = PML4, 5 = PML5) of a 4-/5-level table in the x86 long-mode layout
 * shared by EPT and NPT: address bits 20:12, 29:21, 38:30, 47:39, 56:48. The address comes as
 * its 32-bit halves so a walk needs no BigInt.
 */
export function tableIndex(lo: number, hi: number, level: number): number {
  switch (level) {
    case 5: return (hi >>> 16) & 511;
    case 4: return (hi >>> 7) & 511;
    case 3: return ((hi & 0x7f) << 2) | (lo >>> 30);
    case 2: return (lo >>> 21) & 511;
    default: return (lo >>> 12) & 511;
  }
}
