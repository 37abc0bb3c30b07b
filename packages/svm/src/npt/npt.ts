import {
  ACCESS_FETCH, ACCESS_PAGE_WALK, ACCESS_WRITE, GuestExit, GuestExitKind, HostMemory, TdpFormat, TdpWalker,
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
const PS = 1n << 7n;
const NX = 1n << 63n;
const ADDR = ((1n << BigInt(HOST_MAXPHYADDR)) - 1n) & ~0xfffn;
/** Bits 51:MAXPHYADDR are reserved in every entry (APM 5.3.1); a set one faults with RSVD. */
const RSVD = ((1n << 52n) - 1n) & ~((1n << BigInt(HOST_MAXPHYADDR)) - 1n);

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

/**
 * The processor's nested walk (the "hardware" half of NPT): four levels from N_CR3, setting
 * A (and D on a write) in the leaf as the processor does, faulting with the #NPF
 * information the backend later encodes into EXITINFO1/EXITINFO2.
 */
export class NptWalker implements TdpWalker {
  readonly rootTag: number;
  constructor(private readonly host: HostMemory, readonly nCr3: bigint, private readonly nxEnabled: boolean) {
    this.rootTag = Number(nCr3 & ADDR);
  }

  translate(gpa: bigint, access: number, gla: bigint, glaValid: boolean, exit: GuestExit): number {
    const g = Number(gpa);
    let table = Number(this.nCr3 & ADDR);
    let allow = ACCESS_WRITE | ACCESS_FETCH;
    for (let level = 4; level >= 1; level--) {
      const idx = Math.floor(g / 2 ** (12 + 9 * (level - 1))) % 512;
      const ea = table + idx * 8;
      const e = this.host.read64(ea);
      if (!(e & P)) return this.fault(exit, gpa, access, gla, glaValid, false, level, 0);
      const leafLarge = level > 1 && level <= 3 && (e & PS) !== 0n;
      if ((e & RSVD) || (level === 4 && (e & PS)) || (!this.nxEnabled && (e & NX))) {
        return this.fault(exit, gpa, access, gla, glaValid, true, level, allow);
      }
      if (!(e & US)) allow = 0;
      if (!(e & RW)) allow &= ~ACCESS_WRITE;
      if (e & NX) allow &= ~ACCESS_FETCH;
      const isLeaf = level === 1 || leafLarge;
      if (isLeaf) {
        const perms = (e & US ? 1 : 0) | allow;
        const need = access & (ACCESS_WRITE | ACCESS_FETCH);
        if (!(e & US) || (need & ~allow)) return this.fault(exit, gpa, access, gla, glaValid, false, level, perms, true);
        let ne = e | A;
        if (access & ACCESS_WRITE) ne |= D;
        if (ne !== e) this.host.write64(ea, ne);
        if (leafLarge) {
          const span = 2 ** (12 + 9 * (level - 1));
          const base = Number(e & ADDR) - (Number(e & ADDR) % span);
          return base + (g % span) - (g % 4096);
        }
        return Number(e & ADDR);
      }
      if (!(e & A)) this.host.write64(ea, e | A);
      table = Number(e & ADDR);
    }
    return -1;
  }

  private fault(exit: GuestExit, gpa: bigint, access: number, gla: bigint, glaValid: boolean,
    reserved: boolean, level: number, perms: number, present = false): number {
    exit.kind = GuestExitKind.TDP_FAULT;
    exit.gpa = gpa;
    exit.gla = gla;
    exit.glaValid = glaValid;
    exit.access = access;
    exit.tdpPermissions = present || reserved ? perms | 1 : 0;
    exit.reservedBit = reserved;
    exit.finalTranslation = (access & ACCESS_PAGE_WALK) === 0;
    exit.level = level;
    return -1;
  }
}

/** Encode a TDP fault (or an unbacked access without NPT) as the #NPF EXITINFO1 error code. */
export function npfErrorCode(exit: GuestExit): bigint {
  let ec = 0n;
  if (exit.kind === GuestExitKind.TDP_FAULT || exit.kind === GuestExitKind.TDP_MISCONFIG) {
    if (exit.tdpPermissions !== 0 || exit.reservedBit) ec |= BigInt(NPF_EC_P);
    if (exit.reservedBit || exit.kind === GuestExitKind.TDP_MISCONFIG) ec |= BigInt(NPF_EC_RSVD);
  }
  if (exit.access & ACCESS_WRITE) ec |= BigInt(NPF_EC_RW);
  // APM 15.25.5: nested accesses are user accesses.
  ec |= BigInt(NPF_EC_US);
  if (exit.access & ACCESS_FETCH) ec |= BigInt(NPF_EC_ID);
  if (exit.access & ACCESS_PAGE_WALK) ec |= 1n << 33n;
  else ec |= 1n << 32n;
  return ec;
}
