/**
 * SvmBackend: tsvisor's kvm-amd. Every kvm_x86_ops hook that KVM's svm.c implements, against
 * the emulated VMCB (vmcb/) and the emulated SVM hardware (hardware.ts). Hooks AMD hardware
 * has no counterpart for (the PML dirty-log hooks, set/cancel_hv_timer, and the VMX-only
 * APICv/posted-interrupt helpers) are left out, as KVM leaves them NULL.
 */
import {
  backend, DescPtr, ExitFastpathCompletion, Kvm, KvmEncRegion, KvmMsrEntry, KvmReg, KvmSegment, KvmVcpu,
  KvmX86NestedOps, KvmPmuOps, MsrData, VcpuSreg, X86Exception, X86InstructionInfo, X86InterceptStage, X86Ops,
  EFER_LME, EFER_LMA, EFER_SVME, kvmFindCpuidEntry, KvmReq,
  kvmQueueInterrupt, kvmRequeueException, X86Emul, internalError, KvmInternalError, kvmEmulatedInsnLength,
  handleFastpathCpuid, handleFastpathInvd,
} from '@tsvisor/core';
import { Vmcb, packAttrib, SVM_SELECTOR_DB_SHIFT, SVM_SELECTOR_L_SHIFT } from './vmcb/vmcb';
import {
  AVIC_ENABLE_MASK, Intercept1, Intercept2, SREG_FIELDS, SVM_INTERRUPT_SHADOW_MASK, SVM_NESTED_CTL_NP_ENABLE,
  TlbControl, V_INTR_MASKING_MASK, V_TPR_MASK, VMCB_CONTROL, VMCB_SAVE, VmcbCleanBit,
} from './vmcb/layout';
import { Iopm, IOPM_SIZE, Msrpm } from './vmcb/permission-maps';
import {
  SVM_EVTINJ_TYPE_MASK, SVM_EVTINJ_TYPE_SHIFT, SVM_EVTINJ_VALID, SVM_EVTINJ_VALID_ERR, SvmEventType, SvmExit, svmExitName,
} from './vmcb/exit-codes';
import { KvmSvm, VcpuSvm, kvmSvmOf, svmOf } from './vcpu-svm';
import { svmGetMsr, svmSetMsr, svmGetMsrFeature } from './msr';
import { svmHandleExit } from './exit-handlers';
import { nptFormat } from './npt/npt';
import {
  crReadBit, crWriteBit, setCrIntercept, setExceptionIntercept, setIntercept1, setIntercept2, svmSetVintr,
  svmTestInterceptBit, svmSetInterceptBit,
} from './intercepts';
import { svmPatchHypercall } from './hypercall';
import { createAmdPmuOps } from './pmu';
import { avicActive, avicDeliverInterrupt, avicInitVcpu, avicSetRunning } from './avic';

/** Module parameters of kvm-amd that tsvisor models (/sys/module/kvm_amd/parameters). */
export const svmModuleParams = {
  /**
   * npt: nested paging (default). Off, guest-physical addresses resolve straight through the
   * memslots (tsvisor has no shadow MMU) and unbacked accesses still exit as #NPF.
   */
  npt: true,
  /** nrips: the processor saves nRIP (APM 15.7.1). */
  nrips: true,
  /** The processor supports TLB_CONTROL = FLUSH_ASID (CPUID 8000_000Ah EDX[6] FlushByAsid). */
  flushByAsid: true,
  /** pause_filter_count: 0 disables PAUSE interception. */
  pauseFilterCount: 0,
  /** avic: AVIC needs an in-kernel LAPIC; off by default as in KVM. */
  avic: false,
};

const X86_EFLAGS_IF = 1n << 9n;
const X86_EFLAGS_TF = 1n << 8n;
const X86_EFLAGS_RF = 1n << 16n;
const X86_CR0_PG = 1n << 31n;
const X86_CR0_CD = 1n << 30n;
const X86_CR0_NW = 1n << 29n;
const X86_CR0_ET = 1n << 4n;
const X86_CR0_TS = 1n << 3n;
const X86_CR0_MP = 1n << 1n;
const X86_CR4_VMXE = 1n << 13n;
/** CR0 bits the guest may change without an exit under the selective CR0 write intercept. */
const SVM_CR0_SELECTIVE_MASK = X86_CR0_TS | X86_CR0_MP;
/** KVM_X86_SHADOW_INT_* */
const KVM_X86_SHADOW_INT_MOV_SS = 1;
const KVM_X86_SHADOW_INT_STI = 2;
/** Registers that live in the VMCB save area, read back lazily through cacheReg after an exit. */
const SVM_LAZY_REGS = (1 << KvmReg.RAX) | (1 << KvmReg.RSP) | (1 << KvmReg.RIP) | (1 << KvmReg.CR3) | (1 << KvmReg.CR0) | (1 << KvmReg.PDPTR);
/** The GPRs other than RAX/RSP: in the processor around VMRUN, read back lazily after #VMEXIT. */
const SVM_PROCESSOR_GPRS = 0xffff & ~((1 << KvmReg.RAX) | (1 << KvmReg.RSP));
/** The save-area registers svm_vcpu_run copies back at every #VMEXIT. */
const SVM_EAGER_REGS = (1 << KvmReg.RAX) | (1 << KvmReg.RSP) | (1 << KvmReg.RIP);
// @tsvisor/core's exports are getters on a dictionary-mode object: the VMRUN path reads these copies.
const REG_RAX = KvmReg.RAX, REG_RSP = KvmReg.RSP, REG_RIP = KvmReg.RIP;
const FASTPATH_NONE = ExitFastpathCompletion.EXIT_FASTPATH_NONE;
const FASTPATH_CPUID = handleFastpathCpuid;
const FASTPATH_INVD = handleFastpathInvd;
const CPUID_NAME = svmExitName(SvmExit.CPUID);
const INVD_NAME = svmExitName(SvmExit.INVD);
/**
 * Word indexes (Vmcb.words) of the fields the exit path reads and writes each exit. RAX, RSP,
 * RIP, INTERRUPT_SHADOW and the exit fields belong to no clean-bit group and no store counter
 * (vmcb.ts), so a direct word access is what the accessors would do.
 */
const W_RAX = VMCB_SAVE.RAX.offset >> 2;
const W_RSP = VMCB_SAVE.RSP.offset >> 2;
const W_RIP = VMCB_SAVE.RIP.offset >> 2;
const W_NRIP = VMCB_CONTROL.NRIP.offset >> 2;
const W_EXITCODE = VMCB_CONTROL.EXITCODE.offset >> 2;
const W_EXITINTINFO = VMCB_CONTROL.EXITINTINFO.offset >> 2;
const W_INTERRUPT_SHADOW = VMCB_CONTROL.INTERRUPT_SHADOW.offset >> 2;
/** Intercept vector 0 bit 24: CR8 writes (crWriteBit(8), APM Table B-1). */
const CR8_WRITE_BIT = crWriteBit(8);
/** CR8 values as bigints (V_TPR is 4 bits): no BigInt built per exit. */
const CR8_VALUES: readonly bigint[] = Array.from({ length: 16 }, (_, i) => BigInt(i));
/** enum kvm_apicv_inhibit (5.8): the reasons AVIC can honour. */
export enum ApicvInhibitReason { DISABLE = 0, HYPERV = 1, NESTED = 2, IRQWIN = 3, PIT_REINJ = 4 }
const ENOTTY = 25;
/** Family 17h signature: EDX after RESET (APM Vol. 2 14.1.3), used until CPUID is set. */
const AMD_RESET_SIGNATURE = 0x00800f12n;
/** MSRs the guest reaches without an exit (KVM's direct_access_msrs marked "always"). */
const DIRECT_ACCESS_MSRS = [0xc0000081, 0x174, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102, 0xc0000100, 0xc0000101];

@backend({
  name: 'svm',
  vendor: 'amd',
  description: "kvm-amd's kvm_x86_ops against an emulated VMCB (AMD APM Vol. 2, chapter 15)",
  packageName: '@tsvisor/svm',
})
export class SvmBackend implements X86Ops {
  /** sizeof(struct kvm_svm) in host memory: the VM-wide IOPM lives there. */
  readonly vmSize = IOPM_SIZE;
  readonly pmuOps: KvmPmuOps = createAmdPmuOps();
  readonly nestedOps: KvmX86NestedOps = {
    // Nested SVM is not offered: CPUID does not advertise SVM, so EFER.SVME cannot be set by the guest.
    enabled: false,
    checkEvents: () => 0,
    getState: () => ({ format: 1 /* KVM_STATE_NESTED_FORMAT_SVM */, flags: 0, size: 0, data: new Uint8Array(0) }),
    setState: (_vcpu, state) => (state.flags === 0 && state.size === 0 ? 0 : -22),
    getVmcs12Pages: () => true,
  };
  /** The host's EFER.SVME, set by hardwareEnable (svm_hardware_enable). */
  hostSvmEnabled = false;

  // ---------------------------------------------------------------- hardware

  hardwareEnable(): number {
    this.hostSvmEnabled = true;
    return 0;
  }
  hardwareDisable(): void {
    this.hostSvmEnabled = false;
  }
  hardwareUnsetup(): void {
    this.hostSvmEnabled = false;
  }
  cpuHasAcceleratedTpr(): boolean {
    return false;
  }
  /** svm_has_emulated_msr: no VMX capability MSRs and no MCG_EXT_CTL (LMCE) on AMD. */
  hasEmulatedMsr(index: number): boolean {
    if (index >= 0x480 && index <= 0x491) return false;
    if (index === 0x4d0) return false;
    return true;
  }
  /** svm_vcpu_after_set_cpuid: RDTSCP is intercepted (#UD) when the guest's CPUID lacks it. */
  cpuidUpdate(vcpu: KvmVcpu): void {
    const svm = svmOf(vcpu);
    const e = kvmFindCpuidEntry(vcpu, 0x80000001, 0);
    const rdtscp = !!e && ((e.edx >>> 27) & 1) === 1;
    setIntercept2(svm, Intercept2.RDTSCP, !rdtscp);
    this.pmuOps.refresh(vcpu);
  }

  // ---------------------------------------------------------------- vm

  vmInit(kvm: Kvm): number {
    const iopm = new Iopm(kvm.hostMemory, kvm.vendorArea);
    iopm.interceptAll();
    kvm.vendor = new KvmSvm(kvm, iopm);
    if (svmModuleParams.npt) kvm.enableTdp(nptFormat((gfn, mmio) => this.getMtMask(null, gfn, mmio)));
    return 0;
  }
  vmDestroy(kvm: Kvm): void {
    kvm.vendor = null;
  }

  // ---------------------------------------------------------------- vcpu

  vcpuCreate(vcpu: KvmVcpu): number {
    const host = vcpu.kvm.hostMemory;
    const vmcb = Vmcb.alloc(host, `vmcb vcpu${vcpu.vcpuId}`);
    const msrpm = Msrpm.alloc(host);
    msrpm.interceptAll();
    for (const m of DIRECT_ACCESS_MSRS) msrpm.setPassthrough(m, true, true);
    vcpu.vendor = new VcpuSvm(vcpu, vmcb, msrpm);
    this.pmuOps.init(vcpu);
    return 0;
  }
  vcpuFree(vcpu: KvmVcpu): void {
    const svm = svmOf(vcpu);
    const host = vcpu.kvm.hostMemory;
    host.unmap(svm.vmcb.pa);
    host.unmap(svm.msrpm.pa);
    if (svm.avicBackingPage) host.unmap(svm.avicBackingPage);
    vcpu.vendor = null;
  }

  /** svm_vcpu_reset → init_vmcb: the VMCB's intercepts and the RESET state (APM 14.1.3). */
  vcpuReset(vcpu: KvmVcpu, initEvent: boolean): void {
    const svm = svmOf(vcpu);
    const v = svm.vmcb;
    const kvmSvm = kvmSvmOf(vcpu.kvm);
    svm.specCtrl = 0n;
    svm.virtSpecCtrl = 0n;
    svm.nmiMasked = false;
    svm.iretMasked = false;
    svm.nextRip = 0n;
    v.bytes.fill(0, 0, 0x400);
    // Intercepts (init_vmcb): CR0/CR3/CR4 reads and writes, CR8 writes; all DR accesses.
    v.write32(VMCB_CONTROL.INTERCEPT_CR, 0);
    for (const cr of [0, 3, 4]) { setCrIntercept(svm, crReadBit(cr), true); setCrIntercept(svm, crWriteBit(cr), true); }
    setCrIntercept(svm, crWriteBit(8), true);
    v.write32(VMCB_CONTROL.INTERCEPT_DR, 0xffff_ffff & ((0xff << 16) | 0xff));
    for (const vec of [6 /* UD */, 18 /* MC */]) setExceptionIntercept(svm, vec, true);
    for (const b of [Intercept1.INTR, Intercept1.NMI, Intercept1.SMI, Intercept1.CR0_SEL_WRITE, Intercept1.RDPMC,
      Intercept1.CPUID, Intercept1.INVD, Intercept1.INVLPG, Intercept1.INVLPGA, Intercept1.IOIO_PROT,
      Intercept1.MSR_PROT, Intercept1.TASK_SWITCH, Intercept1.SHUTDOWN, Intercept1.RSM, Intercept1.HLT]) {
      setIntercept1(svm, b, true);
    }
    for (const b of [Intercept2.VMRUN, Intercept2.VMMCALL, Intercept2.VMLOAD, Intercept2.VMSAVE, Intercept2.STGI,
      Intercept2.CLGI, Intercept2.SKINIT, Intercept2.WBINVD, Intercept2.XSETBV, Intercept2.RDPRU,
      Intercept2.MONITOR, Intercept2.MWAIT]) {
      setIntercept2(svm, b, true);
    }
    if (svmModuleParams.pauseFilterCount) {
      setIntercept1(svm, Intercept1.PAUSE, true);
      v.write16(VMCB_CONTROL.PAUSE_FILTER_COUNT, svmModuleParams.pauseFilterCount);
    }
    v.write64(VMCB_CONTROL.IOPM_BASE_PA, BigInt(kvmSvm.iopm.pa));
    v.write64(VMCB_CONTROL.MSRPM_BASE_PA, BigInt(svm.msrpm.pa));
    v.write64(VMCB_CONTROL.TSC_OFFSET, vcpu.arch.tscOffset);
    v.write32(VMCB_CONTROL.INT_CTL, V_INTR_MASKING_MASK);

    const seg = (fld: (typeof SREG_FIELDS)[number], sel: number, attrib: number, base: bigint) =>
      v.writeSeg(fld, sel, attrib, 0xffff, base);
    seg(VMCB_SAVE.ES, 0, 0x93, 0n);
    seg(VMCB_SAVE.SS, 0, 0x93, 0n);
    seg(VMCB_SAVE.DS, 0, 0x93, 0n);
    seg(VMCB_SAVE.FS, 0, 0x93, 0n);
    seg(VMCB_SAVE.GS, 0, 0x93, 0n);
    seg(VMCB_SAVE.CS, 0xf000, 0x9b, 0xffff0000n);
    seg(VMCB_SAVE.LDTR, 0, 0x82, 0n);
    seg(VMCB_SAVE.TR, 0, 0x8b, 0n);
    v.setDt(VMCB_SAVE.GDTR, { size: 0xffff, address: 0n });
    v.setDt(VMCB_SAVE.IDTR, { size: 0xffff, address: 0n });
    v.write8(VMCB_SAVE.CPL, 0);
    this.setEfer(vcpu, 0n);
    vcpu.arch.efer = 0n;
    v.write64(VMCB_SAVE.DR6, 0xffff0ff0n);
    v.write64(VMCB_SAVE.DR7, 0x400n);
    this.setRflags(vcpu, 2n);
    v.write64(VMCB_SAVE.RIP, 0xfff0n);
    vcpu.registerWrite(KvmReg.RIP, 0xfff0n);
    v.write64(VMCB_SAVE.RSP, 0n);
    v.write64(VMCB_SAVE.RAX, 0n);
    // The guest-visible CR0 after RESET is CD|NW|ET (APM Table 14-1).
    this.setCr0(vcpu, X86_CR0_NW | X86_CR0_CD | X86_CR0_ET);
    vcpu.arch.cr0 = X86_CR0_NW | X86_CR0_CD | X86_CR0_ET;
    this.setCr4(vcpu, 0n);
    vcpu.arch.cr4 = 0n;
    v.write64(VMCB_SAVE.CR2, 0n);
    v.write64(VMCB_SAVE.G_PAT, vcpu.arch.pat);
    if (svmModuleParams.npt) {
      // With NPT the guest owns paging: no INVLPG, #PF or CR3 intercepts (init_vmcb).
      v.write64(VMCB_CONTROL.NP_ENABLE, SVM_NESTED_CTL_NP_ENABLE);
      setIntercept1(svm, Intercept1.INVLPG, false);
      setCrIntercept(svm, crReadBit(3), false);
      setCrIntercept(svm, crWriteBit(3), false);
      v.write64(VMCB_SAVE.CR3, 0n);
    }
    vcpu.arch.cr3 = 0n;
    // The guest owns CR0.TS/MP (selective CR0 write intercept) and, with NPT, CR3.
    vcpu.arch.cr0GuestOwnedBits = SVM_CR0_SELECTIVE_MASK;
    vcpu.arch.cr4GuestOwnedBits = 0n;
    svm.asidGeneration = 0;
    svm.sysenterEip = 0n;
    svm.sysenterEsp = 0n;
    v.markAllDirty();
    svm.hw.invalidateCache();
    // EDX holds the processor signature after RESET/INIT (svm_vcpu_reset: CPUID.1.EAX).
    const sig = kvmFindCpuidEntry(vcpu, 1, 0);
    vcpu.registerWrite(KvmReg.RDX, sig ? BigInt(sig.eax) : AMD_RESET_SIGNATURE);
    if (!initEvent) this.pmuOps.reset(vcpu);
    // init_vmcb: AVIC is set up when it may be used.
    if (svmModuleParams.avic && vcpu.kvm.irqchip !== null) this.refreshApicvExecCtrl(vcpu);
  }

  /** svm_prepare_guest_switch: KVM's SVM saves no host state here (VMLOAD/VMSAVE do it at VMRUN). */
  prepareGuestSwitch(_vcpu: KvmVcpu): void {
    return;
  }
  /** svm_vcpu_load: a different physical CPU would need a new ASID and a full reload; also starts the time slice. */
  vcpuLoad(vcpu: KvmVcpu, _cpu: number): void {
    const svm = svmOf(vcpu);
    svm.budgetStart = vcpu.cpu.state.instructionsRetired;
    avicSetRunning(vcpu, true);
  }
  /** svm_vcpu_put: with AVIC, the vCPU stops being a doorbell target. */
  vcpuPut(vcpu: KvmVcpu): void {
    avicSetRunning(vcpu, false);
  }
  /** update_exception_bitmap: #BP/#DB are intercepted only for userspace debugging (KVM_SET_GUEST_DEBUG), which core does not offer yet. */
  updateBpIntercept(vcpu: KvmVcpu): void {
    const svm = svmOf(vcpu);
    setExceptionIntercept(svm, 1, false);
    setExceptionIntercept(svm, 3, false);
  }

  // ---------------------------------------------------------------- msr

  getMsr(vcpu: KvmVcpu, msr: MsrData): number {
    return svmGetMsr(vcpu, msr);
  }
  setMsr(vcpu: KvmVcpu, msr: MsrData): number {
    return svmSetMsr(vcpu, msr);
  }
  getMsrFeature(entry: KvmMsrEntry): number {
    return svmGetMsrFeature(entry);
  }

  // ---------------------------------------------------------------- segments

  getSegmentBase(vcpu: KvmVcpu, seg: VcpuSreg): bigint {
    return svmOf(vcpu).vmcb.segBase(SREG_FIELDS[seg]);
  }

  /** svm_get_segment: unpack the 12-bit attrib; the fix-ups KVM applies for cross-vendor state. */
  getSegment(vcpu: KvmVcpu, out: KvmSegment, seg: VcpuSreg): void {
    const v = svmOf(vcpu).vmcb;
    const fld = SREG_FIELDS[seg];
    const a = v.segAttrib(fld);
    out.base = v.segBase(fld);
    out.limit = v.segLimit(fld);
    out.selector = v.segSelector(fld);
    out.type = a & 0xf;
    out.s = (a >> 4) & 1;
    out.dpl = (a >> 5) & 3;
    out.present = (a >> 7) & 1;
    out.avl = (a >> 8) & 1;
    out.l = (a >> 9) & 1;
    out.db = (a >> 10) & 1;
    // The APM says G is not observed for VMCB segments; synthesize a legal one from the limit.
    out.g = out.limit > 0xfffff ? 1 : 0;
    out.unusable = out.present ? 0 : 1;
    switch (seg) {
      case VcpuSreg.TR:
        // Work around cross-vendor state: a loaded TSS is always busy.
        out.type |= 0x2;
        break;
      case VcpuSreg.DS: case VcpuSreg.ES: case VcpuSreg.FS: case VcpuSreg.GS:
        // The accessed bit is always set in a usable data segment (the processor sets it on load).
        if (!out.unusable) out.type |= 0x1;
        break;
      case VcpuSreg.SS:
        // SS.DPL is the CPL on AMD, whatever the attrib says (the VMCB keeps CPL separately).
        if (out.unusable) out.db = 0;
        out.dpl = v.read8(VMCB_SAVE.CPL) & 3;
        break;
    }
  }

  getCpl(vcpu: KvmVcpu): number {
    return svmOf(vcpu).vmcb.read8(VMCB_SAVE.CPL) & 3;
  }

  setSegment(vcpu: KvmVcpu, value: KvmSegment, seg: VcpuSreg): void {
    const v = svmOf(vcpu).vmcb;
    v.writeSeg(SREG_FIELDS[seg], value.selector, packAttrib(value), value.limit, value.base);
    // SS.DPL is the CPL except after a SYSRET to a non-3 SS, which KVM accepts as well.
    if (seg === VcpuSreg.SS) v.write8(VMCB_SAVE.CPL, value.dpl & 3);
    v.markDirty(VmcbCleanBit.SEG);
  }

  getCsDbLBits(vcpu: KvmVcpu): { db: number; l: number } {
    const a = svmOf(vcpu).vmcb.segAttrib(VMCB_SAVE.CS);
    return { db: (a >> SVM_SELECTOR_DB_SHIFT) & 1, l: (a >> SVM_SELECTOR_L_SHIFT) & 1 };
  }

  // ---------------------------------------------------------------- control registers

  /** svm_set_cr0: long-mode activation by EFER.LME, then CR0 into the VMCB (no forcing under NPT). */
  setCr0(vcpu: KvmVcpu, cr0: bigint): void {
    const svm = svmOf(vcpu);
    const v = svm.vmcb;
    const paging = (vcpu.arch.cr0 & X86_CR0_PG) !== 0n;
    if (vcpu.arch.efer & EFER_LME) {
      if (!paging && (cr0 & X86_CR0_PG)) {
        vcpu.arch.efer |= EFER_LMA;
        v.write64(VMCB_SAVE.EFER, v.read64(VMCB_SAVE.EFER) | EFER_LMA | EFER_LME);
      }
      if (paging && !(cr0 & X86_CR0_PG)) {
        vcpu.arch.efer &= ~EFER_LMA;
        v.write64(VMCB_SAVE.EFER, v.read64(VMCB_SAVE.EFER) & ~(EFER_LMA | EFER_LME));
      }
    }
    vcpu.arch.cr0 = cr0;
    // KVM without NPT forces PG|WP for its shadow page tables; tsvisor has no shadow MMU, and
    // with npt=0 guest-physical resolves straight through the memslots, so the guest's CR0 is used.
    const hcr0 = cr0;
    v.write64(VMCB_SAVE.CR0, hcr0);
    v.markDirty(VmcbCleanBit.CRX);
    // update_cr0_intercept: with the guest's CR0 in the VMCB unchanged, only the selective write intercept remains.
    const same = hcr0 === cr0;
    setCrIntercept(svm, crReadBit(0), !same);
    setCrIntercept(svm, crWriteBit(0), !same);
  }

  /** svm_set_cr4: VMXE does not exist on AMD. */
  setCr4(vcpu: KvmVcpu, cr4: bigint): number {
    if (cr4 & X86_CR4_VMXE) return 1;
    const v = svmOf(vcpu).vmcb;
    v.write64(VMCB_SAVE.CR4, cr4);
    v.markDirty(VmcbCleanBit.CRX);
    return 0;
  }

  /** svm_set_efer: the guest runs with EFER.SVME set in the VMCB whatever it believes (APM 15.5.1). */
  setEfer(vcpu: KvmVcpu, efer: bigint): void {
    const v = svmOf(vcpu).vmcb;
    vcpu.arch.efer = efer;
    v.write64(VMCB_SAVE.EFER, efer | EFER_SVME);
    v.markDirty(VmcbCleanBit.CRX);
  }

  // ---------------------------------------------------------------- descriptor tables

  getIdt(vcpu: KvmVcpu, dt: DescPtr): void {
    svmOf(vcpu).vmcb.getDt(VMCB_SAVE.IDTR, dt);
  }
  setIdt(vcpu: KvmVcpu, dt: DescPtr): void {
    const v = svmOf(vcpu).vmcb;
    v.setDt(VMCB_SAVE.IDTR, dt);
    v.markDirty(VmcbCleanBit.DT);
  }
  getGdt(vcpu: KvmVcpu, dt: DescPtr): void {
    svmOf(vcpu).vmcb.getDt(VMCB_SAVE.GDTR, dt);
  }
  setGdt(vcpu: KvmVcpu, dt: DescPtr): void {
    const v = svmOf(vcpu).vmcb;
    v.setDt(VMCB_SAVE.GDTR, dt);
    v.markDirty(VmcbCleanBit.DT);
  }

  // ---------------------------------------------------------------- debug registers

  /** svm_sync_dirty_debug_regs: take the guest's DR0–3/DR6/DR7 from the processor and the VMCB. */
  syncDirtyDebugRegs(vcpu: KvmVcpu): void {
    const v = svmOf(vcpu).vmcb;
    for (let i = 0; i < 4; i++) vcpu.arch.db[i] = vcpu.cpu.state.dr[i];
    vcpu.arch.dr6 = v.read64(VMCB_SAVE.DR6);
    vcpu.arch.dr7 = v.read64(VMCB_SAVE.DR7);
  }
  setDr7(vcpu: KvmVcpu, value: bigint): void {
    const v = svmOf(vcpu).vmcb;
    v.write64(VMCB_SAVE.DR7, value);
    v.markDirty(VmcbCleanBit.DRX);
  }

  // ---------------------------------------------------------------- register cache

  /** svm_cache_reg: RAX, RSP, RIP and (with NPT) CR3 live in the save area; CR0.TS/MP may have changed. */
  cacheReg(vcpu: KvmVcpu, reg: KvmReg): void {
    const a = vcpu.arch;
    if ((SVM_PROCESSOR_GPRS >> reg) & 1) {
      // A GPR the processor still holds since #VMEXIT.
      const s = vcpu.cpu.state;
      a.regs32[2 * reg] = s.gprLo[reg];
      a.regs32[2 * reg + 1] = s.gprHi[reg];
      a.regsAvail |= 1 << reg;
      return;
    }
    const v = svmOf(vcpu).vmcb;
    switch (reg) {
      case REG_RAX: a.regs32[2 * REG_RAX] = v.words[W_RAX]; a.regs32[2 * REG_RAX + 1] = v.words[W_RAX + 1]; break;
      case REG_RSP: a.regs32[2 * REG_RSP] = v.words[W_RSP]; a.regs32[2 * REG_RSP + 1] = v.words[W_RSP + 1]; break;
      case REG_RIP: a.regs32[2 * REG_RIP] = v.words[W_RIP]; a.regs32[2 * REG_RIP + 1] = v.words[W_RIP + 1]; break;
      case KvmReg.CR3: if (svmModuleParams.npt) a.cr3 = v.read64(VMCB_SAVE.CR3); break;
      case KvmReg.CR0:
        a.cr0 = (a.cr0 & ~a.cr0GuestOwnedBits) | (v.read64(VMCB_SAVE.CR0) & a.cr0GuestOwnedBits);
        break;
      case KvmReg.CR4: case KvmReg.PDPTR:
        // CR4 is fully intercepted; PDPTRs are read from guest memory by the NPT hardware itself.
        break;
      default:
        throw new Error(`svm: cacheReg(${KvmReg[reg] ?? reg}): that register is never lazy on SVM`);
    }
    a.regsAvail |= 1 << reg;
  }

  /** svm_get_rflags: hides the TF/RF that NMI single-stepping added. */
  getRflags(vcpu: KvmVcpu): bigint {
    const svm = svmOf(vcpu);
    let r = svm.vmcb.read64(VMCB_SAVE.RFLAGS);
    if (svm.nmiSinglestep) {
      if (!(svm.nmiSinglestepGuestRflags & X86_EFLAGS_TF)) r &= ~X86_EFLAGS_TF;
      if (!(svm.nmiSinglestepGuestRflags & X86_EFLAGS_RF)) r &= ~X86_EFLAGS_RF;
    }
    return r;
  }
  setRflags(vcpu: KvmVcpu, rflags: bigint): void {
    const svm = svmOf(vcpu);
    // While single-stepping for the NMI window TF/RF stay set (svm_set_rflags).
    svm.vmcb.write64(VMCB_SAVE.RFLAGS, svm.nmiSinglestep ? rflags | X86_EFLAGS_TF | X86_EFLAGS_RF : rflags);
  }

  // ---------------------------------------------------------------- tlb (ASID-tagged, deferred to VMRUN)

  /**
   * svm_flush_tlb: ask for a flush of this ASID at the next VMRUN through TLB_CONTROL
   * (APM 15.16.1), or, without FlushByAsid, give the vCPU a new ASID.
   */
  private svmFlushTlb(vcpu: KvmVcpu): void {
    const svm = svmOf(vcpu);
    if (svmModuleParams.flushByAsid) svm.vmcb.write8(VMCB_CONTROL.TLB_CONTROL, TlbControl.FLUSH_ASID);
    else svm.asidGeneration--;
  }
  tlbFlushAll(vcpu: KvmVcpu): void {
    this.svmFlushTlb(vcpu);
  }
  tlbFlushCurrent(vcpu: KvmVcpu): void {
    this.svmFlushTlb(vcpu);
  }
  /** svm_flush_tlb_gva: INVLPGA in the guest's ASID, which acts at once. */
  tlbFlushGva(vcpu: KvmVcpu, addr: bigint): void {
    vcpu.cpu.flushTlbGva(svmOf(vcpu).vmcb.read32(VMCB_CONTROL.GUEST_ASID), addr);
  }
  tlbFlushGuest(vcpu: KvmVcpu): void {
    this.svmFlushTlb(vcpu);
  }

  // ---------------------------------------------------------------- run

  /** pre_svm_run / new_asid: a fresh ASID when this vCPU's generation is stale. */
  private preSvmRun(svm: VcpuSvm): void {
    const sd = svm.cpuData;
    if (svm.asidGeneration === sd.asidGeneration) return;
    if (sd.nextAsid > sd.maxAsid) {
      sd.asidGeneration++;
      sd.nextAsid = sd.minAsid;
      svm.vmcb.write8(VMCB_CONTROL.TLB_CONTROL, TlbControl.FLUSH_ALL_ASID);
    }
    svm.asidGeneration = sd.asidGeneration;
    svm.vmcb.write32(VMCB_CONTROL.GUEST_ASID, sd.nextAsid++);
    svm.vmcb.markDirty(VmcbCleanBit.ASID);
  }

  /** svm_vcpu_run. */
  run(vcpu: KvmVcpu): ExitFastpathCompletion {
    const svm = svmOf(vcpu);
    const v = svm.vmcb;
    const a = vcpu.arch;
    const cpu = vcpu.cpu;
    if (!this.hostSvmEnabled) throw new Error('svm: VMRUN with EFER.SVME clear on the host (hardwareEnable was not called)');
    // RAX/RSP/RIP live in the save area: a cached copy is either unchanged or dirty.
    const r32 = a.regs32;
    const dirty = a.regsDirty;
    const w = v.words;
    if (dirty & (1 << REG_RAX)) { w[W_RAX] = r32[2 * REG_RAX]; w[W_RAX + 1] = r32[2 * REG_RAX + 1]; }
    if (dirty & (1 << REG_RSP)) { w[W_RSP] = r32[2 * REG_RSP]; w[W_RSP + 1] = r32[2 * REG_RSP + 1]; }
    if (dirty & (1 << REG_RIP)) { w[W_RIP] = r32[2 * REG_RIP]; w[W_RIP + 1] = r32[2 * REG_RIP + 1]; }
    this.preSvmRun(svm);
    v.write64(VMCB_SAVE.CR2, a.cr2);
    // sync_lapic_to_cr8: the guest's TPR rides in V_TPR unless CR8 writes exit (the intercept
    // vector is the backend's: VMRUN and #VMEXIT leave it as it is, so it is read once here).
    const cr8Exits = (v.read32(VMCB_CONTROL.INTERCEPT_CR) >>> CR8_WRITE_BIT) & 1;
    // V_TPR already holding the TPR (the usual case) is left alone: no bigint conversion.
    if (!cr8Exits && a.cr8 !== CR8_VALUES[v.read8(VMCB_CONTROL.V_TPR) & V_TPR_MASK]) {
      v.write8(VMCB_CONTROL.V_TPR, (v.read8(VMCB_CONTROL.V_TPR) & ~V_TPR_MASK) | (a.cr8 < 16n ? Number(a.cr8) : Number(a.cr8 & 0xfn)));
    }
    // __svm_vcpu_run: the GPRs the VMCB does not hold go into the processor around VMRUN. They
    // stay there after #VMEXIT until read (cacheReg), so only the ones written since are copied.
    const s = cpu.state;
    let m = dirty & SVM_PROCESSOR_GPRS;
    while (m) {
      const r = 31 - Math.clz32(m & -m);
      m &= m - 1;
      s.gprLo[r] = r32[2 * r] | 0;
      s.gprHi[r] = r32[2 * r + 1] | 0;
    }
    s.tscAux = svm.tscAux;
    const used = s.instructionsRetired - svm.budgetStart;
    const budget = Math.max(1, vcpu.runBudget - used);
    svm.hw.vmrun(v, budget);
    const failure = svm.hw.failure;
    svm.lastFailure = failure;
    if (!failure) {
      svm.tscAux = s.tscAux;
      // svm_vcpu_run: RAX, RSP and RIP are read back from the save area after every #VMEXIT
      // (every exit handler wants RIP, most want RAX); the other lazy registers stay lazy.
      r32[2 * REG_RAX] = w[W_RAX]; r32[2 * REG_RAX + 1] = w[W_RAX + 1];
      r32[2 * REG_RSP] = w[W_RSP]; r32[2 * REG_RSP + 1] = w[W_RSP + 1];
      r32[2 * REG_RIP] = w[W_RIP]; r32[2 * REG_RIP + 1] = w[W_RIP + 1];
      a.regsAvail = (a.regsAvail & ~(SVM_LAZY_REGS | SVM_PROCESSOR_GPRS)) | SVM_EAGER_REGS;
      a.regsDirty = 0;
      a.cr2 = v.read64(VMCB_SAVE.CR2);
      // sync_cr8_to_lapic
      if (!cr8Exits) {
        const cr8 = CR8_VALUES[v.read8(VMCB_CONTROL.V_TPR) & V_TPR_MASK];
        // kvm_set_cr8 → kvm_lapic_set_tpr: the in-kernel APIC's TPR follows at once.
        if (cr8 !== a.cr8) { a.cr8 = cr8; vcpu.kvm.irqchip?.lapic(vcpu)?.syncCr8(); }
      }
      // A processor bug surfaces as an internal error at handleExit, never as a guest-visible event.
      svm.hostError = cpu.hostError;
      cpu.hostError = null;
      // svm_vcpu_run: the next RIP an exit handler computes is for this exit only.
      svm.nextRip = 0n;
      this.completeInterrupts(vcpu, svm);
    }
    if (v.read8(VMCB_CONTROL.TLB_CONTROL) !== TlbControl.DO_NOTHING) v.write8(VMCB_CONTROL.TLB_CONTROL, TlbControl.DO_NOTHING);
    v.markAllClean();
    return failure || svm.hostError ? FASTPATH_NONE : this.exitHandlersFastpath(vcpu);
  }

  /**
   * svm_exit_handlers_fastpath: exits completed right after #VMEXIT, before the slow path
   * (CPUID and INVD). One that interrupted event delivery (EXITINTINFO valid) takes the slow
   * path, which re-injects the event; so does every exit while a tracepoint is enabled, so that each is traced in
   * order. The exit is counted as handleExit would have counted it.
   */
  exitHandlersFastpath(vcpu: KvmVcpu): ExitFastpathCompletion {
    const w = svmOf(vcpu).vmcb.words;
    if (w[W_EXITCODE + 1] !== 0 || w[W_EXITINTINFO] & SVM_EVTINJ_VALID || vcpu.kvm.traceActive) return FASTPATH_NONE;
    switch (w[W_EXITCODE]) {
      case SvmExit.CPUID:
        vcpu.countExit(CPUID_NAME);
        return FASTPATH_CPUID(vcpu);
      case SvmExit.INVD:
        vcpu.countExit(INVD_NAME);
        return FASTPATH_INVD(vcpu);
      default:
        return FASTPATH_NONE;
    }
  }

  /** svm_complete_interrupts: requeue what EXITINTINFO says was being delivered; notice a finished NMI IRET. */
  private completeInterrupts(vcpu: KvmVcpu, svm: VcpuSvm): void {
    const a = vcpu.arch;
    const v = svm.vmcb;
    if (svm.iretMasked && vcpu.rip !== svm.nmiIretRip) {
      svm.nmiMasked = false;
      svm.iretMasked = false;
      vcpu.makeRequest(KvmReq.EVENT);
    }
    a.nmiInjected = false;
    const softIntInjected = svm.softIntInjected;
    svm.softIntInjected = false;
    // kvm_clear_exception_queue + kvm_clear_interrupt_queue.
    a.exception.pending = false;
    a.exception.injected = false;
    a.interrupt.injected = false;
    const lo = v.words[W_EXITINTINFO] >>> 0;
    if (!(lo & SVM_EVTINJ_VALID)) return;
    const info = v.read64(VMCB_CONTROL.EXITINTINFO);
    vcpu.makeRequest(KvmReq.EVENT);
    const vector = lo & 0xff;
    const type = (lo & SVM_EVTINJ_TYPE_MASK) >>> SVM_EVTINJ_TYPE_SHIFT;
    if (softIntInjected) this.completeSoftInterrupt(vcpu, svm, vector, type);
    switch (type) {
      case SvmEventType.NMI:
        a.nmiInjected = true;
        break;
      case SvmEventType.EXEPT:
        // #BP/#OF from INT3/INTO too: the exit saved RIP at the instruction (APM 15.7.2), and
        // queueException re-injects it with NRIP past it (KVM re-injects, never re-executes).
        kvmRequeueException(vcpu, vector, (lo & SVM_EVTINJ_VALID_ERR) !== 0, Number(info >> 32n) >>> 0);
        break;
      case SvmEventType.INTR:
        kvmQueueInterrupt(vcpu, vector, false);
        break;
      case SvmEventType.SOFT:
        kvmQueueInterrupt(vcpu, vector, true);
        break;
    }
  }

  /**
   * svm_complete_soft_interrupt: a software event KVM injected did not complete. NRIP is
   * cleared on every exit that can interrupt vectoring, so put back the next RIP it was
   * injected with (RIP is still the instruction's); without NRIP save, undo KVM's own skip.
   */
  private completeSoftInterrupt(vcpu: KvmVcpu, svm: VcpuSvm, vector: number, type: number): void {
    const isException = type === SvmEventType.EXEPT;
    const isSoft = type === SvmEventType.SOFT;
    const linearRip = this.linearRip(vcpu, svm);
    if (svmModuleParams.nrips && (isSoft || (isException && (vector === 3 || vector === 4))) &&
      linearRip === BigInt.asUintN(64, svm.softIntOldRip + svm.softIntCsbase)) {
      svm.vmcb.write64(VMCB_CONTROL.NRIP, svm.softIntNextRip);
    } else if (!svmModuleParams.nrips && (isSoft || isException) &&
      linearRip === BigInt.asUintN(64, svm.softIntNextRip + svm.softIntCsbase)) {
      vcpu.registerWrite(REG_RIP, svm.softIntOldRip);
    }
  }

  /** kvm_get_linear_rip: CS base + RIP (truncated to 32 bits outside 64-bit mode). */
  private linearRip(vcpu: KvmVcpu, svm: VcpuSvm): bigint {
    const rip = vcpu.registerRead(REG_RIP);
    const v = svm.vmcb;
    if (vcpu.arch.efer & EFER_LMA && (v.segAttrib(VMCB_SAVE.CS) >>> SVM_SELECTOR_L_SHIFT) & 1) return rip;
    return BigInt.asUintN(32, v.segBase(VMCB_SAVE.CS) + rip);
  }

  /**
   * svm_update_soft_interrupt_rip: find the end of the INT n / INT3 / INTO being injected (the
   * exit's NRIP, a handler's next RIP, else decode it; KVM's EMULTYPE_SKIP without side effects)
   * and give it to the processor as NRIP, the return address VMRUN pushes for an injected
   * software interrupt or #BP/#OF (APM 15.20, 15.7.1). RIP stays at the instruction. Returns
   * false, dropping the event as KVM does, when the instruction cannot be decoded.
   */
  private updateSoftInterruptRip(vcpu: KvmVcpu, svm: VcpuSvm): boolean {
    const v = svm.vmcb;
    const oldRip = vcpu.registerRead(REG_RIP);
    let next: bigint;
    if (svmModuleParams.nrips && (v.readLo(VMCB_CONTROL.NRIP) | v.readHi(VMCB_CONTROL.NRIP)) !== 0) next = v.read64(VMCB_CONTROL.NRIP);
    else if (svm.nextRip !== 0n) next = svm.nextRip;
    else {
      const len = kvmEmulatedInsnLength(vcpu);
      if (len === 0) return false;
      next = BigInt.asUintN(64, oldRip + BigInt(len));
    }
    svm.softIntInjected = true;
    svm.softIntCsbase = v.segBase(VMCB_SAVE.CS);
    svm.softIntOldRip = oldRip;
    svm.softIntNextRip = next;
    if (!svmModuleParams.nrips) {
      // Without NRIP save KVM commits the skip; the processor then pushes RIP itself.
      vcpu.registerWrite(REG_RIP, next);
      this.setInterruptShadow(vcpu, 0);
    }
    // The emulated processor always saves and uses NRIP (static_cpu_has(X86_FEATURE_NRIPS)).
    v.write64(VMCB_CONTROL.NRIP, next);
    return true;
  }

  handleExit(vcpu: KvmVcpu, fastpath: ExitFastpathCompletion): number {
    return svmHandleExit(vcpu, fastpath);
  }

  /** svm_skip_emulated_instruction: nRIP (decode assists) or the recorded next RIP; clears the interrupt shadow. */
  skipEmulatedInstruction(vcpu: KvmVcpu): number {
    const svm = svmOf(vcpu);
    const v = svm.vmcb;
    const lo = v.words[W_NRIP], hi = v.words[W_NRIP + 1];
    if (svmModuleParams.nrips && (lo | hi) !== 0) {
      // nRIP as 32-bit halves; the bigint (svm->next_rip) comes from the VMCB's value cache.
      svm.nextRip = v.read64(VMCB_CONTROL.NRIP);
      vcpu.registerWriteHalves(REG_RIP, lo, hi);
    } else if (svm.nextRip === 0n) {
      internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_EMULATION, 'svm: cannot skip the instruction: no nRIP was saved for this exit');
      return 0;
    } else vcpu.registerWrite(REG_RIP, svm.nextRip);
    // svm_set_interrupt_shadow(vcpu, 0)
    const w = v.words;
    w[W_INTERRUPT_SHADOW] &= ~SVM_INTERRUPT_SHADOW_MASK;
    return 1;
  }

  setInterruptShadow(vcpu: KvmVcpu, mask: number): void {
    const w = svmOf(vcpu).vmcb.words;
    const lo = w[W_INTERRUPT_SHADOW];
    w[W_INTERRUPT_SHADOW] = mask ? lo | SVM_INTERRUPT_SHADOW_MASK : lo & ~SVM_INTERRUPT_SHADOW_MASK;
  }
  getInterruptShadow(vcpu: KvmVcpu): number {
    const v = svmOf(vcpu).vmcb;
    return v.read64(VMCB_CONTROL.INTERRUPT_SHADOW) & BigInt(SVM_INTERRUPT_SHADOW_MASK)
      ? KVM_X86_SHADOW_INT_STI | KVM_X86_SHADOW_INT_MOV_SS : 0;
  }
  patchHypercall(vcpu: KvmVcpu, hypercallAddr: Uint8Array): void {
    svmPatchHypercall(vcpu, hypercallAddr);
  }

  // ---------------------------------------------------------------- events (EVENTINJ, V_IRQ + VINTR)

  /** svm_inject_irq: EVENTINJ type INTR, or type SOFT (4) for a software interrupt being re-injected (APM 15.20). */
  setIrq(vcpu: KvmVcpu): void {
    const svm = svmOf(vcpu);
    const intr = vcpu.arch.interrupt;
    let type = SvmEventType.INTR;
    if (intr.soft) {
      if (!this.updateSoftInterruptRip(vcpu, svm)) return;
      type = SvmEventType.SOFT;
    }
    const nr = intr.nr & 0xff;
    svm.vmcb.write64(VMCB_CONTROL.EVENTINJ, BigInt((nr | SVM_EVTINJ_VALID | (type << SVM_EVTINJ_TYPE_SHIFT)) >>> 0));
  }

  /** svm_inject_nmi: EVENTINJ type NMI; NMIs stay masked until the guest's IRET, which is intercepted. */
  setNmi(vcpu: KvmVcpu): void {
    const svm = svmOf(vcpu);
    svm.vmcb.write64(VMCB_CONTROL.EVENTINJ, BigInt((SVM_EVTINJ_VALID | (SvmEventType.NMI << SVM_EVTINJ_TYPE_SHIFT)) >>> 0));
    svm.nmiMasked = true;
    svmSetInterceptBit(svm, 'MISC1', Intercept1.IRET, true);
  }

  /** svm_queue_exception: deliver the payload (#PF CR2, #DB DR6), then EVENTINJ type exception. */
  queueException(vcpu: KvmVcpu): void {
    const svm = svmOf(vcpu);
    const ex = vcpu.arch.exception;
    if (ex.hasPayload) {
      if (ex.nr === 14) vcpu.arch.cr2 = ex.payload;
      else if (ex.nr === 1) vcpu.arch.dr6 = (vcpu.arch.dr6 & ~0x4000fn) | ex.payload;
      ex.hasPayload = false;
    }
    // kvm_exception_is_soft: #BP and #OF come from INT3/INTO; VMRUN pushes NRIP for them.
    if ((ex.nr === 3 || ex.nr === 4) && !this.updateSoftInterruptRip(vcpu, svm)) return;
    let lo = (ex.nr & 0xff) | SVM_EVTINJ_VALID | (SvmEventType.EXEPT << SVM_EVTINJ_TYPE_SHIFT);
    if (ex.hasErrorCode) lo |= SVM_EVTINJ_VALID_ERR;
    svm.vmcb.write64(VMCB_CONTROL.EVENTINJ, (BigInt(ex.hasErrorCode ? ex.errorCode >>> 0 : 0) << 32n) | BigInt(lo >>> 0));
  }

  /** svm_cancel_injection: move EVENTINJ back into EXITINTINFO and requeue it. */
  cancelInjection(vcpu: KvmVcpu): void {
    const svm = svmOf(vcpu);
    const v = svm.vmcb;
    v.write64(VMCB_CONTROL.EXITINTINFO, v.read64(VMCB_CONTROL.EVENTINJ));
    v.write64(VMCB_CONTROL.EVENTINJ, 0n);
    this.completeInterrupts(vcpu, svm);
  }

  /** svm_interrupt_allowed: RFLAGS.IF set and no interrupt shadow (GIF is always set without nested SVM). */
  interruptAllowed(vcpu: KvmVcpu, _forInjection: boolean): number {
    const v = svmOf(vcpu).vmcb;
    if (!(v.read64(VMCB_SAVE.RFLAGS) & X86_EFLAGS_IF)) return 0;
    if (v.read64(VMCB_CONTROL.INTERRUPT_SHADOW) & BigInt(SVM_INTERRUPT_SHADOW_MASK)) return 0;
    return 1;
  }
  nmiAllowed(vcpu: KvmVcpu, _forInjection: boolean): number {
    const svm = svmOf(vcpu);
    if (svm.nmiMasked) return 0;
    if (svm.vmcb.read64(VMCB_CONTROL.INTERRUPT_SHADOW) & BigInt(SVM_INTERRUPT_SHADOW_MASK)) return 0;
    return 1;
  }
  getNmiMask(vcpu: KvmVcpu): boolean {
    return svmOf(vcpu).nmiMasked;
  }
  setNmiMask(vcpu: KvmVcpu, masked: boolean): void {
    const svm = svmOf(vcpu);
    svm.nmiMasked = masked;
    svmSetInterceptBit(svm, 'MISC1', Intercept1.IRET, masked);
  }
  /**
   * svm_enable_nmi_window: without vNMI, the IRET intercept set by setNmi is the window; once it
   * has fired (iretMasked) the NMI opens at the next exit after the IRET retires.
   */
  enableNmiWindow(vcpu: KvmVcpu): void {
    const svm = svmOf(vcpu);
    // The IRET intercept set by setNmi will tell us when the handler returns.
    if (svm.nmiMasked && !svm.iretMasked) return;
    if (!svm.nmiMasked) return;
    // The IRET intercept fired but the IRET has not executed: single-step over it (RFLAGS.TF
    // with #DB intercepted) so the exit right after it opens the NMI window, as KVM does
    // without vNMI.
    svm.nmiSinglestepGuestRflags = this.getRflags(vcpu);
    svm.nmiSinglestep = true;
    const v = svm.vmcb;
    v.write64(VMCB_SAVE.RFLAGS, v.read64(VMCB_SAVE.RFLAGS) | X86_EFLAGS_TF | X86_EFLAGS_RF);
    setExceptionIntercept(svm, 1, true);
  }
  /** svm_enable_irq_window: V_IRQ + VINTR intercept (APM 15.21.4). */
  enableIrqWindow(vcpu: KvmVcpu): void {
    svmSetVintr(svmOf(vcpu));
  }
  /** update_cr8_intercept: intercept CR8 writes only while the TPR masks the highest pending IRQ. */
  updateCr8Intercept(vcpu: KvmVcpu, tpr: number, irr: number): void {
    const svm = svmOf(vcpu);
    // update_cr8_intercept: with AVIC the TPR lives in the backing page and CR8 writes never exit.
    if (avicActive(vcpu)) return;
    setCrIntercept(svm, crWriteBit(8), false);
    if (irr === -1) return;
    if (tpr >= irr) setCrIntercept(svm, crWriteBit(8), true);
  }

  // ---------------------------------------------------------------- apicv (AVIC)

  /** svm_check_apicv_inhibit_reasons: AVIC honours more inhibits than APICv (IRQ window, PIT reinjection, nested). */
  checkApicvInhibitReasons(bit: number): boolean {
    const supported = (1 << ApicvInhibitReason.DISABLE) | (1 << ApicvInhibitReason.HYPERV) | (1 << ApicvInhibitReason.NESTED) |
      (1 << ApicvInhibitReason.IRQWIN) | (1 << ApicvInhibitReason.PIT_REINJ);
    return bit >= 0 && bit < 31 && ((supported >>> bit) & 1) === 1;
  }
  /**
   * svm_refresh_apicv_exec_ctrl: AVIC_ENABLE follows whether AVIC may run for this vCPU (module
   * parameter, in-kernel LAPIC, no inhibit); turning it on programs the backing page and tables.
   */
  refreshApicvExecCtrl(vcpu: KvmVcpu): void {
    const svm = svmOf(vcpu);
    const v = svm.vmcb;
    const on = svmModuleParams.avic && vcpu.kvm.irqchip !== null && this.apicvInhibits === 0;
    const ctl = v.read32(VMCB_CONTROL.INT_CTL);
    if (on) avicInitVcpu(vcpu, svm);
    v.write32(VMCB_CONTROL.INT_CTL, on ? ctl | AVIC_ENABLE_MASK : ctl & ~AVIC_ENABLE_MASK);
    // init_vmcb: CR8 writes are intercepted only without AVIC (the hardware keeps TPR in the backing page).
    setCrIntercept(svm, crWriteBit(8), !on);
    v.markDirty(VmcbCleanBit.AVIC);
    avicSetRunning(vcpu, on);
  }
  /** Inhibit reasons currently set for this VM (kvm->arch.apicv_inhibit_reasons), for refreshApicvExecCtrl. */
  apicvInhibits = 0;
  /** svm_pre_update_apicv_exec_ctrl: record the VM-wide decision before each vCPU refreshes. */
  preUpdateApicvExecCtrl(_kvm: Kvm, activate: boolean): void {
    this.apicvInhibits = activate ? 0 : this.apicvInhibits | (1 << ApicvInhibitReason.DISABLE);
  }
  /** svm_deliver_avic_intr: IRR in the backing page plus the doorbell; -1 when AVIC is inactive (core then injects through EVENTINJ). */
  deliverPostedInterrupt(vcpu: KvmVcpu, vector: number): number {
    return avicDeliverInterrupt(vcpu, vector);
  }
  /** avic_vcpu_blocking: a blocked vCPU is not running; senders must wake it instead of ringing the doorbell. */
  vcpuBlocking(vcpu: KvmVcpu): void {
    avicSetRunning(vcpu, false);
  }
  vcpuUnblocking(vcpu: KvmVcpu): void {
    avicSetRunning(vcpu, true);
  }
  hwapicIrrUpdate(_vcpu: KvmVcpu, _maxIrr: number): void {
    return;
  }
  hwapicIsrUpdate(_vcpu: KvmVcpu, _isr: number): void {
    return;
  }
  loadEoiExitmap(_vcpu: KvmVcpu, _eoiExitBitmap: readonly bigint[]): void {
    return;
  }
  setVirtualApicMode(_vcpu: KvmVcpu): void {
    return;
  }
  updatePiIrte(_kvm: Kvm, _hostIrq: number, _guestIrq: number, _set: boolean): number {
    // No assigned devices and no IOMMU posting: nothing to program (svm_update_pi_irte returns 0).
    return 0;
  }
  apicvPostStateRestore(vcpu: KvmVcpu): void {
    this.refreshApicvExecCtrl(vcpu);
  }

  // ---------------------------------------------------------------- vm-wide helpers and mmu

  setTssAddr(_kvm: Kvm, _addr: number): number {
    return 0;
  }
  setIdentityMapAddr(_kvm: Kvm, _identAddr: bigint): number {
    return 0;
  }
  /** get_npt_level: 4-level nested tables. */
  getTdpLevel(_vcpu: KvmVcpu): number {
    return 4;
  }
  /** svm_get_mt_mask: NPT entries carry no memory type; the guest's PAT (G_PAT) and MTRRs decide. */
  getMtMask(_vcpu: KvmVcpu | null, _gfn: bigint, _isMmio: boolean): bigint {
    return 0n;
  }
  /** svm_load_mmu_pgd: N_CR3 = the TDP root; the guest's CR3 goes into the save area. */
  loadMmuPgd(vcpu: KvmVcpu, root: bigint): void {
    const v = svmOf(vcpu).vmcb;
    if (svmModuleParams.npt) {
      v.write64(VMCB_CONTROL.N_CR3, root);
      v.markDirty(VmcbCleanBit.NP);
      v.write64(VMCB_SAVE.CR3, vcpu.readCr3());
    } else {
      v.write64(VMCB_SAVE.CR3, vcpu.readCr3());
    }
    v.markDirty(VmcbCleanBit.CRX);
  }
  hasWbinvdExit(): boolean {
    return true;
  }
  /** svm_write_l1_tsc_offset. */
  writeL1TscOffset(vcpu: KvmVcpu, offset: bigint): bigint {
    const v = svmOf(vcpu).vmcb;
    v.write64(VMCB_CONTROL.TSC_OFFSET, offset);
    v.markDirty(VmcbCleanBit.I);
    return offset;
  }
  getExitInfo(vcpu: KvmVcpu): { info1: bigint; info2: bigint } {
    const v = svmOf(vcpu).vmcb;
    return { info1: v.read64(VMCB_CONTROL.EXITINFO1), info2: v.read64(VMCB_CONTROL.EXITINFO2) };
  }
  /** svm_check_intercept: only a nested guest's intercepts apply to emulated instructions; none here. */
  checkIntercept(_vcpu: KvmVcpu, _info: X86InstructionInfo, _stage: X86InterceptStage, _exception: X86Exception): number {
    return X86Emul.CONTINUE;
  }
  handleExitIrqoff(_vcpu: KvmVcpu): void {
    return;
  }
  /** A reschedule IPI to the vCPU's processor: it stops at the next instruction boundary with an INTR exit. */
  requestImmediateExit(vcpu: KvmVcpu): void {
    vcpu.cpu.kick = true;
  }
  /** svm_sched_in: the PAUSE filter count is restored to its default when the vCPU is scheduled in. */
  schedIn(vcpu: KvmVcpu, _cpu: number): void {
    if (svmModuleParams.pauseFilterCount) {
      const v = svmOf(vcpu).vmcb;
      v.write16(VMCB_CONTROL.PAUSE_FILTER_COUNT, svmModuleParams.pauseFilterCount);
      v.markDirty(VmcbCleanBit.I);
    }
  }

  // ---------------------------------------------------------------- mce, smm, sev, misc

  setupMce(_vcpu: KvmVcpu): void {
    // svm_setup_mce masks MCG_CAP to what AMD offers (no LMCE); core's MCG_CAP never advertises LMCE.
    return;
  }
  /** svm_smi_allowed: GIF is always set without nested SVM; no interrupt shadow check for SMIs. */
  smiAllowed(_vcpu: KvmVcpu, _forInjection: boolean): number {
    return 1;
  }
  preEnterSmm(_vcpu: KvmVcpu, _smstate: Uint8Array): number {
    return 0;
  }
  preLeaveSmm(_vcpu: KvmVcpu, _smstate: Uint8Array): number {
    return 0;
  }
  /** svm_enable_smi_window: with GIF set an SMI is never held off, so there is no window to open. */
  enableSmiWindow(_vcpu: KvmVcpu): void {
    return;
  }
  /** svm_mem_enc_op: SEV is not available → -ENOTTY, as KVM answers without SEV. */
  memEncOp(_kvm: Kvm, _argp: unknown): number {
    return -ENOTTY;
  }
  memEncRegRegion(_kvm: Kvm, _region: KvmEncRegion): number {
    return -ENOTTY;
  }
  memEncUnregRegion(_kvm: Kvm, _region: KvmEncRegion): number {
    return -ENOTTY;
  }
  /** svm_need_emulation_on_page_fault: only SEV guests (unreadable memory) cannot be emulated. */
  needEmulationOnPageFault(_vcpu: KvmVcpu): boolean {
    return true;
  }
  /** svm_apic_init_signal_blocked: INIT is blocked when GIF is clear or INIT is intercepted. */
  apicInitSignalBlocked(vcpu: KvmVcpu): boolean {
    return svmTestInterceptBit(svmOf(vcpu), 'MISC1', Intercept1.INIT);
  }
}

