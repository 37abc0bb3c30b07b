import { KvmError } from '../kvm/errors';
import type { KvmMemorySlot } from '../ops/types';
import { HostMemory, PAGE_SHIFT, PAGE_SIZE } from './host-memory';

/** uapi flags of kvm_userspace_memory_region. */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;
const KVM_MEM_VALID_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY;
/** x86's KVM_USER_MEM_SLOTS. */
export const KVM_USER_MEM_SLOTS = 509;
/** Guest-physical addresses are limited to MAXPHYADDR (52 bits architecturally). */
export const MAX_GPA = 1n << 52n;

/** struct kvm_userspace_memory_region; `userspace` stands for userspace_addr. */
export interface KvmUserspaceMemoryRegion {
  slot: number;
  flags: number;
  guestPhysAddr: bigint;
  memorySize: bigint;
  /** The memory; allocated by core (zeroed) when omitted. Length must equal memorySize. */
  userspace?: Uint8Array;
}

class Slot implements KvmMemorySlot {
  dirtyBitmap: Uint32Array | null = null;
  /** First guest frame number as a plain number (GPAs stay below 2^52). */
  readonly baseGfnNumber: number;
  constructor(
    readonly id: number,
    readonly baseGfn: bigint,
    readonly npages: number,
    public flags: number,
    readonly hostBase: number,
    readonly userspace: Uint8Array,
  ) {
    this.baseGfnNumber = Number(baseGfn);
  }
}

/** A slot's first guest frame number as a number, without a BigInt conversion for core's own slots. */
export function slotBaseGfn(slot: KvmMemorySlot): number {
  return slot instanceof Slot ? slot.baseGfnNumber : Number(slot.baseGfn);
}

/**
 * The VM's memslots (virt/kvm/kvm_main.c: __kvm_set_memory_region), sorted by base GFN.
 */
export class Memslots {
  private slots: Slot[] = [];
  /** Bumped on every change, so cached translations can notice (kvm_memslots generation). */
  generation = 0;

  constructor(private readonly host: HostMemory) {}

  /** Validate and apply a region change; returns the old and new slot for the arch hooks. */
  set(region: KvmUserspaceMemoryRegion): { old: KvmMemorySlot | null; created: KvmMemorySlot | null } {
    const { slot: id, flags, guestPhysAddr: gpa, memorySize: size } = region;
    if (!Number.isInteger(id) || id < 0 || id >= KVM_USER_MEM_SLOTS) {
      throw new KvmError('EINVAL', `memory region: slot ${id} is out of range 0..${KVM_USER_MEM_SLOTS - 1}`);
    }
    if ((flags & ~KVM_MEM_VALID_FLAGS) !== 0) {
      throw new KvmError('EINVAL', `memory region slot ${id}: unknown flags 0x${(flags & ~KVM_MEM_VALID_FLAGS).toString(16)}`);
    }
    if (size < 0n || (size & BigInt(PAGE_SIZE - 1)) !== 0n) {
      throw new KvmError('EINVAL', `memory region slot ${id}: size 0x${size.toString(16)} is not a multiple of 4096`);
    }
    if (gpa < 0n || (gpa & BigInt(PAGE_SIZE - 1)) !== 0n) {
      throw new KvmError('EINVAL', `memory region slot ${id}: guest physical address 0x${gpa.toString(16)} is not 4 KiB aligned`);
    }
    if (gpa + size > MAX_GPA) {
      throw new KvmError('EINVAL', `memory region slot ${id}: 0x${gpa.toString(16)}+0x${size.toString(16)} is beyond the 52-bit guest-physical space`);
    }
    const old = this.slots.find((s) => s.id === id) ?? null;
    if (size === 0n) {
      if (!old) throw new KvmError('EINVAL', `memory region slot ${id}: deleting a slot that does not exist`);
      this.remove(old);
      return { old, created: null };
    }
    if (region.userspace && BigInt(region.userspace.length) !== size) {
      throw new KvmError('EINVAL', `memory region slot ${id}: userspace buffer is ${region.userspace.length} bytes, memorySize is ${size}`);
    }
    if (old) {
      // Only a flags change is allowed on an existing slot (KVM_MR_FLAGS_ONLY); moving or resizing needs delete + create.
      if (old.baseGfn !== gpa >> BigInt(PAGE_SHIFT) || BigInt(old.npages) !== size >> BigInt(PAGE_SHIFT)) {
        throw new KvmError('EINVAL', `memory region slot ${id}: an existing slot can change only its flags (delete it first to move or resize)`);
      }
      if ((old.flags & KVM_MEM_READONLY) !== (flags & KVM_MEM_READONLY)) {
        throw new KvmError('EINVAL', `memory region slot ${id}: KVM_MEM_READONLY cannot change on an existing slot`);
      }
      old.flags = flags;
      this.syncDirtyBitmap(old);
      this.generation++;
      return { old, created: old };
    }
    const baseGfn = gpa >> BigInt(PAGE_SHIFT);
    const npages = Number(size >> BigInt(PAGE_SHIFT));
    for (const s of this.slots) {
      const sEnd = s.baseGfn + BigInt(s.npages);
      if (baseGfn < sEnd && baseGfn + BigInt(npages) > s.baseGfn) {
        throw new KvmError('EEXIST', `memory region slot ${id}: [0x${gpa.toString(16)}, 0x${(gpa + size).toString(16)}) overlaps slot ${s.id}`);
      }
    }
    let bytes = region.userspace;
    if (!bytes) {
      try {
        bytes = new Uint8Array(npages * PAGE_SIZE);
      } catch {
        throw new KvmError('ENOMEM', `memory region slot ${id}: cannot allocate ${size} bytes of guest memory`);
      }
    }
    const hostBase = this.host.map(bytes, `memslot ${id}`);
    const s = new Slot(id, baseGfn, npages, flags, hostBase, bytes);
    this.syncDirtyBitmap(s);
    this.slots.push(s);
    this.slots.sort((a, b) => (a.baseGfn < b.baseGfn ? -1 : 1));
    this.generation++;
    return { old: null, created: s };
  }

  private remove(s: Slot): void {
    this.host.unmap(s.hostBase);
    this.slots = this.slots.filter((x) => x !== s);
    this.generation++;
  }

  private syncDirtyBitmap(s: Slot): void {
    if (s.flags & KVM_MEM_LOG_DIRTY_PAGES) {
      if (!s.dirtyBitmap) s.dirtyBitmap = new Uint32Array((s.npages + 31) >>> 5);
    } else {
      s.dirtyBitmap = null;
    }
  }

  /** gfn_to_memslot: binary search; gfn as a number (below 2^40). */
  find(gfn: number): KvmMemorySlot | null {
    const ss = this.slots;
    let lo = 0;
    let hi = ss.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = ss[mid];
      const base = s.baseGfnNumber;
      if (gfn < base) hi = mid - 1;
      else if (gfn >= base + s.npages) lo = mid + 1;
      else return s;
    }
    return null;
  }

  byId(id: number): KvmMemorySlot | null {
    return this.slots.find((s) => s.id === id) ?? null;
  }

  all(): readonly KvmMemorySlot[] {
    return this.slots;
  }

  /** mark_page_dirty_in_slot. */
  markPageDirty(slot: KvmMemorySlot, gfn: number): void {
    const bm = slot.dirtyBitmap;
    if (!bm) return;
    const rel = gfn - slotBaseGfn(slot);
    bm[rel >>> 5] |= 1 << (rel & 31);
  }

  /**
   * Guest-physical to host-physical through the memslots (what KVM's MMU installs into the
   * TDP tables). Returns -1 when no slot backs the GPA (MMIO).
   */
  gpaToHpa(gpa: number): number {
    const gfn = Math.floor(gpa / PAGE_SIZE);
    const s = this.find(gfn);
    if (!s) return -1;
    return s.hostBase + (gfn - slotBaseGfn(s)) * PAGE_SIZE + (gpa % PAGE_SIZE);
  }

  get totalBytes(): number {
    return this.slots.reduce((n, s) => n + s.npages * PAGE_SIZE, 0);
  }
}
