/**
 * Extended page tables (SDM Vol. 3C 29.3): the entry format handed to core's MMU (like
 * KVM's kvm_mmu_set_ept_masks) and the processor-side walk, which is the emulated hardware:
 * it reads the tables core built, checks permissions, sets accessed/dirty flags when the EPTP
 * enables them, logs dirtied GPAs to the page-modification log (29.3.6) and reports EPT
 * violations and misconfigurations in the processor's neutral exit record.
 */
import {
  ACCESS_FETCH, ACCESS_PAGE_WALK, ACCESS_READ, ACCESS_WRITE, GuestExit, GuestExitKind, HostMemory, TdpFormat, TdpWalker,
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

const ADDR_MASK = 0x000f_ffff_ffff_f000n;
const MAXPHYADDR = 40;
/** Reserved physical-address bits 51:MAXPHYADDR of an entry. */
const RSVD_ADDR = ((1n << 52n) - 1n) & ~((1n << BigInt(MAXPHYADDR)) - 1n);
const PERM_R = ACCESS_READ;
const PERM_W = ACCESS_WRITE;
const PERM_X = ACCESS_FETCH;

/**
 * The processor's EPT walk (SDM 29.3.2–29.3.6) for one vCPU. It reads the EPTP, PML address
 * and PML index from the VMCS, so it always sees what the last VMWRITE put there.
 */
export class EptWalker implements TdpWalker {
  constructor(private readonly vmcs: Vmcs, private readonly host: HostMemory) {}

  get rootTag(): number {
    return Math.floor(this.vmcs.readNum(F.EPT_POINTER) / 4096);
  }

  /** SDM 29.3.3.1: misconfiguration of an entry at `level` (leaf: whether it maps a page). */
  static misconfigured(e: bigint, level: number, leaf: boolean): boolean {
    const rwx = e & VMX_EPT_RWX_MASK;
    // Write without read (010b, 110b) is a misconfiguration; execute-only is supported.
    if ((rwx & VMX_EPT_WRITABLE_MASK) !== 0n && (rwx & VMX_EPT_READABLE_MASK) === 0n) return true;
    if (e & RSVD_ADDR) return true;
    if (leaf) {
      const mt = (e >> VMX_EPT_MT_SHIFT) & 7n;
      if (mt === 2n || mt === 3n || mt === 7n) return true;
    } else if (e & 0xf8n && level === 4) {
      // PML4E (and PML5E) bits 7:3 are reserved.
      return true;
    }
    // Large pages are not supported (IA32_VMX_EPT_VPID_CAP bits 16/17 are 0): bit 7 is reserved above the PTE.
    if (!leaf && e & VMX_EPT_LARGE_PAGE) return true;
    return false;
  }

  /**
   * The processor asks per 4 KiB page; the exit must report the exact GPA of the access
   * (SDM 28.2.1). For a final translation the page offset equals the linear address's.
   */
  private static accessGpa(gpa: bigint, access: number, gla: bigint, glaValid: boolean): bigint {
    return glaValid && !(access & ACCESS_PAGE_WALK) ? (gpa & ~0xfffn) | (gla & 0xfffn) : gpa;
  }

  translate(gpa: bigint, access: number, gla: bigint, glaValid: boolean, exit: GuestExit): number {
    const v = this.vmcs;
    const eptpLo = v.readLow(F.EPT_POINTER);
    const levels = ((eptpLo >> 3) & 7) + 1;
    const ad = (eptpLo & 0x40) !== 0;
    let table = v.readNum(F.EPT_POINTER) - (eptpLo & 0xfff);
    const gfn = Number(gpa >> 12n);
    const host = this.host;
    let perms = PERM_R | PERM_W | PERM_X;
    for (let level = levels; level >= 1; level--) {
      const idx = Math.floor(gfn / 2 ** (9 * (level - 1))) % 512;
      const ea = table + idx * 8;
      const e = host.read64(ea);
      const rwx = Number(e & VMX_EPT_RWX_MASK);
      if (rwx === 0) return this.violation(exit, gpa, access, 0, gla, glaValid);
      if (EptWalker.misconfigured(e, level, level === 1)) {
        exit.kind = GuestExitKind.TDP_MISCONFIG;
        exit.gpa = EptWalker.accessGpa(gpa, access, gla, glaValid);
        exit.level = level;
        exit.reservedBit = true;
        return -1;
      }
      perms &= (rwx & 1 ? PERM_R : 0) | (rwx & 2 ? PERM_W : 0) | (rwx & 4 ? PERM_X : 0);
      if (level === 1) {
        const need = (access & ACCESS_READ ? PERM_R : 0) | (access & ACCESS_WRITE ? PERM_W : 0) | (access & ACCESS_FETCH ? PERM_X : 0);
        if ((need & ~perms) !== 0) return this.violation(exit, gpa, access, perms, gla, glaValid);
        let next = e;
        if (ad) {
          // SDM 29.3.5: accessed on any access; dirty on a write. A guest paging-structure
          // access counts as a write when it sets guest A/D bits.
          next |= VMX_EPT_ACCESS_BIT;
          if (access & ACCESS_WRITE && !(e & VMX_EPT_DIRTY_BIT)) {
            if (!this.pmlLog(gpa, exit)) return -1;
            next |= VMX_EPT_DIRTY_BIT;
          }
        }
        if (next !== e) host.write64(ea, next);
        return Number(e & ADDR_MASK);
      }
      if (ad && !(e & VMX_EPT_ACCESS_BIT)) host.write64(ea, e | VMX_EPT_ACCESS_BIT);
      table = Number(e & ADDR_MASK);
    }
    return -1;
  }

  /**
   * SDM 29.3.6: before setting a dirty flag with PML enabled, log the GPA at the PML index and
   * decrement it; an index outside 0..511 means the log is full: PML-full exit instead.
   */
  private pmlLog(gpa: bigint, exit: GuestExit): boolean {
    const v = this.vmcs;
    const proc2 = v.read32(F.SECONDARY_VM_EXEC_CONTROL);
    if (!(proc2 & SECONDARY_EXEC_ENABLE_PML)) return true;
    const index = v.read16(F.GUEST_PML_INDEX);
    if (index >= PML_ENTITY_NUM) {
      exit.kind = GuestExitKind.PML_FULL;
      exit.gpa = gpa;
      return false;
    }
    this.host.write64(v.readNum(F.PML_ADDRESS) + index * 8, gpa & ~0xfffn);
    v.write16(F.GUEST_PML_INDEX, (index - 1) & 0xffff);
    return true;
  }

  private violation(exit: GuestExit, gpa: bigint, access: number, perms: number, gla: bigint, glaValid: boolean): number {
    exit.kind = GuestExitKind.TDP_FAULT;
    exit.gpa = EptWalker.accessGpa(gpa, access, gla, glaValid);
    exit.access = access & (ACCESS_READ | ACCESS_WRITE | ACCESS_FETCH);
    exit.tdpPermissions = perms;
    exit.gla = gla;
    exit.glaValid = glaValid;
    exit.finalTranslation = (access & ACCESS_PAGE_WALK) === 0;
    exit.reservedBit = false;
    return -1;
  }
}
