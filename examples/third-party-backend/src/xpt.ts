/**
 * XPT — this backend's two-dimensional page tables. Core's TdpMmu builds them (it is given
 * the format below, as KVM's vendor modules hand their PTE masks to the MMU); XptWalker is
 * the "hardware" half that walks them on the processor's TLB misses.
 *
 * Entry format (64 bits): bit 0 R, bit 1 W, bit 2 X, bit 5 accessed, bit 6 dirty,
 * bits 51:12 address; an entry whose bit 62 is set is an MMIO marker (no memory behind it).
 */
import {
  ACCESS_FETCH, ACCESS_PAGE_WALK, ACCESS_WRITE, GuestExit, GuestExitKind, HostMemory, TdpFormat, TdpWalker,
} from '@tsvisor/core';

const R = 1n << 0n;
const W = 1n << 1n;
const X = 1n << 2n;
const A = 1n << 5n;
const D = 1n << 6n;
const MMIO = 1n << 62n;
const ADDR = 0x000f_ffff_ffff_f000n;

export const XPT_FORMAT: TdpFormat = {
  name: 'xpt',
  levels: 4,
  nonLeafBits: R | W | X,
  readBits: R,
  writeBit: W,
  execBit: X,
  accessedBit: A,
  dirtyBit: D,
  mmioEntry: MMIO,
  // No hardware dirty log: core write-protects logged slots and marks pages on the write fault.
  hardwareDirtyLog: false,
  mtMask: () => 0n,
};

// Entry bits as 32-bit halves: R, W, X, A, D in the low half; the MMIO marker is bit 30 of the high half.
const L_R = 0x1, L_W = 0x2, L_X = 0x4, L_A = 0x20, L_D = 0x40;
const H_MMIO = 1 << 30;
const TWO32 = 0x1_0000_0000;
const A_WRITE = ACCESS_WRITE;
const A_FETCH = ACCESS_FETCH;
const A_PAGE_WALK = ACCESS_PAGE_WALK;

/** The XPT walk: entries read as two 32-bit halves (no BigInt on the processor's TLB-miss path). */
export class XptWalker implements TdpWalker {
  readonly rootTag: number;
  constructor(private readonly host: HostMemory, readonly root: number) {
    this.rootTag = root;
  }

  translate(gpa: number, access: number, gla: number, glaValid: boolean, exit: GuestExit): number {
    let table = this.root;
    for (let level = 4; level >= 1; level--) {
      const ea = table + (Math.floor(gpa / 2 ** (12 + 9 * (level - 1))) % 512) * 8;
      const lo = this.host.read32(ea), hi = this.host.read32(ea + 4);
      if (hi & H_MMIO) return this.fault(exit, GuestExitKind.MMIO, gpa, access, gla, glaValid, 0);
      if (!(lo & (L_R | L_W | L_X))) return this.fault(exit, GuestExitKind.TDP_FAULT, gpa, access, gla, glaValid, 0);
      const addr = ((lo & 0xffff_f000) >>> 0) + (hi & 0xf_ffff) * TWO32;
      if (level > 1) {
        table = addr;
        continue;
      }
      const perms = (lo & L_R ? 1 : 0) | (lo & L_W ? A_WRITE : 0) | (lo & L_X ? A_FETCH : 0);
      if (((access & A_WRITE) && !(lo & L_W)) || ((access & A_FETCH) && !(lo & L_X)) || !(lo & L_R)) {
        return this.fault(exit, GuestExitKind.TDP_FAULT, gpa, access, gla, glaValid, perms);
      }
      const ne = lo | L_A | (access & A_WRITE ? L_D : 0);
      if ((ne >>> 0) !== lo) this.host.write32(ea, ne);
      return addr;
    }
    return -1;
  }

  private fault(exit: GuestExit, kind: GuestExitKind, gpa: number, access: number, gla: number, glaValid: boolean, perms: number): number {
    exit.kind = kind;
    exit.gpa = BigInt(gpa);
    exit.gla = BigInt.asUintN(64, BigInt(gla));
    exit.glaValid = glaValid;
    exit.access = access;
    exit.tdpPermissions = perms;
    exit.reservedBit = false;
    exit.finalTranslation = (access & A_PAGE_WALK) === 0;
    return -1;
  }
}
