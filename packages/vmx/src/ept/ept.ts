/**
 * Extended page tables (SDM Vol. 3C 29.3): the entry format handed to core's MMU (like
 * KVM's kvm_mmu_set_ept_masks) and the processor-side walk, which is the emulated hardware:
 * it reads the tables core built, checks permissions, sets accessed/dirty flags when the EPTP
 * enables them, logs dirtied GPAs to the page-modification log (29.3.6) and reports EPT
 * violations and misconfigurations in the processor's neutral exit record.
 */
import {
  ACCESS_FETCH, ACCESS_PAGE_WALK, ACCESS_READ, ACCESS_WRITE, GuestExit, GuestExitKind, HostEntryCursor, HostMemory, tableIndex, TdpFormat, TdpWalker,
  MAXPHYADDR,
} from '@tsvisor/core';
import { F } from '../vmcs/fields';
import { Vmcs } from '../vmcs/vmcs';
import { PML_ENTITY_NUM, SECONDARY_EXEC_ENABLE_PML } from '../vmx-defs';

// SDM 29.3.2 Tables 29-1..29-6: EPT entry bits
export const VMX_EPT_READABLE_MASK = 0x1n;
export const VMX_EPT_WRITABLE_MASK = 0x2n;
export const VMX_EPT_EXECUTABLE_MASK = 0x4n;
export const VMX_EPT_RWX_MASK = 0x7n;
export const VMX_EPT_MT_SHIFT = 3n;
export const VMX_EPT_IPAT_BIT = 1n << 6n;
export const VMX_EPT_LARGE_PAGE = 1n << 7n;
export const VMX_EPT_ACCESS_BIT = 1n << 8n;
export const VMX_EPT_DIRTY_BIT = 1n << 9n;
/** W|X without R: the misconfiguration KVM uses for MMIO entries (VMX_EPT_MISCONFIG_WX_VALUE). */
export const VMX_EPT_MISCONFIG_WX_VALUE = VMX_EPT_WRITABLE_MASK | VMX_EPT_EXECUTABLE_MASK;

// EPTP (SDM 25.6.11)
export const VMX_EPTP_MT_UC = 0n;
export const VMX_EPTP_MT_WB = 6n;
export const VMX_EPTP_PWL_4 = 3n << 3n;
export const VMX_EPTP_PWL_5 = 4n << 3n;
export const VMX_EPTP_AD_ENABLE_BIT = 1n << 6n;

/** Memory types (SDM 11.11): UC 0, WC 1, WT 4, WP 5, WB 6. */
export const MTRR_TYPE_UNCACHABLE = 0n;
export const MTRR_TYPE_WRBACK = 6n;

/** construct_eptp: WB tables, walk length, A/D enable, root. */
export function constructEptp(root: bigint, levels: number, adEnabled: boolean): bigint {
  return root | VMX_EPTP_MT_WB | (levels === 5 ? VMX_EPTP_PWL_5 : VMX_EPTP_PWL_4) | (adEnabled ? VMX_EPTP_AD_ENABLE_BIT : 0n);
}

/**
 * vmx_get_mt_mask: MMIO is UC; RAM is WB with ignore-PAT (no non-coherent DMA in this
 * machine, so the guest's PAT never needs honouring).
 */
export function vmxGetMtMask(_gfn: bigint, isMmio: boolean): bigint {
  if (isMmio) return MTRR_TYPE_UNCACHABLE << VMX_EPT_MT_SHIFT;
  return (MTRR_TYPE_WRBACK << VMX_EPT_MT_SHIFT) | VMX_EPT_IPAT_BIT;
}

/** The EPT entry format core's MMU builds (kvm_mmu_set_ept_masks). */
export function eptFormat(levels: number, pml: boolean): TdpFormat {
  return {
    name: 'EPT',
    levels,
    nonLeafBits: VMX_EPT_RWX_MASK,
    readBits: VMX_EPT_READABLE_MASK,
    writeBit: VMX_EPT_WRITABLE_MASK,
    execBit: VMX_EPT_EXECUTABLE_MASK,
    accessedBit: VMX_EPT_ACCESS_BIT,
    dirtyBit: VMX_EPT_DIRTY_BIT,
    mmioEntry: VMX_EPT_MISCONFIG_WX_VALUE,
    hardwareDirtyLog: pml,
    mtMask: vmxGetMtMask,
  };
}

const TWO32 = 0x1_0000_0000;
// Module-local: a call through core's re-export would go through its getter on every level.
const indexAt = tableIndex;
/** Reserved physical-address bits 51:MAXPHYADDR of an entry, in its high half. */
const RSVD_ADDR_HI = 0xf_ffff & ~((1 << (MAXPHYADDR - 32)) - 1);
const PERM_R = ACCESS_READ;
const PERM_W = ACCESS_WRITE;
const PERM_X = ACCESS_FETCH;
const A_PAGE_WALK = ACCESS_PAGE_WALK;
const K_TDP_MISCONFIG = GuestExitKind.TDP_MISCONFIG;
const K_TDP_FAULT = GuestExitKind.TDP_FAULT;
const K_PML_FULL = GuestExitKind.PML_FULL;
// Entry bits in the low half (all of them are below bit 32).
const E_R = 0x1, E_W = 0x2, E_X = 0x4, E_LARGE = 0x80, E_A = 0x100, E_D = 0x200;

/**
 * The processor's EPT walk (SDM 29.3.2–29.3.6) for one vCPU. It reads the EPTP, PML address
 * and PML index from the VMCS, so it always sees what the last VMWRITE put there. Entries are
 * read as two 32-bit halves straight from the host region holding the table (the last region
 * is remembered: EPT tables sit in a few pool regions), so a walk allocates nothing and uses
 * no BigInt.
 */
export class EptWalker implements TdpWalker {
  /** Entries as 32-bit halves from the host region the last one came from. */
  private readonly entry: HostEntryCursor;
  /** The same for the page-modification log, so logging keeps the tables' region. */
  private readonly pml: HostEntryCursor;

  constructor(private readonly vmcs: Vmcs, host: HostMemory) {
    this.entry = new HostEntryCursor(host);
    this.pml = new HostEntryCursor(host);
  }

  get rootTag(): number {
    return Math.floor(this.vmcs.readNum(F.EPT_POINTER) / 4096);
  }

  /**
   * SDM 29.3.3.1: misconfiguration of an entry at `level` (leaf: whether it maps a page — a PTE,
   * or a PDE / PDPTE with bit 7 set mapping a 2 MiB / 1 GiB page, Tables 29-3 and 29-5).
   */
  static misconfigured(e: bigint, level: number, leaf: boolean): boolean {
    return EptWalker.misconfiguredHalves(Number(e & 0xffff_ffffn), Number((e >> 32n) & 0xffff_ffffn), level, leaf);
  }

  /** misconfigured() on an entry given as its low and high 32 bits. */
  static misconfiguredHalves(lo: number, hi: number, level: number, leaf: boolean): boolean {
    // Write without read (010b, 110b) is a misconfiguration; execute-only is supported.
    if ((lo & E_W) !== 0 && (lo & E_R) === 0) return true;
    if (hi & RSVD_ADDR_HI) return true;
    if (leaf) {
      const mt = (lo >>> 3) & 7;
      if (mt === 2 || mt === 3 || mt === 7) return true;
      // Large pages (IA32_VMX_EPT_VPID_CAP bits 16/17): the address bits below the page size are reserved.
      if (level === 2 && (lo & 0x001f_f000) !== 0) return true;
      if (level === 3 && (lo & 0x3fff_f000) !== 0) return true;
    } else if (lo & 0xf8) {
      // An entry referencing a table: bits 7:3 are reserved (bit 7 set in a PML4E / PML5E too).
      return true;
    }
    return false;
  }

  /**
   * The processor asks per 4 KiB page; the exit must report the exact GPA of the access
   * (SDM 28.2.1). For a final translation the page offset equals the linear address's.
   */
  private static accessGpa(gpa: number, access: number, gla: number, glaValid: boolean): bigint {
    return BigInt(glaValid && !(access & A_PAGE_WALK) ? gpa - (gpa % 4096) + (gla & 0xfff) : gpa);
  }

  translate(gpa: number, access: number, gla: number, glaValid: boolean, exit: GuestExit): number {
    const v = this.vmcs;
    const eptpLo = v.readLow(F.EPT_POINTER);
    const levels = ((eptpLo >> 3) & 7) + 1;
    const ad = (eptpLo & 0x40) !== 0;
    let table = v.readNum(F.EPT_POINTER) - (eptpLo & 0xfff);
    // The address as 32-bit halves, for the table indexes (bits 47:39, 38:30, 29:21, 20:12; 56:48 with 5 levels).
    const gLo = gpa >>> 0, gHi = Math.floor(gpa / TWO32);
    let perms = PERM_R | PERM_W | PERM_X;
    for (let level = levels; level >= 1; level--) {
      // No memory there (a stray EPTP or entry) reads as all-ones.
      const en = this.entry;
      en.read(table + indexAt(gLo, gHi, level) * 8);
      const lo = en.lo, hi = en.hi;
      const rwx = lo & 7;
      if (rwx === 0) return this.violation(exit, gpa, access, 0, gla, glaValid);
      // Bit 7 in a PDE / PDPTE: a 2 MiB / 1 GiB page (SDM 29.3.2).
      const leaf = level === 1 || (level <= 3 && (lo & E_LARGE) !== 0);
      if (EptWalker.misconfiguredHalves(lo, hi, level, leaf)) {
        exit.kind = K_TDP_MISCONFIG;
        exit.gpa = EptWalker.accessGpa(gpa, access, gla, glaValid);
        exit.level = level;
        exit.reservedBit = true;
        return -1;
      }
      perms &= (rwx & 1 ? PERM_R : 0) | (rwx & 2 ? PERM_W : 0) | (rwx & 4 ? PERM_X : 0);
      if (leaf) {
        const need = (access & PERM_R ? PERM_R : 0) | (access & PERM_W ? PERM_W : 0) | (access & PERM_X ? PERM_X : 0);
        if ((need & ~perms) !== 0) return this.violation(exit, gpa, access, perms, gla, glaValid);
        let next = lo;
        if (ad) {
          // SDM 29.3.5: accessed on any access; dirty on a write. A guest paging-structure
          // access counts as a write when it sets guest A/D bits.
          next |= E_A;
          if (access & PERM_W && !(lo & E_D)) {
            if (!this.pmlLog(gpa, exit)) return -1;
            next |= E_D;
          }
        }
        if ((next >>> 0) !== lo) en.writeLo(next);
        // The 4 KiB frame within the page: GPA bits 20:12 (2 MiB) or 29:12 (1 GiB) select it.
        const within = level === 1 ? 0 : level === 2 ? gLo & 0x001f_f000 : gLo & 0x3fff_f000;
        return ((lo & 0xffff_f000) >>> 0) + within + (hi & 0xf_ffff) * TWO32;
      }
      if (ad && !(lo & E_A)) en.writeLo(lo | E_A);
      table = ((lo & 0xffff_f000) >>> 0) + (hi & 0xf_ffff) * TWO32;
    }
    return -1;
  }

  /**
   * SDM 29.3.6: before setting a dirty flag with PML enabled, log the GPA at the PML index and
   * decrement it; an index outside 0..511 means the log is full: PML-full exit instead.
   */
  private pmlLog(gpa: number, exit: GuestExit): boolean {
    const v = this.vmcs;
    const proc2 = v.read32(F.SECONDARY_VM_EXEC_CONTROL);
    if (!(proc2 & SECONDARY_EXEC_ENABLE_PML)) return true;
    const index = v.read16(F.GUEST_PML_INDEX);
    if (index >= PML_ENTITY_NUM) {
      exit.kind = K_PML_FULL;
      exit.gpa = BigInt(gpa);
      return false;
    }
    const ea = v.readNum(F.PML_ADDRESS) + index * 8;
    const page = gpa - (gpa % 4096);
    const lo = page >>> 0, hi = Math.floor(page / TWO32);
    this.pml.write(ea, lo, hi);
    v.write16(F.GUEST_PML_INDEX, (index - 1) & 0xffff);
    return true;
  }

  private violation(exit: GuestExit, gpa: number, access: number, perms: number, gla: number, glaValid: boolean): number {
    exit.kind = K_TDP_FAULT;
    exit.gpa = EptWalker.accessGpa(gpa, access, gla, glaValid);
    exit.access = access & (PERM_R | PERM_W | PERM_X);
    exit.tdpPermissions = perms;
    exit.gla = BigInt.asUintN(64, BigInt(gla));
    exit.glaValid = glaValid;
    exit.finalTranslation = (access & A_PAGE_WALK) === 0;
    exit.reservedBit = false;
    return -1;
  }
}
