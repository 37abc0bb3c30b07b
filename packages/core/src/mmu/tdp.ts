import type { KvmMemorySlot } from '../ops/types';
import { HostMemory, PAGE_SIZE } from './host-memory';
import { KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, Memslots } from './memslot';

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

/**
 * Core's two-dimensional-paging MMU (KVM's tdp_mmu): builds GPA→HPA tables in host memory on
 * TDP faults, in the vendor's format, 4 KiB leaves only; write-protects or clears D bits for
 * dirty logging; zaps on memslot changes. Table pages come from a host-memory pool.
 */
export class TdpMmu {
  /** Host-physical address of the root table (what loadMmuPgd puts in the EPTP / nCR3). */
  root: number;
  private pool: number[] = [];
  private free: number[] = [];
  /** Incremented whenever entries change in a way that needs a TLB flush (for tests/diagnostics). */
  generation = 0;

  constructor(private readonly host: HostMemory, private readonly memslots: Memslots, readonly format: TdpFormat) {
    this.root = this.allocTable();
  }

  private allocTable(): number {
    if (this.free.length === 0) {
      const base = this.host.allocPages(POOL_PAGES, `${this.format.name} tables`);
      this.pool.push(base);
      for (let i = POOL_PAGES - 1; i >= 0; i--) this.free.push(base + i * PAGE_SIZE);
    }
    const hpa = this.free.pop()!;
    const { bytes, offset } = this.host.slice(hpa, PAGE_SIZE);
    bytes.fill(0, offset, offset + PAGE_SIZE);
    return hpa;
  }

  private read(hpa: number): bigint {
    return this.host.read64(hpa);
  }
  private write(hpa: number, v: bigint): void {
    this.host.write64(hpa, v);
  }

  private isPresent(e: bigint): boolean {
    return (e & (this.format.readBits | this.format.writeBit | this.format.execBit)) !== 0n || e === this.format.mmioEntry;
  }

  /** Host-physical address of the leaf entry for `gfn`, creating tables when `create`. -1 if absent. */
  leafEntryAddress(gfn: number, create: boolean): number {
    let table = this.root;
    for (let level = this.format.levels; level > 1; level--) {
      const idx = Math.floor(gfn / 2 ** (9 * (level - 1))) % 512;
      const ea = table + idx * 8;
      const e = this.read(ea);
      if (e === 0n) {
        if (!create) return -1;
        const t = this.allocTable();
        this.write(ea, BigInt(t) | this.format.nonLeafBits);
        table = t;
      } else {
        table = Number(e & TDP_ADDR_MASK);
      }
    }
    return table + (gfn % 512) * 8;
  }

  /**
   * The TDP fault handler (kvm_tdp_page_fault → direct_map): install the leaf for `gpa`.
   * `isWrite` comes from the vendor's fault information.
   */
  pageFault(gpa: bigint, isWrite: boolean): TdpFaultResult {
    const gfn = Number(gpa >> 12n);
    const slot = this.memslots.find(gfn);
    const ea = this.leafEntryAddress(gfn, true);
    const f = this.format;
    if (!slot) {
      this.write(ea, f.mmioEntry);
      return TdpFaultResult.MMIO;
    }
    const readonly = (slot.flags & KVM_MEM_READONLY) !== 0;
    if (isWrite && readonly) return TdpFaultResult.READONLY_WRITE;
    const logging = (slot.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
    let writable = !readonly;
    if (logging && !f.hardwareDirtyLog) {
      // Write-protection dirty logging: only a write fault makes the page writable, and marks it dirty.
      writable = isWrite;
      if (isWrite) this.memslots.markPageDirty(slot, gfn);
    }
    const hpa = BigInt(slot.hostBase + (gfn - Number(slot.baseGfn)) * PAGE_SIZE);
    let leaf = hpa | f.readBits | f.execBit | f.mtMask(BigInt(gfn), false);
    if (writable) leaf |= f.writeBit;
    // With hardware logging, a logged page starts clean so the first write sets D and logs it.
    if (!(logging && f.hardwareDirtyLog)) leaf |= f.accessedBit | (writable ? f.dirtyBit : 0n);
    this.write(ea, leaf);
    this.generation++;
    return TdpFaultResult.RETRY;
  }

  private forEachLeaf(slot: KvmMemorySlot, gfnOffset: number, mask: number, fn: (ea: number, e: bigint) => void): void {
    const base = Number(slot.baseGfn) + gfnOffset;
    let m = mask >>> 0;
    while (m) {
      const b = 31 - Math.clz32(m & -m);
      m &= m - 1;
      const ea = this.leafEntryAddress(base + b, false);
      if (ea < 0) continue;
      const e = this.read(ea);
      if (e !== 0n && e !== this.format.mmioEntry) fn(ea, e);
    }
  }

  private forEachSlotLeaf(slot: KvmMemorySlot, fn: (ea: number, e: bigint) => void): void {
    for (let off = 0; off < slot.npages; off += 32) {
      const n = Math.min(32, slot.npages - off);
      this.forEachLeaf(slot, off, n === 32 ? 0xffffffff : (1 << n) - 1, fn);
    }
  }

  /** kvm_mmu_slot_remove_write_access. */
  slotRemoveWriteAccess(slot: KvmMemorySlot): void {
    this.forEachSlotLeaf(slot, (ea, e) => this.write(ea, e & ~this.format.writeBit));
    this.generation++;
  }

  /** kvm_mmu_write_protect_pt_masked. */
  writeProtectPtMasked(slot: KvmMemorySlot, gfnOffset: number, mask: number): void {
    this.forEachLeaf(slot, gfnOffset, mask, (ea, e) => this.write(ea, e & ~this.format.writeBit));
    this.generation++;
  }

  /** kvm_mmu_slot_leaf_clear_dirty (PML: start logging with every D bit clear). */
  slotLeafClearDirty(slot: KvmMemorySlot): void {
    this.forEachSlotLeaf(slot, (ea, e) => this.write(ea, e & ~this.format.dirtyBit));
    this.generation++;
  }

  /** kvm_mmu_clear_dirty_pt_masked (PML: re-arm the pages userspace just collected). */
  clearDirtyPtMasked(slot: KvmMemorySlot, gfnOffset: number, mask: number): void {
    this.forEachLeaf(slot, gfnOffset, mask, (ea, e) => this.write(ea, e & ~this.format.dirtyBit));
    this.generation++;
  }

  /** kvm_mmu_slot_set_dirty (PML off: leaves dirty again so the hardware stops logging). */
  slotSetDirty(slot: KvmMemorySlot): void {
    this.forEachSlotLeaf(slot, (ea, e) => this.write(ea, e | this.format.dirtyBit));
    this.generation++;
  }

  /** kvm_mmu_zap_all: drop every mapping (memslot changes); tables return to the pool. */
  zapAll(): void {
    const walk = (table: number, level: number) => {
      for (let i = 0; i < 512; i++) {
        const ea = table + i * 8;
        const e = this.read(ea);
        if (e === 0n) continue;
        if (level > 1 && this.isPresent(e) && e !== this.format.mmioEntry) {
          const child = Number(e & TDP_ADDR_MASK);
          walk(child, level - 1);
          this.free.push(child);
        }
        this.write(ea, 0n);
      }
    };
    walk(this.root, this.format.levels);
    this.generation++;
  }

  memslotsChanged(): void {
    this.zapAll();
  }
}
