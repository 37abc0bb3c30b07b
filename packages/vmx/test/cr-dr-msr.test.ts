/**
 * CR and DR access exits (handle_cr / handle_dr with the guest/host masks and read shadows),
 * and vmx_get_msr / vmx_set_msr gated on guest CPUID and host_initiated as in the seed.
 */
import { KvmExitReason, KvmVcpu, MSR, MsrData } from '@tsvisor/core';
import { F, MSR_IA32_SPEC_CTRL, MSR_IA32_TSX_CTRL, MSR_IA32_FEAT_CTL, MSR_IA32_MCG_EXT_CTL, MSR_IA32_RTIT_CTL, MSR_IA32_BNDCFGS, MSR_IA32_UMWAIT_CONTROL, MSR_IA32_VMX_BASIC, VMX_CAPABILITY_MSRS } from '@tsvisor/vmx';
import { bootGuest, buildLongModeGuest, cr0, cr4, cr8, dr7, eax, ebx, Label, rax, rbx } from '@tsvisor/testkit';
import { realModeVm, VMX } from './helpers';

const count = (vcpu: KvmVcpu, name: string) => vcpu.exitCounts.get(name) ?? 0;

describe('CR access exits (SDM 26.1.3 / 28.2.1)', () => {
  it('MOV to CR0 changing the host-owned NE exits; KVM updates the shadow, the guest reads its own value', () => {
    const { vcpu, vmx } = realModeVm((a) => a.mov(eax, cr0).or(eax, 0x20).mov(cr0, eax).mov(ebx, cr0).hlt());
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(count(vcpu, 'CR_ACCESS')).toBe(1);
    expect(vmx.vmcs.readNat(F.CR0_READ_SHADOW) & 0x20n).toBe(0x20n);
    expect(vcpu.getRegs().rbx & 0xffffffffn).toBe(0x60000030n);
    expect(vcpu.getSregs().cr0).toBe(0x60000030n);
  });

  it('MOV to CR0 touching only guest-owned bits does not exit; the guest reads NE from the shadow', () => {
    const { vcpu } = realModeVm((a) => a.mov(eax, cr0).or(eax, 0x8).mov(cr0, eax).mov(ebx, cr0).hlt());
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(count(vcpu, 'CR_ACCESS')).toBe(0);
    expect(vcpu.getRegs().rbx & 0xffffffffn).toBe(0x60000018n); // TS set, NE (host's 1) hidden
    expect(vcpu.getSregs().cr0).toBe(0x60000018n);
  });

  it('setting CR4.VMXE exits and is #GP (no nested VMX); CR4.PAE is the guest\'s', () => {
    const { vcpu, kvm } = realModeVm((a) => a.mov(eax, 0x20).mov(cr4, eax).mov(eax, 0x2020).mov(cr4, eax).hlt());
    const mem = kvm.slot(0)!.userspace;
    mem.set([0x00, 0x20, 0, 0], 13 * 4);
    mem.set([0xb0, 0x0d, 0xe6, 0x80, 0xf4], 0x2000);
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.ioData[0]).toBe(13);
    expect(count(vcpu, 'CR_ACCESS')).toBe(1);
    expect(vcpu.getSregs().cr4).toBe(0x20n);
  });

  it('MOV to/from CR8 exits (no TPR shadow) and goes through KVM\'s CR8', () => {
    const { vcpu } = bootGuest(VMX, buildLongModeGuest((a) => a.mov(rax, 5).mov(cr8, rax).mov(rbx, cr8).hlt()));
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(count(vcpu, 'CR_ACCESS')).toBe(2);
    expect(vcpu.arch.cr8).toBe(5n);
    expect(vcpu.getRegs().rbx).toBe(5n);
  });

  it('MOV DR exits; DR7 lands in GUEST_DR7 through setDr7', () => {
    const { vcpu, vmx } = realModeVm((a) => a.mov(eax, 0x401).mov(dr7, eax).mov(ebx, dr7).hlt());
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(count(vcpu, 'DR_ACCESS')).toBe(2);
    expect(vcpu.arch.dr7).toBe(0x401n);
    expect(vmx.vmcs.readNat(F.GUEST_DR7)).toBe(0x401n);
    expect(vcpu.getRegs().rbx).toBe(0x401n);
  });
  void Label;
});

describe('vmx_get_msr / vmx_set_msr', () => {
  function vm() {
    return realModeVm((a) => a.hlt());
  }
  const get = (vcpu: KvmVcpu, index: number, host: boolean): number | bigint => {
    const m: MsrData = { hostInitiated: host, index, data: 0n };
    const r = vcpu.kvm.ops.getMsr(vcpu, m);
    return r === 0 ? m.data : -r;
  };
  const set = (vcpu: KvmVcpu, index: number, data: bigint, host: boolean): number => vcpu.kvm.ops.setMsr(vcpu, { hostInitiated: host, index, data });

  it('FS/GS/KERNEL_GS base and SYSENTER_* live in the VMCS (or vcpu_vmx), with canonical checks', () => {
    const { vcpu, vmx } = vm();
    expect(set(vcpu, MSR.GS_BASE, 0xffff_8000_1234_0000n, false)).toBe(0);
    expect(vmx.vmcs.readNat(F.GUEST_GS_BASE)).toBe(0xffff_8000_1234_0000n);
    expect(set(vcpu, MSR.FS_BASE, 0x0000_8000_0000_0000n, true)).toBe(1);
    expect(set(vcpu, MSR.KERNEL_GS_BASE, 0x5000n, false)).toBe(0);
    expect(get(vcpu, MSR.KERNEL_GS_BASE, false)).toBe(0x5000n);
    expect(set(vcpu, MSR.IA32_SYSENTER_CS, 0x10n, false)).toBe(0);
    expect(vmx.vmcs.read32(F.GUEST_SYSENTER_CS)).toBe(0x10);
    expect(set(vcpu, MSR.IA32_SYSENTER_EIP, 0xffff_ffff_8100_0000n, false)).toBe(0);
    expect(get(vcpu, MSR.IA32_SYSENTER_EIP, false)).toBe(0xffff_ffff_8100_0000n);
    expect(vmx.vmcs.readNat(F.GUEST_SYSENTER_EIP)).toBe(0xffff_ffff_8100_0000n);
  });

  it('EFER goes through the common path and lands in GUEST_IA32_EFER', () => {
    const { vcpu, vmx } = vm();
    expect(set(vcpu, MSR.EFER, 0x100n, true)).toBe(0);
    expect(vmx.vmcs.read64(F.GUEST_IA32_EFER)).toBe(0x100n);
    expect(get(vcpu, MSR.EFER, false)).toBe(0x100n);
  });

  it('SPEC_CTRL and TSC_AUX are gated on guest CPUID unless host-initiated', () => {
    const { vcpu } = vm();
    expect(get(vcpu, MSR_IA32_SPEC_CTRL, false)).toBe(-1);
    expect(get(vcpu, MSR_IA32_SPEC_CTRL, true)).toBe(0n);
    expect(set(vcpu, MSR_IA32_SPEC_CTRL, 1n, true)).toBe(0);
    expect(set(vcpu, MSR_IA32_SPEC_CTRL, 1n << 5n, true)).toBe(1);
    expect(get(vcpu, MSR.TSC_AUX, false)).toBe(0n); // supported CPUID has RDTSCP
    expect(set(vcpu, MSR.TSC_AUX, 1n << 32n, false)).toBe(1);
    const cpuid = vcpu.getCpuid2().map((e) => (e.function === 0x80000001 ? { ...e, edx: e.edx & ~(1 << 27) } : e));
    vcpu.setCpuid2(cpuid);
    expect(get(vcpu, MSR.TSC_AUX, false)).toBe(-1);
    expect(set(vcpu, MSR.TSC_AUX, 7n, true)).toBe(0);
    expect(get(vcpu, MSR.TSC_AUX, true)).toBe(7n);
  });

  it('TSX_CTRL, UMWAIT_CONTROL, BNDCFGS, RTIT: absent features are refused to the guest', () => {
    const { vcpu } = vm();
    expect(get(vcpu, MSR_IA32_TSX_CTRL, false)).toBe(-1);
    expect(set(vcpu, MSR_IA32_TSX_CTRL, 1n, true)).toBe(0);
    expect(get(vcpu, MSR_IA32_TSX_CTRL, true)).toBe(1n);
    expect(get(vcpu, MSR_IA32_UMWAIT_CONTROL, false)).toBe(-1);
    expect(get(vcpu, MSR_IA32_BNDCFGS, true)).toBe(-1); // no MPX on this processor
    expect(get(vcpu, MSR_IA32_RTIT_CTL, true)).toBe(-1); // no Intel PT host-guest mode
  });

  it('FEATURE_CONTROL locks; MCG_EXT_CTL needs LMCE enabled', () => {
    const { vcpu } = vm();
    expect(set(vcpu, MSR_IA32_FEAT_CTL, 1n, false)).toBe(0);
    expect(set(vcpu, MSR_IA32_FEAT_CTL, 1n, false)).toBe(1); // locked
    expect(set(vcpu, MSR_IA32_FEAT_CTL, 0n, true)).toBe(0); // userspace may still write it
    expect(set(vcpu, MSR_IA32_FEAT_CTL, 1n << 20n, true)).toBe(1); // LMCE not offered
    expect(get(vcpu, MSR_IA32_MCG_EXT_CTL, false)).toBe(-1);
  });

  it('the VMX capability range: absent without nested VMX; getMsrFeature reports the hardware', () => {
    const { vcpu, kvm } = vm();
    expect(get(vcpu, MSR_IA32_VMX_BASIC, true)).toBe(-1);
    expect(set(vcpu, MSR_IA32_VMX_BASIC, 0n, false)).toBe(1);
    const e = { index: MSR_IA32_VMX_BASIC, data: 0n };
    expect(kvm.ops.getMsrFeature(e)).toBe(0);
    expect(e.data).toBe(VMX_CAPABILITY_MSRS.get(MSR_IA32_VMX_BASIC));
    expect(kvm.ops.getMsrFeature({ index: 0x10, data: 0n })).toBe(1);
  });

  it('the user-return MSRs (LSTAR …) are kept per vCPU; PAT validity', () => {
    const { vcpu, vmx } = vm();
    expect(set(vcpu, MSR.LSTAR, 0xffff_ffff_8100_0000n, false)).toBe(0);
    expect(set(vcpu, MSR.LSTAR, 0x0000_8000_0000_0000n, false)).toBe(1);
    expect(get(vcpu, MSR.LSTAR, false)).toBe(0xffff_ffff_8100_0000n);
    expect(set(vcpu, MSR.IA32_CR_PAT, 0x0202020202020202n, false)).toBe(1);
    expect(set(vcpu, MSR.IA32_CR_PAT, 0x0606060606060606n, false)).toBe(0);
    expect(vmx.vmcs.read64(F.GUEST_IA32_PAT)).toBe(0x0606060606060606n);
  });
});
