/**
 * INVPCID exits (SDM 26.1.3: with "enable INVPCID" and "INVLPG exiting" both 1) and KVM's
 * handle_invpcid (vmx.c) → get_vmx_mem_address (nested.c) → kvm_handle_invpcid (x86.c).
 */
import {
  emptySegment, guestCpuidHas, KvmReg, KvmVcpu, kvmInjectGp, kvmQueueException, kvmQueueUd, VcpuSreg, withEmulatorState,
  X86Vector,
} from '@tsvisor/core';
import { F } from './vmcs/fields';
import { toVmx } from './vcpu-vmx';

export const INVPCID_TYPE_INDIV_ADDR = 0;
export const INVPCID_TYPE_SINGLE_CTXT = 1;
export const INVPCID_TYPE_ALL_INCL_GLOBAL = 2;
export const INVPCID_TYPE_ALL_NON_GLOBAL = 3;

const seg = emptySegment();

function isLongMode64(vcpu: KvmVcpu): boolean {
  vcpu.kvm.ops.getSegment(vcpu, seg, VcpuSreg.CS);
  return (vcpu.arch.efer & 0x400n) !== 0n && seg.l === 1;
}

/**
 * get_vmx_mem_address: the linear address of a VMX-exit instruction's memory operand from the
 * exit qualification (displacement) and instruction information (SDM Table 28-11), with the
 * checks the instruction itself would make (#GP/#SS for a non-canonical address or one outside
 * the segment limit). Returns the address, or -1 after queueing the exception.
 */
export function getVmxMemAddress(vcpu: KvmVcpu, qualification: bigint, info: number, len: number): bigint {
  const scaling = info & 3;
  const addrSize = (info >>> 7) & 7;
  const isReg = (info & (1 << 10)) !== 0;
  const segReg = (info >>> 15) & 7;
  const indexReg = (info >>> 18) & 0xf;
  const indexValid = !(info & (1 << 22));
  const baseReg = (info >>> 23) & 0xf;
  const baseValid = !(info & (1 << 27));
  if (isReg) {
    kvmQueueUd(vcpu);
    return -1n;
  }
  let off = qualification;
  if (addrSize === 1) off = BigInt.asIntN(32, off);
  else if (addrSize === 0) off = BigInt.asIntN(16, off);
  if (baseValid) off += vcpu.registerRead(baseReg as KvmReg);
  if (indexValid) off += vcpu.registerRead(indexReg as KvmReg) << BigInt(scaling);
  const s = emptySegment();
  vcpu.kvm.ops.getSegment(vcpu, s, segReg as VcpuSreg);
  const exnVector = segReg === VcpuSreg.SS ? X86Vector.SS : X86Vector.GP;
  if (isLongMode64(vcpu)) {
    // Only FS and GS bases apply in 64-bit mode; the address must be canonical (48-bit here).
    let gva = segReg === VcpuSreg.FS || segReg === VcpuSreg.GS ? s.base + off : off;
    gva = BigInt.asUintN(64, gva);
    if (addrSize === 1) gva &= 0xffffffffn;
    if (BigInt.asIntN(64, gva) !== BigInt.asIntN(48, gva)) {
      kvmQueueException(vcpu, exnVector, 0);
      return -1n;
    }
    return gva;
  }
  // Protected mode: the segment must be usable and the whole operand within its limit.
  const eff = addrSize === 0 ? off & 0xffffn : off & 0xffffffffn;
  const expandDown = (s.type & 0xc) === 0x4;
  const limit = BigInt(s.limit >>> 0);
  const bad = s.unusable !== 0 || (!expandDown && eff + BigInt(len - 1) > limit) ||
    (expandDown && eff <= limit);
  if (bad) {
    kvmQueueException(vcpu, exnVector, 0);
    return -1n;
  }
  return (s.base + eff) & 0xffffffffn;
}

/**
 * kvm_handle_invpcid: read the 128-bit descriptor (PCID, linear address); #GP(0) for PCID bits
 * 63:12, a nonzero PCID with CR4.PCIDE = 0 (types 0/1), a non-canonical address (type 0) or a
 * type above 3; otherwise the flush — individual address, one PCID, or everything (KVM does not
 * track global translations apart, so "all non-global" flushes them too, as the SDM allows).
 */
export function kvmHandleInvpcid(vcpu: KvmVcpu, type: bigint, gva: bigint): number {
  const desc = new Uint8Array(16);
  const ok = withEmulatorState(vcpu, () => vcpu.cpu.readGuestVirt(Number(gva), desc));
  if (!ok) return 1; // the fault is queued (kvm_handle_memory_failure)
  const dv = new DataView(desc.buffer);
  const pcid = dv.getBigUint64(0, true);
  const gla = dv.getBigUint64(8, true);
  if (pcid >> 12n) {
    kvmInjectGp(vcpu, 0);
    return 1;
  }
  const pcidEnabled = (vcpu.readCr4() & (1n << 17n)) !== 0n;
  const ops = vcpu.kvm.ops;
  switch (type) {
    case BigInt(INVPCID_TYPE_INDIV_ADDR):
      if ((!pcidEnabled && pcid !== 0n) || BigInt.asIntN(64, gla) !== BigInt.asIntN(48, gla)) {
        kvmInjectGp(vcpu, 0);
        return 1;
      }
      // kvm_mmu_invpcid_gva: the VPID's translations of the address (INVVPID individual address).
      ops.tlbFlushGva(vcpu, gla);
      return vcpu.kvm.skipEmulatedInstruction(vcpu);
    case BigInt(INVPCID_TYPE_SINGLE_CTXT):
      if (!pcidEnabled && pcid !== 0n) {
        kvmInjectGp(vcpu, 0);
        return 1;
      }
      // kvm_invalidate_pcid: the PCID's translations; the VPID's are a superset the SDM permits.
      ops.tlbFlushGuest(vcpu);
      return vcpu.kvm.skipEmulatedInstruction(vcpu);
    case BigInt(INVPCID_TYPE_ALL_NON_GLOBAL):
    case BigInt(INVPCID_TYPE_ALL_INCL_GLOBAL):
      ops.tlbFlushGuest(vcpu); // KVM_REQ_TLB_FLUSH_GUEST
      return vcpu.kvm.skipEmulatedInstruction(vcpu);
    default:
      kvmInjectGp(vcpu, 0);
      return 1;
  }
}

/** handle_invpcid: #UD without INVPCID in guest CPUID; the type from the register operand (Reg2). */
export function handleInvpcid(vcpu: KvmVcpu): number {
  if (!guestCpuidHas(vcpu, 7, 'ebx', 10)) {
    kvmQueueUd(vcpu);
    return 1;
  }
  const v = toVmx(vcpu).vmcs;
  const info = v.read32(F.VMX_INSTRUCTION_INFO);
  let type = vcpu.registerRead(((info >>> 28) & 0xf) as KvmReg);
  if (!isLongMode64(vcpu)) type &= 0xffffffffn;
  const gva = getVmxMemAddress(vcpu, v.readNat(F.EXIT_QUALIFICATION), info, 16);
  if (gva < 0n) return 1;
  return kvmHandleInvpcid(vcpu, type, gva);
}
