/**
 * VmxBackend: kvm-intel's kvm_x86_ops (arch/x86/kvm/vmx/vmx.c) against an emulated VMCS.
 * One instance per VM (from the VM's child container): per-VM state in kvm.vendor (KvmVmx),
 * per-vCPU state in vcpu.vendor (VcpuVmx).
 */
import {
  backend, DescPtr, ExitFastpathCompletion, HookNotImplementedError, Kvm, KvmMemorySlot, KvmMsrEntry,
  KvmNestedState, KvmReg, KvmSegment, KvmTlbRange, KvmVcpu, KvmX86NestedOps, MsrData, VcpuSreg, X86Emul, X86Exception,
  X86InstructionInfo, X86Intercept, X86InterceptStage, X86Ops, X86Vector, guestCpuidHas, KvmReq, kvmGetMsrCommon, MSR,
} from '@tsvisor/core';
import {
  DEFAULT_VMX_PARAMS, MSR_IA32_VMX_BASIC, MSR_IA32_VMX_VMFUNC, PREEMPTION_TIMER_RATE, setupVmcsConfig, VMX_CAPABILITY_MSRS,
  VmcsConfig, VmxModuleParams,
} from './capabilities';
import { F } from './vmcs/fields';
import { Vmcs } from './vmcs/vmcs';
import { dumpVmcs } from './vmcs/dump';
import { KvmVmx, toKvmVmx, toVmx, VCPU_VMX_PAGES, VcpuVmx } from './vcpu-vmx';
import * as D from './vmx-defs';
import { constructEptp, eptFormat, EptWalker, vmxGetMtMask } from './ept/ept';
import { vmxGetCpl, vmxGetCsDbLBits, vmxGetSegment, vmxGetSegmentBase, vmxSetSegment } from './segments';
import { vmxGetMsr, vmxSetMsr, vmxDisableInterceptForMsr, MSR_TYPE_RW, FEAT_CTL_LMCE_ENABLED } from './msr';
import { updateHvTimer, vmxExitHandlersFastpath, vmxVcpuRun } from './vmenter';
import { vmxHandleExit } from './exit-handlers';
import {
  vmxCancelInjection, vmxEnableIrqWindow, vmxEnableNmiWindow, vmxGetInterruptShadow, vmxGetNmiMask, vmxInjectIrq,
  vmxInjectNmi, vmxInterruptAllowed, vmxNmiAllowed, vmxQueueException, vmxSetInterruptShadow, vmxSetNmiMask,
  vmxUpdateCr8Intercept,
} from './events';
import { vmxPatchHypercall } from './hypercall';
import { vmxEnableLogDirtyPtMasked, vmxFlushLogDirty, vmxSlotDisableLogDirty, vmxSlotEnableLogDirty } from './pml';
import { intelPmuOps } from './pmu';
import * as apicv from './apicv';

const CR0_NE = 0x20n, CR0_PG = 1n << 31n, CR0_TS = 8n;
const CR4_VMXE = 0x2000n;
const EFER_LME = 0x100n, EFER_LMA = 0x400n;
// @tsvisor/core's exports are getters on a dictionary-mode object: the exit path reads these copies.
const REG_RSP = KvmReg.RSP, REG_RIP = KvmReg.RIP;
/** EFER.LMA of an EFER value, remembered for the last value asked (no BigInt operation per exit). */
let lmaOfEfer = -1n;
let lmaOfEferValue = false;
function eferLma(efer: bigint): boolean {
  if (efer !== lmaOfEfer) {
    lmaOfEfer = efer;
    lmaOfEferValue = (efer & EFER_LMA) !== 0n;
  }
  return lmaOfEferValue;
}
/** CR4 bits the guest owns (the rest exit on a change): everything this processor implements but VMXE. */
const CR4_GUEST_OWNED = 0x7ffn | 0x100000n | 0x200000n;
/** Host-owned CR0 bits: NE (forced to 1 in VMX operation, SDM 24.8 / A.7); the guest sees its own through the shadow. */
const CR0_HOST_OWNED = CR0_NE;
const MASK64 = (1n << 64n) - 1n;
/** Storage slots of the fields the exit fastpath's hooks touch (Vmcs.lo/hi). */
const S_RSP = Vmcs.slotOf(F.GUEST_RSP);
const S_RIP = Vmcs.slotOf(F.GUEST_RIP);
const S_RFLAGS = Vmcs.slotOf(F.GUEST_RFLAGS);
const S_CS_AR = Vmcs.slotOf(F.GUEST_CS_AR_BYTES);
const S_INTERRUPTIBILITY = Vmcs.slotOf(F.GUEST_INTERRUPTIBILITY_INFO);
const S_EXIT_INSTRUCTION_LEN = Vmcs.exitSlotOf(F.VM_EXIT_INSTRUCTION_LEN);

/** struct kvm_x86_nested_ops: nested VMX is not offered (the guest's CPUID has no VMX). */
const vmxNestedOps: KvmX86NestedOps = {
  enabled: false,
  checkEvents: () => 0,
  /** vmx_get_nested_state: only the header (format 0 = KVM_STATE_NESTED_FORMAT_VMX, no VMXON region). */
  getState: (): KvmNestedState => ({ format: 0, flags: 0, size: 128, data: new Uint8Array(0) }),
  /** vmx_set_nested_state: an empty state is accepted, anything else is -EINVAL. */
  setState: (_vcpu, s) => (s.format === 0 && s.data.length === 0 && s.flags === 0 ? 0 : -22),
  getVmcs12Pages: () => true,
};

/**
 * kvm-intel. `VmxBackend.moduleParams` are the module parameters (ept, vpid, pml, …); a VM
 * created after changing them gets the new configuration, as after reloading kvm-intel.
 */
/** The VMCS's PDPTE fields (SDM 25.4.2). */
const GUEST_PDPTRS = [F.GUEST_PDPTR0, F.GUEST_PDPTR1, F.GUEST_PDPTR2, F.GUEST_PDPTR3] as const;
/** is_pae_paging: CR0.PG, CR4.PAE and not long mode. */
function isPaePaging(vcpu: KvmVcpu): boolean {
  return (vcpu.readCr0() & (1n << 31n)) !== 0n && (vcpu.readCr4() & 0x20n) !== 0n && (vcpu.arch.efer & EFER_LMA) === 0n;
}

@backend({
  name: 'vmx',
  vendor: 'intel',
  description: 'Intel VMX: an emulated VMCS, EPT with PML, VPID-tagged TLB, APICv, preemption timer',
  packageName: '@tsvisor/vmx',
})
export class VmxBackend implements X86Ops {
  static moduleParams: VmxModuleParams = { ...DEFAULT_VMX_PARAMS };

  readonly params: VmxModuleParams;
  readonly config: VmcsConfig;
  /** VMXON state of the emulated processors (hardware_enable / hardware_disable). */
  private vmxon = false;
  readonly vmSize = 4096;
  readonly pmuOps = intelPmuOps;
  readonly nestedOps = vmxNestedOps;

  // Optional hooks present only when the hardware feature is in use (KVM NULLs them otherwise).
  slotEnableLogDirty?: (kvm: Kvm, slot: KvmMemorySlot) => void;
  slotDisableLogDirty?: (kvm: Kvm, slot: KvmMemorySlot) => void;
  flushLogDirty?: (kvm: Kvm) => void;
  enableLogDirtyPtMasked?: (kvm: Kvm, slot: KvmMemorySlot, gfnOffset: bigint, mask: bigint) => void;
  setHvTimer?: (vcpu: KvmVcpu, guestDeadlineTsc: bigint) => { result: number; expired: boolean };
  cancelHvTimer?: (vcpu: KvmVcpu) => void;

  constructor() {
    this.params = { ...VmxBackend.moduleParams };
    this.config = setupVmcsConfig(this.params);
    if (this.config.cpuBased2 & D.SECONDARY_EXEC_ENABLE_PML) {
      this.slotEnableLogDirty = vmxSlotEnableLogDirty;
      this.slotDisableLogDirty = vmxSlotDisableLogDirty;
      this.flushLogDirty = vmxFlushLogDirty;
      this.enableLogDirtyPtMasked = vmxEnableLogDirtyPtMasked;
    }
    if (this.config.pinBased & D.PIN_BASED_VMX_PREEMPTION_TIMER) {
      this.setHvTimer = (vcpu, deadline) => this.vmxSetHvTimer(vcpu, deadline);
      this.cancelHvTimer = (vcpu) => { toVmx(vcpu).hvDeadlineTsc = -1n; };
    }
  }

  // ---------------------------------------------------------------- hardware

  hardwareEnable(): number {
    // VMXON (SDM 31.3): CR4.VMXE set, the region's revision matches; the emulated processor always agrees.
    this.vmxon = true;
    return 0;
  }
  hardwareDisable(): void {
    this.vmxon = false;
  }
  hardwareUnsetup(): void {
    this.vmxon = false;
  }
  cpuHasAcceleratedTpr(): boolean {
    // flexpriority: virtualized APIC accesses with a TPR shadow.
    return (this.config.cpuBased2 & D.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES) !== 0;
  }
  hasEmulatedMsr(index: number): boolean {
    // vmx_has_emulated_msr: SMBASE needs unrestricted guest; the VMX MSRs need nested; AMD's VIRT_SPEC_CTRL never.
    if (index === 0x9e) return this.params.unrestrictedGuest;
    if (index >= MSR_IA32_VMX_BASIC && index <= MSR_IA32_VMX_VMFUNC) return this.nestedOps.enabled;
    if (index === 0xc001011f) return false;
    return true;
  }
  /** vmx_vcpu_after_set_cpuid: features the guest's CPUID grants switch secondary controls. */
  cpuidUpdate(vcpu: KvmVcpu): void {
    const v = toVmx(vcpu).vmcs;
    let p2 = v.read32(F.SECONDARY_VM_EXEC_CONTROL);
    const set = (bit: number, on: boolean) => { p2 = on && this.config.cpuBased2 & bit ? p2 | bit : p2 & ~bit; };
    set(D.SECONDARY_EXEC_ENABLE_RDTSCP, guestCpuidHas(vcpu, 0x80000001, 'edx', 27));
    set(D.SECONDARY_EXEC_ENABLE_INVPCID, guestCpuidHas(vcpu, 7, 'ebx', 10));
    v.write32(F.SECONDARY_VM_EXEC_CONTROL, p2);
    this.pmuOps.refresh(vcpu);
  }

  // ---------------------------------------------------------------- VM

  vmInit(kvm: Kvm): number {
    kvm.vendor = new KvmVmx(this.params, this.config);
    if (this.config.cpuBased2 & D.SECONDARY_EXEC_ENABLE_EPT) {
      kvm.enableTdp(eptFormat(4, (this.config.cpuBased2 & D.SECONDARY_EXEC_ENABLE_PML) !== 0));
    }
    return 0;
  }
  vmDestroy(kvm: Kvm): void {
    kvm.vendor = null;
  }

  // ---------------------------------------------------------------- vCPU

  vcpuCreate(vcpu: KvmVcpu): number {
    const kvm = vcpu.kvm;
    const kvmVmx = toKvmVmx(kvm);
    const pages = kvm.hostMemory.allocPages(VCPU_VMX_PAGES, `vmx vcpu ${vcpu.vcpuId}`);
    const vpid = this.config.cpuBased2 & D.SECONDARY_EXEC_ENABLE_VPID ? kvmVmx.nextVpid++ : 0;
    const vmx = new VcpuVmx(vcpu, this.config.revisionId, pages, vpid);
    vcpu.vendor = vmx;
    vmx.ept = new EptWalker(vmx.vmcs, kvm.hostMemory);
    // Intercept every MSR and port, then open the ones the guest may own (vmx_create_vcpu).
    const host = kvm.hostMemory;
    for (const page of [vmx.msrBitmap, vmx.ioBitmapA, vmx.ioBitmapB]) {
      const { bytes, offset } = host.slice(page, 4096);
      bytes.fill(0xff, offset, offset + 4096);
    }
    for (const msr of [0xc0000100, 0xc0000101, 0xc0000102, 0x174, 0x175, 0x176]) vmxDisableInterceptForMsr(vcpu, msr, MSR_TYPE_RW);
    this.initVmcs(vmx);
    this.pmuOps.init(vcpu);
    this.setupMce(vcpu);
    return 0;
  }

  /** init_vmcs: controls from vmcs_config, the constant host state, pointers. */
  private initVmcs(vmx: VcpuVmx): void {
    const v = vmx.vmcs;
    const c = this.config;
    v.write32(F.PIN_BASED_VM_EXEC_CONTROL, c.pinBased);
    v.write32(F.CPU_BASED_VM_EXEC_CONTROL, c.cpuBased);
    if (c.cpuBased & D.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS) v.write32(F.SECONDARY_VM_EXEC_CONTROL, c.cpuBased2);
    v.write32(F.VM_EXIT_CONTROLS, c.vmexit);
    v.write32(F.VM_ENTRY_CONTROLS, c.vmentry);
    v.write64(F.VMCS_LINK_POINTER, MASK64);
    v.writeNum(F.MSR_BITMAP, vmx.msrBitmap);
    v.writeNum(F.IO_BITMAP_A, vmx.ioBitmapA);
    v.writeNum(F.IO_BITMAP_B, vmx.ioBitmapB);
    if (c.cpuBased2 & D.SECONDARY_EXEC_ENABLE_VPID) v.write16(F.VIRTUAL_PROCESSOR_ID, vmx.vpid);
    if (c.cpuBased2 & D.SECONDARY_EXEC_ENABLE_PML) {
      v.writeNum(F.PML_ADDRESS, vmx.pmlPage);
      v.write16(F.GUEST_PML_INDEX, D.PML_ENTITY_NUM - 1);
    }
    if (c.cpuBased & D.CPU_BASED_TPR_SHADOW) v.writeNum(F.VIRTUAL_APIC_PAGE_ADDR, vmx.virtualApicPage);
    if (c.pinBased & D.PIN_BASED_POSTED_INTR) {
      v.write16(F.POSTED_INTR_NV, apicv.POSTED_INTR_VECTOR);
      v.writeNum(F.POSTED_INTR_DESC_ADDR, vmx.piDesc);
    }
    v.write32(F.PAGE_FAULT_ERROR_CODE_MASK, 0);
    v.write32(F.PAGE_FAULT_ERROR_CODE_MATCH, 0);
    v.write32(F.CR3_TARGET_COUNT, 0);
    v.write32(F.VM_EXIT_MSR_STORE_COUNT, 0);
    v.write32(F.VM_EXIT_MSR_LOAD_COUNT, 0);
    v.write32(F.VM_ENTRY_MSR_LOAD_COUNT, 0);
    v.writeNat(F.CR0_GUEST_HOST_MASK, CR0_HOST_OWNED);
    v.writeNat(F.CR4_GUEST_HOST_MASK, MASK64 & ~CR4_GUEST_OWNED);
    vmx.vcpu.arch.cr0GuestOwnedBits = 0xffffffffn & ~CR0_HOST_OWNED;
    vmx.vcpu.arch.cr4GuestOwnedBits = CR4_GUEST_OWNED;
    this.updateExceptionBitmap(vmx);
    // vmx_set_constant_host_state: a 64-bit host (SDM 27.2.2 checks these at every entry).
    v.writeNat(F.HOST_CR0, 0x80050033n);
    v.writeNat(F.HOST_CR4, 0x26a0n);
    v.writeNat(F.HOST_CR3, 0x1000n);
    v.write16(F.HOST_CS_SELECTOR, 0x10);
    v.write16(F.HOST_SS_SELECTOR, 0x18);
    v.write16(F.HOST_DS_SELECTOR, 0);
    v.write16(F.HOST_ES_SELECTOR, 0);
    v.write16(F.HOST_TR_SELECTOR, 0x40);
    v.writeNat(F.HOST_IDTR_BASE, 0xfffffe0000000000n);
    v.writeNat(F.HOST_GDTR_BASE, 0xfffffe0000001000n);
    v.writeNat(F.HOST_TR_BASE, 0xfffffe0000003000n);
    v.writeNat(F.HOST_RIP, 0xffffffff81000000n);
    v.write64(F.HOST_IA32_PAT, 0x0407050600070106n);
    v.write64(F.HOST_IA32_EFER, 0xd01n);
  }

  /** update_exception_bitmap: #UD (VMMCALL patching), #MC, #AC; #PF only without EPT. */
  private updateExceptionBitmap(vmx: VcpuVmx): void {
    let eb = (1 << X86Vector.UD) | (1 << X86Vector.MC) | (1 << X86Vector.AC);
    if (!(this.config.cpuBased2 & D.SECONDARY_EXEC_ENABLE_EPT)) eb |= 1 << X86Vector.PF;
    vmx.vmcs.write32(F.EXCEPTION_BITMAP, eb);
  }

  vcpuFree(vcpu: KvmVcpu): void {
    const vmx = toVmx(vcpu);
    vcpu.kvm.hostMemory.unmap(vmx.msrBitmap);
    vcpu.vendor = null;
  }

  /** vmx_vcpu_reset: the SDM's power-up/INIT state (Vol. 3A 10.1.1, Table 10-1) in the VMCS. */
  vcpuReset(vcpu: KvmVcpu, initEvent: boolean): void {
    const vmx = toVmx(vcpu);
    const v = vmx.vmcs;
    const seg = (s: VcpuSreg, sel: number, base: bigint, ar: number) => {
      vmxSetSegment(vcpu, {
        selector: sel, base, limit: 0xffff, type: ar & 15, s: (ar >> 4) & 1, dpl: (ar >> 5) & 3, present: (ar >> 7) & 1,
        avl: 0, l: 0, db: 0, g: 0, unusable: 0,
      }, s);
    };
    seg(VcpuSreg.CS, 0xf000, 0xffff0000n, 0x9b);
    for (const s of [VcpuSreg.ES, VcpuSreg.SS, VcpuSreg.DS, VcpuSreg.FS, VcpuSreg.GS]) seg(s, 0, 0n, 0x93);
    seg(VcpuSreg.TR, 0, 0n, 0x8b);
    seg(VcpuSreg.LDTR, 0, 0n, 0x82);
    v.writeNat(F.GUEST_GDTR_BASE, 0n);
    v.write32(F.GUEST_GDTR_LIMIT, 0xffff);
    v.writeNat(F.GUEST_IDTR_BASE, 0n);
    v.write32(F.GUEST_IDTR_LIMIT, 0xffff);
    v.write32(F.GUEST_ACTIVITY_STATE, D.GUEST_ACTIVITY_ACTIVE);
    v.write32(F.GUEST_INTERRUPTIBILITY_INFO, 0);
    v.writeNat(F.GUEST_PENDING_DBG_EXCEPTIONS, 0n);
    v.write32(F.VM_ENTRY_INTR_INFO_FIELD, 0);
    v.writeNat(F.GUEST_DR7, 0x400n);
    v.write64(F.GUEST_IA32_DEBUGCTL, 0n);
    if (!initEvent) {
      v.write32(F.GUEST_SYSENTER_CS, 0);
      v.writeNat(F.GUEST_SYSENTER_ESP, 0n);
      v.writeNat(F.GUEST_SYSENTER_EIP, 0n);
      v.write64(F.GUEST_IA32_PAT, vcpu.arch.pat);
      vmx.specCtrl = 0n;
      vmx.guestMsrs.clear();
      vmx.kernelGsBase = 0n;
      this.pmuOps.reset(vcpu);
    }
    v.writeNat(F.GUEST_RFLAGS, 2n);
    vcpu.arch.rflags = 2n;
    vcpu.registerWrite(KvmReg.RIP, 0xfff0n);
    vcpu.registerWrite(KvmReg.RSP, 0n);
    // CR0 = CD | NW | ET (SDM Table 10-1), CR3 = CR4 = 0, EFER = 0.
    this.setCr0(vcpu, 0x60000010n);
    this.setCr4(vcpu, 0n);
    vcpu.arch.cr3 = 0n;
    v.writeNat(F.GUEST_CR3, 0n);
    vcpu.arch.regsAvail |= 1 << KvmReg.CR3;
    this.setEfer(vcpu, 0n);
    if (this.config.cpuBased2 & D.SECONDARY_EXEC_ENABLE_PML) v.write16(F.GUEST_PML_INDEX, D.PML_ENTITY_NUM - 1);
    vmx.hvDeadlineTsc = -1n;
    vmx.vmcs.clear();
    vcpu.makeRequest(KvmReq.LOAD_MMU_PGD);
  }

  /**
   * vmx_prepare_switch_to_guest: load the guest's user-return MSRs (STAR, LSTAR, CSTAR,
   * SYSCALL_MASK, TSC_AUX) and KERNEL_GS_BASE into the processor; they are not in the VMCS.
   */
  prepareGuestSwitch(vcpu: KvmVcpu): void {
    const vmx = toVmx(vcpu);
    const s = vcpu.cpu.state;
    // KVM may have changed CR2/DR0-3/DR6/XCR0 since the last exit: the entry loads them.
    vmx.switchedInSync = false;
    const m = vmx.guestMsrs;
    s.kernelGsBase = vmx.kernelGsBase;
    const u = vmx.uretValues;
    if (vmx.uretVersion !== m.version) {
      vmx.uretVersion = m.version;
      u[0] = m.get(0xc0000081) ?? 0n;
      u[1] = m.get(0xc0000082) ?? 0n;
      u[2] = m.get(0xc0000083) ?? 0n;
      u[3] = m.get(0xc0000084) ?? 0n;
      u[4] = m.get(0xc0000103) ?? 0n;
    }
    s.star = u[0];
    s.lstar = u[1];
    s.cstar = u[2];
    s.sfmask = u[3];
    s.tscAux = u[4];
  }
  /** vmx_vcpu_load: VMPTRLD this vCPU's VMCS on `cpu`. */
  vcpuLoad(vcpu: KvmVcpu, cpu: number): void {
    const vmx = toVmx(vcpu);
    vmx.loadedCpu = cpu;
    // KVM_RUN starts here: the time slice (runBudget) is counted from this point.
    vmx.runStartRetired = vcpu.cpu.state.instructionsRetired;
  }
  vcpuPut(vcpu: KvmVcpu): void {
    toVmx(vcpu).loadedCpu = -1;
  }
  /** update_exception_bitmap (guest debugging is not offered: #DB/#BP stay the guest's). */
  updateBpIntercept(vcpu: KvmVcpu): void {
    this.updateExceptionBitmap(toVmx(vcpu));
  }

  // ---------------------------------------------------------------- MSRs

  getMsr(vcpu: KvmVcpu, msr: MsrData): number {
    if (this.pmuOps.isValidMsr(vcpu, msr.index)) return this.pmuOps.getMsr(vcpu, msr);
    return vmxGetMsr(vcpu, msr);
  }
  setMsr(vcpu: KvmVcpu, msr: MsrData): number {
    if (this.pmuOps.isValidMsr(vcpu, msr.index)) return this.pmuOps.setMsr(vcpu, msr);
    return vmxSetMsr(vcpu, msr);
  }
  /** vmx_get_msr_feature: the VMX capability MSRs describe what a nested hypervisor would get. */
  getMsrFeature(entry: KvmMsrEntry): number {
    const c = VMX_CAPABILITY_MSRS.get(entry.index);
    if (c === undefined) return 1;
    entry.data = c;
    return 0;
  }
  /** vmx_setup_mce: IA32_FEATURE_CONTROL may enable LMCE only when MCG_CAP has MCG_LMCE_P (bit 27). */
  setupMce(vcpu: KvmVcpu): void {
    const cap: MsrData = { hostInitiated: true, index: MSR.IA32_MCG_CAP, data: 0n };
    kvmGetMsrCommon(vcpu, cap);
    const vmx = toVmx(vcpu);
    if (cap.data & (1n << 27n)) vmx.featureControlValidBits |= FEAT_CTL_LMCE_ENABLED;
    else vmx.featureControlValidBits &= ~FEAT_CTL_LMCE_ENABLED;
  }

  // ---------------------------------------------------------------- segments, CRs, descriptor tables

  getSegmentBase(vcpu: KvmVcpu, seg: VcpuSreg): bigint { return vmxGetSegmentBase(vcpu, seg); }
  getSegment(vcpu: KvmVcpu, out: KvmSegment, seg: VcpuSreg): void { vmxGetSegment(vcpu, out, seg); }
  getCpl(vcpu: KvmVcpu): number { return vmxGetCpl(vcpu); }
  setSegment(vcpu: KvmVcpu, value: KvmSegment, seg: VcpuSreg): void { vmxSetSegment(vcpu, value, seg); }
  getCsDbLBits(vcpu: KvmVcpu): { db: number; l: number } { return vmxGetCsDbLBits(vcpu); }

  /** vmx_set_cr0 (unrestricted guest): the shadow holds the guest's CR0, the hardware CR0 forces NE. */
  setCr0(vcpu: KvmVcpu, cr0: bigint): void {
    const v = toVmx(vcpu).vmcs;
    const a = vcpu.arch;
    // Long mode switches with paging (enter_lmode / exit_lmode) when the change comes through KVM.
    const oldPg = (this.readCr0(vcpu) & CR0_PG) !== 0n;
    if (a.efer & EFER_LME) {
      if (!oldPg && cr0 & CR0_PG) this.setEfer(vcpu, a.efer | EFER_LMA);
      else if (oldPg && !(cr0 & CR0_PG)) this.setEfer(vcpu, a.efer & ~EFER_LMA);
    }
    v.writeNat(F.CR0_READ_SHADOW, cr0);
    v.writeNat(F.GUEST_CR0, cr0 | CR0_NE);
    a.cr0 = cr0;
    a.regsAvail |= 1 << KvmReg.CR0;
  }
  private readCr0(vcpu: KvmVcpu): bigint {
    if (!(vcpu.arch.regsAvail & (1 << KvmReg.CR0))) this.cacheReg(vcpu, KvmReg.CR0);
    return vcpu.arch.cr0;
  }
  /** vmx_set_cr4: VMXE is the host's (fixed 1, hidden by the shadow); a guest asking for it gets #GP. */
  setCr4(vcpu: KvmVcpu, cr4: bigint): number {
    if (cr4 & CR4_VMXE && !this.nestedOps.enabled) return 1;
    const v = toVmx(vcpu).vmcs;
    v.writeNat(F.CR4_READ_SHADOW, cr4);
    v.writeNat(F.GUEST_CR4, cr4 | CR4_VMXE);
    vcpu.arch.cr4 = cr4;
    vcpu.arch.regsAvail |= 1 << KvmReg.CR4;
    return 0;
  }
  /** vmx_set_efer: EFER is loaded at entry and saved at exit; "IA-32e mode guest" follows LMA. */
  setEfer(vcpu: KvmVcpu, efer: bigint): void {
    const v = toVmx(vcpu).vmcs;
    vcpu.arch.efer = efer;
    const entry = v.read32(F.VM_ENTRY_CONTROLS);
    v.write32(F.VM_ENTRY_CONTROLS, efer & EFER_LMA ? entry | D.VM_ENTRY_IA32E_MODE : entry & ~D.VM_ENTRY_IA32E_MODE);
    v.write64(F.GUEST_IA32_EFER, efer);
  }
  getIdt(vcpu: KvmVcpu, dt: DescPtr): void {
    const v = toVmx(vcpu).vmcs;
    dt.size = v.read32(F.GUEST_IDTR_LIMIT);
    dt.address = v.readNat(F.GUEST_IDTR_BASE);
  }
  setIdt(vcpu: KvmVcpu, dt: DescPtr): void {
    const v = toVmx(vcpu).vmcs;
    v.write32(F.GUEST_IDTR_LIMIT, dt.size);
    v.writeNat(F.GUEST_IDTR_BASE, BigInt.asUintN(64, dt.address));
  }
  getGdt(vcpu: KvmVcpu, dt: DescPtr): void {
    const v = toVmx(vcpu).vmcs;
    dt.size = v.read32(F.GUEST_GDTR_LIMIT);
    dt.address = v.readNat(F.GUEST_GDTR_BASE);
  }
  setGdt(vcpu: KvmVcpu, dt: DescPtr): void {
    const v = toVmx(vcpu).vmcs;
    v.write32(F.GUEST_GDTR_LIMIT, dt.size);
    v.writeNat(F.GUEST_GDTR_BASE, BigInt.asUintN(64, dt.address));
  }

  // ---------------------------------------------------------------- debug registers

  /** vmx_sync_dirty_debug_regs: pick up DR0-3/DR6 from the processor and intercept MOV DR again. */
  syncDirtyDebugRegs(vcpu: KvmVcpu): void {
    const s = vcpu.cpu.state;
    const a = vcpu.arch;
    for (let i = 0; i < 4; i++) a.db[i] = s.dr[i];
    a.dr6 = s.dr6;
    a.dr7 = toVmx(vcpu).vmcs.readNat(F.GUEST_DR7);
    const v = toVmx(vcpu).vmcs;
    v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) | D.CPU_BASED_MOV_DR_EXITING);
  }
  setDr7(vcpu: KvmVcpu, value: bigint): void {
    toVmx(vcpu).vmcs.writeNat(F.GUEST_DR7, value);
  }

  // ---------------------------------------------------------------- register cache

  /** vmx_cache_reg: RSP/RIP and the guest-owned CR bits are in the VMCS; GPRs in the processor. */
  cacheReg(vcpu: KvmVcpu, reg: KvmReg): void {
    const a = vcpu.arch;
    a.regsAvail |= 1 << reg;
    // GPRs live in the processor until read; RSP/RIP in the VMCS. Copied as 32-bit halves (no BigInt).
    if (reg < 16 && reg !== REG_RSP) {
      const s = vcpu.cpu.state;
      a.regs32[2 * reg] = s.gprLo[reg];
      a.regs32[2 * reg + 1] = s.gprHi[reg];
      return;
    }
    const v = toVmx(vcpu).vmcs;
    switch (reg) {
      case REG_RSP: a.regs32[2 * REG_RSP] = v.lo[S_RSP]; a.regs32[2 * REG_RSP + 1] = v.hi[S_RSP]; return;
      case REG_RIP: a.regs32[2 * REG_RIP] = v.lo[S_RIP]; a.regs32[2 * REG_RIP + 1] = v.hi[S_RIP]; return;
      case KvmReg.CR0: a.cr0 = (a.cr0 & ~a.cr0GuestOwnedBits) | (v.readNat(F.GUEST_CR0) & a.cr0GuestOwnedBits); return;
      case KvmReg.CR3: a.cr3 = v.readNat(F.GUEST_CR3); return;
      case KvmReg.CR4: a.cr4 = (a.cr4 & ~a.cr4GuestOwnedBits) | (v.readNat(F.GUEST_CR4) & a.cr4GuestOwnedBits); return;
      case KvmReg.PDPTR: if (this.config.cpuBased2 & D.SECONDARY_EXEC_ENABLE_EPT) this.eptSavePdptrs(vcpu); return;
      case KvmReg.EXIT_INFO_1: case KvmReg.EXIT_INFO_2: return;
      default:
        throw new Error(`vmx cacheReg: unknown register ${reg}`);
    }
  }
  /**
   * ept_save_pdptrs: under EPT the VMCS holds the PDPTE registers of a PAE guest (the exit
   * stored them, SDM 28.3.4); copy them to the vCPU's (the processor state core emulates on).
   */
  private eptSavePdptrs(vcpu: KvmVcpu): void {
    if (!isPaePaging(vcpu)) return;
    const v = toVmx(vcpu).vmcs;
    const s = vcpu.cpu.state;
    for (let i = 0; i < 4; i++) {
      s.pdptrLo[i] = v.readLow(GUEST_PDPTRS[i]) | 0;
      s.pdptrHi[i] = v.readHigh(GUEST_PDPTRS[i]) | 0;
    }
  }
  /**
   * vmx_ept_load_pdptrs: PDPTE registers core loaded (a task switch, a CR3 load it emulated:
   * KvmReg.PDPTR dirty) go to GUEST_PDPTR0-3, which VM entry loads under EPT (SDM 27.3.2.4).
   */
  private eptLoadPdptrs(vcpu: KvmVcpu): void {
    if (!(vcpu.arch.regsDirty & (1 << KvmReg.PDPTR)) || !isPaePaging(vcpu)) return;
    const v = toVmx(vcpu).vmcs;
    const s = vcpu.cpu.state;
    for (let i = 0; i < 4; i++) v.write64(GUEST_PDPTRS[i], s.getPdptr(i));
  }
  getRflags(vcpu: KvmVcpu): bigint {
    return toVmx(vcpu).vmcs.big(S_RFLAGS);
  }
  setRflags(vcpu: KvmVcpu, rflags: bigint): void {
    toVmx(vcpu).vmcs.writeNat(F.GUEST_RFLAGS, rflags);
    vcpu.arch.rflags = rflags;
  }

  // ---------------------------------------------------------------- TLB (INVEPT / INVVPID semantics, SDM 29.4.3)

  /** vmx_flush_tlb_all: INVEPT all-context (or INVVPID all-context without EPT). */
  tlbFlushAll(vcpu: KvmVcpu): void {
    vcpu.cpu.flushTlbAll();
  }
  /** vmx_flush_tlb_current: INVEPT single-context for the current EPTP — the combined mappings of this vCPU's VPID. */
  tlbFlushCurrent(vcpu: KvmVcpu): void {
    vcpu.cpu.flushTlbTag(toVmx(vcpu).vpid);
  }
  /** vmx_flush_tlb_gva: INVVPID individual-address (VPID 0 has no INVVPID: flush the context). */
  tlbFlushGva(vcpu: KvmVcpu, addr: bigint): void {
    const vpid = toVmx(vcpu).vpid;
    vcpu.cpu.flushTlbGva(vpid, addr);
  }
  /** vmx_flush_tlb_guest: INVVPID single-context — the guest's linear mappings. */
  tlbFlushGuest(vcpu: KvmVcpu): void {
    vcpu.cpu.flushTlbTag(toVmx(vcpu).vpid);
  }
  /** kvm_flush_remote_tlbs through INVEPT all-context on every vCPU's processor. */
  tlbRemoteFlush(kvm: Kvm): number {
    for (const v of kvm.vcpus) v.cpu.flushTlbAll();
    return 0;
  }
  tlbRemoteFlushWithRange(kvm: Kvm, _range: KvmTlbRange): number {
    // INVEPT has no range form: a ranged flush is a single-context flush.
    return this.tlbRemoteFlush(kvm);
  }

  // ---------------------------------------------------------------- run

  run(vcpu: KvmVcpu): ExitFastpathCompletion {
    if (!this.vmxon) throw new HookNotImplementedError('vmx', 'run', 'VMLAUNCH outside VMX operation (hardwareEnable was not called)');
    return vmxVcpuRun(vcpu) ? this.exitHandlersFastpath(vcpu) : ExitFastpathCompletion.EXIT_FASTPATH_NONE;
  }
  /** vmx_exit_handlers_fastpath (vmenter.ts): the exits completed before the slow path. */
  exitHandlersFastpath(vcpu: KvmVcpu): ExitFastpathCompletion {
    return vmxExitHandlersFastpath(vcpu);
  }
  handleExit(vcpu: KvmVcpu, fastpath: ExitFastpathCompletion): number {
    return vmxHandleExit(vcpu, fastpath);
  }
  /** skip_emulated_instruction: RIP += VM-exit instruction length, and the interrupt shadow ends. */
  skipEmulatedInstruction(vcpu: KvmVcpu): number {
    const v = toVmx(vcpu).vmcs;
    const len = v.lo[S_EXIT_INSTRUCTION_LEN];
    // RIP + length on 32-bit halves; outside 64-bit mode (IA-32e and CS.L) RIP wraps at 4 GiB.
    let lo = vcpu.registerReadLow(REG_RIP) + len;
    let hi = vcpu.registerReadHigh(REG_RIP);
    if (lo > 0xffffffff) {
      lo -= 0x1_0000_0000;
      hi = (hi + 1) >>> 0;
    }
    const long = (v.lo[S_CS_AR] & (1 << 13)) !== 0 && eferLma(vcpu.arch.efer);
    vcpu.registerWriteHalves(REG_RIP, lo, long ? hi : 0);
    // vmx_set_interrupt_shadow(vcpu, 0): nothing to write when neither shadow is set (the usual case).
    if (v.lo[S_INTERRUPTIBILITY] & (D.GUEST_INTR_STATE_STI | D.GUEST_INTR_STATE_MOV_SS)) vmxSetInterruptShadow(vcpu, 0);
    return 1;
  }
  setInterruptShadow(vcpu: KvmVcpu, mask: number): void { vmxSetInterruptShadow(vcpu, mask); }
  getInterruptShadow(vcpu: KvmVcpu): number { return vmxGetInterruptShadow(vcpu); }
  patchHypercall(vcpu: KvmVcpu, hypercallAddr: Uint8Array): void { vmxPatchHypercall(vcpu, hypercallAddr); }
  /** vmx_get_exit_info: the exit qualification and the exit interruption information. */
  getExitInfo(vcpu: KvmVcpu): { info1: bigint; info2: bigint } {
    const v = toVmx(vcpu).vmcs;
    return { info1: v.readNat(F.EXIT_QUALIFICATION), info2: BigInt(v.read32(F.VM_EXIT_INTR_INFO)) };
  }
  /**
   * vmx_check_intercept: outside nested guest mode only the instructions the guest's CPUID
   * withholds matter: RDTSCP without RDTSCP is #UD.
   */
  checkIntercept(vcpu: KvmVcpu, info: X86InstructionInfo, _stage: X86InterceptStage, exception: X86Exception): number {
    if (info.intercept === X86Intercept.rdtscp && !guestCpuidHas(vcpu, 0x80000001, 'edx', 27)) {
      exception.vector = X86Vector.UD;
      exception.errorCodeValid = false;
      return X86Emul.PROPAGATE_FAULT;
    }
    return X86Emul.CONTINUE;
  }
  /** handle_exit_irqoff: an external-interrupt exit hands the acknowledged vector to the host. */
  handleExitIrqoff(vcpu: KvmVcpu): void {
    const vmx = toVmx(vcpu);
    if ((vmx.exitReason & 0xffff) !== D.ExitReason.EXTERNAL_INTERRUPT) return;
    const info = vmx.vmcs.read32(F.VM_EXIT_INTR_INFO);
    if (info & D.INTR_INFO_VALID_MASK) vmx.hostInterrupts++;
  }
  requestImmediateExit(vcpu: KvmVcpu): void {
    toVmx(vcpu).immediateExit = true;
  }
  /** vmx_sched_in: shrink the PLE window (pause-loop exiting is not used, so there is none to shrink). */
  schedIn(vcpu: KvmVcpu, cpu: number): void {
    toVmx(vcpu).loadedCpu = cpu;
  }

  // ---------------------------------------------------------------- events

  setIrq(vcpu: KvmVcpu): void { vmxInjectIrq(vcpu); }
  setNmi(vcpu: KvmVcpu): void { vmxInjectNmi(vcpu); }
  queueException(vcpu: KvmVcpu): void { vmxQueueException(vcpu); }
  cancelInjection(vcpu: KvmVcpu): void { vmxCancelInjection(vcpu); }
  interruptAllowed(vcpu: KvmVcpu, forInjection: boolean): number { return vmxInterruptAllowed(vcpu, forInjection); }
  nmiAllowed(vcpu: KvmVcpu, forInjection: boolean): number { return vmxNmiAllowed(vcpu, forInjection); }
  getNmiMask(vcpu: KvmVcpu): boolean { return vmxGetNmiMask(vcpu); }
  setNmiMask(vcpu: KvmVcpu, masked: boolean): void { vmxSetNmiMask(vcpu, masked); }
  enableNmiWindow(vcpu: KvmVcpu): void { vmxEnableNmiWindow(vcpu); }
  enableIrqWindow(vcpu: KvmVcpu): void { vmxEnableIrqWindow(vcpu); }
  updateCr8Intercept(vcpu: KvmVcpu, tpr: number, irr: number): void { vmxUpdateCr8Intercept(vcpu, tpr, irr); }
  apicInitSignalBlocked(_vcpu: KvmVcpu): boolean {
    // INIT is blocked only in VMX root operation of a nested hypervisor (vmx->nested.vmxon).
    return false;
  }

  // ---------------------------------------------------------------- APICv

  checkApicvInhibitReasons(bit: number): boolean { return apicv.vmxCheckApicvInhibitReasons(bit); }
  refreshApicvExecCtrl(vcpu: KvmVcpu): void { apicv.vmxRefreshApicvExecCtrl(vcpu, this.config); }
  hwapicIrrUpdate(vcpu: KvmVcpu, maxIrr: number): void { apicv.vmxSetRvi(vcpu, maxIrr); }
  hwapicIsrUpdate(vcpu: KvmVcpu, isr: number): void { apicv.vmxSetSvi(vcpu, isr); }
  guestApicHasInterrupt(vcpu: KvmVcpu): boolean { return apicv.vmxGuestApicHasInterrupt(vcpu); }
  loadEoiExitmap(vcpu: KvmVcpu, bitmap: readonly bigint[]): void { apicv.vmxLoadEoiExitmap(vcpu, bitmap); }
  setVirtualApicMode(vcpu: KvmVcpu): void { apicv.vmxSetVirtualApicMode(vcpu, this.config); }
  setApicAccessPageAddr(vcpu: KvmVcpu): void { apicv.vmxSetApicAccessPageAddr(vcpu); }
  deliverPostedInterrupt(vcpu: KvmVcpu, vector: number): number { return apicv.vmxDeliverPostedInterrupt(vcpu, vector); }
  syncPirToIrr(vcpu: KvmVcpu): number { return apicv.vmxSyncPirToIrr(vcpu); }
  apicvPostStateRestore(vcpu: KvmVcpu): void { apicv.vmxApicvPostStateRestore(vcpu); }
  dyApicvHasPendingInterrupt(vcpu: KvmVcpu): boolean { return apicv.vmxDyApicvHasPendingInterrupt(vcpu); }
  /** vmx_update_pi_irte: without an IOMMU that posts interrupts there is no IRTE to update. */
  updatePiIrte(_kvm: Kvm, _hostIrq: number, _guestIrq: number, _set: boolean): number { return 0; }
  /** vmx_pre_block: with posted interrupts, a set ON bit means an interrupt is already waiting. */
  preBlock(vcpu: KvmVcpu): number { return apicv.vmxPreBlock(vcpu); }
  postBlock(vcpu: KvmVcpu): void { apicv.vmxPostBlock(vcpu); }

  // ---------------------------------------------------------------- real-mode helpers, MMU, TSC

  /** vmx_set_tss_addr: only needed without unrestricted guest (real mode through vm86). */
  setTssAddr(kvm: Kvm, addr: number): number {
    toKvmVmx(kvm).tssAddr = addr;
    return 0;
  }
  setIdentityMapAddr(kvm: Kvm, identAddr: bigint): number {
    toKvmVmx(kvm).identityMapAddr = identAddr;
    return 0;
  }
  /** vmx_get_tdp_level: 5-level EPT only when MAXPHYADDR exceeds 48 bits (it is 48 here, as CPUID.80000008H reports). */
  getTdpLevel(_vcpu: KvmVcpu): number { return 4; }
  getMtMask(_vcpu: KvmVcpu, gfn: bigint, isMmio: boolean): bigint { return vmxGetMtMask(gfn, isMmio); }
  /** vmx_load_mmu_pgd: EPTP from the TDP root; the guest's own CR3 goes to GUEST_CR3. */
  loadMmuPgd(vcpu: KvmVcpu, root: bigint): void {
    const v = toVmx(vcpu).vmcs;
    if (this.config.cpuBased2 & D.SECONDARY_EXEC_ENABLE_EPT) {
      const ad = (this.config.eptVpidCap & (1n << 21n)) !== 0n;
      v.write64(F.EPT_POINTER, constructEptp(root, this.getTdpLevel(vcpu), ad));
      v.writeNat(F.GUEST_CR3, vcpu.readCr3());
      this.eptLoadPdptrs(vcpu);
    }
  }
  /** cpu_has_vmx_wbinvd_exit: the processor reports the control allowed-1. */
  hasWbinvdExit(): boolean { return (Number(VMX_CAPABILITY_MSRS.get(0x48b)! >> 32n) & D.SECONDARY_EXEC_WBINVD_EXITING) !== 0; }
  /** vmx_write_l1_tsc_offset: the VMCS TSC offset (SDM 25.6.5). */
  writeL1TscOffset(vcpu: KvmVcpu, offset: bigint): bigint {
    toVmx(vcpu).vmcs.write64(F.TSC_OFFSET, BigInt.asUintN(64, offset));
    return offset;
  }
  /** vmx_need_emulation_on_page_fault. */
  needEmulationOnPageFault(_vcpu: KvmVcpu): boolean { return false; }
  /** vmx_write_pml_buffer: logs L2 GPAs for a nested hypervisor's PML; never in guest mode here. */
  writeLogDirty(_vcpu: KvmVcpu, _l2Gpa: bigint): number { return 0; }

  /** vmx_set_hv_timer: the LAPIC timer deadline on the VMX-preemption timer. */
  private vmxSetHvTimer(vcpu: KvmVcpu, guestDeadlineTsc: bigint): { result: number; expired: boolean } {
    const vmx = toVmx(vcpu);
    const guestTsc = vcpu.cpu.state.tsc + vcpu.arch.tscOffset;
    const delta = guestDeadlineTsc - guestTsc;
    // The 32-bit timer cannot reach deadlines beyond 2^32 << rate ticks (-ERANGE, KVM falls back to a hrtimer).
    if (delta > 0n && delta >> BigInt(PREEMPTION_TIMER_RATE) > 0xffffffffn) return { result: -34, expired: false };
    vmx.hvDeadlineTsc = guestDeadlineTsc;
    vmx.hvTimerExpired = false;
    return { result: 0, expired: delta <= 0n };
  }
  /** migrate_timers: after a move, the preemption timer is re-armed from the absolute deadline. */
  migrateTimers(vcpu: KvmVcpu): void {
    updateHvTimer(toVmx(vcpu), vcpu);
  }

  // ---------------------------------------------------------------- SMM

  smiAllowed(vcpu: KvmVcpu, _forInjection: boolean): number {
    return toVmx(vcpu).inSmm ? 0 : 1;
  }
  /** vmx_pre_enter_smm: remember what SMM entry must undo on RSM (no nested state to stash). */
  preEnterSmm(vcpu: KvmVcpu, _smstate: Uint8Array): number {
    toVmx(vcpu).inSmm = true;
    return 0;
  }
  preLeaveSmm(vcpu: KvmVcpu, _smstate: Uint8Array): number {
    toVmx(vcpu).inSmm = false;
    return 0;
  }
  /** enable_smi_window: empty in KVM's VMX too — RSM causes a VM exit anyway, so no window is needed. */
  enableSmiWindow(_vcpu: KvmVcpu): void {
    // Intentionally empty (see above): an SMI pending behind SMM is retried at the exit RSM causes.
  }

  // ---------------------------------------------------------------- diagnostics

  /** dump_vmcs. */
  dumpVmcs(vcpu: KvmVcpu): string {
    return dumpVmcs(toVmx(vcpu).vmcs);
  }
}

