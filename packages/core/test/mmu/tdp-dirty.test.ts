/**
 * Core's TDP MMU under dirty logging, on a slot that is awkward on purpose: its first page is
 * not 2 MiB aligned (so its pages span three leaf tables) and its size is not a multiple of 64
 * pages (the last bitmap word is partial). Write-protection logging (fast write faults, then
 * kvm_mmu_write_protect_pt_masked per 64-page word) and hardware logging (D bits cleared per
 * word, kvm_mmu_clear_dirty_pt_masked) must touch exactly the pages in the mask and keep every
 * other bit of every entry.
 */
import {
  HostMemory, KVM_MEM_LOG_DIRTY_PAGES, Memslots, TdpFaultResult, TdpFormat, TdpMmu,
} from '../../src';

const BASE_GFN = 0x1f0;
const NPAGES = 700;
const R = 1n, W = 2n, X = 4n, A = 1n << 5n;
/** Dirty in the high half of the entry, and an MMIO marker there too, to exercise both halves. */
const D_HI = 1n << 52n;
const MMIO = 1n << 62n;

function format(hardwareDirtyLog: boolean): TdpFormat {
  return {
    name: 'test', levels: 4, nonLeafBits: R | W | X, readBits: R, writeBit: W, execBit: X,
    accessedBit: A, dirtyBit: D_HI, mmioEntry: MMIO, hardwareDirtyLog, mtMask: () => 0n,
  };
}

function setup(hardwareDirtyLog: boolean) {
  const host = new HostMemory();
  const memslots = new Memslots(host);
  const { created } = memslots.set({
    slot: 0, flags: KVM_MEM_LOG_DIRTY_PAGES, guestPhysAddr: BigInt(BASE_GFN) << 12n, memorySize: BigInt(NPAGES * 4096),
  });
  const mmu = new TdpMmu(host, memslots, format(hardwareDirtyLog));
  const slot = created!;
  const leaf = (gfn: number) => host.read64(mmu.leafEntryAddress(gfn, false));
  return { host, memslots, mmu, slot, leaf };
}

/** Pages written this round: both ends, both sides of each 2 MiB and 64-page boundary, the partial last word. */
const WRITTEN = [0, 1, 15, 16, 63, 64, 65, 127, 300, 527, 528, 640, 698, 699];

function words64(bm: Uint32Array): Array<[number, number, number]> {
  const out: Array<[number, number, number]> = [];
  for (let w = 0; w < bm.length; w += 2) out.push([w * 32, bm[w], w + 1 < bm.length ? bm[w + 1] : 0]);
  return out;
}

describe('TdpMmu dirty logging on an unaligned slot', () => {
  it('write protection: the first write to a page faults once, marks it dirty, and the masked re-protect hits exactly the harvested pages', () => {
    const { mmu, slot, leaf } = setup(false);
    for (let i = 0; i < NPAGES; i++) expect(mmu.pageFault(BigInt(BASE_GFN + i) << 12n, false)).toBe(TdpFaultResult.RETRY);
    // A logged slot maps read-only on read faults.
    for (let i = 0; i < NPAGES; i++) expect(leaf(BASE_GFN + i) & W).toBe(0n);
    const mmioGpa = BigInt(BASE_GFN + NPAGES + 3) << 12n;
    expect(mmu.pageFault(mmioGpa, false)).toBe(TdpFaultResult.MMIO);

    for (const i of WRITTEN) expect(mmu.pageFault(BigInt(BASE_GFN + i) << 12n, true)).toBe(TdpFaultResult.RETRY);
    const bm = slot.dirtyBitmap!;
    const dirty: number[] = [];
    for (let i = 0; i < NPAGES; i++) if (bm[i >>> 5] & (1 << (i & 31))) dirty.push(i);
    expect(dirty).toEqual(WRITTEN);
    for (let i = 0; i < NPAGES; i++) {
      const e = leaf(BASE_GFN + i);
      expect(e & W).toBe(WRITTEN.includes(i) ? W : 0n);
      // The frame address survives the upgrade: consecutive pages of the slot are consecutive host pages.
      expect(Number(e & 0x000f_ffff_ffff_f000n) - Number(leaf(BASE_GFN) & 0x000f_ffff_ffff_f000n)).toBe(i * 4096);
    }

    for (const [offset, lo, hi] of words64(bm)) mmu.writeProtectPtMasked(slot, offset, lo, hi);
    for (let i = 0; i < NPAGES; i++) expect(leaf(BASE_GFN + i) & (R | W | X)).toBe(R | X);
  });

  it('hardware logging: leaves start clean; the masked clear drops D on exactly the masked pages, in the high half', () => {
    const { host, mmu, slot, leaf } = setup(true);
    for (let i = 0; i < NPAGES; i++) mmu.pageFault(BigInt(BASE_GFN + i) << 12n, true);
    for (let i = 0; i < NPAGES; i++) expect(leaf(BASE_GFN + i) & (W | D_HI)).toBe(W);
    // The "hardware" dirties every page.
    for (let i = 0; i < NPAGES; i++) {
      const ea = mmu.leafEntryAddress(BASE_GFN + i, false);
      host.write64(ea, host.read64(ea) | D_HI);
    }
    const mask = new Uint32Array(slot.dirtyBitmap!.length);
    for (const i of WRITTEN) mask[i >>> 5] |= 1 << (i & 31);
    for (const [offset, lo, hi] of words64(mask)) mmu.clearDirtyPtMasked(slot, offset, lo, hi);
    for (let i = 0; i < NPAGES; i++) {
      expect(leaf(BASE_GFN + i) & D_HI).toBe(WRITTEN.includes(i) ? 0n : D_HI);
      expect(leaf(BASE_GFN + i) & (R | W | X)).toBe(R | W | X);
    }
    // Logging off: every leaf dirty again; on: every leaf clean.
    mmu.slotSetDirty(slot);
    for (let i = 0; i < NPAGES; i++) expect(leaf(BASE_GFN + i) & D_HI).toBe(D_HI);
    mmu.slotLeafClearDirty(slot);
    for (let i = 0; i < NPAGES; i++) expect(leaf(BASE_GFN + i) & D_HI).toBe(0n);
  });

  it('zapAll drops every leaf; faults rebuild them', () => {
    const { mmu, leaf } = setup(false);
    mmu.pageFault(BigInt(BASE_GFN + 20) << 12n, true);
    expect(leaf(BASE_GFN + 20) & W).toBe(W);
    mmu.zapAll();
    expect(mmu.leafEntryAddress(BASE_GFN + 20, false)).toBe(-1);
    mmu.pageFault(BigInt(BASE_GFN + 20) << 12n, false);
    expect(leaf(BASE_GFN + 20) & (R | W)).toBe(R);
  });
});
