/**
 * APICv (virtual-APIC page, RVI/SVI, EOI-exit bitmap, posted interrupts), capability MSRs and
 * control negotiation, and the remaining hooks, each through the contract.
 */
import { KVM_X86_OPS, KvmExitReason, KvmVcpu, MSR, X86Emul, X86Intercept, X86InterceptStage, X86Vector } from '@tsvisor/core';
import {
  F, VmxBackend, DEFAULT_VMX_PARAMS, setupVmcsConfig, VMX_CAPABILITY_MSRS, allowedSettings, adjustVmxControls, toVmx,
  MSR_IA32_VMX_BASIC, MSR_IA32_VMX_MISC, MSR_IA32_VMX_CR0_FIXED0, MSR_IA32_VMX_CR4_FIXED0, MSR_IA32_VMX_EPT_VPID_CAP,
  MSR_IA32_VMX_TRUE_PROCBASED_CTLS, MSR_IA32_VMX_PROCBASED_CTLS, MSR_IA32_VMX_PROCBASED_CTLS2, MSR_IA32_VMX_VMCS_ENUM,
  VMCS_REVISION_ID, PREEMPTION_TIMER_RATE, dumpControlBlock, VmcsConfigError, MSR_IA32_VMX_TRUE_PINBASED_CTLS,
  constructEptp, eptFormat, vmxGetMtMask, EptWalker,
} from '@tsvisor/vmx';
import * as D from '@tsvisor/vmx';
import { al, Label } from '@tsvisor/testkit';
import { realModeVm } from './helpers';

describe('capability MSRs (SDM App. A) and setup_vmcs_config', () => {
  it('IA32_VMX_BASIC: revision, 4 KiB region, WB, INS/OUTS info, TRUE controls', () => {
    const b = VMX_CAPABILITY_MSRS.get(MSR_IA32_VMX_BASIC)!;
    expect(Number(b & 0x7fffffffn)).toBe(VMCS_REVISION_ID);
    expect((b >> 32n) & 0x1fffn).toBe(4096n);
    expect((b >> 50n) & 0xfn).toBe(6n);
    expect((b >> 54n) & 1n).toBe(1n);
    expect((b >> 55n) & 1n).toBe(1n);
  });
  it('MISC reports the preemption-timer rate and activity states; fixed-bit MSRs; VMCS_ENUM', () => {
    const m = VMX_CAPABILITY_MSRS.get(MSR_IA32_VMX_MISC)!;
    expect(Number(m & 0x1fn)).toBe(PREEMPTION_TIMER_RATE);
    expect((m >> 5n) & 1n).toBe(1n);
    expect((m >> 6n) & 7n).toBe(7n);
    expect(VMX_CAPABILITY_MSRS.get(MSR_IA32_VMX_CR0_FIXED0)).toBe(0x80000021n);
    expect(VMX_CAPABILITY_MSRS.get(MSR_IA32_VMX_CR4_FIXED0)).toBe(0x2000n);
    expect(VMX_CAPABILITY_MSRS.get(MSR_IA32_VMX_VMCS_ENUM)).toBe(BigInt(((F.TERTIARY_VM_EXEC_CONTROL + 2) >> 1 & 0x1ff) << 1));
    const ept = VMX_CAPABILITY_MSRS.get(MSR_IA32_VMX_EPT_VPID_CAP)!;
    expect((ept >> 6n) & 1n).toBe(1n); // 4-level walk
    expect((ept >> 21n) & 1n).toBe(1n); // A/D flags
    expect((ept >> 16n) & 3n).toBe(3n); // 2 MiB and 1 GiB pages
  });
  it('TRUE controls let CR3-load/store exiting be 0; the legacy MSR does not', () => {
    expect(allowedSettings(MSR_IA32_VMX_PROCBASED_CTLS).must1 & D.CPU_BASED_CR3_LOAD_EXITING).toBe(D.CPU_BASED_CR3_LOAD_EXITING);
    expect(allowedSettings(MSR_IA32_VMX_TRUE_PROCBASED_CTLS).must1 & D.CPU_BASED_CR3_LOAD_EXITING).toBe(0);
    expect(allowedSettings(MSR_IA32_VMX_PROCBASED_CTLS2).may1 & D.SECONDARY_EXEC_SHADOW_VMCS).toBe(0);
  });
  it('adjust_vmx_controls: optional controls the hardware lacks are dropped, a missing required one fails', () => {
    expect(adjustVmxControls(0, D.SECONDARY_EXEC_SHADOW_VMCS | D.SECONDARY_EXEC_ENABLE_EPT, MSR_IA32_VMX_PROCBASED_CTLS2, 'x')).toBe(D.SECONDARY_EXEC_ENABLE_EPT);
    expect(() => adjustVmxControls(1 << 8, 0, MSR_IA32_VMX_TRUE_PINBASED_CTLS, 'pin-based controls')).toThrow(VmcsConfigError);
    // A default1 control is forced on even when not asked for.
    expect(adjustVmxControls(0, 0, MSR_IA32_VMX_TRUE_PINBASED_CTLS, 'pin') & 0x16).toBe(0x16);
  });
  it('setup_vmcs_config: EPT drops CR3/INVLPG exiting; module parameters switch features', () => {
    const c = setupVmcsConfig(DEFAULT_VMX_PARAMS);
    expect(c.cpuBased & D.CPU_BASED_CR3_LOAD_EXITING).toBe(0);
    expect(c.cpuBased & D.CPU_BASED_INVLPG_EXITING).toBe(0);
    expect(c.cpuBased & D.CPU_BASED_HLT_EXITING).toBe(D.CPU_BASED_HLT_EXITING);
    expect(c.cpuBased2 & (D.SECONDARY_EXEC_ENABLE_EPT | D.SECONDARY_EXEC_ENABLE_VPID | D.SECONDARY_EXEC_ENABLE_PML | D.SECONDARY_EXEC_UNRESTRICTED_GUEST))
      .toBe(D.SECONDARY_EXEC_ENABLE_EPT | D.SECONDARY_EXEC_ENABLE_VPID | D.SECONDARY_EXEC_ENABLE_PML | D.SECONDARY_EXEC_UNRESTRICTED_GUEST);
    const noPml = setupVmcsConfig({ ...DEFAULT_VMX_PARAMS, pml: false });
    expect(noPml.cpuBased2 & D.SECONDARY_EXEC_ENABLE_PML).toBe(0);
    const apicv = setupVmcsConfig({ ...DEFAULT_VMX_PARAMS, apicv: true });
    expect(apicv.pinBased & D.PIN_BASED_POSTED_INTR).toBe(D.PIN_BASED_POSTED_INTR);
    expect(apicv.cpuBased & D.CPU_BASED_TPR_SHADOW).toBe(D.CPU_BASED_TPR_SHADOW);
    expect(apicv.cpuBased & D.CPU_BASED_CR8_LOAD_EXITING).toBe(0);
  });
  it('without PML the dirty-log hooks are absent (KVM NULLs them) and core write-protects instead', () => {
    const saved = VmxBackend.moduleParams;
    VmxBackend.moduleParams = { ...DEFAULT_VMX_PARAMS, pml: false };
    try {
      const { kvm } = realModeVm((a) => a.hlt());
      expect(kvm.has('flushLogDirty')).toBe(false);
      expect(kvm.has('slotEnableLogDirty')).toBe(false);
      expect(kvm.mmu!.format.hardwareDirtyLog).toBe(false);
    } finally {
      VmxBackend.moduleParams = saved;
    }
  });
});

describe('EPT format and walker (SDM 29.3)', () => {
  it('EPTP, memory types and the TDP format handed to core', () => {
    expect(constructEptp(0x1234000n, 4, true)).toBe(0x1234000n | 6n | (3n << 3n) | (1n << 6n));
    expect(vmxGetMtMask(5n, true)).toBe(0n);
    expect(vmxGetMtMask(5n, false)).toBe((6n << 3n) | (1n << 6n));
    const f = eptFormat(4, true);
    expect([f.readBits, f.writeBit, f.execBit, f.accessedBit, f.dirtyBit, f.mmioEntry]).toEqual([1n, 2n, 4n, 0x100n, 0x200n, 6n]);
  });
  it('misconfigurations: write without read, reserved memory types, large pages, reserved address bits', () => {
    expect(EptWalker.misconfigured(0x2n, 1, true)).toBe(true);
    expect(EptWalker.misconfigured(0x6n, 1, true)).toBe(true);
    expect(EptWalker.misconfigured(0x4n, 1, true)).toBe(false); // execute-only is supported
    expect(EptWalker.misconfigured(0x7n | (2n << 3n), 1, true)).toBe(true);
    expect(EptWalker.misconfigured(0x7n | (6n << 3n), 1, true)).toBe(false);
    expect(EptWalker.misconfigured(0x7n | 0x80n, 2, false)).toBe(true);
    expect(EptWalker.misconfigured(0x7n | (1n << 50n), 1, true)).toBe(true);
  });
  it('the walker sets A and D, and an MMIO GPA is an EPT misconfiguration that KVM emulates', () => {
    const { vcpu, kvm } = realModeVm((a) => a.nop().hlt());
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    const mmu = kvm.mmu!;
    const ea = mmu.leafEntryAddress(1, false); // the code page at GPA 0x1000
    const e = kvm.hostMemory.read64(ea);
    expect(e & 0x100n).toBe(0x100n); // accessed by the fetch
    expect(e & 0x7n).toBe(7n);
  });
  it('getTdpLevel, loadMmuPgd write the EPTP; getMtMask', () => {
    const { vcpu, kvm, vmx } = realModeVm((a) => a.hlt());
    expect(kvm.ops.getTdpLevel(vcpu)).toBe(4);
    kvm.ops.loadMmuPgd(vcpu, 0x5000n);
    expect(vmx.vmcs.read64(F.EPT_POINTER)).toBe(constructEptp(0x5000n, 4, true));
    kvm.ops.loadMmuPgd(vcpu, BigInt(kvm.mmu!.root));
    expect(kvm.ops.getMtMask!(vcpu, 1n, false)).toBe(0x70n);
  });
});

describe('APICv', () => {
  const saved = VmxBackend.moduleParams;
  beforeAll(() => { VmxBackend.moduleParams = { ...DEFAULT_VMX_PARAMS, apicv: true }; });
  afterAll(() => { VmxBackend.moduleParams = saved; });

  it('posted interrupt: PIR + ON, processed at entry, delivered as a virtual interrupt through the guest IDT', () => {
    const { vcpu, kvm, vmx } = realModeVm((a) => { const l = new Label('l'); a.sti(); a.bind(l); a.hlt(); a.jmp(l); });
    const mem = kvm.slot(0)!.userspace;
    mem.set([0x00, 0x20, 0, 0], 0x40 * 4);
    mem.set([0xb0, 0x40, 0xe6, 0x80, 0xcf], 0x2000);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(kvm.ops.deliverPostedInterrupt(vcpu, 0x40)).toBe(0);
    const pi = kvm.hostMemory.slice(vmx.piDesc, 64);
    expect(pi.bytes[pi.offset + 8] & 1).toBe(1); // PIR bit 0x40
    expect(pi.bytes[pi.offset + 32] & 1).toBe(1); // ON
    expect(kvm.ops.dyApicvHasPendingInterrupt!(vcpu)).toBe(true);
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.ioData[0]).toBe(0x40);
    expect(pi.bytes[pi.offset + 32] & 1).toBe(0); // ON cleared by posted-interrupt processing
    expect(vmx.vmcs.read16(F.GUEST_INTR_STATUS) >> 8).toBe(0x40); // SVI
  });

  it('syncPirToIrr, RVI/SVI updates, EOI-exit bitmap, guestApicHasInterrupt, pre/post block', () => {
    const { vcpu, kvm, vmx } = realModeVm((a) => a.hlt());
    kvm.ops.deliverPostedInterrupt(vcpu, 0x51);
    kvm.ops.deliverPostedInterrupt(vcpu, 0x33);
    expect(kvm.ops.preBlock!(vcpu)).toBe(1); // ON set: don't block
    expect(kvm.ops.syncPirToIrr!(vcpu)).toBe(0x51);
    expect(vmx.vmcs.read16(F.GUEST_INTR_STATUS) & 0xff).toBe(0x51);
    expect(kvm.ops.guestApicHasInterrupt!(vcpu)).toBe(true);
    kvm.ops.hwapicIsrUpdate!(vcpu, 0x30);
    expect(vmx.vmcs.read16(F.GUEST_INTR_STATUS)).toBe(0x3051);
    kvm.ops.hwapicIrrUpdate!(vcpu, 0x22);
    expect(vmx.vmcs.read16(F.GUEST_INTR_STATUS)).toBe(0x3022);
    kvm.ops.loadEoiExitmap!(vcpu, [1n, 0n, 1n << 63n, 0n]);
    expect(vmx.vmcs.read64(F.EOI_EXIT_BITMAP0)).toBe(1n);
    expect(vmx.vmcs.read64(F.EOI_EXIT_BITMAP2)).toBe(1n << 63n);
    expect(kvm.ops.preBlock!(vcpu)).toBe(0);
    const pi = kvm.hostMemory.slice(vmx.piDesc, 64);
    expect(pi.bytes[pi.offset + 34]).toBe(0xf1); // wakeup vector while blocked
    kvm.ops.postBlock!(vcpu);
    expect(pi.bytes[pi.offset + 34]).toBe(0xf2);
    kvm.ops.deliverPostedInterrupt(vcpu, 0x60);
    kvm.ops.apicvPostStateRestore!(vcpu);
    expect(pi.bytes[pi.offset + 12]).toBe(0);
  });

  it('refreshApicvExecCtrl, setVirtualApicMode, setApicAccessPageAddr, inhibit reasons', () => {
    const { vcpu, kvm, vmx } = realModeVm((a) => a.hlt());
    expect(kvm.ops.checkApicvInhibitReasons(0)).toBe(true);
    expect(kvm.ops.checkApicvInhibitReasons(2)).toBe(false);
    // xAPIC mode: accesses to the APIC page are virtualized; x2APIC mode: they are not (no x2APIC virtualization offered).
    kvm.ops.setVirtualApicMode!(vcpu);
    expect(vmx.vmcs.read32(F.SECONDARY_VM_EXEC_CONTROL) & D.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES).toBe(D.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES);
    vcpu.arch.apicBase |= 1n << 10n;
    kvm.ops.setVirtualApicMode!(vcpu);
    expect(vmx.vmcs.read32(F.SECONDARY_VM_EXEC_CONTROL) & D.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES).toBe(0);
    kvm.ops.setApicAccessPageAddr!(vcpu);
    expect(vmx.vmcs.readNum(F.APIC_ACCESS_ADDR)).toBe(vmx.apicAccessPage);
    kvm.ops.refreshApicvExecCtrl(vcpu);
    expect(vmx.vmcs.read32(F.PIN_BASED_VM_EXEC_CONTROL) & D.PIN_BASED_POSTED_INTR).toBe(D.PIN_BASED_POSTED_INTR);
    kvm.ops.updateCr8Intercept!(vcpu, 5, 3);
    expect(vmx.vmcs.read32(F.TPR_THRESHOLD)).toBe(3);
    kvm.ops.updateCr8Intercept!(vcpu, 2, 3);
    expect(vmx.vmcs.read32(F.TPR_THRESHOLD)).toBe(0);
    expect(kvm.ops.cpuHasAcceleratedTpr()).toBe(true); // flexpriority with APICv
  });
});

describe('the remaining hooks', () => {
  function vm() { return realModeVm((a) => a.hlt()); }

  it('binds every member KVM\'s VMX has and leaves out exactly the vendor-absent ones', () => {
    const { kvm } = vm();
    const absent = ['updateEmulatedInstruction', 'preUpdateApicvExecCtrl', 'vcpuBlocking', 'vcpuUnblocking', 'memEncOp',
      'memEncRegRegion', 'memEncUnregRegion', 'enableDirectTlbflush'];
    for (const e of KVM_X86_OPS) expect([e.name, kvm.has(e.name)]).toEqual([e.name, !absent.includes(e.name)]);
  });

  it('hardware enable/disable gate VM entry; hasEmulatedMsr; hasWbinvdExit; vmSize', () => {
    const { vcpu, kvm } = vm();
    const ops = kvm.ops;
    expect(ops.hasEmulatedMsr(0x9e)).toBe(true);
    expect(ops.hasEmulatedMsr(MSR_IA32_VMX_BASIC)).toBe(false);
    expect(ops.hasEmulatedMsr(0xc001011f)).toBe(false);
    expect(ops.hasWbinvdExit()).toBe(true);
    expect(ops.vmSize).toBeGreaterThan(0);
    ops.hardwareDisable();
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_INTERNAL_ERROR);
    expect(vcpu.run.internalMessage).toMatch(/outside VMX operation/);
  });

  it('cpuidUpdate toggles RDTSCP/INVPCID enables from guest CPUID; checkIntercept makes RDTSCP #UD without it', () => {
    const { vcpu, kvm, vmx } = vm();
    expect(vmx.vmcs.read32(F.SECONDARY_VM_EXEC_CONTROL) & D.SECONDARY_EXEC_ENABLE_RDTSCP).toBe(D.SECONDARY_EXEC_ENABLE_RDTSCP);
    vcpu.setCpuid2(vcpu.getCpuid2().map((e) => (e.function === 0x80000001 ? { ...e, edx: e.edx & ~(1 << 27) } : e)));
    expect(vmx.vmcs.read32(F.SECONDARY_VM_EXEC_CONTROL) & D.SECONDARY_EXEC_ENABLE_RDTSCP).toBe(0);
    const ex = { vector: 0, errorCodeValid: true, errorCode: 0, nestedPageFault: false, address: 0n };
    const info = { intercept: X86Intercept.rdtscp, rep: 0, modrmMod: 0, modrmReg: 0, modrmRm: 0, srcVal: 0n, dstVal: 0n, srcBytes: 0, dstBytes: 0, adSize: 4, length: 3, nextRip: 0n };
    expect(kvm.ops.checkIntercept(vcpu, info, X86InterceptStage.X86_ICPT_PRE_EXCEPT, ex)).toBe(X86Emul.PROPAGATE_FAULT);
    expect(ex.vector).toBe(X86Vector.UD);
    expect(kvm.ops.checkIntercept(vcpu, { ...info, intercept: X86Intercept.cpuid }, X86InterceptStage.X86_ICPT_PRE_EXCEPT, ex)).toBe(X86Emul.CONTINUE);
  });

  it('getExitInfo is the exit qualification and interruption information', () => {
    const { vcpu, kvm } = realModeVm((a) => a.out(0x70, al));
    vcpu.runVcpu();
    expect(kvm.ops.getExitInfo(vcpu)).toEqual({ info1: 0x0070_0040n, info2: 0n });
  });

  it('SMM: smiAllowed outside SMM, pre-enter/leave track it', () => {
    const { vcpu, kvm } = vm();
    expect(kvm.ops.smiAllowed(vcpu, true)).toBe(1);
    expect(kvm.ops.preEnterSmm(vcpu, new Uint8Array(512))).toBe(0);
    expect(kvm.ops.smiAllowed(vcpu, true)).toBe(0);
    expect(kvm.ops.preLeaveSmm(vcpu, new Uint8Array(512))).toBe(0);
    expect(kvm.ops.smiAllowed(vcpu, true)).toBe(1);
    kvm.ops.enableSmiWindow(vcpu);
  });

  it('nestedOps present but not enabled; the guest sees no VMX in CPUID', () => {
    const { vcpu, kvm } = vm();
    expect(kvm.ops.nestedOps.enabled).toBe(false);
    expect(kvm.ops.nestedOps.setState(vcpu, { format: 0, flags: 0, size: 128, data: new Uint8Array(0) })).toBe(0);
    expect(kvm.ops.nestedOps.setState(vcpu, { format: 0, flags: 1, size: 128, data: new Uint8Array(8) })).toBe(-22);
    expect(vcpu.getCpuid2().find((e) => e.function === 1)!.ecx & (1 << 5)).toBe(0);
    expect(kvm.ops.apicInitSignalBlocked(vcpu)).toBe(false);
    expect(kvm.ops.writeLogDirty!(vcpu, 0x1000n)).toBe(0);
    expect(kvm.ops.needEmulationOnPageFault(vcpu)).toBe(false);
  });

  it('setTssAddr / setIdentityMapAddr record the addresses; updatePiIrte has no IOMMU to program', () => {
    const { kvm } = vm();
    expect(kvm.ops.setTssAddr!(kvm, 0xfffbd000)).toBe(0);
    expect(kvm.ops.setIdentityMapAddr!(kvm, 0xfffbc000n)).toBe(0);
    expect((kvm.vendor as { tssAddr: number }).tssAddr).toBe(0xfffbd000);
    expect(kvm.ops.updatePiIrte!(kvm, 1, 2, true)).toBe(0);
  });

  it('syncDirtyDebugRegs copies DR0-3/DR6 from the processor and re-arms MOV-DR exiting', () => {
    const { vcpu, kvm, vmx } = vm();
    vcpu.cpu.state.dr[2] = 0x1234n;
    vmx.vmcs.write32(F.CPU_BASED_VM_EXEC_CONTROL, vmx.vmcs.read32(F.CPU_BASED_VM_EXEC_CONTROL) & ~D.CPU_BASED_MOV_DR_EXITING);
    kvm.ops.syncDirtyDebugRegs(vcpu);
    expect(vcpu.arch.db[2]).toBe(0x1234n);
    expect(vmx.vmcs.read32(F.CPU_BASED_VM_EXEC_CONTROL) & D.CPU_BASED_MOV_DR_EXITING).toBe(D.CPU_BASED_MOV_DR_EXITING);
    kvm.ops.updateBpIntercept(vcpu);
    expect(vmx.vmcs.read32(F.EXCEPTION_BITMAP)).toBe((1 << 6) | (1 << 17) | (1 << 18));
  });

  it('vcpuLoad/vcpuPut/schedIn track the loaded CPU; prepareGuestSwitch loads the user-return MSRs', () => {
    const { vcpu, kvm, vmx } = vm();
    kvm.ops.vcpuLoad(vcpu, 3);
    expect(vmx.loadedCpu).toBe(3);
    kvm.ops.vcpuPut(vcpu);
    expect(vmx.loadedCpu).toBe(-1);
    kvm.ops.schedIn(vcpu, 2);
    expect(vmx.loadedCpu).toBe(2);
    vcpu.setMsr(MSR.LSTAR, 0xffff_ffff_8000_1000n);
    kvm.ops.prepareGuestSwitch(vcpu);
    expect(vcpu.cpu.state.lstar).toBe(0xffff_ffff_8000_1000n);
  });

  it('migrateTimers re-arms the preemption timer from the deadline; handleExitIrqoff takes the host interrupt', () => {
    const { vcpu, kvm, vmx } = realModeVm((a) => { const l = new Label('l'); a.bind(l); a.jmp(l); });
    vcpu.runBudget = 1000;
    vcpu.runVcpu();
    expect(vmx.hostInterrupts).toBeGreaterThan(0); // the budget stop came in as an acknowledged host interrupt
    kvm.ops.setHvTimer!(vcpu, vcpu.cpu.state.tsc + (64n << BigInt(PREEMPTION_TIMER_RATE)));
    kvm.ops.migrateTimers!(vcpu);
    expect(vmx.vmcs.read32(F.VMX_PREEMPTION_TIMER_VALUE)).toBe(64);
  });

  it('vmDestroy frees the per-VM state; setupMce gates LMCE on MCG_CAP', () => {
    const { vcpu, kvm } = vm();
    expect(toVmx(vcpu).featureControlValidBits).toBe(1n); // core's MCG_CAP has no MCG_LMCE_P
    toVmx(vcpu).featureControlValidBits |= 1n << 20n;
    kvm.ops.setupMce(vcpu);
    expect(toVmx(vcpu).featureControlValidBits).toBe(1n);
    expect(kvm.vendor).not.toBeNull();
    kvm.destroy();
    expect(kvm.vendor).toBeNull();
  });

  it('vcpuFree releases the vCPU pages; dumpControlBlock names every field', () => {
    const { vcpu, kvm } = vm();
    const d = dumpControlBlock(vcpu);
    expect(d).toContain('GUEST_RIP');
    expect(d).toContain('EPT_POINTER');
    const before = kvm.hostMemory.bytesMapped;
    kvm.ops.vcpuFree(vcpu);
    expect(kvm.hostMemory.bytesMapped).toBeLessThan(before);
    void toVmx; void (0 as unknown as KvmVcpu);
  });
});
