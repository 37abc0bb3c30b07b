/**
 * Guest-mode rules built from the VM-execution controls (SDM Vol. 3C ch. 26): what the
 * processor is told exits. Each rule is driven through the VMCS as KVM would set it.
 */
import { InterceptInsn } from '@tsvisor/core';
import { F, VmxGuestModeRules, toVmx } from '@tsvisor/vmx';
import * as D from '@tsvisor/vmx';
import { realModeVm } from './helpers';

function setup() {
  const { kvm, vcpu } = realModeVm((a) => a.hlt());
  const vmx = toVmx(vcpu);
  const rules = new VmxGuestModeRules();
  const load = () => rules.load(vmx.vmcs, kvm.hostMemory, 1000n);
  load();
  return { kvm, vcpu, vmx, v: vmx.vmcs, rules, load, host: kvm.hostMemory };
}

describe('exception bitmap and #PF error-code mask/match (SDM 26.2)', () => {
  it('KVM intercepts #UD, #MC, #AC with EPT (not #PF)', () => {
    const { rules } = setup();
    expect(rules.exceptionExits(6, 0)).toBe(true);
    expect(rules.exceptionExits(18, 0)).toBe(true);
    expect(rules.exceptionExits(17, 0)).toBe(true);
    expect(rules.exceptionExits(13, 0)).toBe(false);
    expect(rules.exceptionExits(14, 2)).toBe(false);
  });
  it('#PF with bit 14 set exits iff (PFEC & MASK) == MATCH; with bit 14 clear iff it differs', () => {
    const { v, rules, load } = setup();
    v.write32(F.EXCEPTION_BITMAP, 1 << 14);
    v.write32(F.PAGE_FAULT_ERROR_CODE_MASK, 0x2);
    v.write32(F.PAGE_FAULT_ERROR_CODE_MATCH, 0x2);
    load();
    expect(rules.exceptionExits(14, 0x3)).toBe(true); // write fault
    expect(rules.exceptionExits(14, 0x1)).toBe(false); // read fault
    v.write32(F.EXCEPTION_BITMAP, 0);
    load();
    expect(rules.exceptionExits(14, 0x3)).toBe(false);
    expect(rules.exceptionExits(14, 0x1)).toBe(true);
  });
});

describe('I/O exiting (SDM 26.1.3)', () => {
  it('KVM uses unconditional I/O exiting', () => {
    const { rules } = setup();
    expect(rules.ioExits(0x80, 1, false)).toBe(true);
  });
  it('I/O bitmaps A and B, multi-byte accesses and wrap-around', () => {
    const { v, rules, load, host, vmx } = setup();
    v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) | D.CPU_BASED_USE_IO_BITMAPS);
    for (const p of [vmx.ioBitmapA, vmx.ioBitmapB]) { const s = host.slice(p, 4096); s.bytes.fill(0, s.offset, s.offset + 4096); }
    const set = (port: number) => { const base = port < 0x8000 ? vmx.ioBitmapA : vmx.ioBitmapB; const s = host.slice(base, 4096); s.bytes[s.offset + ((port & 0x7fff) >> 3)] |= 1 << (port & 7); };
    set(0x3f8);
    set(0x8001);
    load();
    expect(rules.ioExits(0x3f8, 1, false)).toBe(true);
    expect(rules.ioExits(0x3f9, 1, false)).toBe(false);
    expect(rules.ioExits(0x3f6, 4, true)).toBe(true); // 3f6..3f9 covers 3f8
    expect(rules.ioExits(0x8001, 1, true)).toBe(true); // bitmap B
    expect(rules.ioExits(0x8002, 2, true)).toBe(false);
    expect(rules.ioExits(0xffff, 2, true)).toBe(true); // wraps
  });
});

describe('MSR bitmap (SDM 25.6.9)', () => {
  it('read-low, read-high, write-low, write-high quarters; outside both ranges always exits', () => {
    const { rules } = setup();
    // KVM opens FS/GS/KERNEL_GS base and SYSENTER_* (vmx_disable_intercept_for_msr).
    expect(rules.msrExits(0xc0000100, false)).toBe(false);
    expect(rules.msrExits(0xc0000100, true)).toBe(false);
    expect(rules.msrExits(0xc0000102, true)).toBe(false);
    expect(rules.msrExits(0x174, true)).toBe(false);
    expect(rules.msrExits(0xc0000082, true)).toBe(true); // LSTAR
    expect(rules.msrExits(0xc0000080, false)).toBe(true); // EFER
    expect(rules.msrExits(0x10, false)).toBe(true);
    expect(rules.msrExits(0x40000000, false)).toBe(true);
    expect(rules.msrExits(0xc0002000, false)).toBe(true);
  });
  it('without "use MSR bitmaps" every RDMSR/WRMSR exits', () => {
    const { v, rules, load } = setup();
    v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) & ~D.CPU_BASED_USE_MSR_BITMAPS);
    load();
    expect(rules.msrExits(0xc0000100, false)).toBe(true);
  });
});

describe('CR accesses (SDM 26.1.3, 26.3)', () => {
  it('CR0/CR4 writes exit when a host-owned bit would differ from its shadow; reads see the shadow', () => {
    const { rules } = setup();
    // CR0: NE is host-owned, shadow says NE=0 (the guest's reset value 0x60000010).
    expect(rules.crWriteExits(0, 0x60000011n)).toBe(false); // PE is the guest's
    expect(rules.crWriteExits(0, 0x60000030n)).toBe(true); // NE differs
    expect(rules.crReadValue(0, 0x60000031n)).toBe(0x60000011n);
    // CR4: VMXE is host-owned and reads as 0; PAE is the guest's.
    expect(rules.crWriteExits(4, 0x20n)).toBe(false);
    expect(rules.crWriteExits(4, 0x2020n)).toBe(true);
    expect(rules.crWriteExits(4, 0x10000n)).toBe(true); // FSGSBASE: not offered, host-owned
    expect(rules.crReadValue(4, 0x2020n)).toBe(0x20n);
  });
  it('CR3 load exiting with the CR3-target list; CR8 exiting', () => {
    const { v, rules, load } = setup();
    expect(rules.crWriteExits(3, 0x5000n)).toBe(false); // EPT: CR3 is the guest's
    v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) | D.CPU_BASED_CR3_LOAD_EXITING | D.CPU_BASED_CR3_STORE_EXITING);
    v.write32(F.CR3_TARGET_COUNT, 1);
    v.writeNat(F.CR3_TARGET_VALUE0, 0x7000n);
    load();
    expect(rules.crWriteExits(3, 0x5000n)).toBe(true);
    expect(rules.crWriteExits(3, 0x7000n)).toBe(false);
    expect(rules.crReadExits(3)).toBe(true);
    expect(rules.crWriteExits(8, 1n)).toBe(true);
    expect(rules.crReadExits(8)).toBe(true);
  });
});

describe('instruction intercepts and other controls', () => {
  it('unconditional and control-selected instruction exits', () => {
    const { v, rules, load } = setup();
    expect(rules.insn[InterceptInsn.CPUID]).toBe(1);
    expect(rules.insn[InterceptInsn.VMCALL]).toBe(1);
    expect(rules.insn[InterceptInsn.XSETBV]).toBe(1);
    expect(rules.insn[InterceptInsn.HLT]).toBe(1);
    expect(rules.insn[InterceptInsn.MWAIT]).toBe(1);
    expect(rules.insn[InterceptInsn.RDTSC]).toBe(0);
    expect(rules.insn[InterceptInsn.INVLPG]).toBe(0); // EPT
    expect(rules.insn[InterceptInsn.VMMCALL]).toBe(0); // AMD's: #UD on Intel, not an exit
    expect(rules.insn[InterceptInsn.LGDT]).toBe(0);
    v.write32(F.CPU_BASED_VM_EXEC_CONTROL, (v.read32(F.CPU_BASED_VM_EXEC_CONTROL) | D.CPU_BASED_RDTSC_EXITING) & ~D.CPU_BASED_HLT_EXITING);
    v.write32(F.SECONDARY_VM_EXEC_CONTROL, v.read32(F.SECONDARY_VM_EXEC_CONTROL) | D.SECONDARY_EXEC_DESC | D.SECONDARY_EXEC_RDRAND_EXITING);
    load();
    expect(rules.insn[InterceptInsn.RDTSC]).toBe(1);
    expect(rules.insn[InterceptInsn.HLT]).toBe(0);
    expect(rules.insn[InterceptInsn.LGDT]).toBe(1);
    expect(rules.insn[InterceptInsn.STR]).toBe(1);
    expect(rules.insn[InterceptInsn.RDRAND]).toBe(1);
  });
  it('windows, MTF, MOV DR, VPID tag, preemption deadline', () => {
    const { v, rules, load, vmx } = setup();
    expect(rules.irqWindowExiting).toBe(false);
    expect(rules.drExits(7, true)).toBe(true);
    expect(rules.tlbTag).toBe(vmx.vpid);
    expect(vmx.vpid).toBeGreaterThan(0);
    v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) | D.CPU_BASED_INTR_WINDOW_EXITING | D.CPU_BASED_NMI_WINDOW_EXITING | D.CPU_BASED_MONITOR_TRAP_FLAG);
    v.write32(F.VMX_PREEMPTION_TIMER_VALUE, 10);
    load();
    expect(rules.irqWindowExiting).toBe(true);
    expect(rules.nmiWindowExiting).toBe(true);
    expect(rules.monitorTrapFlag).toBe(true);
    // TSC 1000, rate 5: the timer ticks when TSC bit 5 changes → ((1000 >> 5) + 10) << 5.
    expect(rules.preemptionDeadlineTsc).toBe(BigInt(((1000 >> 5) + 10) << 5));
  });
});
