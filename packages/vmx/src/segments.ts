/**
 * Segment registers in the VMCS guest-state area (SDM Vol. 3C 25.4.1): selector, base,
 * limit and access rights, the AR "unusable" bit 16 standing for a null selector load.
 */
import { KvmSegment, KvmVcpu, VcpuSreg } from '@tsvisor/core';
import { F, VmcsField } from './vmcs/fields';
import { toVmx } from './vcpu-vmx';
import { VMX_AR_UNUSABLE_MASK } from './vmx-defs';

export interface VmcsSegmentFields {
  readonly sel: VmcsField<'16', 'rw'>;
  readonly base: VmcsField<'nat', 'rw'>;
  readonly limit: VmcsField<'32', 'rw'>;
  readonly ar: VmcsField<'32', 'rw'>;
}

/** kvm_vmx_segment_fields, in VcpuSreg order. */
export const SEGMENT_FIELDS: readonly VmcsSegmentFields[] = [
  { sel: F.GUEST_ES_SELECTOR, base: F.GUEST_ES_BASE, limit: F.GUEST_ES_LIMIT, ar: F.GUEST_ES_AR_BYTES },
  { sel: F.GUEST_CS_SELECTOR, base: F.GUEST_CS_BASE, limit: F.GUEST_CS_LIMIT, ar: F.GUEST_CS_AR_BYTES },
  { sel: F.GUEST_SS_SELECTOR, base: F.GUEST_SS_BASE, limit: F.GUEST_SS_LIMIT, ar: F.GUEST_SS_AR_BYTES },
  { sel: F.GUEST_DS_SELECTOR, base: F.GUEST_DS_BASE, limit: F.GUEST_DS_LIMIT, ar: F.GUEST_DS_AR_BYTES },
  { sel: F.GUEST_FS_SELECTOR, base: F.GUEST_FS_BASE, limit: F.GUEST_FS_LIMIT, ar: F.GUEST_FS_AR_BYTES },
  { sel: F.GUEST_GS_SELECTOR, base: F.GUEST_GS_BASE, limit: F.GUEST_GS_LIMIT, ar: F.GUEST_GS_AR_BYTES },
  { sel: F.GUEST_TR_SELECTOR, base: F.GUEST_TR_BASE, limit: F.GUEST_TR_LIMIT, ar: F.GUEST_TR_AR_BYTES },
  { sel: F.GUEST_LDTR_SELECTOR, base: F.GUEST_LDTR_BASE, limit: F.GUEST_LDTR_LIMIT, ar: F.GUEST_LDTR_AR_BYTES },
];

/** vmx_get_segment. */
export function vmxGetSegment(vcpu: KvmVcpu, out: KvmSegment, seg: VcpuSreg): void {
  const v = toVmx(vcpu).vmcs;
  const f = SEGMENT_FIELDS[seg];
  const ar = v.read32(f.ar);
  out.base = v.readNat(f.base);
  out.limit = v.read32(f.limit);
  out.selector = v.read16(f.sel);
  out.unusable = (ar >> 16) & 1;
  out.type = ar & 15;
  out.s = (ar >> 4) & 1;
  out.dpl = (ar >> 5) & 3;
  // As KVM: userspace does not preserve "unusable", so present stands for it.
  out.present = out.unusable ? 0 : 1;
  out.avl = (ar >> 12) & 1;
  out.l = (ar >> 13) & 1;
  out.db = (ar >> 14) & 1;
  out.g = (ar >> 15) & 1;
}

/** vmx_segment_access_rights. */
export function vmxSegmentAccessRights(s: KvmSegment): number {
  if (s.unusable || !s.present) return VMX_AR_UNUSABLE_MASK;
  return (s.type & 15) | ((s.s & 1) << 4) | ((s.dpl & 3) << 5) | ((s.present & 1) << 7) | ((s.avl & 1) << 12) |
    ((s.l & 1) << 13) | ((s.db & 1) << 14) | ((s.g & 1) << 15);
}

/** vmx_set_segment (unrestricted guest: no real-mode emulation). */
export function vmxSetSegment(vcpu: KvmVcpu, s: KvmSegment, seg: VcpuSreg): void {
  const v = toVmx(vcpu).vmcs;
  const f = SEGMENT_FIELDS[seg];
  v.writeNat(f.base, BigInt.asUintN(64, s.base));
  v.write32(f.limit, s.limit);
  v.write16(f.sel, s.selector);
  let ar = vmxSegmentAccessRights(s);
  // SDM 27.3.1.2 wants usable code/data segments accessed; unrestricted guests get the
  // bit set here as KVM does (the guest cannot observe it).
  if (seg !== VcpuSreg.LDTR && !(ar & VMX_AR_UNUSABLE_MASK) && (ar & 0x10)) ar |= 1;
  v.write32(f.ar, ar);
}

export function vmxGetSegmentBase(vcpu: KvmVcpu, seg: VcpuSreg): bigint {
  return toVmx(vcpu).vmcs.readNat(SEGMENT_FIELDS[seg].base);
}

/** vmx_get_cpl: the DPL of SS (SDM 27.3.2.2 loads CPL from SS.DPL). */
export function vmxGetCpl(vcpu: KvmVcpu): number {
  return (toVmx(vcpu).vmcs.read32(F.GUEST_SS_AR_BYTES) >> 5) & 3;
}

export function vmxGetCsDbLBits(vcpu: KvmVcpu): { db: number; l: number } {
  const ar = toVmx(vcpu).vmcs.read32(F.GUEST_CS_AR_BYTES);
  return { db: (ar >> 14) & 1, l: (ar >> 13) & 1 };
}
