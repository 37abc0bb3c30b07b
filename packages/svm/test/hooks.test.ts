/** kvm_x86_ops hooks of the SVM backend, each against the VMCB or vcpu_svm state it owns. */
import { Kvm, KvmExitReason, KvmReg, MSR, VcpuSreg, emptySegment, getBackendInfo, KVM_X86_OPS } from '@tsvisor/core';
import { eax, ecx, edx, edi } from '@tsvisor/testkit';
import {
  SvmBackend, svmOf, VMCB_CONTROL, VMCB_SAVE, Intercept2, MSR_AMD, ApicvInhibitReason, VmcbCleanBit, svmModuleParams,
} from '@tsvisor/svm';
import { longModeGuest, runToHlt } from './helpers';

function vm() {
  const kvm = Kvm.create({ backend: SvmBackend });
  const vcpu = kvm.createVcpu(0);
  return { kvm, vcpu, ops: kvm.ops, svm: svmOf(vcpu) };
}

describe('binding and metadata', () => {
  test('@backend metadata; required hooks present; PML, hv-timer and VMX-only hooks left out', () => {
    expect(getBackendInfo(SvmBackend)).toMatchObject({ name: 'svm', vendor: 'amd', packageName: '@tsvisor/svm' });
    const { kvm } = vm();
    for (const e of KVM_X86_OPS) if (e.kind === 'required' || e.kind === 'value') expect(kvm.has(e.name)).toBe(true);
    for (const absent of ['slotEnableLogDirty', 'slotDisableLogDirty', 'flushLogDirty', 'enableLogDirtyPtMasked',
      'writeLogDirty', 'setHvTimer', 'cancelHvTimer'] as const) {
      expect(kvm.has(absent)).toBe(false);
    }
    expect(kvm.has('memEncOp')).toBe(true);
  });
});

describe('segments and CPL from the VMCB', () => {
  test('setSegment packs the 12-bit attrib; getSegment unpacks it; SS.DPL sets VMCB.CPL', () => {
    const { ops, vcpu, svm } = vm();
    const cs = { ...emptySegment(), selector: 0x33, base: 0n, limit: 0xffffffff, type: 0xb, s: 1, dpl: 3, present: 1, l: 1, db: 0, g: 1, unusable: 0 };
    ops.setSegment(vcpu, cs, VcpuSreg.CS);
    expect(svm.vmcb.segAttrib(VMCB_SAVE.CS)).toBe(0xb | 0x10 | 0x60 | 0x80 | 0x200 | 0x800);
    const out = emptySegment();
    ops.getSegment(vcpu, out, VcpuSreg.CS);
    expect(out).toMatchObject({ selector: 0x33, type: 0xb, s: 1, dpl: 3, present: 1, l: 1, db: 0, g: 1, unusable: 0, limit: 0xffffffff });
    expect(ops.getCsDbLBits(vcpu)).toEqual({ db: 0, l: 1 });
    ops.setSegment(vcpu, { ...emptySegment(), selector: 0x2b, type: 3, s: 1, dpl: 3, present: 1, db: 1, limit: 0xfffff, unusable: 0 }, VcpuSreg.SS);
    expect(svm.vmcb.read8(VMCB_SAVE.CPL)).toBe(3);
    expect(ops.getCpl(vcpu)).toBe(3);
    // AMD keeps CPL on its own: changing it in the VMCB changes getCpl and SS.DPL as reported.
    svm.vmcb.write8(VMCB_SAVE.CPL, 0);
    expect(ops.getCpl(vcpu)).toBe(0);
    ops.getSegment(vcpu, out, VcpuSreg.SS);
    expect(out.dpl).toBe(0);
    expect(svm.vmcb.isClean(VmcbCleanBit.SEG)).toBe(false);
  });

  test('an unusable segment is stored with attrib 0 and read back unusable; TR reads busy; data segments accessed', () => {
    const { ops, vcpu, svm } = vm();
    ops.setSegment(vcpu, { ...emptySegment(), unusable: 1 }, VcpuSreg.FS);
    expect(svm.vmcb.segAttrib(VMCB_SAVE.FS)).toBe(0);
    const out = emptySegment();
    ops.getSegment(vcpu, out, VcpuSreg.FS);
    expect(out.unusable).toBe(1);
    ops.setSegment(vcpu, { ...emptySegment(), type: 9, present: 1, limit: 0x67, unusable: 0 }, VcpuSreg.TR);
    ops.getSegment(vcpu, out, VcpuSreg.TR);
    expect(out.type).toBe(0xb);
    ops.setSegment(vcpu, { ...emptySegment(), type: 2, s: 1, present: 1, limit: 0xffff, unusable: 0 }, VcpuSreg.DS);
    ops.getSegment(vcpu, out, VcpuSreg.DS);
    expect(out.type).toBe(3);
    svm.vmcb.setSegBase(VMCB_SAVE.GS, 0x1234_5678_9000n);
    expect(ops.getSegmentBase(vcpu, VcpuSreg.GS)).toBe(0x1234_5678_9000n);
  });

  test("the guest's CPL after running is VMCB.CPL (0 in the boot stub)", () => {
    const { vcpu } = longModeGuest((a) => a.hlt());
    runToHlt(vcpu);
    expect(vcpu.kvm.ops.getCpl(vcpu)).toBe(0);
    expect(vcpu.kvm.ops.getCsDbLBits(vcpu)).toEqual({ db: 0, l: 1 });
  });
});

describe('control registers, descriptor tables, RFLAGS, register cache', () => {
  test('setEfer forces EFER.SVME in the VMCB; setCr4 refuses VMXE; setCr0 with LME enters long mode', () => {
    const { ops, vcpu, svm } = vm();
    ops.setEfer(vcpu, 1n << 8n);
    expect(svm.vmcb.read64(VMCB_SAVE.EFER)).toBe((1n << 8n) | (1n << 12n));
    expect(vcpu.arch.efer).toBe(1n << 8n);
    expect(ops.setCr4(vcpu, 1n << 13n)).toBe(1);
    expect(ops.setCr4(vcpu, 1n << 5n)).toBe(0);
    expect(svm.vmcb.read64(VMCB_SAVE.CR4)).toBe(1n << 5n);
    ops.setCr0(vcpu, 0x80000011n);
    expect(vcpu.arch.efer & (1n << 10n)).toBe(1n << 10n);
    expect(svm.vmcb.read64(VMCB_SAVE.EFER) & (1n << 10n)).toBe(1n << 10n);
    expect(svm.vmcb.read64(VMCB_SAVE.CR0)).toBe(0x80000011n);
  });

  test('GDTR/IDTR live in the save area', () => {
    const { ops, vcpu, svm } = vm();
    ops.setGdt(vcpu, { size: 0x27, address: 0x9000n });
    ops.setIdt(vcpu, { size: 0xfff, address: 0xffff_8000_0000_0000n });
    expect(svm.vmcb.segLimit(VMCB_SAVE.GDTR)).toBe(0x27);
    expect(svm.vmcb.segBase(VMCB_SAVE.IDTR)).toBe(0xffff_8000_0000_0000n);
    const d = { size: 0, address: 0n };
    ops.getIdt(vcpu, d);
    expect(d).toEqual({ size: 0xfff, address: 0xffff_8000_0000_0000n });
    ops.getGdt(vcpu, d);
    expect(d).toEqual({ size: 0x27, address: 0x9000n });
  });

  test('RAX/RSP/RIP are copied back from the save area at every exit; the other GPRs come from the processor through cacheReg', () => {
    const { vcpu, guest } = longModeGuest((a) => {
      a.mov(eax, 0xabcd);
      a.mov(edi, 0x1234);
      a.here('h');
      a.hlt();
    });
    runToHlt(vcpu);
    // svm_vcpu_run reads RAX/RSP/RIP back after #VMEXIT: cached, and what the save area holds.
    const svm = svmOf(vcpu);
    expect(vcpu.arch.regsAvail & (1 << KvmReg.RAX)).not.toBe(0);
    expect(vcpu.registerRead(KvmReg.RAX)).toBe(0xabcdn);
    expect(vcpu.registerRead(KvmReg.RAX)).toBe(svm.vmcb.read64(VMCB_SAVE.RAX));
    expect(vcpu.registerRead(KvmReg.RSP)).toBe(svm.vmcb.read64(VMCB_SAVE.RSP));
    expect(vcpu.registerRead(KvmReg.RIP)).toBe(BigInt(guest.symbols['h'] + 1));
    // RDI was never asked for since the exit: it is read from the processor on first use.
    expect(vcpu.arch.regsAvail & (1 << KvmReg.RDI)).toBe(0);
    vcpu.cpu.state.gprLo[KvmReg.RDI] = 0x5555;
    expect(vcpu.registerRead(KvmReg.RDI)).toBe(0x5555n);
    expect(vcpu.arch.regsAvail & (1 << KvmReg.RDI)).not.toBe(0);
    // CR3 is the guest's own under NPT: read from the save area.
    expect(vcpu.readCr3()).toBe(svm.vmcb.read64(VMCB_SAVE.CR3));
    expect(vcpu.readCr3()).toBe(0x70000n);
  });

  test('getRflags/setRflags are the save-area RFLAGS', () => {
    const { ops, vcpu, svm } = vm();
    ops.setRflags(vcpu, 0x246n);
    expect(svm.vmcb.read64(VMCB_SAVE.RFLAGS)).toBe(0x246n);
    svm.vmcb.write64(VMCB_SAVE.RFLAGS, 0x2n);
    expect(ops.getRflags(vcpu)).toBe(0x2n);
  });

  test('vcpuReset: CS F000/FFFF0000, RIP FFF0, CR0 CD|NW|ET, EFER.SVME, KVM intercepts', () => {
    const { vcpu, svm } = vm();
    const v = svm.vmcb;
    expect(v.segSelector(VMCB_SAVE.CS)).toBe(0xf000);
    expect(v.segBase(VMCB_SAVE.CS)).toBe(0xffff0000n);
    expect(v.read64(VMCB_SAVE.RIP)).toBe(0xfff0n);
    expect(v.read64(VMCB_SAVE.CR0)).toBe(0x60000010n);
    expect(v.read64(VMCB_SAVE.EFER)).toBe(1n << 12n);
    expect(v.read64(VMCB_SAVE.DR6)).toBe(0xffff0ff0n);
    expect(v.testBit32(VMCB_CONTROL.INTERCEPT_MISC2, Intercept2.VMRUN)).toBe(true);
    expect(v.read64(VMCB_CONTROL.NP_ENABLE)).toBe(1n);
    expect(vcpu.getRegs().rdx).toBe(0x00800f12n);
  });
});

describe('MSRs (svm_get_msr / svm_set_msr)', () => {
  test('SYSENTER_EIP/ESP keep 64 bits; SYSENTER_CS is 16 bits; all in the save area too', () => {
    const { vcpu, svm } = vm();
    vcpu.setMsr(MSR.IA32_SYSENTER_EIP, 0xffff_8000_1234_5678n);
    vcpu.setMsr(MSR.IA32_SYSENTER_ESP, 0xffff_8000_0000_1000n);
    vcpu.setMsr(MSR.IA32_SYSENTER_CS, 0x10010n);
    expect(vcpu.getMsr(MSR.IA32_SYSENTER_EIP)).toBe(0xffff_8000_1234_5678n);
    expect(vcpu.getMsr(MSR.IA32_SYSENTER_ESP)).toBe(0xffff_8000_0000_1000n);
    expect(svm.vmcb.read64(VMCB_SAVE.SYSENTER_EIP)).toBe(0xffff_8000_1234_5678n);
    expect(vcpu.getMsr(MSR.IA32_SYSENTER_CS)).toBe(0x10n);
  });

  test('VMLOAD/VMSAVE state: STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE', () => {
    const { vcpu, svm } = vm();
    const cases: Array<[number, keyof typeof VMCB_SAVE]> = [
      [MSR.STAR, 'STAR'], [MSR.LSTAR, 'LSTAR'], [MSR.CSTAR, 'CSTAR'], [MSR.SYSCALL_MASK, 'SFMASK'], [MSR.KERNEL_GS_BASE, 'KERNEL_GS_BASE'],
    ];
    cases.forEach(([msr, fld], i) => {
      vcpu.setMsr(msr, 0x1000n + BigInt(i));
      expect(svm.vmcb.read64(VMCB_SAVE[fld] as typeof VMCB_SAVE.STAR)).toBe(0x1000n + BigInt(i));
      expect(vcpu.getMsr(msr)).toBe(0x1000n + BigInt(i));
    });
  });

  test('TSC_AUX (32 bits), DEBUGCTL (LBR/BTF only) and the LBR MSRs from the save area', () => {
    const { vcpu, svm } = vm();
    vcpu.setMsr(MSR.TSC_AUX, 7n);
    expect(vcpu.getMsr(MSR.TSC_AUX)).toBe(7n);
    expect(() => vcpu.setMsr(MSR.TSC_AUX, 1n << 32n)).toThrow();
    vcpu.setMsr(MSR.IA32_DEBUGCTLMSR, 1n);
    expect(svm.vmcb.read64(VMCB_SAVE.DBGCTL)).toBe(1n);
    expect(() => vcpu.setMsr(MSR.IA32_DEBUGCTLMSR, 0x40n)).toThrow();
    svm.vmcb.write64(VMCB_SAVE.BR_FROM, 0x111n);
    svm.vmcb.write64(VMCB_SAVE.BR_TO, 0x222n);
    svm.vmcb.write64(VMCB_SAVE.LASTEXCPFROM, 0x333n);
    svm.vmcb.write64(VMCB_SAVE.LASTEXCPTO, 0x444n);
    expect([MSR_AMD.LASTBRANCHFROMIP, MSR_AMD.LASTBRANCHTOIP, MSR_AMD.LASTINTFROMIP, MSR_AMD.LASTINTTOIP].map((m) => vcpu.getMsr(m)))
      .toEqual([0x111n, 0x222n, 0x333n, 0x444n]);
  });

  test('VM_HSAVE_PA (4 KiB aligned), VM_CR (LOCK freezes SVMDIS), SPEC_CTRL, DE_CFG, PAT → G_PAT', () => {
    const { vcpu, svm } = vm();
    vcpu.setMsr(MSR_AMD.VM_HSAVE_PA, 0x7000n);
    expect(vcpu.getMsr(MSR_AMD.VM_HSAVE_PA)).toBe(0x7000n);
    expect(() => vcpu.setMsr(MSR_AMD.VM_HSAVE_PA, 0x7001n)).toThrow();
    vcpu.setMsr(MSR_AMD.VM_CR, 1n << 3n);
    expect(() => vcpu.setMsr(MSR_AMD.VM_CR, (1n << 3n) | (1n << 4n))).toThrow();
    vcpu.setMsr(MSR.IA32_SPEC_CTRL, 4n);
    expect(vcpu.getMsr(MSR.IA32_SPEC_CTRL)).toBe(4n);
    expect(() => vcpu.setMsr(MSR.IA32_SPEC_CTRL, 8n)).toThrow();
    vcpu.setMsr(MSR_AMD.DE_CFG, 2n);
    expect(vcpu.getMsr(MSR_AMD.DE_CFG)).toBe(2n);
    vcpu.setMsr(MSR.IA32_CR_PAT, 0x0006060606060606n);
    expect(svm.vmcb.read64(VMCB_SAVE.G_PAT)).toBe(0x0006060606060606n);
    expect(svm.vmcb.isClean(VmcbCleanBit.NP)).toBe(false);
    vcpu.setMsr(MSR_AMD.VIRT_SPEC_CTRL, 4n); // host-initiated
    expect(vcpu.getMsr(MSR_AMD.VIRT_SPEC_CTRL)).toBe(4n);
  });

  test('getMsrFeature reports DE_CFG.LFENCE_SERIALIZE; unknown feature MSRs are refused', () => {
    const { ops } = vm();
    const e = { index: MSR_AMD.DE_CFG, data: 0n };
    expect(ops.getMsrFeature(e)).toBe(0);
    expect(e.data).toBe(2n);
    expect(ops.getMsrFeature({ index: 0x12345, data: 0n })).toBe(1);
  });

  test('hasEmulatedMsr: no VMX capability MSRs on AMD', () => {
    const { ops } = vm();
    expect(ops.hasEmulatedMsr(0x480)).toBe(false);
    expect(ops.hasEmulatedMsr(0x4d0)).toBe(false);
    expect(ops.hasEmulatedMsr(MSR.IA32_SPEC_CTRL)).toBe(true);
  });
});

describe('AMD PMU: PERF_CTL/PERF_CTR count retired instructions exactly', () => {
  test('a counter enabled on event 0xC0 counts the guest instructions between two RDMSRs', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(ecx, 0xc0010000);
      a.mov(eax, 0xc0 | (1 << 16) | (1 << 17) | (1 << 22));
      a.xor(edx, edx);
      a.wrmsr();
      a.mov(ecx, 0xc0010004);
      a.rdmsr();
      a.mov(edi, eax);
      a.nop();
      a.nop();
      a.nop();
      a.rdmsr();
      a.hlt();
    });
    runToHlt(vcpu);
    // Between the two reads the guest retired the first RDMSR (it read the counter, then KVM
    // completed it and counted it: kvm_skip_emulated_instruction → kvm_pmu_instruction_retired),
    // MOV and three NOPs — as back-to-back reads on hardware differ by the reading instruction.
    const r = vcpu.getRegs();
    expect(r.rax - r.rdi).toBe(5n);
    expect(vcpu.getMsr(0xc0010000) & 0xffn).toBe(0xc0n);
  });

  test('PERF_CTR writes set the count; rdpmcEcxToPmc and msrIdxToPmc reach the same counter', () => {
    const { vcpu, ops } = vm();
    vcpu.setMsr(0xc0010004, 1000n);
    expect(vcpu.getMsr(0xc0010004)).toBe(1000n);
    expect(ops.pmuOps.rdpmcEcxToPmc(vcpu, 0)?.pmc.counter).toBe(1000n);
    expect(ops.pmuOps.msrIdxToPmc(vcpu, 0xc0010004)?.counter).toBe(1000n);
    expect(ops.pmuOps.isValidRdpmcEcx(vcpu, 4)).toBe(false);
    expect(() => vcpu.setMsr(0xc0010000, 1n << 50n)).toThrow();
  });
});

describe('mmu, tsc, sev, apicv, smm, nested, misc', () => {
  test('loadMmuPgd puts the TDP root in N_CR3 and the guest CR3 in the save area; 4-level NPT; no memory type', () => {
    const { ops, vcpu, svm, kvm } = vm();
    vcpu.arch.cr3 = 0x5000n;
    vcpu.arch.regsAvail |= 1 << KvmReg.CR3;
    ops.loadMmuPgd(vcpu, BigInt(kvm.mmu!.root));
    expect(svm.vmcb.read64(VMCB_CONTROL.N_CR3)).toBe(BigInt(kvm.mmu!.root));
    expect(svm.vmcb.read64(VMCB_SAVE.CR3)).toBe(0x5000n);
    expect(ops.getTdpLevel(vcpu)).toBe(4);
    expect(ops.getMtMask!(vcpu, 0n, false)).toBe(0n);
    expect(kvm.mmu!.format.name).toBe('npt');
  });

  test('writeL1TscOffset writes TSC_OFFSET (and the guest sees it through RDTSC-based MSR reads)', () => {
    const { ops, vcpu, svm } = vm();
    expect(ops.writeL1TscOffset(vcpu, 12345n)).toBe(12345n);
    expect(svm.vmcb.read64(VMCB_CONTROL.TSC_OFFSET)).toBe(12345n);
    expect(svm.vmcb.isClean(VmcbCleanBit.I)).toBe(false);
  });

  test('getExitInfo returns EXITINFO1/2', () => {
    const { ops, vcpu, svm } = vm();
    svm.vmcb.write64(VMCB_CONTROL.EXITINFO1, 7n);
    svm.vmcb.write64(VMCB_CONTROL.EXITINFO2, 9n);
    expect(ops.getExitInfo(vcpu)).toEqual({ info1: 7n, info2: 9n });
  });

  test('SEV is unavailable: memEncOp/memEncRegRegion/memEncUnregRegion answer -ENOTTY', () => {
    const { ops, kvm } = vm();
    expect(ops.memEncOp!(kvm, {})).toBe(-25);
    expect(ops.memEncRegRegion!(kvm, { addr: 0n, size: 4096n })).toBe(-25);
    expect(ops.memEncUnregRegion!(kvm, { addr: 0n, size: 4096n })).toBe(-25);
  });

  test('AVIC inhibit reasons differ from APICv: IRQ window, PIT reinjection and nested inhibit AVIC', () => {
    const { ops } = vm();
    for (const r of [ApicvInhibitReason.DISABLE, ApicvInhibitReason.HYPERV, ApicvInhibitReason.NESTED, ApicvInhibitReason.IRQWIN, ApicvInhibitReason.PIT_REINJ]) {
      expect(ops.checkApicvInhibitReasons(r)).toBe(true);
    }
    expect(ops.checkApicvInhibitReasons(7)).toBe(false);
  });

  test('with AVIC inactive deliverPostedInterrupt refuses (-1) so core injects through EVENTINJ', () => {
    const { ops, vcpu } = vm();
    ops.refreshApicvExecCtrl(vcpu);
    expect(ops.deliverPostedInterrupt(vcpu, 0x40)).toBe(-1);
  });

  test('nestedOps is present but nested SVM is not offered', () => {
    const { ops, vcpu } = vm();
    expect(ops.nestedOps.enabled).toBe(false);
    expect(ops.nestedOps.getState(vcpu).format).toBe(1);
  });

  test('patchHypercall writes VMMCALL (0F 01 D9)', () => {
    const { ops, vcpu } = vm();
    const b = new Uint8Array(3);
    ops.patchHypercall(vcpu, b);
    expect(Array.from(b)).toEqual([0x0f, 0x01, 0xd9]);
  });

  test('cpuidUpdate intercepts RDTSCP when the guest CPUID lacks it', () => {
    const { vcpu, svm } = vm();
    const ids = vcpu.getCpuid2();
    const ext = ids.find((e) => e.function === 0x80000001)!;
    vcpu.setCpuid2(ids);
    expect(svm.vmcb.testBit32(VMCB_CONTROL.INTERCEPT_MISC2, Intercept2.RDTSCP)).toBe(false);
    ext.edx &= ~(1 << 27);
    vcpu.setCpuid2(ids);
    expect(svm.vmcb.testBit32(VMCB_CONTROL.INTERCEPT_MISC2, Intercept2.RDTSCP)).toBe(true);
  });

  test('requestImmediateExit makes the next VMRUN exit with INTR at the first instruction boundary', () => {
    const { vcpu } = longModeGuest((a) => {
      const l = a.here('spin');
      a.jmp(l);
    });
    vcpu.runBudget = 100_000;
    let run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_INTR);
    const before = vcpu.exitCounts.get('interrupt') ?? 0;
    const retired = vcpu.cpu.state.instructionsRetired;
    vcpu.kvm.ops.requestImmediateExit(vcpu);
    // The kick stops the guest before its first instruction; the loop then runs until the (small) budget.
    vcpu.runBudget = 50;
    run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_INTR);
    expect((vcpu.exitCounts.get('interrupt') ?? 0) - before).toBe(2);
    expect(vcpu.cpu.state.instructionsRetired - retired).toBe(50);
  });
});

describe('the small hooks, each with its SVM answer', () => {
  test('updateBpIntercept clears the #DB/#BP intercepts (no userspace debugging requested)', () => {
    const { ops, vcpu, svm } = vm();
    svm.vmcb.write32(VMCB_CONTROL.INTERCEPT_EXCEPTIONS, svm.vmcb.read32(VMCB_CONTROL.INTERCEPT_EXCEPTIONS) | 0xa);
    ops.updateBpIntercept(vcpu);
    expect(svm.vmcb.read32(VMCB_CONTROL.INTERCEPT_EXCEPTIONS) & 0xa).toBe(0);
    expect(svm.vmcb.isClean(VmcbCleanBit.I)).toBe(false);
  });

  test('syncDirtyDebugRegs takes DR0–3 from the processor and DR6/DR7 from the VMCB', () => {
    const { ops, vcpu, svm } = vm();
    vcpu.cpu.state.dr[2] = 0x1234n;
    svm.vmcb.write64(VMCB_SAVE.DR7, 0x4aan);
    ops.syncDirtyDebugRegs(vcpu);
    expect(vcpu.arch.db[2]).toBe(0x1234n);
    expect(vcpu.arch.dr7).toBe(0x4aan);
    ops.setDr7(vcpu, 0x400n);
    expect(svm.vmcb.read64(VMCB_SAVE.DR7)).toBe(0x400n);
  });

  test('schedIn restores the PAUSE filter count; apicInitSignalBlocked follows the INIT intercept', () => {
    const { ops, vcpu, svm } = vm();
    svmModuleParamsSet('pauseFilterCount', 3000, () => {
      svm.vmcb.write16(VMCB_CONTROL.PAUSE_FILTER_COUNT, 7);
      ops.schedIn(vcpu, 0);
      expect(svm.vmcb.read16(VMCB_CONTROL.PAUSE_FILTER_COUNT)).toBe(3000);
    });
    expect(ops.apicInitSignalBlocked(vcpu)).toBe(false);
    svm.vmcb.setBit32(VMCB_CONTROL.INTERCEPT_MISC1, 3 /* INIT */, true);
    expect(ops.apicInitSignalBlocked(vcpu)).toBe(true);
  });

  test('preUpdateApicvExecCtrl(false) keeps AVIC off at the next refresh even with avic=1', () => {
    const { ops, vcpu, svm, kvm } = vm();
    svmModuleParamsSet('avic', true, () => {
      kvm.irqchip = {} as never;
      ops.preUpdateApicvExecCtrl!(kvm, false);
      ops.refreshApicvExecCtrl(vcpu);
      expect(svm.vmcb.read32(VMCB_CONTROL.INT_CTL) >>> 31).toBe(0);
      kvm.irqchip = null;
    });
  });

  test('constant answers: SMM, SEV errata, WBINVD, TSS, check_intercept, IRTE', () => {
    const { ops, vcpu, kvm } = vm();
    expect(ops.smiAllowed(vcpu, true)).toBe(1);
    expect(ops.preEnterSmm(vcpu, new Uint8Array(512))).toBe(0);
    expect(ops.preLeaveSmm(vcpu, new Uint8Array(512))).toBe(0);
    expect(ops.needEmulationOnPageFault(vcpu)).toBe(true);
    expect(ops.hasWbinvdExit()).toBe(true);
    expect(ops.cpuHasAcceleratedTpr()).toBe(false);
    expect(ops.setTssAddr!(kvm, 0xfffbd000)).toBe(0);
    expect(ops.updatePiIrte!(kvm, 1, 2, true)).toBe(0);
    expect(ops.checkIntercept(vcpu, {} as never, 0, {} as never)).toBe(0);
  });
});

function svmModuleParamsSet<K extends keyof typeof svmModuleParams>(k: K, v: (typeof svmModuleParams)[K], fn: () => void): void {
  const old = svmModuleParams[k];
  svmModuleParams[k] = v;
  try {
    fn();
  } finally {
    svmModuleParams[k] = old;
  }
}

describe('lifecycle', () => {
  test('destroy: vcpuFree unmaps the VMCB and MSRPM, vmDestroy drops kvm_svm, hardwareDisable clears EFER.SVME', () => {
    const { kvm, svm } = vm();
    const backend = kvm.ops as unknown as SvmBackend;
    expect(backend.hostSvmEnabled).toBe(true);
    const vmcbPa = svm.vmcb.pa;
    const msrpmPa = svm.msrpm.pa;
    kvm.destroy();
    expect(kvm.hostMemory.find(vmcbPa)).toBeNull();
    expect(kvm.hostMemory.find(msrpmPa)).toBeNull();
    expect(kvm.vendor).toBeNull();
    expect(backend.hostSvmEnabled).toBe(false);
  });

  test('VMRUN refuses to run with the host EFER.SVME clear (hardwareEnable not called)', () => {
    const { kvm, vcpu } = vm();
    kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n });
    kvm.ops.hardwareDisable();
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_INTERNAL_ERROR);
    expect(run.internalMessage).toContain('EFER.SVME clear on the host');
  });
});
