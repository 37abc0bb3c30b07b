import type { HostMemory, KvmSegment, DescPtr } from '@tsvisor/core';
import { SEG_ATTRIB, SEG_BASE, SEG_LIMIT, SEG_SELECTOR, SegmentField, VMCB_SIZE, VmcbField, FieldWidth, VmcbCleanBit } from './layout';

/**
 * The VMCB: one 4 KiB page of host memory, read and written through a DataView at the
 * offsets of AMD APM Vol. 2 Appendix B. Who touches it: the backend (KVM's svm.c) between
 * #VMEXIT and VMRUN; the emulated SVM hardware (hardware.ts) at VMRUN and #VMEXIT.
 */
export class Vmcb {
  readonly view: DataView;
  readonly bytes: Uint8Array;

  /** `bytes`: the 4 KiB page; `pa`: its host-physical address (-1 for a processor-internal copy). */
  constructor(bytes: Uint8Array, readonly pa: number) {
    if (bytes.length !== VMCB_SIZE) throw new RangeError(`a VMCB is ${VMCB_SIZE} bytes, got ${bytes.length}`);
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, VMCB_SIZE);
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
    this.view.setUint8(fld.offset, v & 0xff);
  }
  read16(fld: VmcbField & { width: 2 }): number {
    return this.view.getUint16(fld.offset, true);
  }
  write16(fld: VmcbField & { width: 2 }, v: number): void {
    this.view.setUint16(fld.offset, v & 0xffff, true);
  }
  read32(fld: VmcbField & { width: 4 }): number {
    return this.view.getUint32(fld.offset, true);
  }
  write32(fld: VmcbField & { width: 4 }, v: number): void {
    this.view.setUint32(fld.offset, v >>> 0, true);
  }
  read64(fld: VmcbField & { width: 8 }): bigint {
    return this.view.getBigUint64(fld.offset, true);
  }
  write64(fld: VmcbField & { width: 8 }, v: bigint): void {
    this.view.setBigUint64(fld.offset, BigInt.asUintN(64, v), true);
  }
  /** Width-generic read for dumps and tests. */
  readAny(fld: VmcbField): bigint {
    switch (fld.width as FieldWidth) {
      case 1: return BigInt(this.view.getUint8(fld.offset));
      case 2: return BigInt(this.view.getUint16(fld.offset, true));
      case 4: return BigInt(this.view.getUint32(fld.offset, true));
      default: return this.view.getBigUint64(fld.offset, true);
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
    return this.view.getBigUint64(seg.offset + SEG_BASE, true);
  }
  writeSeg(seg: SegmentField, selector: number, attrib: number, limit: number, base: bigint): void {
    this.view.setUint16(seg.offset + SEG_SELECTOR, selector & 0xffff, true);
    this.view.setUint16(seg.offset + SEG_ATTRIB, attrib & 0xfff, true);
    this.view.setUint32(seg.offset + SEG_LIMIT, limit >>> 0, true);
    this.view.setBigUint64(seg.offset + SEG_BASE, BigInt.asUintN(64, base), true);
  }
  setSegBase(seg: SegmentField, base: bigint): void {
    this.view.setBigUint64(seg.offset + SEG_BASE, BigInt.asUintN(64, base), true);
  }

  getDt(seg: SegmentField, out: DescPtr): void {
    out.size = this.segLimit(seg) & 0xffff;
    out.address = this.segBase(seg);
  }
  setDt(seg: SegmentField, dt: DescPtr): void {
    this.view.setUint32(seg.offset + SEG_LIMIT, dt.size >>> 0, true);
    this.view.setBigUint64(seg.offset + SEG_BASE, BigInt.asUintN(64, dt.address), true);
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
