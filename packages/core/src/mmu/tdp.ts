import type { KvmMemorySlot } from '../ops/types';
import { HostMemory, PAGE_SIZE } from './host-memory';
import { KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, Memslots, slotBaseGfn } from './memslot';

/**
 * The vendor's TDP entry format, handed to core's MMU the way KVM's vendor modules set the
 * shadow_*_mask values (kvm_mmu_set_mask_ptes / kvm_mmu_set_ept_masks). EPT and NPT differ
 * in every field; core builds tables in whichever format it is given, and the vendor's
 * walker (the "hardware") reads them.
 */
export interface TdpFormat {
  readonly name: string;
  /** Paging levels (getTdpLevel): 4 or 5. */
  readonly levels: number;
  /** Bits of a non-leaf entry besides the address (EPT: R|W|X; NPT: P|RW|US). */
  readonly nonLeafBits: bigint;
  /** Bits that grant read access in a leaf (EPT: R; NPT: P|US). */
  readonly readBits: bigint;
  readonly writeBit: bigint;
  /** Bit granting execute (EPT: X); 0 when execute is the default (NPT). */
  readonly execBit: bigint;
  readonly accessedBit: bigint;
  readonly dirtyBit: bigint;
  /** The value of an MMIO leaf: a form the walker reports as MMIO (EPT misconfiguration / NPT reserved bit). */
  readonly mmioEntry: bigint;
  /**
   * Dirty logging in hardware (PML): leaves stay writable with D clear and the walker logs
   * GPAs; without it core write-protects logged slots and marks pages dirty on the write fault.
   */
  readonly hardwareDirtyLog: boolean;
  /** Memory-type bits for a leaf (the backend's getMtMask). */
  mtMask(gfn: bigint, isMmio: boolean): bigint;
}

export const TDP_ADDR_MASK = 0x000f_ffff_ffff_f000n;

export enum TdpFaultResult {
  /** The mapping is in place: re-enter the guest and retry. */
  RETRY = 0,
  /** No memory backs the GPA: emulate the access (MMIO). */
  MMIO = 1,
  /** A write to a read-only slot: emulate as MMIO to userspace (KVM's readonly memslot rule). */
  READONLY_WRITE = 2,
}

const POOL_PAGES = 64;
const TWO32 = 0x1_0000_0000;
const MASK32 = 0xffff_ffffn;

/** A 64-bit entry mask as its two 32-bit halves. */
function lo32(v: bigint): number {
  return Number(v & MASK32);
}
function hi32(v: bigint): number {
  return Number((v >> 32n) & MASK32);
}

/**
 * Core's two-dimensional-paging MMU (KVM's tdp_mmu): builds GPA→HPA tables in host memory on
 * TDP faults, in the vendor's format, 4 KiB leaves only; write-protects or clears D bits for
 * dirty logging; zaps on memslot changes. Table pages come from a host-memory pool.
 *
 * Entries are read and written as two 32-bit halves (words 2i and 2i+1 of a table's
 * Uint32Array), never as BigInt. Every leaf table is indexed by its 2 MiB guest-physical
 * region (gfn / 512), so the dirty-log operations reach a page's leaf entry with one map
 * lookup per region instead of a walk from the root (what KVM gets from its rmaps).
 */
export class TdpMmu {
  /** Host-physical address of the root table (what loadMmuPgd puts in the EPTP / nCR3). */
  root: number;
  private pool: number[] = [];
  private free: number[] = [];
  /** Every table page's 1024 words, by host-physical address (pool pages keep theirs when freed). */
  private readonly tableWords = new Map<number, Uint32Array>();
  /** Level-1 tables by 2 MiB guest-physical region (gfn / 512). */
  private readonly leafTables = new Map<number, Uint32Array>();
  private readonly leafTableHpa = new Map<number, number>();
  /** Incremented whenever entries change in a way that needs a TLB flush (for tests/diagnostics). */
  generation = 0;

  // The format's bits as 32-bit halves.
  private readonly permLo: number;
  private readonly permHi: number;
  private readonly readLo: number;
  private readonly readHi: number;
  private readonly writeLo: number;
  private readonly writeHi: number;
  private readonly execLo: number;
  private readonly execHi: number;
  private readonly accessedLo: number;
  private readonly accessedHi: number;
  private readonly dirtyLo: number;
  private readonly dirtyHi: number;
  private readonly nonLeafLo: number;
  private readonly nonLeafHi: number;
  private readonly mmioLo: number;
  private readonly mmioHi: number;

  constructor(private readonly host: HostMemory, private readonly memslots: Memslots, readonly format: TdpFormat) {
    const f = format;
    const perm = f.readBits | f.writeBit | f.execBit;
    this.permLo = lo32(perm); this.permHi = hi32(perm);
    this.readLo = lo32(f.readBits); this.readHi = hi32(f.readBits);
    this.writeLo = lo32(f.writeBit); this.writeHi = hi32(f.writeBit);
    this.execLo = lo32(f.execBit); this.execHi = hi32(f.execBit);
    this.accessedLo = lo32(f.accessedBit); this.accessedHi = hi32(f.accessedBit);
    this.dirtyLo = lo32(f.dirtyBit); this.dirtyHi = hi32(f.dirtyBit);
    this.nonLeafLo = lo32(f.nonLeafBits); this.nonLeafHi = hi32(f.nonLeafBits);
    this.mmioLo = lo32(f.mmioEntry); this.mmioHi = hi32(f.mmioEntry);
    this.root = this.allocTable();
  }

  private allocTable(): number {
    if (this.free.length === 0) {
      const base = this.host.allocPages(POOL_PAGES, `${this.format.name} tables`);
      const region = this.host.find(base)!;
      // allocPages buffers are fresh ArrayBuffers, so always 4-byte aligned.
      const words = region.words!;
      this.pool.push(base);
      for (let i = POOL_PAGES - 1; i >= 0; i--) {
        this.tableWords.set(base + i * PAGE_SIZE, words.subarray(i * 1024, (i + 1) * 1024));
        this.free.push(base + i * PAGE_SIZE);
      }
    }
    const hpa = this.free.pop()!;
    this.tableWords.get(hpa)!.fill(0);
    return hpa;
  }

  /** The words of the table an entry (lo, hi) points at. */
  private child(lo: number, hi: number): number {
    return ((lo & 0xffff_f000) >>> 0) + (hi & 0xf_ffff) * TWO32;
  }

  /** The leaf table covering `gfn`, creating the path to it when `create`; null if absent. */
  private leafTable(gfn: number, create: boolean): Uint32Array | null {
    const region = Math.floor(gfn / 512);
    const t = this.leafTables.get(region);
    if (t !== undefined) return t;
    if (!create) return null;
    let table = this.root;
    let words = this.tableWords.get(table)!;
    for (let level = this.format.levels; level > 1; level--) {
      const w = (Math.floor(gfn / 2 ** (9 * (level - 1))) % 512) * 2;
      const lo = words[w], hi = words[w + 1];
      if ((lo | hi) === 0) {
        table = this.allocTable();
        words[w] = (table >>> 0) | this.nonLeafLo;
        words[w + 1] = Math.floor(table / TWO32) | this.nonLeafHi;
      } else {
        table = this.child(lo, hi);
      }
      words = this.tableWords.get(table)!;
    }
    this.leafTables.set(region, words);
    this.leafTableHpa.set(region, table);
    return words;
  }

  /** Host-physical address of the leaf entry for `gfn`, creating tables when `create`. -1 if absent. */
  leafEntryAddress(gfn: number, create: boolean): number {
    if (this.leafTable(gfn, create) === null) return -1;
    return this.leafTableHpa.get(Math.floor(gfn / 512))! + (gfn % 512) * 8;
  }

  /**
   * The TDP fault handler (kvm_tdp_page_fault → direct_map): install the leaf for `gpa`.
   * `isWrite` comes from the vendor's fault information.
   */
  pageFault(gpa: bigint, isWrite: boolean): TdpFaultResult {
    const gfn = Number(gpa >> 12n);
    const slot = this.memslots.find(gfn);
    const t = this.leafTable(gfn, true)!;
    const w = (gfn % 512) * 2;
    if (!slot) {
      t[w] = this.mmioLo;
      t[w + 1] = this.mmioHi;
      return TdpFaultResult.MMIO;
    }
    const readonly = (slot.flags & KVM_MEM_READONLY) !== 0;
    if (isWrite && readonly) return TdpFaultResult.READONLY_WRITE;
    const logging = (slot.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
    const f = this.format;
    const lo = t[w], hi = t[w + 1];
    if (isWrite && logging && !f.hardwareDirtyLog && ((lo & this.readLo) | (hi & this.readHi)) !== 0
      && !(lo === this.mmioLo && hi === this.mmioHi)) {
      // fast_page_fault: a present leaf write-protected only for dirty logging. Mark the page
      // dirty and give write access back in place (KVM: spte_can_locklessly_be_made_writable).
      this.memslots.markPageDirty(slot, gfn);
      t[w] = lo | this.writeLo | this.accessedLo | this.dirtyLo;
      t[w + 1] = hi | this.writeHi | this.accessedHi | this.dirtyHi;
      this.generation++;
      return TdpFaultResult.RETRY;
    }
    let writable = !readonly;
    if (logging && !f.hardwareDirtyLog) {
      // Write-protection dirty logging: only a write fault makes the page writable, and marks it dirty.
      writable = isWrite;
      if (isWrite) this.memslots.markPageDirty(slot, gfn);
    }
    const hpa = slot.hostBase + (gfn - slotBaseGfn(slot)) * PAGE_SIZE;
    const mt = f.mtMask(BigInt(gfn), false);
    let nlo = (hpa >>> 0) | this.readLo | this.execLo | lo32(mt);
    let nhi = Math.floor(hpa / TWO32) | this.readHi | this.execHi | hi32(mt);
    if (writable) { nlo |= this.writeLo; nhi |= this.writeHi; }
    // With hardware logging, a logged page starts clean so the first write sets D and logs it.
    if (!(logging && f.hardwareDirtyLog)) {
      nlo |= this.accessedLo | (writable ? this.dirtyLo : 0);
      nhi |= this.accessedHi | (writable ? this.dirtyHi : 0);
    }
    t[w] = nlo;
    t[w + 1] = nhi;
    this.generation++;
    return TdpFaultResult.RETRY;
  }

  /**
   * Update the present leaves of the pages set in `mask` (32 pages from slot offset
   * `gfnOffset`): entry = (entry & ~clr) | set. Returns whether any leaf was present.
   */
  private updateMasked(slot: KvmMemorySlot, gfnOffset: number, mask: number,
    clrLo: number, clrHi: number, setLo: number, setHi: number): boolean {
    const base = slotBaseGfn(slot) + gfnOffset;
    const mmioLo = this.mmioLo, mmioHi = this.mmioHi;
    let any = false;
    let m = mask | 0;
    const region0 = Math.floor(base / 512);
    const first = base - region0 * 512;
    if (first + 32 <= 512) {
      // All 32 pages under one leaf table (the usual case): no lookup per page.
      const t = this.leafTables.get(region0);
      if (t === undefined) return false;
      const w0 = first * 2;
      if (m === -1) {
        // Every page of the word (a fully dirty word): a straight run of 32 entries.
        for (let w = w0; w < w0 + 64; w += 2) {
          const lo = t[w], hi = t[w + 1];
          if ((lo | hi) === 0 || (lo === mmioLo && hi === mmioHi)) continue;
          t[w] = (lo & ~clrLo) | setLo;
          t[w + 1] = (hi & ~clrHi) | setHi;
          any = true;
        }
        return any;
      }
      while (m !== 0) {
        const b = 31 - Math.clz32(m & -m);
        m &= m - 1;
        const w = w0 + b * 2;
        const lo = t[w], hi = t[w + 1];
        if ((lo | hi) === 0 || (lo === mmioLo && hi === mmioHi)) continue;
        t[w] = (lo & ~clrLo) | setLo;
        t[w + 1] = (hi & ~clrHi) | setHi;
        any = true;
      }
      return any;
    }
    let region = -1;
    let t: Uint32Array | undefined;
    while (m !== 0) {
      const b = 31 - Math.clz32(m & -m);
      m &= m - 1;
      const gfn = base + b;
      const r = Math.floor(gfn / 512);
      if (r !== region) {
        region = r;
        t = this.leafTables.get(r);
      }
      if (t === undefined) continue;
      const w = (gfn - r * 512) * 2;
      const lo = t[w], hi = t[w + 1];
      if ((lo | hi) === 0 || (lo === mmioLo && hi === mmioHi)) continue;
      t[w] = (lo & ~clrLo) | setLo;
      t[w + 1] = (hi & ~clrHi) | setHi;
      any = true;
    }
    return any;
  }

  /** updateMasked over a whole slot, one leaf table (2 MiB) at a time. */
  private updateSlot(slot: KvmMemorySlot, clrLo: number, clrHi: number, setLo: number, setHi: number): void {
    const first = slotBaseGfn(slot);
    const end = first + slot.npages;
    const mmioLo = this.mmioLo, mmioHi = this.mmioHi;
    for (let gfn = first; gfn < end;) {
      const regionEnd = Math.min(end, (Math.floor(gfn / 512) + 1) * 512);
      const t = this.leafTables.get(Math.floor(gfn / 512));
      if (t !== undefined) {
        for (let w = (gfn % 512) * 2, wEnd = w + (regionEnd - gfn) * 2; w < wEnd; w += 2) {
          const lo = t[w], hi = t[w + 1];
          if ((lo | hi) === 0 || (lo === mmioLo && hi === mmioHi)) continue;
          t[w] = (lo & ~clrLo) | setLo;
          t[w + 1] = (hi & ~clrHi) | setHi;
        }
      }
      gfn = regionEnd;
    }
  }

  /** kvm_mmu_slot_remove_write_access. */
  slotRemoveWriteAccess(slot: KvmMemorySlot): void {
    this.updateSlot(slot, this.writeLo, this.writeHi, 0, 0);
    this.generation++;
  }

  /**
   * kvm_mmu_write_protect_pt_masked: write-protect the pages of one bitmap word — 32 pages
   * from slot offset `gfnOffset` in `mask`, and the next 32 in `maskHi` (a 64-bit word).
   */
  writeProtectPtMasked(slot: KvmMemorySlot, gfnOffset: number, mask: number, maskHi = 0): void {
    const a = this.updateMasked(slot, gfnOffset, mask, this.writeLo, this.writeHi, 0, 0);
    const b = maskHi !== 0 && this.updateMasked(slot, gfnOffset + 32, maskHi, this.writeLo, this.writeHi, 0, 0);
    if (a || b) this.generation++;
  }

  /** kvm_mmu_slot_leaf_clear_dirty (PML: start logging with every D bit clear). */
  slotLeafClearDirty(slot: KvmMemorySlot): void {
    this.updateSlot(slot, this.dirtyLo, this.dirtyHi, 0, 0);
    this.generation++;
  }

  /** kvm_mmu_clear_dirty_pt_masked (PML: re-arm the pages userspace just collected); masks as in writeProtectPtMasked. */
  clearDirtyPtMasked(slot: KvmMemorySlot, gfnOffset: number, mask: number, maskHi = 0): void {
    const a = this.updateMasked(slot, gfnOffset, mask, this.dirtyLo, this.dirtyHi, 0, 0);
    const b = maskHi !== 0 && this.updateMasked(slot, gfnOffset + 32, maskHi, this.dirtyLo, this.dirtyHi, 0, 0);
    if (a || b) this.generation++;
  }

  /** kvm_mmu_slot_set_dirty (PML off: leaves dirty again so the hardware stops logging). */
  slotSetDirty(slot: KvmMemorySlot): void {
    this.updateSlot(slot, 0, 0, this.dirtyLo, this.dirtyHi);
    this.generation++;
  }

  /** kvm_mmu_zap_all: drop every mapping (memslot changes); tables return to the pool. */
  zapAll(): void {
    const walk = (table: number, level: number) => {
      const words = this.tableWords.get(table)!;
      for (let w = 0; w < 1024; w += 2) {
        const lo = words[w], hi = words[w + 1];
        if ((lo | hi) === 0) continue;
        const present = ((lo & this.permLo) | (hi & this.permHi)) !== 0;
        const mmio = lo === this.mmioLo && hi === this.mmioHi;
        if (level > 1 && present && !mmio) {
          const child = this.child(lo, hi);
          walk(child, level - 1);
          this.free.push(child);
        }
        words[w] = 0;
        words[w + 1] = 0;
      }
    };
    walk(this.root, this.format.levels);
    this.leafTables.clear();
    this.leafTableHpa.clear();
    this.generation++;
  }

  memslotsChanged(): void {
    this.zapAll();
  }
}
