import {
  ACCESS_FETCH, ACCESS_PAGE_WALK, ACCESS_WRITE, GuestExit, GuestExitKind, HostEntryCursor, HostMemory, tableIndex, TdpFormat, TdpWalker,
} from '@tsvisor/core';
import { HOST_MAXPHYADDR } from '../vmcb/checks';

/**
 * Nested paging (AMD APM Vol. 2 15.25): the nested page tables are ordinary long-mode
 * page tables rooted at N_CR3, walked by the processor for every guest-physical access.
 * Unlike EPT there is no separate R/W/X encoding: P, R/W, U/S, NX, A and D are the legacy
 * x86-64 bits, and all nested accesses are treated as user accesses (APM 15.25.5), so a
 * present leaf must have U/S set.
 */
const P = 1n << 0n;
const RW = 1n << 1n;
const US = 1n << 2n;
const A = 1n << 5n;
const D = 1n << 6n;
const ADDR = ((1n << BigInt(HOST_MAXPHYADDR)) - 1n) & ~0xfffn;

/**
 * The NPT format given to core's MMU (KVM's kvm_mmu_set_mask_ptes for SVM): non-leaf entries
 * P|RW|US; a readable leaf is P|US; writes need RW; execute is the default (no X bit).
 * MMIO leaves carry a reserved address bit, so the walk reports #NPF with RSVD set and core
 * takes its MMIO path (KVM's mmio SPTE on NPT).
 */
export function nptFormat(mtMask: (gfn: bigint, isMmio: boolean) => bigint): TdpFormat {
  return {
    name: 'npt',
    levels: 4,
    nonLeafBits: P | RW | US,
    readBits: P | US,
    writeBit: RW,
    execBit: 0n,
    accessedBit: A,
    dirtyBit: D,
    mmioEntry: (1n << 51n) | P | RW | US,
    hardwareDirtyLog: false,
    mtMask,
  };
}

/** #NPF error code bits in EXITINFO1 (APM 15.25.6). */
export const NPF_EC_P = 1;
export const NPF_EC_RW = 2;
export const NPF_EC_US = 4;
export const NPF_EC_RSVD = 8;
export const NPF_EC_ID = 16;

// Entry bits as 32-bit halves: P, RW, US, A, D, PS in the low half; NX is bit 31 of the high half.
const L_P = 0x1, L_RW = 0x2, L_US = 0x4, L_A = 0x20, L_D = 0x40, L_PS = 0x80;
const H_NX = 0x8000_0000;
/** Address bits MAXPHYADDR-1:32 of the high half, and bits 51:MAXPHYADDR, reserved in every entry (APM 5.3.1): a set one faults with RSVD. */
const H_ADDR = (1 << (HOST_MAXPHYADDR - 32)) - 1;
const H_RSVD = 0xf_ffff & ~H_ADDR;
const TWO32 = 0x1_0000_0000;
// Module-local: a call through core's re-export would go through its getter on every level.
const indexAt = tableIndex;
const A_WRITE = ACCESS_WRITE;
const A_FETCH = ACCESS_FETCH;
const A_PAGE_WALK = ACCESS_PAGE_WALK;
const K_TDP_FAULT = GuestExitKind.TDP_FAULT;

/**
 * The processor's nested walk (the "hardware" half of NPT): four levels from N_CR3, setting
 * A (and D on a write) in the leaf as the processor does, faulting with the #NPF
 * information the backend later encodes into EXITINFO1/EXITINFO2. Entries are read as two
 * 32-bit halves from the host region holding the table (the last one is remembered), with no
 * BigInt and no allocation.
 */
export class NptWalker implements TdpWalker {
  readonly rootTag: number;
  private readonly root: number;
  /** Reads entries as 32-bit halves from the host region the last one came from. */
  private readonly entry: HostEntryCursor;

  constructor(host: HostMemory, readonly nCr3: bigint, private readonly nxEnabled: boolean) {
    this.entry = new HostEntryCursor(host);
    this.root = Number(nCr3 & ADDR);
    this.rootTag = this.root;
  }

  translate(gpa: number, access: number, gla: number, glaValid: boolean, exit: GuestExit): number {
    const g = gpa;
    // The address as 32-bit halves, for the table indexes (bits 47:39, 38:30, 29:21, 20:12).
    const gLo = g >>> 0, gHi = Math.floor(g / TWO32);
    let table = this.root;
    let allow = A_WRITE | A_FETCH;
    for (let level = 4; level >= 1; level--) {
      const en = this.entry;
      en.read(table + indexAt(gLo, gHi, level) * 8);
      const lo = en.lo, hi = en.hi;
      if (!(lo & L_P)) return this.fault(exit, gpa, access, gla, glaValid, false, level, 0);
      const leafLarge = level > 1 && level <= 3 && (lo & L_PS) !== 0;
      if ((hi & H_RSVD) || (level === 4 && (lo & L_PS)) || (!this.nxEnabled && (hi & H_NX))) {
        return this.fault(exit, gpa, access, gla, glaValid, true, level, allow);
      }
      if (!(lo & L_US)) allow = 0;
      if (!(lo & L_RW)) allow &= ~A_WRITE;
      if (hi & H_NX) allow &= ~A_FETCH;
      const addr = ((lo & 0xffff_f000) >>> 0) + (hi & H_ADDR) * TWO32;
      if (level === 1 || leafLarge) {
        const perms = (lo & L_US ? 1 : 0) | allow;
        const need = access & (A_WRITE | A_FETCH);
        if (!(lo & L_US) || (need & ~allow)) return this.fault(exit, gpa, access, gla, glaValid, false, level, perms, true);
        let ne = lo | L_A;
        if (access & A_WRITE) ne |= L_D;
        if ((ne >>> 0) !== lo) en.writeLo(ne);
        if (leafLarge) {
          const span = level === 2 ? 0x20_0000 : 0x4000_0000;
          return addr - (addr % span) + (g % span) - (g % 4096);
        }
        return addr;
      }
      if (!(lo & L_A)) en.writeLo(lo | L_A);
      table = addr;
    }
    return -1;
  }

  private fault(exit: GuestExit, gpa: number, access: number, gla: number, glaValid: boolean,
    reserved: boolean, level: number, perms: number, present = false): number {
    exit.kind = K_TDP_FAULT;
    exit.gpa = BigInt(gpa);
    exit.gla = BigInt.asUintN(64, BigInt(gla));
    exit.glaValid = glaValid;
    exit.access = access;
    exit.tdpPermissions = present || reserved ? perms | 1 : 0;
    exit.reservedBit = reserved;
    exit.finalTranslation = (access & A_PAGE_WALK) === 0;
    exit.level = level;
    return -1;
  }
}

/** EXITINFO1 bit 32 (a fault on the final guest-physical access) / bit 33 (on a guest page-table access). */
const NPF_FINAL = 1n << 32n;
const NPF_WALK = 1n << 33n;

/** Encode a TDP fault (or an unbacked access without NPT) as the #NPF EXITINFO1 error code. */
export function npfErrorCode(exit: GuestExit): bigint {
  let ec = 0;
  if (exit.kind === GuestExitKind.TDP_FAULT || exit.kind === GuestExitKind.TDP_MISCONFIG) {
    if (exit.tdpPermissions !== 0 || exit.reservedBit) ec |= NPF_EC_P;
    if (exit.reservedBit || exit.kind === GuestExitKind.TDP_MISCONFIG) ec |= NPF_EC_RSVD;
  }
  if (exit.access & A_WRITE) ec |= NPF_EC_RW;
  // APM 15.25.5: nested accesses are user accesses.
  ec |= NPF_EC_US;
  if (exit.access & A_FETCH) ec |= NPF_EC_ID;
  return BigInt(ec) | (exit.access & A_PAGE_WALK ? NPF_WALK : NPF_FINAL);
}
