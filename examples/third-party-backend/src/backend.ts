/**
 * XcbBackend: every required kvm_x86_ops hook of @tsvisor/core, against the XCB control block
 * (xcb.ts) and the emulated XCB hardware (hardware.ts). Written only against the public
 * exports of @tsvisor/core. It is simple on purpose — no APIC virtualization, no nested
 * virtualization, no PML, no hypervisor timer — so the optional hooks are left out and core
 * does without them (write-protection dirty logging, software LAPIC timer).
 */
import {
  backend, DescPtr, EventType, ExitFastpathCompletion, Kvm, KvmExitReason, KvmInternalError, KvmMsrEntry,
  KvmPmuOps, KvmReg, KvmReq, KvmSegment, KvmVcpu, KvmX86NestedOps, MSR, MsrData, PFERR_FETCH_MASK, PFERR_WRITE_MASK,
  VcpuSreg, X86Emul, X86Exception, X86InstructionInfo, X86InterceptStage, X86Ops, X86Vector, EFER_LMA, EFER_LME,
  internalError, kvmClearExceptionQueue, kvmClearInterruptQueue, kvmEmulateCpuid, kvmEmulateHalt,
  kvmEmulateHypercall, kvmEmulateInstruction, kvmEmulateRdmsr, kvmEmulateWrmsr, kvmFastPio, kvmFindCpuidEntry,
  kvmGetMsrCommon, kvmMmuPageFault, kvmQueueException, kvmQueueInterrupt, kvmRequeueException, kvmSetMsrCommon,
  patValid,
} from '@tsvisor/core';
import {
  Xcb, XCB, XCB_EXIT_NAMES, XCB_GUEST, XCB_INJECT_ERROR_VALID, XCB_INJECT_VALID, XCB_INTR_MOV_SS, XCB_INTR_NMI,
  XCB_INTR_STI, XcbEntryFailure, XcbExit, XcbIntercept,
} from './xcb';
import { XcbHardware } from './hardware';
import { XPT_FORMAT } from './xpt';

/** KVM_X86_SHADOW_INT_* as core passes them. */
const SHADOW_INT_MOV_SS = 1;
const SHADOW_INT_STI = 2;
const EFLAGS_IF = 1n << 9n;
const CR0_PG = 1n << 31n;
const CR4_VMXE = 1n << 13n;
/** Registers the XCB holds after an exit; read lazily through cacheReg. */
const LAZY = (1 << KvmReg.RAX) | (1 << KvmReg.RSP) | (1 << KvmReg.RIP) | (1 << KvmReg.CR0) | (1 << KvmReg.CR3) | (1 << KvmReg.CR4);
/** VMCALL: this backend's hypercall instruction. */
export const XCB_HYPERCALL_BYTES = Uint8Array.of(0x0f, 0x01, 0xc1);

/** Per-vCPU state (struct vcpu_xcb): the XCB, the hardware unit, and what the hooks remember. */
export class VcpuXcb {
  budgetStart = 0;
  lastFailure = XcbEntryFailure.NONE;
  hostError: Error | null = null;
  readonly hw: XcbHardware;
  constructor(readonly vcpu: KvmVcpu, readonly xcb: Xcb) {
    this.hw = new XcbHardware(vcpu.cpu, vcpu.kvm.hostMemory);
  }
}

export function xcbOf(vcpu: KvmVcpu): VcpuXcb {
  const v = vcpu.vendor;
  if (!(v instanceof VcpuXcb)) throw new Error(`xcb: vcpu ${vcpu.vcpuId} has no XCB (vcpuCreate did not run)`);
  return v;
}

/** No PMU is offered: CPUID leaf 0xA says version 0, every PMU MSR is refused. */
const noPmu: KvmPmuOps = {
  pmcIsEnabled: () => false,
  pmcIdxToPmc: () => null,
  rdpmcEcxToPmc: () => null,
  msrIdxToPmc: () => null,
  isValidRdpmcEcx: () => false,
  isValidMsr: () => false,
  getMsr: () => 1,
  setMsr: () => 1,
  refresh: () => undefined,
  init: () => undefined,
  reset: () => undefined,
};

type Handler = (vcpu: KvmVcpu, x: Xcb) => number;

/** The exit handlers, indexed by XcbExit (like KVM's tables indexed by exit reason). */
const XCB_EXIT_HANDLERS: ReadonlyMap<XcbExit, Handler> = new Map<XcbExit, Handler>([
  [XcbExit.EXCEPTION, (vcpu, x) => {
    const q = x.r64(XCB.EXIT_QUAL);
    if (q & (1n << 8n)) kvmQueueException(vcpu, Number(q & 0xffn), Number(q >> 32n));
    else kvmQueueException(vcpu, Number(q & 0xffn));
    return 1;
  }],
  [XcbExit.TIMESLICE, () => 1],
  [XcbExit.IRQ_WINDOW, (vcpu, x) => {
    x.w32(XCB.WINDOWS, x.r32(XCB.WINDOWS) & ~1);
    vcpu.makeRequest(KvmReq.EVENT);
    return 1;
  }],
  [XcbExit.NMI_WINDOW, (vcpu, x) => {
    x.w32(XCB.WINDOWS, x.r32(XCB.WINDOWS) & ~2);
    vcpu.makeRequest(KvmReq.EVENT);
    return 1;
  }],
  [XcbExit.CPUID, (vcpu) => kvmEmulateCpuid(vcpu)],
  [XcbExit.HLT, (vcpu) => kvmEmulateHalt(vcpu)],
  [XcbExit.IO, (vcpu, x) => {
    const q = Number(x.r64(XCB.EXIT_QUAL));
    if (q & 6) return kvmEmulateInstruction(vcpu); // string or REP: core's emulator
    return kvmFastPio(vcpu, (q >>> 4) & 0xf, q >>> 16, (q & 8) !== 0);
  }],
  [XcbExit.RDMSR, (vcpu) => kvmEmulateRdmsr(vcpu)],
  [XcbExit.WRMSR, (vcpu) => kvmEmulateWrmsr(vcpu)],
  [XcbExit.HYPERCALL, (vcpu) => kvmEmulateHypercall(vcpu)],
  [XcbExit.TDP_FAULT, (vcpu, x) => {
    const q = x.r64(XCB.EXIT_QUAL);
    const ec = (q & 2n ? PFERR_WRITE_MASK : 0) | (q & 4n ? PFERR_FETCH_MASK : 0);
    return kvmMmuPageFault(vcpu, x.r64(XCB.EXIT_GPA), ec, (q & (1n << 8n)) !== 0n);
  }],
  [XcbExit.SHUTDOWN, (vcpu) => {
    vcpu.run.exitReason = KvmExitReason.KVM_EXIT_SHUTDOWN;
    return 0;
  }],
  [XcbExit.PRIVILEGED, (vcpu) => {
    kvmQueueException(vcpu, X86Vector.UD);
    return 1;
  }],
]);

@backend({
  name: 'xcb',
  vendor: 'intel',
  description: 'example third-party backend: kvm_x86_ops against XCB, a control block of its own design',
  packageName: 'tsvisor-backend-example',
})
export class XcbBackend implements X86Ops {
  readonly vmSize = 0;
  readonly pmuOps: KvmPmuOps = noPmu;
  readonly nestedOps: KvmX86NestedOps = {
    enabled: false,
    checkEvents: () => 0,
    getState: () => ({ format: 0, flags: 0, size: 0, data: new Uint8Array(0) }),
    setState: (_vcpu, s) => (s.flags === 0 && s.size === 0 ? 0 : -22),
    getVmcs12Pages: () => true,
  };
  private enabled = false;

  // ------------------------------------------------------------ hardware and VM

  hardwareEnable(): number { this.enabled = true; return 0; }
  hardwareDisable(): void { this.enabled = false; }
  hardwareUnsetup(): void { this.enabled = false; }
  cpuHasAcceleratedTpr(): boolean { return false; }
  /** No VMX capability MSRs: nested virtualization is not offered. */
  hasEmulatedMsr(index: number): boolean { return !(index >= 0x480 && index <= 0x491); }
  cpuidUpdate(_vcpu: KvmVcpu): void { return; }
  vmInit(kvm: Kvm): number {
    kvm.enableTdp(XPT_FORMAT);
    return 0;
  }

  // ------------------------------------------------------------ vCPU lifecycle

  vcpuCreate(vcpu: KvmVcpu): number {
    vcpu.vendor = new VcpuXcb(vcpu, Xcb.alloc(vcpu.kvm.hostMemory, `xcb vcpu${vcpu.vcpuId}`));
    return 0;
  }
  vcpuFree(vcpu: KvmVcpu): void {
    vcpu.kvm.hostMemory.unmap(xcbOf(vcpu).xcb.pa);
    vcpu.vendor = null;
  }
  /** RESET state (SDM Table 9-1): real mode at F000:FFF0. */
  vcpuReset(vcpu: KvmVcpu, _initEvent: boolean): void {
    const x = xcbOf(vcpu).xcb;
    x.clear();
    x.w32(XCB.INTERCEPTS, XcbIntercept.CPUID | XcbIntercept.HLT | XcbIntercept.IO | XcbIntercept.MSR |
      XcbIntercept.HYPERCALL | XcbIntercept.SHUTDOWN | XcbIntercept.PRIVILEGED);
    x.w32(XCB.TLB_TAG, vcpu.vcpuId + 1);
    x.w32(XCB.TLB_FLUSH, 1);
    x.w64(XCB.TDP_ROOT, BigInt(vcpu.kvm.mmu?.root ?? 0));
    x.w64(XCB.TSC_OFFSET, vcpu.arch.tscOffset);
    const seg = (i: number, selector: number, base: bigint, type: number, s: number) =>
      x.setSeg(i, { selector, base, limit: 0xffff, type, s, present: 1, dpl: 0, db: 0, l: 0, g: 0, avl: 0, unusable: 0 });
    for (const i of [VcpuSreg.ES, VcpuSreg.SS, VcpuSreg.DS, VcpuSreg.FS, VcpuSreg.GS]) seg(i, 0, 0n, 3, 1);
    seg(VcpuSreg.CS, 0xf000, 0xffff0000n, 0xb, 1);
    seg(VcpuSreg.LDTR, 0, 0n, 2, 0);
    seg(VcpuSreg.TR, 0, 0n, 0xb, 0);
    x.w32(XCB_GUEST.GDTR_LIMIT, 0xffff);
    x.w32(XCB_GUEST.IDTR_LIMIT, 0xffff);
    x.w64(XCB_GUEST.RFLAGS, 2n);
    x.w64(XCB_GUEST.RIP, 0xfff0n);
    x.w64(XCB_GUEST.DR6, 0xffff0ff0n);
    x.w64(XCB_GUEST.DR7, 0x400n);
    x.w64(XCB_GUEST.PAT, vcpu.arch.pat);
    const a = vcpu.arch;
    this.setCr0(vcpu, 0x60000010n);
    this.setCr4(vcpu, 0n);
    this.setEfer(vcpu, 0n);
    a.cr3 = 0n;
    // The guest owns CR0 and CR4 entirely (nothing about them exits): reads go through cacheReg.
    a.cr0GuestOwnedBits = 0xffff_ffffn;
    a.cr4GuestOwnedBits = 0xffff_ffffn;
    vcpu.registerWrite(KvmReg.RIP, 0xfff0n);
    const sig = kvmFindCpuidEntry(vcpu, 1, 0);
    vcpu.registerWrite(KvmReg.RDX, sig ? BigInt(sig.eax) : 0x600n);
  }
  prepareGuestSwitch(_vcpu: KvmVcpu): void { return; }
  vcpuLoad(vcpu: KvmVcpu, _cpu: number): void { xcbOf(vcpu).budgetStart = vcpu.cpu.state.instructionsRetired; }
  vcpuPut(_vcpu: KvmVcpu): void { return; }
  /** No userspace guest debugging: #DB and #BP always go to the guest. */
  updateBpIntercept(vcpu: KvmVcpu): void {
    const x = xcbOf(vcpu).xcb;
    x.w32(XCB.EXCEPTION_BITMAP, x.r32(XCB.EXCEPTION_BITMAP) & ~((1 << 1) | (1 << 3)));
  }
  schedIn(_vcpu: KvmVcpu, _cpu: number): void { return; }

  // ------------------------------------------------------------ MSRs

  getMsr(vcpu: KvmVcpu, msr: MsrData): number {
    const x = xcbOf(vcpu).xcb;
    const field = MSR_FIELDS.get(msr.index);
    if (field !== undefined) { msr.data = x.r64(field); return 0; }
    switch (msr.index) {
      case MSR.FS_BASE: msr.data = x.segBase(VcpuSreg.FS); return 0;
      case MSR.GS_BASE: msr.data = x.segBase(VcpuSreg.GS); return 0;
      default: return kvmGetMsrCommon(vcpu, msr);
    }
  }
  setMsr(vcpu: KvmVcpu, msr: MsrData): number {
    const x = xcbOf(vcpu).xcb;
    const d = msr.data;
    if (msr.index === MSR.IA32_CR_PAT) {
      if (!patValid(d)) return 1;
      vcpu.arch.pat = d;
    }
    const field = MSR_FIELDS.get(msr.index);
    if (field !== undefined) {
      x.w64(field, msr.index === MSR.IA32_SYSENTER_CS ? d & 0xffffn : d);
      return 0;
    }
    switch (msr.index) {
      case MSR.FS_BASE: x.setSegBase(VcpuSreg.FS, d); return 0;
      case MSR.GS_BASE: x.setSegBase(VcpuSreg.GS, d); return 0;
      default: return kvmSetMsrCommon(vcpu, msr);
    }
  }
  /** No feature MSRs (VMX capabilities, ARCH_CAPABILITIES) are offered. */
  getMsrFeature(_entry: KvmMsrEntry): number { return 1; }
  setupMce(_vcpu: KvmVcpu): void { return; }

  // ------------------------------------------------------------ segments and descriptor tables

  getSegmentBase(vcpu: KvmVcpu, seg: VcpuSreg): bigint { return xcbOf(vcpu).xcb.segBase(seg); }
  getSegment(vcpu: KvmVcpu, out: KvmSegment, seg: VcpuSreg): void { xcbOf(vcpu).xcb.getSeg(seg, out); }
  getCpl(vcpu: KvmVcpu): number { return xcbOf(vcpu).xcb.r8(XCB_GUEST.CPL) & 3; }
  setSegment(vcpu: KvmVcpu, value: KvmSegment, seg: VcpuSreg): void {
    const x = xcbOf(vcpu).xcb;
    x.setSeg(seg, value);
    // The CPL is its own field; loading SS (with CS, as KVM_SET_SREGS does) sets it to SS.DPL.
    if (seg === VcpuSreg.SS) x.w8(XCB_GUEST.CPL, value.dpl & 3);
  }
  getCsDbLBits(vcpu: KvmVcpu): { db: number; l: number } {
    const a = xcbOf(vcpu).xcb.segAttr(VcpuSreg.CS);
    return { db: (a >> 10) & 1, l: (a >> 9) & 1 };
  }
  getIdt(vcpu: KvmVcpu, dt: DescPtr): void {
    const x = xcbOf(vcpu).xcb;
    dt.address = x.r64(XCB_GUEST.IDTR_BASE);
    dt.size = x.r32(XCB_GUEST.IDTR_LIMIT);
  }
  setIdt(vcpu: KvmVcpu, dt: DescPtr): void {
    const x = xcbOf(vcpu).xcb;
    x.w64(XCB_GUEST.IDTR_BASE, dt.address);
    x.w32(XCB_GUEST.IDTR_LIMIT, dt.size);
  }
  getGdt(vcpu: KvmVcpu, dt: DescPtr): void {
    const x = xcbOf(vcpu).xcb;
    dt.address = x.r64(XCB_GUEST.GDTR_BASE);
    dt.size = x.r32(XCB_GUEST.GDTR_LIMIT);
  }
  setGdt(vcpu: KvmVcpu, dt: DescPtr): void {
    const x = xcbOf(vcpu).xcb;
    x.w64(XCB_GUEST.GDTR_BASE, dt.address);
    x.w32(XCB_GUEST.GDTR_LIMIT, dt.size);
  }

  // ------------------------------------------------------------ control registers, EFER, debug registers

  setCr0(vcpu: KvmVcpu, cr0: bigint): void {
    const x = xcbOf(vcpu).xcb;
    const a = vcpu.arch;
    const wasPg = (x.r64(XCB_GUEST.CR0) & CR0_PG) !== 0n;
    // Long mode is activated and deactivated with paging when EFER.LME is set (SDM 9.8.5).
    if (a.efer & EFER_LME) {
      if (!wasPg && (cr0 & CR0_PG)) this.setEfer(vcpu, a.efer | EFER_LMA);
      if (wasPg && !(cr0 & CR0_PG)) this.setEfer(vcpu, a.efer & ~EFER_LMA);
    }
    x.w64(XCB_GUEST.CR0, cr0);
    a.cr0 = cr0;
    a.regsAvail |= 1 << KvmReg.CR0;
  }
  setCr4(vcpu: KvmVcpu, cr4: bigint): number {
    if (cr4 & CR4_VMXE) return 1; // no nested virtualization
    xcbOf(vcpu).xcb.w64(XCB_GUEST.CR4, cr4);
    vcpu.arch.cr4 = cr4;
    vcpu.arch.regsAvail |= 1 << KvmReg.CR4;
    return 0;
  }
  setEfer(vcpu: KvmVcpu, efer: bigint): void {
    xcbOf(vcpu).xcb.w64(XCB_GUEST.EFER, efer);
    vcpu.arch.efer = efer;
  }
  syncDirtyDebugRegs(vcpu: KvmVcpu): void {
    const x = xcbOf(vcpu).xcb;
    for (let i = 0; i < 4; i++) vcpu.arch.db[i] = vcpu.cpu.state.dr[i];
    vcpu.arch.dr6 = x.r64(XCB_GUEST.DR6);
    vcpu.arch.dr7 = x.r64(XCB_GUEST.DR7);
  }
  setDr7(vcpu: KvmVcpu, value: bigint): void { xcbOf(vcpu).xcb.w64(XCB_GUEST.DR7, value); }

  // ------------------------------------------------------------ register cache and RFLAGS

  cacheReg(vcpu: KvmVcpu, reg: KvmReg): void {
    const x = xcbOf(vcpu).xcb;
    const a = vcpu.arch;
    switch (reg) {
      case KvmReg.RAX: a.regs[reg] = x.r64(XCB_GUEST.RAX); break;
      case KvmReg.RSP: a.regs[reg] = x.r64(XCB_GUEST.RSP); break;
      case KvmReg.RIP: a.regs[reg] = x.r64(XCB_GUEST.RIP); break;
      case KvmReg.CR0: a.cr0 = x.r64(XCB_GUEST.CR0); break;
      case KvmReg.CR3: a.cr3 = x.r64(XCB_GUEST.CR3); break;
      case KvmReg.CR4: a.cr4 = x.r64(XCB_GUEST.CR4); break;
      case KvmReg.PDPTR: break; // the XPT walk reads PAE PDPTEs from guest memory itself
      default: throw new Error(`xcb: cacheReg(${KvmReg[reg] ?? reg}): that register is never lazy here`);
    }
    a.regsAvail |= 1 << reg;
  }
  getRflags(vcpu: KvmVcpu): bigint { return xcbOf(vcpu).xcb.r64(XCB_GUEST.RFLAGS); }
  setRflags(vcpu: KvmVcpu, rflags: bigint): void { xcbOf(vcpu).xcb.w64(XCB_GUEST.RFLAGS, rflags); }

  // ------------------------------------------------------------ TLB (tagged; whole-tag flushes happen at the next entry)

  tlbFlushAll(vcpu: KvmVcpu): void { xcbOf(vcpu).xcb.w32(XCB.TLB_FLUSH, 1); }
  tlbFlushCurrent(vcpu: KvmVcpu): void { xcbOf(vcpu).xcb.w32(XCB.TLB_FLUSH, 1); }
  tlbFlushGuest(vcpu: KvmVcpu): void { xcbOf(vcpu).xcb.w32(XCB.TLB_FLUSH, 1); }
  tlbFlushGva(vcpu: KvmVcpu, addr: bigint): void { vcpu.cpu.flushTlbGva(xcbOf(vcpu).xcb.r32(XCB.TLB_TAG), addr); }

  // ------------------------------------------------------------ run and exits

  run(vcpu: KvmVcpu): ExitFastpathCompletion {
    if (!this.enabled) throw new Error('xcb: run without hardwareEnable');
    const xv = xcbOf(vcpu);
    const x = xv.xcb;
    const a = vcpu.arch;
    const s = vcpu.cpu.state;
    if (a.regsAvail & (1 << KvmReg.RAX)) x.w64(XCB_GUEST.RAX, a.regs[KvmReg.RAX]);
    if (a.regsAvail & (1 << KvmReg.RSP)) x.w64(XCB_GUEST.RSP, a.regs[KvmReg.RSP]);
    if (a.regsAvail & (1 << KvmReg.RIP)) x.w64(XCB_GUEST.RIP, a.regs[KvmReg.RIP]);
    x.w64(XCB_GUEST.CR2, a.cr2);
    x.w64(XCB_GUEST.CR8, a.cr8);
    for (let r = 0; r < 16; r++) if (r !== KvmReg.RAX && r !== KvmReg.RSP) s.setGpr(r, a.regs[r]);
    for (let i = 0; i < 4; i++) s.dr[i] = a.db[i];
    s.xcr0 = a.xcr0;
    const budget = Math.max(1, vcpu.runBudget - (s.instructionsRetired - xv.budgetStart));
    xv.lastFailure = xv.hw.enter(x, budget);
    if (xv.lastFailure !== XcbEntryFailure.NONE) return ExitFastpathCompletion.EXIT_FASTPATH_NONE;
    for (let r = 0; r < 16; r++) if (r !== KvmReg.RAX && r !== KvmReg.RSP) a.regs[r] = s.getGpr(r);
    a.regsAvail &= ~LAZY;
    a.regsDirty = 0;
    a.cr2 = x.r64(XCB_GUEST.CR2);
    a.cr8 = x.r64(XCB_GUEST.CR8);
    a.efer = x.r64(XCB_GUEST.EFER);
    a.xcr0 = s.xcr0;
    xv.hostError = vcpu.cpu.hostError;
    vcpu.cpu.hostError = null;
    this.completeInterrupts(vcpu, x);
    return ExitFastpathCompletion.EXIT_FASTPATH_NONE;
  }

  /** What EXIT_VECTORING says was being delivered goes back into core's queues. */
  private completeInterrupts(vcpu: KvmVcpu, x: Xcb): void {
    vcpu.arch.nmiInjected = false;
    kvmClearExceptionQueue(vcpu);
    kvmClearInterruptQueue(vcpu);
    const v = x.r32(XCB.EXIT_VECTORING);
    if (!(v & XCB_INJECT_VALID)) return;
    vcpu.makeRequest(KvmReq.EVENT);
    const vector = v & 0xff;
    switch ((v >>> 8) & 7) {
      case EventType.NMI: vcpu.arch.nmiInjected = true; break;
      case EventType.HARDWARE_EXCEPTION:
        kvmRequeueException(vcpu, vector, (v & XCB_INJECT_ERROR_VALID) !== 0, x.r32(XCB.EXIT_VECTORING_ERROR));
        break;
      case EventType.EXTERNAL_INTERRUPT: kvmQueueInterrupt(vcpu, vector, false); break;
      case EventType.SOFTWARE_INTERRUPT: kvmQueueInterrupt(vcpu, vector, true); break;
      default: break; // software exceptions (#BP, #OF) re-execute their instruction
    }
  }

  handleExit(vcpu: KvmVcpu, _fastpath: ExitFastpathCompletion): number {
    const xv = xcbOf(vcpu);
    const x = xv.xcb;
    if (xv.lastFailure !== XcbEntryFailure.NONE) {
      vcpu.countExit('entry-failure');
      const run = vcpu.run;
      run.exitReason = KvmExitReason.KVM_EXIT_FAIL_ENTRY;
      run.failEntry.hardwareEntryFailureReason = BigInt(xv.lastFailure);
      run.failEntry.cpu = vcpu.vcpuId;
      run.internalMessage = `xcb: entry refused: ${XcbEntryFailure[xv.lastFailure]} (0x${xv.lastFailure.toString(16)})`;
      return 0;
    }
    if (xv.hostError) {
      const e = xv.hostError;
      xv.hostError = null;
      internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_EMULATION, `xcb: the processor failed: ${e.message}`);
      return 0;
    }
    const code = x.r32(XCB.EXIT_CODE) as XcbExit;
    vcpu.countExit(XCB_EXIT_NAMES[code] ?? `exit-${code}`);
    const handler = XCB_EXIT_HANDLERS.get(code);
    if (!handler) {
      internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, `xcb: no handler for exit code ${code}`);
      return 0;
    }
    return handler(vcpu, x);
  }
  handleExitIrqoff(_vcpu: KvmVcpu): void { return; }
  getExitInfo(vcpu: KvmVcpu): { info1: bigint; info2: bigint } {
    const x = xcbOf(vcpu).xcb;
    return { info1: x.r64(XCB.EXIT_QUAL), info2: x.r64(XCB.EXIT_GPA) };
  }
  /** RIP := the next RIP the hardware recorded; the instruction's interrupt shadow ends with it. */
  skipEmulatedInstruction(vcpu: KvmVcpu): number {
    const next = xcbOf(vcpu).xcb.r64(XCB.EXIT_NEXT_RIP);
    if (next === 0n) {
      internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_EMULATION, 'xcb: cannot skip: the last exit recorded no next RIP');
      return 0;
    }
    vcpu.registerWrite(KvmReg.RIP, next);
    this.setInterruptShadow(vcpu, 0);
    return 1;
  }
  checkIntercept(_vcpu: KvmVcpu, _info: X86InstructionInfo, _stage: X86InterceptStage, _exception: X86Exception): number {
    return X86Emul.CONTINUE;
  }
  requestImmediateExit(vcpu: KvmVcpu): void { vcpu.cpu.kick = true; }
  patchHypercall(_vcpu: KvmVcpu, hypercallAddr: Uint8Array): void { hypercallAddr.set(XCB_HYPERCALL_BYTES); }
  needEmulationOnPageFault(_vcpu: KvmVcpu): boolean { return true; }

  // ------------------------------------------------------------ events

  setInterruptShadow(vcpu: KvmVcpu, mask: number): void {
    const x = xcbOf(vcpu).xcb;
    let i = x.r32(XCB_GUEST.INTERRUPTIBILITY) & ~(XCB_INTR_STI | XCB_INTR_MOV_SS);
    if (mask & SHADOW_INT_MOV_SS) i |= XCB_INTR_MOV_SS;
    else if (mask & SHADOW_INT_STI) i |= XCB_INTR_STI;
    x.w32(XCB_GUEST.INTERRUPTIBILITY, i);
  }
  getInterruptShadow(vcpu: KvmVcpu): number {
    const i = xcbOf(vcpu).xcb.r32(XCB_GUEST.INTERRUPTIBILITY);
    return (i & XCB_INTR_STI ? SHADOW_INT_STI : 0) | (i & XCB_INTR_MOV_SS ? SHADOW_INT_MOV_SS : 0);
  }
  setIrq(vcpu: KvmVcpu): void {
    const type = vcpu.arch.interrupt.soft ? EventType.SOFTWARE_INTERRUPT : EventType.EXTERNAL_INTERRUPT;
    xcbOf(vcpu).xcb.w32(XCB.INJECT, XCB_INJECT_VALID | (type << 8) | (vcpu.arch.interrupt.nr & 0xff));
  }
  setNmi(vcpu: KvmVcpu): void {
    xcbOf(vcpu).xcb.w32(XCB.INJECT, XCB_INJECT_VALID | (EventType.NMI << 8) | X86Vector.NMI);
  }
  queueException(vcpu: KvmVcpu): void {
    const x = xcbOf(vcpu).xcb;
    const ex = vcpu.arch.exception;
    if (ex.hasPayload) {
      if (ex.nr === X86Vector.PF) vcpu.arch.cr2 = ex.payload;
      else if (ex.nr === X86Vector.DB) vcpu.arch.dr6 = (vcpu.arch.dr6 & ~0x4000fn) | ex.payload;
      ex.hasPayload = false;
    }
    let v = XCB_INJECT_VALID | (EventType.HARDWARE_EXCEPTION << 8) | (ex.nr & 0xff);
    // Real mode pushes no error code: decide from the guest's own CR0.PE, which lives in the XCB.
    if (ex.hasErrorCode && (x.r64(XCB_GUEST.CR0) & 1n)) {
      v |= XCB_INJECT_ERROR_VALID;
      x.w32(XCB.INJECT_ERROR, ex.errorCode);
    }
    x.w32(XCB.INJECT, v >>> 0);
  }
  cancelInjection(vcpu: KvmVcpu): void {
    const x = xcbOf(vcpu).xcb;
    x.w32(XCB.EXIT_VECTORING, x.r32(XCB.INJECT));
    x.w32(XCB.EXIT_VECTORING_ERROR, x.r32(XCB.INJECT_ERROR));
    x.w32(XCB.INJECT, 0);
    this.completeInterrupts(vcpu, x);
  }
  interruptAllowed(vcpu: KvmVcpu, _forInjection: boolean): number {
    const x = xcbOf(vcpu).xcb;
    if (!(x.r64(XCB_GUEST.RFLAGS) & EFLAGS_IF)) return 0;
    return x.r32(XCB_GUEST.INTERRUPTIBILITY) & (XCB_INTR_STI | XCB_INTR_MOV_SS) ? 0 : 1;
  }
  nmiAllowed(vcpu: KvmVcpu, _forInjection: boolean): number {
    return xcbOf(vcpu).xcb.r32(XCB_GUEST.INTERRUPTIBILITY) & (XCB_INTR_NMI | XCB_INTR_STI | XCB_INTR_MOV_SS) ? 0 : 1;
  }
  getNmiMask(vcpu: KvmVcpu): boolean { return (xcbOf(vcpu).xcb.r32(XCB_GUEST.INTERRUPTIBILITY) & XCB_INTR_NMI) !== 0; }
  setNmiMask(vcpu: KvmVcpu, masked: boolean): void {
    const x = xcbOf(vcpu).xcb;
    const i = x.r32(XCB_GUEST.INTERRUPTIBILITY);
    x.w32(XCB_GUEST.INTERRUPTIBILITY, masked ? i | XCB_INTR_NMI : i & ~XCB_INTR_NMI);
  }
  enableNmiWindow(vcpu: KvmVcpu): void { const x = xcbOf(vcpu).xcb; x.w32(XCB.WINDOWS, x.r32(XCB.WINDOWS) | 2); }
  enableIrqWindow(vcpu: KvmVcpu): void { const x = xcbOf(vcpu).xcb; x.w32(XCB.WINDOWS, x.r32(XCB.WINDOWS) | 1); }
  apicInitSignalBlocked(_vcpu: KvmVcpu): boolean { return false; }

  // ------------------------------------------------------------ APIC virtualization: none

  /** Every inhibit reason applies: APIC virtualization is never active. */
  checkApicvInhibitReasons(_bit: number): boolean { return true; }
  refreshApicvExecCtrl(_vcpu: KvmVcpu): void { return; }
  /** -1: not posted; core injects the interrupt the ordinary way. */
  deliverPostedInterrupt(_vcpu: KvmVcpu, _vector: number): number { return -1; }

  // ------------------------------------------------------------ MMU and TSC

  getTdpLevel(_vcpu: KvmVcpu): number { return XPT_FORMAT.levels; }
  loadMmuPgd(vcpu: KvmVcpu, root: bigint): void {
    const x = xcbOf(vcpu).xcb;
    x.w64(XCB.TDP_ROOT, root);
    x.w64(XCB_GUEST.CR3, vcpu.readCr3());
  }
  hasWbinvdExit(): boolean { return true; }
  writeL1TscOffset(vcpu: KvmVcpu, offset: bigint): bigint {
    xcbOf(vcpu).xcb.w64(XCB.TSC_OFFSET, offset);
    return offset;
  }

  // ------------------------------------------------------------ SMM: not offered (no SMI is ever injected)

  smiAllowed(_vcpu: KvmVcpu, _forInjection: boolean): number { return 1; }
  preEnterSmm(_vcpu: KvmVcpu, _smstate: Uint8Array): number { return 0; }
  preLeaveSmm(_vcpu: KvmVcpu, _smstate: Uint8Array): number { return 0; }
  enableSmiWindow(_vcpu: KvmVcpu): void { return; }
}

/** MSRs whose guest value is an XCB guest-state field. */
const MSR_FIELDS: ReadonlyMap<number, number> = new Map([
  [MSR.STAR, XCB_GUEST.STAR], [MSR.LSTAR, XCB_GUEST.LSTAR], [MSR.CSTAR, XCB_GUEST.CSTAR],
  [MSR.SYSCALL_MASK, XCB_GUEST.SFMASK], [MSR.KERNEL_GS_BASE, XCB_GUEST.KERNEL_GS_BASE],
  [MSR.IA32_SYSENTER_CS, XCB_GUEST.SYSENTER_CS], [MSR.IA32_SYSENTER_ESP, XCB_GUEST.SYSENTER_ESP],
  [MSR.IA32_SYSENTER_EIP, XCB_GUEST.SYSENTER_EIP], [MSR.IA32_CR_PAT, XCB_GUEST.PAT],
  [MSR.IA32_DEBUGCTLMSR, XCB_GUEST.DEBUGCTL],
]);
