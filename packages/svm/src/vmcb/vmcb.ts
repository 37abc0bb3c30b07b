import type { HostMemory, KvmSegment, DescPtr } from '@tsvisor/core';
import {
  CLEAN_GROUPS, fieldBytes, SEG_ATTRIB, SEG_BASE, SEG_LIMIT, SEG_SELECTOR, SegmentField, VMCB_SAVE, VMCB_SIZE, VmcbField, FieldWidth, VmcbCleanBit,
} from './layout';

/**
 * The clean-bit group (APM 15.15.3) of each 4-byte word of the page, -1 for none, and each
 * group's words. A word shared by a group's field and a field outside it counts as the group's.
 */
const GROUP_OF_WORD = new Int8Array(VMCB_SIZE >> 2).fill(-1);
const GROUP_WORDS: Int32Array[] = [];
for (let bit = 0; bit < VmcbCleanBit.COUNT; bit++) {
  const words: number[] = [];
  for (const fld of CLEAN_GROUPS[bit]) {
    for (let w = fld.offset >> 2; w < (fld.offset + fieldBytes(fld) + 3) >> 2; w++) {
      GROUP_OF_WORD[w] = bit;
      if (!words.includes(w)) words.push(w);
    }
  }
  GROUP_WORDS.push(Int32Array.from(words));
}
/**
 * Which store counter (Vmcb.segStores / msrStores / sysStores) a write to each 4-byte word of
 * the page bumps, 0 for none: the save area's segment and descriptor-table slots (ES at 0x400
 * … TR ending at 0x4a0, APM Table B-2), the VMLOAD/VMSAVE MSR slots STAR … SYSENTER_EIP
 * (0x600–0x63f), and the EFER, CR4/CR3/CR0/DR7/DR6, G_PAT and DBGCTL slots.
 */
const SEG_COUNTER = 1;
const MSR_COUNTER = 2;
const SYS_COUNTER = 3;
const COUNTER_OF_WORD = new Uint8Array(VMCB_SIZE >> 2);
function countWords(start: number, end: number, counter: number): void {
  for (let w = start >> 2; w < end >> 2; w++) COUNTER_OF_WORD[w] = counter;
}
countWords(VMCB_SAVE.ES.offset, VMCB_SAVE.TR.offset + 16, SEG_COUNTER);
countWords(VMCB_SAVE.STAR.offset, VMCB_SAVE.SYSENTER_EIP.offset + 8, MSR_COUNTER);
countWords(VMCB_SAVE.CR4.offset, VMCB_SAVE.DR6.offset + 8, SYS_COUNTER);
for (const fld of [VMCB_SAVE.EFER, VMCB_SAVE.G_PAT, VMCB_SAVE.DBGCTL]) countWords(fld.offset, fld.offset + 8, SYS_COUNTER);
/** BigInt → 32-bit halves (modulo 2^64) through a typed array: no BigInt operation, no allocation. */
const CONV64 = new BigUint64Array(1);
const CONV32 = new Uint32Array(CONV64.buffer);
// The VMCB is little-endian (APM Appendix B); `words` and CONV32 use the host's byte order.
if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) throw new Error('tsvisor/svm needs a little-endian host');

/** Every group marked at once (the processor's own #VMEXIT stores take no snapshot). */
export const ALL_CLEAN_GROUPS = (1 << VmcbCleanBit.COUNT) - 1;

/**
 * The VMCB: one 4 KiB page of host memory, read and written through a DataView at the
 * offsets of AMD APM Vol. 2 Appendix B. Who touches it: the backend (KVM's svm.c) between
 * #VMEXIT and VMRUN; the emulated SVM hardware (hardware.ts) at VMRUN and #VMEXIT.
 */
export class Vmcb {
  readonly view: DataView;
  readonly bytes: Uint8Array;
  /**
   * The page as little-endian 32-bit words (index = offset / 4; the page is 4 KiB aligned).
   * The emulated processor's own VMRUN loads and #VMEXIT stores go through it by word index
   * (hardware.ts): no accessor call, no copy-on-write check (#VMEXIT marks every group written
   * before it stores) and no store counter (it samples them after its stores).
   */
  readonly words: Int32Array;
  /**
   * The last 64-bit value read at each 8-byte slot, with the 32-bit halves it was made from:
   * read64 of an unchanged field returns that bigint instead of building a new one (the halves
   * are compared with memory each time, so any write to the page, raw or not, is seen).
   */
  private readonly cLo = new Int32Array(VMCB_SIZE >> 3);
  private readonly cHi = new Int32Array(VMCB_SIZE >> 3);
  private readonly cBig: bigint[] = new Array<bigint>(VMCB_SIZE >> 3).fill(0n);
  /**
   * The processor's cached copy of the clean-bit groups (APM 15.15.3), kept copy-on-write: the
   * first write through this object to a group after #VMEXIT saves the group's words as they
   * were, and sets its bit in `writtenGroups` (cleared by the next #VMEXIT). A group written
   * while its clean bit is set is what VMRUN must take from this copy; any other group reads
   * the same from memory. (A write that bypasses these accessors — raw bytes — is not seen, so
   * VMRUN uses memory for it, which the APM also allows: the processor *may* use its copy.)
   */
  writtenGroups = 0;
  readonly cachedWords = new Int32Array(VMCB_SIZE >> 2);
  /**
   * Writes through these accessors to the save area's segment slots (ES…TR, GDTR/IDTR included,
   * offsets 0x400–0x49f), whoever makes them: the backend, userspace through it, or #VMEXIT.
   * The emulated hardware compares it with the value after its last #VMEXIT to know that the
   * segment fields still hold what it stored (hardware.ts, segment store/load skip).
   */
  segStores = 0;
  /** The same for the VMLOAD/VMSAVE MSR slots STAR…SYSENTER_EIP (offsets 0x600–0x63f). */
  msrStores = 0;
  /**
   * The same for the EFER, CR0/CR3/CR4, DR6/DR7, G_PAT and DBGCTL slots. (The DR6 store of every
   * #VMEXIT goes through `words`, uncounted: the hardware samples the counters after its stores.)
   */
  sysStores = 0;

  /** `bytes`: the 4 KiB page; `pa`: its host-physical address (-1 for a processor-internal copy). */
  constructor(bytes: Uint8Array, readonly pa: number) {
    if (bytes.length !== VMCB_SIZE) throw new RangeError(`a VMCB is ${VMCB_SIZE} bytes, got ${bytes.length}`);
    // APM 15.5: the VMCB is 4 KiB aligned in physical memory, so its words are aligned in the host buffer too.
    if (bytes.byteOffset & 3) throw new RangeError(`a VMCB must be 4-byte aligned in its buffer, got offset ${bytes.byteOffset}`);
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, VMCB_SIZE);
    this.words = new Int32Array(bytes.buffer, bytes.byteOffset, VMCB_SIZE >> 2);
  }

  /** The VMCB at host-physical `pa`. */
  static at(host: HostMemory, pa: number): Vmcb {
    const { bytes, offset } = host.slice(pa, VMCB_SIZE);
    return new Vmcb(bytes.subarray(offset, offset + VMCB_SIZE), pa);
  }

  /** Allocate a zeroed VMCB page (APM 15.5: the VMCB must be 4 KiB aligned in physical memory). */
  static alloc(host: HostMemory, name = 'vmcb'): Vmcb {
    return Vmcb.at(host, host.allocPages(1, name));
  }

  read8(fld: VmcbField & { width: 1 }): number {
    return this.view.getUint8(fld.offset);
  }
  write8(fld: VmcbField & { width: 1 }, v: number): void {
    this.touch(fld.offset);
    this.view.setUint8(fld.offset, v & 0xff);
  }
  read16(fld: VmcbField & { width: 2 }): number {
    return this.view.getUint16(fld.offset, true);
  }
  write16(fld: VmcbField & { width: 2 }, v: number): void {
    this.touch(fld.offset);
    this.view.setUint16(fld.offset, v & 0xffff, true);
  }
  read32(fld: VmcbField & { width: 4 }): number {
    return this.view.getUint32(fld.offset, true);
  }
  write32(fld: VmcbField & { width: 4 }, v: number): void {
    this.touch(fld.offset);
    this.view.setUint32(fld.offset, v >>> 0, true);
  }
  read64(fld: VmcbField & { width: 8 }): bigint {
    return this.big(fld.offset);
  }
  write64(fld: VmcbField & { width: 8 }, v: bigint): void {
    this.putBig(fld.offset, v);
  }
  /**
   * The processor's #VMEXIT store of a 64-bit register: no comparison first (read64 rebuilds
   * its bigint only if the halves changed); the value is stored modulo 2^64, as write64 does.
   */
  store64(fld: VmcbField & { width: 8 }, v: bigint): void {
    this.touch(fld.offset);
    CONV64[0] = v;
    this.view.setUint32(fld.offset, CONV32[0], true);
    this.view.setUint32(fld.offset + 4, CONV32[1], true);
  }
  /** Low / high 32 bits of a 64-bit field (the BigInt-free accessors of the VMRUN/#VMEXIT path). */
  readLo(fld: VmcbField & { width: 8 }): number {
    return this.view.getUint32(fld.offset, true);
  }
  readHi(fld: VmcbField & { width: 8 }): number {
    return this.view.getUint32(fld.offset + 4, true);
  }
  writeHalves(fld: VmcbField & { width: 8 }, lo: number, hi: number): void {
    this.touch(fld.offset);
    this.view.setUint32(fld.offset, lo >>> 0, true);
    this.view.setUint32(fld.offset + 4, hi >>> 0, true);
  }

  /** Before a write at `off`: the first write to a clean-bit group since #VMEXIT saves the group's words. */
  private touch(off: number): void {
    const w = off >> 2;
    const counter = COUNTER_OF_WORD[w];
    if (counter === SEG_COUNTER) this.segStores++;
    else if (counter === MSR_COUNTER) this.msrStores++;
    else if (counter === SYS_COUNTER) this.sysStores++;
    const g = GROUP_OF_WORD[w];
    if (g < 0 || (this.writtenGroups >>> g) & 1) return;
    this.writtenGroups |= 1 << g;
    const words = GROUP_WORDS[g];
    for (let i = 0; i < words.length; i++) this.cachedWords[words[i]] = this.words[words[i]];
  }

  /** The 64-bit value at `off`: the cached bigint while memory still holds its halves. */
  private big(off: number): bigint {
    const lo = this.view.getInt32(off, true);
    const hi = this.view.getInt32(off + 4, true);
    const i = off >> 3;
    if (lo === this.cLo[i] && hi === this.cHi[i]) return this.cBig[i];
    const v = this.view.getBigUint64(off, true);
    this.cLo[i] = lo;
    this.cHi[i] = hi;
    this.cBig[i] = v;
    return v;
  }
  /** write64: the value modulo 2^64 (as BigInt.asUintN(64, v)); nothing happens when memory already holds it. */
  private putBig(off: number, v: bigint): void {
    CONV64[0] = v;
    const lo = CONV32[0], hi = CONV32[1];
    if (this.view.getUint32(off, true) === lo && this.view.getUint32(off + 4, true) === hi) return;
    this.touch(off);
    this.view.setUint32(off, lo, true);
    this.view.setUint32(off + 4, hi, true);
  }
  /** Width-generic read for dumps and tests. */
  readAny(fld: VmcbField): bigint {
    switch (fld.width as FieldWidth) {
      case 1: return BigInt(this.view.getUint8(fld.offset));
      case 2: return BigInt(this.view.getUint16(fld.offset, true));
      case 4: return BigInt(this.view.getUint32(fld.offset, true));
      default: return this.big(fld.offset);
    }
  }

  setBit32(fld: VmcbField & { width: 4 }, bit: number, on: boolean): void {
    const v = this.read32(fld);
    this.write32(fld, on ? v | (1 << bit) : v & ~(1 << bit));
  }
  testBit32(fld: VmcbField & { width: 4 }, bit: number): boolean {
    return ((this.read32(fld) >>> bit) & 1) === 1;
  }

  // ---- vmcb_seg: selector, packed attributes, limit, base

  segSelector(seg: SegmentField): number {
    return this.view.getUint16(seg.offset + SEG_SELECTOR, true);
  }
  segAttrib(seg: SegmentField): number {
    return this.view.getUint16(seg.offset + SEG_ATTRIB, true);
  }
  segLimit(seg: SegmentField): number {
    return this.view.getUint32(seg.offset + SEG_LIMIT, true);
  }
  segBase(seg: SegmentField): bigint {
    return this.big(seg.offset + SEG_BASE);
  }
  segBaseLo(seg: SegmentField): number {
    return this.view.getUint32(seg.offset + SEG_BASE, true);
  }
  segBaseHi(seg: SegmentField): number {
    return this.view.getUint32(seg.offset + SEG_BASE + 4, true);
  }
  writeSeg(seg: SegmentField, selector: number, attrib: number, limit: number, base: bigint): void {
    this.touch(seg.offset);
    this.view.setUint16(seg.offset + SEG_SELECTOR, selector & 0xffff, true);
    this.view.setUint16(seg.offset + SEG_ATTRIB, attrib & 0xfff, true);
    this.view.setUint32(seg.offset + SEG_LIMIT, limit >>> 0, true);
    this.putBig(seg.offset + SEG_BASE, base);
  }
  /** writeSeg with the base as 32-bit halves (what #VMEXIT stores from the processor). */
  writeSegHalves(seg: SegmentField, selector: number, attrib: number, limit: number, baseLo: number, baseHi: number): void {
    this.touch(seg.offset);
    this.view.setUint16(seg.offset + SEG_SELECTOR, selector & 0xffff, true);
    this.view.setUint16(seg.offset + SEG_ATTRIB, attrib & 0xfff, true);
    this.view.setUint32(seg.offset + SEG_LIMIT, limit >>> 0, true);
    this.view.setUint32(seg.offset + SEG_BASE, baseLo >>> 0, true);
    this.view.setUint32(seg.offset + SEG_BASE + 4, baseHi >>> 0, true);
  }
  setSegBase(seg: SegmentField, base: bigint): void {
    this.putBig(seg.offset + SEG_BASE, base);
  }

  getDt(seg: SegmentField, out: DescPtr): void {
    out.size = this.segLimit(seg) & 0xffff;
    out.address = this.segBase(seg);
  }
  setDt(seg: SegmentField, dt: DescPtr): void {
    this.setDtParts(seg, dt.size, dt.address);
  }
  setDtParts(seg: SegmentField, size: number, address: bigint): void {
    this.touch(seg.offset);
    this.view.setUint32(seg.offset + SEG_LIMIT, size >>> 0, true);
    this.putBig(seg.offset + SEG_BASE, address);
  }

  // ---- clean bits (APM 15.15.3)

  markDirty(bit: VmcbCleanBit): void {
    const v = this.view.getUint32(0x0c0, true);
    this.view.setUint32(0x0c0, v & ~(1 << bit), true);
  }
  markAllDirty(): void {
    this.view.setUint32(0x0c0, 0, true);
  }
  /** vmcb_mark_all_clean: every group clean except those KVM always rewrites (V_TPR group and CR2). */
  markAllClean(): void {
    const all = (1 << VmcbCleanBit.COUNT) - 1;
    const alwaysDirty = (1 << VmcbCleanBit.TPR) | (1 << VmcbCleanBit.CR2);
    this.view.setUint32(0x0c0, all & ~alwaysDirty, true);
  }
  isClean(bit: VmcbCleanBit): boolean {
    return ((this.view.getUint32(0x0c0, true) >>> bit) & 1) === 1;
  }
}

// ---------------------------------------------------------------- packed segment attributes

/**
 * VMCB segment attributes pack descriptor bits 40–47 and 52–55 into 12 bits
 * (APM 15.5.1 / Table B-2 note): type 3:0, S 4, DPL 6:5, P 7, AVL 8, L 9, D/B 10, G 11.
 */
export const SVM_SELECTOR_TYPE_MASK = 0xf;
export const SVM_SELECTOR_S_SHIFT = 4;
export const SVM_SELECTOR_DPL_SHIFT = 5;
export const SVM_SELECTOR_P_SHIFT = 7;
export const SVM_SELECTOR_AVL_SHIFT = 8;
export const SVM_SELECTOR_L_SHIFT = 9;
export const SVM_SELECTOR_DB_SHIFT = 10;
export const SVM_SELECTOR_G_SHIFT = 11;

/** kvm_segment → packed VMCB attrib (an unusable segment has attrib 0, P clear). */
export function packAttrib(s: KvmSegment): number {
  if (s.unusable) return 0;
  return (s.type & 0xf) | ((s.s & 1) << SVM_SELECTOR_S_SHIFT) | ((s.dpl & 3) << SVM_SELECTOR_DPL_SHIFT) |
    ((s.present & 1) << SVM_SELECTOR_P_SHIFT) | ((s.avl & 1) << SVM_SELECTOR_AVL_SHIFT) |
    ((s.l & 1) << SVM_SELECTOR_L_SHIFT) | ((s.db & 1) << SVM_SELECTOR_DB_SHIFT) | ((s.g & 1) << SVM_SELECTOR_G_SHIFT);
}

/** Packed 12-bit VMCB attrib → the processor's descriptor-bit layout (bits 40..55 of a descriptor). */
export function attribToCpu(attrib: number): number {
  const low = attrib & 0xff;
  const high = (attrib >> 8) & 0xf;
  const present = (attrib >> SVM_SELECTOR_P_SHIFT) & 1;
  // The processor marks a not-present data segment "unusable" (bit 16), as VMX does; SVM has no such bit.
  return low | (high << 12) | (present ? 0 : 1 << 16);
}

/** The processor's descriptor-bit layout → packed 12-bit VMCB attrib. */
export function cpuToAttrib(attr: number): number {
  if (attr & (1 << 16)) return 0; // unusable: not present, as svm_set_segment stores it
  return (attr & 0xff) | (((attr >> 12) & 0xf) << 8);
}
