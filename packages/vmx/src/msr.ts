/**
 * vmx_get_msr / vmx_set_msr (the seed's example, arch/x86/kvm/vmx/vmx.c), the MSR bitmap
 * (SDM Vol. 3C 25.6.9) and vmx_disable_intercept_for_msr.
 */
import { guestCpuidHas, kvmGetMsrCommon, kvmSetMsrCommon, KvmVcpu, MSR, MsrData, patValid } from '@tsvisor/core';
import { F } from './vmcs/fields';
import { toVmx, VcpuVmx } from './vcpu-vmx';
import { MSR_IA32_VMX_BASIC, MSR_IA32_VMX_VMFUNC, VMX_CAPABILITY_MSRS } from './capabilities';
import { VM_ENTRY_LOAD_IA32_PAT } from './vmx-defs';

export const MSR_IA32_SPEC_CTRL = 0x48;
export const MSR_IA32_PRED_CMD = 0x49;
export const MSR_IA32_TSX_CTRL = 0x122;
export const MSR_IA32_UMWAIT_CONTROL = 0xe1;
export const MSR_IA32_BNDCFGS = 0xd90;
export const MSR_IA32_MCG_EXT_CTL = 0x4d0;
export const MSR_IA32_FEAT_CTL = 0x3a;
export const MSR_IA32_RTIT_CTL = 0x570;
export const MSR_IA32_RTIT_STATUS = 0x571;
export const MSR_IA32_RTIT_CR3_MATCH = 0x572;
export const MSR_IA32_RTIT_OUTPUT_BASE = 0x560;
export const MSR_IA32_RTIT_OUTPUT_MASK = 0x561;
export const MSR_IA32_RTIT_ADDR0_A = 0x580;
export const MSR_IA32_RTIT_ADDR3_B = 0x587;
export const MSR_STAR = 0xc0000081;
export const MSR_LSTAR = 0xc0000082;
export const MSR_CSTAR = 0xc0000083;
export const MSR_SYSCALL_MASK = 0xc0000084;

/** IA32_FEATURE_CONTROL bits (SDM Vol. 4). */
export const FEAT_CTL_LOCKED = 1n << 0n;
export const FEAT_CTL_LMCE_ENABLED = 1n << 20n;
export const SPEC_CTRL_IBRS = 1n << 0n;
export const SPEC_CTRL_STIBP = 1n << 1n;
export const SPEC_CTRL_SSBD = 1n << 2n;
export const PRED_CMD_IBPB = 1n;

/** vmx_msr_index: the user-return MSRs KVM keeps for the guest and switches lazily. */
export const VMX_SHARED_MSRS: readonly number[] = [MSR_SYSCALL_MASK, MSR_LSTAR, MSR_CSTAR, MSR.TSC_AUX, MSR_STAR, MSR_IA32_TSX_CTRL];

/** Nested VMX is not offered (nested_vmx_allowed: guest CPUID has no VMX). */
export function nestedVmxAllowed(vcpu: KvmVcpu): boolean {
  return vcpu.kvm.ops.nestedOps.enabled && guestCpuidHas(vcpu, 1, 'ecx', 5);
}

/** This processor has no MPX, no WAITPKG, and no Intel PT in host-guest mode. */
const kvmMpxSupported = (): boolean => false;
const vmxHasWaitpkg = (_vmx: VcpuVmx): boolean => false;
const vmxPtModeIsHostGuest = (): boolean => false;

function isNoncanonical(v: bigint): boolean {
  const top = BigInt.asIntN(64, v) >> 47n;
  return top !== 0n && top !== -1n;
}

/** vmx_get_msr: 0 success, 1 refused (#GP for the guest, an error for userspace). */
export function vmxGetMsr(vcpu: KvmVcpu, msr: MsrData): number {
  const vmx = toVmx(vcpu);
  const v = vmx.vmcs;
  const i = msr.index;
  switch (i) {
    case MSR.FS_BASE: msr.data = v.readNat(F.GUEST_FS_BASE); return 0;
    case MSR.GS_BASE: msr.data = v.readNat(F.GUEST_GS_BASE); return 0;
    case MSR.KERNEL_GS_BASE: msr.data = vmx.kernelGsBase; return 0;
    case MSR.EFER: return kvmGetMsrCommon(vcpu, msr);
    case MSR_IA32_TSX_CTRL:
      // arch_capabilities never advertises TSX_CTRL on this processor.
      if (!msr.hostInitiated) return 1;
      return findSharedMsr(vcpu, vmx, msr);
    case MSR_IA32_UMWAIT_CONTROL:
      if (!msr.hostInitiated && !vmxHasWaitpkg(vmx)) return 1;
      msr.data = vmx.umwaitControl;
      return 0;
    case MSR_IA32_SPEC_CTRL:
      if (!msr.hostInitiated && !guestCpuidHas(vcpu, 7, 'edx', 26)) return 1;
      msr.data = vmx.specCtrl;
      return 0;
    case MSR.IA32_SYSENTER_CS: msr.data = BigInt(v.read32(F.GUEST_SYSENTER_CS)); return 0;
    case MSR.IA32_SYSENTER_EIP: msr.data = v.readNat(F.GUEST_SYSENTER_EIP); return 0;
    case MSR.IA32_SYSENTER_ESP: msr.data = v.readNat(F.GUEST_SYSENTER_ESP); return 0;
    case MSR_IA32_BNDCFGS:
      if (!kvmMpxSupported() || (!msr.hostInitiated && !guestCpuidHas(vcpu, 7, 'ebx', 14))) return 1;
      msr.data = v.read64(F.GUEST_BNDCFGS);
      return 0;
    case MSR_IA32_MCG_EXT_CTL:
      if (!msr.hostInitiated && !(vmx.featureControl & FEAT_CTL_LMCE_ENABLED)) return 1;
      msr.data = vmx.mcgExtCtl;
      return 0;
    case MSR_IA32_FEAT_CTL: msr.data = vmx.featureControl; return 0;
    case MSR_IA32_RTIT_CTL: if (!vmxPtModeIsHostGuest()) return 1; msr.data = vmx.rtit.ctl; return 0;
    case MSR_IA32_RTIT_STATUS: if (!vmxPtModeIsHostGuest()) return 1; msr.data = vmx.rtit.status; return 0;
    case MSR_IA32_RTIT_CR3_MATCH: if (!vmxPtModeIsHostGuest()) return 1; msr.data = vmx.rtit.cr3Match; return 0;
    case MSR_IA32_RTIT_OUTPUT_BASE: if (!vmxPtModeIsHostGuest()) return 1; msr.data = vmx.rtit.outputBase; return 0;
    case MSR_IA32_RTIT_OUTPUT_MASK: if (!vmxPtModeIsHostGuest()) return 1; msr.data = vmx.rtit.outputMask; return 0;
    case MSR.TSC_AUX:
      if (!msr.hostInitiated && !guestCpuidHas(vcpu, 0x80000001, 'edx', 27)) return 1;
      return findSharedMsr(vcpu, vmx, msr);
    default:
      if (i >= MSR_IA32_VMX_BASIC && i <= MSR_IA32_VMX_VMFUNC) {
        // The capability MSRs describe the VMX a nested guest would see; without nested VMX they are absent.
        if (!nestedVmxAllowed(vcpu)) return 1;
        const c = VMX_CAPABILITY_MSRS.get(i);
        if (c === undefined) return 1;
        msr.data = c;
        return 0;
      }
      if (i >= MSR_IA32_RTIT_ADDR0_A && i <= MSR_IA32_RTIT_ADDR3_B) {
        if (!vmxPtModeIsHostGuest()) return 1;
        const n = i - MSR_IA32_RTIT_ADDR0_A;
        msr.data = n % 2 ? vmx.rtit.addrB[n >> 1] : vmx.rtit.addrA[n >> 1];
        return 0;
      }
      return findSharedMsr(vcpu, vmx, msr);
  }
}

function findSharedMsr(vcpu: KvmVcpu, vmx: VcpuVmx, msr: MsrData): number {
  if (VMX_SHARED_MSRS.includes(msr.index)) {
    msr.data = vmx.guestMsrs.get(msr.index) ?? 0n;
    return 0;
  }
  return kvmGetMsrCommon(vcpu, msr);
}

/** kvm_spec_ctrl_valid_bits for this guest. */
function specCtrlValidBits(vcpu: KvmVcpu): bigint {
  let bits = SPEC_CTRL_IBRS;
  if (guestCpuidHas(vcpu, 7, 'edx', 27)) bits |= SPEC_CTRL_STIBP;
  if (guestCpuidHas(vcpu, 7, 'edx', 31)) bits |= SPEC_CTRL_SSBD;
  return bits;
}

/** vmx_set_msr. */
export function vmxSetMsr(vcpu: KvmVcpu, msr: MsrData): number {
  const vmx = toVmx(vcpu);
  const v = vmx.vmcs;
  const i = msr.index;
  const d = msr.data;
  switch (i) {
    case MSR.EFER: return kvmSetMsrCommon(vcpu, msr);
    case MSR.FS_BASE:
      if (isNoncanonical(d)) return 1;
      v.writeNat(F.GUEST_FS_BASE, d);
      return 0;
    case MSR.GS_BASE:
      if (isNoncanonical(d)) return 1;
      v.writeNat(F.GUEST_GS_BASE, d);
      return 0;
    case MSR.KERNEL_GS_BASE:
      if (isNoncanonical(d)) return 1;
      vmx.kernelGsBase = d;
      return 0;
    case MSR.IA32_SYSENTER_CS:
      v.write32(F.GUEST_SYSENTER_CS, Number(d & 0xffffffffn));
      return 0;
    case MSR.IA32_SYSENTER_EIP:
      if (isNoncanonical(d)) return 1;
      v.writeNat(F.GUEST_SYSENTER_EIP, d);
      return 0;
    case MSR.IA32_SYSENTER_ESP:
      if (isNoncanonical(d)) return 1;
      v.writeNat(F.GUEST_SYSENTER_ESP, d);
      return 0;
    case MSR_IA32_BNDCFGS:
      if (!kvmMpxSupported() || (!msr.hostInitiated && !guestCpuidHas(vcpu, 7, 'ebx', 14))) return 1;
      v.write64(F.GUEST_BNDCFGS, d);
      return 0;
    case MSR_IA32_UMWAIT_CONTROL:
      if (!msr.hostInitiated && !vmxHasWaitpkg(vmx)) return 1;
      // Bit 1 is reserved.
      if (d & (1n << 1n) || d >> 32n) return 1;
      vmx.umwaitControl = d;
      return 0;
    case MSR_IA32_SPEC_CTRL:
      if (!msr.hostInitiated && !guestCpuidHas(vcpu, 7, 'edx', 26)) return 1;
      if (d & ~specCtrlValidBits(vcpu)) return 1;
      vmx.specCtrl = d;
      // KVM stops intercepting SPEC_CTRL after the first nonzero write; this processor has no
      // SPEC_CTRL of its own, so the MSR stays intercepted and is emulated here.
      return 0;
    case MSR.IA32_PRED_CMD:
      if (!msr.hostInitiated && !guestCpuidHas(vcpu, 7, 'edx', 26)) return 1;
      if (d & ~PRED_CMD_IBPB) return 1;
      return 0;
    case MSR_IA32_TSX_CTRL:
      if (!msr.hostInitiated) return 1;
      return setSharedMsr(vcpu, vmx, msr);
    case MSR.IA32_CR_PAT:
      if (!patValid(d)) return 1;
      if (v.read32(F.VM_ENTRY_CONTROLS) & VM_ENTRY_LOAD_IA32_PAT) {
        v.write64(F.GUEST_IA32_PAT, d);
        vcpu.arch.pat = d;
        return 0;
      }
      return kvmSetMsrCommon(vcpu, msr);
    case MSR_IA32_MCG_EXT_CTL:
      if ((!msr.hostInitiated && !(vmx.featureControl & FEAT_CTL_LMCE_ENABLED)) || d & ~1n) return 1;
      vmx.mcgExtCtl = d;
      return 0;
    case MSR_IA32_FEAT_CTL: {
      // vmx_feature_control_msr_valid: LOCKED, LMCE when setupMce allowed it, VMX outside SMX with nested VMX.
      let valid = vmx.featureControlValidBits;
      if (nestedVmxAllowed(vcpu)) valid |= 1n << 2n;
      if (d & ~valid) return 1;
      if (vmx.featureControl & FEAT_CTL_LOCKED && !msr.hostInitiated) return 1;
      vmx.featureControl = d;
      return 0;
    }
    case MSR.TSC_AUX:
      if (!msr.hostInitiated && !guestCpuidHas(vcpu, 0x80000001, 'edx', 27)) return 1;
      // The upper 32 bits are reserved.
      if (d >> 32n) return 1;
      return setSharedMsr(vcpu, vmx, msr);
    default:
      if (i >= MSR_IA32_VMX_BASIC && i <= MSR_IA32_VMX_VMFUNC) {
        // Read-only for the guest; userspace may restrict them only with nested VMX.
        if (!msr.hostInitiated) return 1;
        return nestedVmxAllowed(vcpu) ? 0 : 1;
      }
      if ((i >= MSR_IA32_RTIT_CTL && i <= MSR_IA32_RTIT_CR3_MATCH) || i === MSR_IA32_RTIT_OUTPUT_BASE ||
        i === MSR_IA32_RTIT_OUTPUT_MASK || (i >= MSR_IA32_RTIT_ADDR0_A && i <= MSR_IA32_RTIT_ADDR3_B)) {
        return 1;
      }
      return setSharedMsr(vcpu, vmx, msr);
  }
}

function setSharedMsr(vcpu: KvmVcpu, vmx: VcpuVmx, msr: MsrData): number {
  if (VMX_SHARED_MSRS.includes(msr.index)) {
    if ((msr.index === MSR_LSTAR || msr.index === MSR_CSTAR) && isNoncanonical(msr.data)) return 1;
    vmx.guestMsrs.set(msr.index, msr.data);
    return 0;
  }
  return kvmSetMsrCommon(vcpu, msr);
}

// ---- the MSR bitmap (SDM 25.6.9)

export const MSR_TYPE_R = 1;
export const MSR_TYPE_W = 2;
export const MSR_TYPE_RW = 3;

function bitmapBit(index: number, write: boolean): { byte: number; bit: number } | null {
  let base: number;
  if (index >>> 0 <= 0x1fff) base = 0;
  else if (index >>> 0 >= 0xc0000000 && index >>> 0 <= 0xc0001fff) base = 1024;
  else return null;
  if (write) base += 2048;
  const n = index & 0x1fff;
  return { byte: base + (n >> 3), bit: n & 7 };
}

function bitmapBytes(vcpu: KvmVcpu): { bytes: Uint8Array; offset: number } {
  return vcpu.kvm.hostMemory.slice(toVmx(vcpu).msrBitmap, 4096);
}

/** vmx_disable_intercept_for_msr. */
export function vmxDisableInterceptForMsr(vcpu: KvmVcpu, index: number, type: number): void {
  const { bytes, offset } = bitmapBytes(vcpu);
  for (const w of [false, true]) {
    if (!(type & (w ? MSR_TYPE_W : MSR_TYPE_R))) continue;
    const b = bitmapBit(index, w);
    if (b) bytes[offset + b.byte] &= ~(1 << b.bit);
  }
}

/** vmx_enable_intercept_for_msr. */
export function vmxEnableInterceptForMsr(vcpu: KvmVcpu, index: number, type: number): void {
  const { bytes, offset } = bitmapBytes(vcpu);
  for (const w of [false, true]) {
    if (!(type & (w ? MSR_TYPE_W : MSR_TYPE_R))) continue;
    const b = bitmapBit(index, w);
    if (b) bytes[offset + b.byte] |= 1 << b.bit;
  }
}

/** Is `index` intercepted for reads/writes? (msr_write_intercepted) */
export function vmxMsrIntercepted(vcpu: KvmVcpu, index: number, write: boolean): boolean {
  const b = bitmapBit(index, write);
  if (!b) return true;
  const { bytes, offset } = bitmapBytes(vcpu);
  return (bytes[offset + b.byte] & (1 << b.bit)) !== 0;
}
