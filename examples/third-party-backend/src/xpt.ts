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

/** The XPT walk. */
export class XptWalker implements TdpWalker {
  readonly rootTag: number;
  constructor(private readonly host: HostMemory, readonly root: number) {
    this.rootTag = root;
  }

  translate(gpa: bigint, access: number, gla: bigint, glaValid: boolean, exit: GuestExit): number {
    const g = Number(gpa);
    let table = this.root;
    for (let level = 4; level >= 1; level--) {
      const ea = table + (Math.floor(g / 2 ** (12 + 9 * (level - 1))) % 512) * 8;
      const e = this.host.read64(ea);
      if (e & MMIO) return this.fault(exit, GuestExitKind.MMIO, gpa, access, gla, glaValid, 0);
      if (!(e & (R | W | X))) return this.fault(exit, GuestExitKind.TDP_FAULT, gpa, access, gla, glaValid, 0);
      if (level > 1) {
        table = Number(e & ADDR);
        continue;
      }
      const perms = (e & R ? 1 : 0) | (e & W ? ACCESS_WRITE : 0) | (e & X ? ACCESS_FETCH : 0);
      if (((access & ACCESS_WRITE) && !(e & W)) || ((access & ACCESS_FETCH) && !(e & X)) || !(e & R)) {
        return this.fault(exit, GuestExitKind.TDP_FAULT, gpa, access, gla, glaValid, perms);
      }
      const ne = e | A | (access & ACCESS_WRITE ? D : 0n);
      if (ne !== e) this.host.write64(ea, ne);
      return Number(e & ADDR);
    }
    return -1;
  }

  private fault(exit: GuestExit, kind: GuestExitKind, gpa: bigint, access: number, gla: bigint, glaValid: boolean, perms: number): number {
    exit.kind = kind;
    exit.gpa = gpa;
    exit.gla = gla;
    exit.glaValid = glaValid;
    exit.access = access;
    exit.tdpPermissions = perms;
    exit.reservedBit = false;
    exit.finalTranslation = (access & ACCESS_PAGE_WALK) === 0;
    return -1;
  }
}
