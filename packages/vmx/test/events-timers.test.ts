/**
 * Event injection through the VM-entry interruption-information field, interrupt/NMI windows,
 * the VMX-preemption timer behind setHvTimer/requestImmediateExit, the TSC offset, and the
 * Intel PMU counting exactly.
 */
import { KvmExitReason, KvmReg, MSR } from '@tsvisor/core';
import { F, toVmx, PREEMPTION_TIMER_RATE, MSR_CORE_PERF_FIXED_CTR0, MSR_CORE_PERF_FIXED_CTR_CTRL, MSR_CORE_PERF_GLOBAL_CTRL, MSR_P6_EVNTSEL0, MSR_IA32_PERFCTR0 } from '@tsvisor/vmx';
import * as D from '@tsvisor/vmx';
import { al, ecx, Label } from '@tsvisor/testkit';
import { realModeVm } from './helpers';

/** Real-mode IVT entry `vector` → 0000:`handler`, whose code OUTs `vector` to port 0x80 then IRETs. */
function installHandler(mem: Uint8Array, vector: number, handler: number): void {
  mem.set([handler & 0xff, handler >> 8, 0, 0], vector * 4);
  mem.set([0xb0, vector, 0xe6, 0x80, 0xcf], handler); // mov al,vector; out 0x80,al; iret
}

const count = (vcpu: { exitCounts: Map<string, number> }, name: string) => vcpu.exitCounts.get(name) ?? 0;

describe('event injection', () => {
  it('KVM_INTERRUPT: setIrq injects through VM_ENTRY_INTR_INFO_FIELD and the guest takes it once', () => {
    const { vcpu, kvm } = realModeVm((a) => { const l = new Label('l'); a.sti(); a.bind(l); a.hlt(); a.jmp(l); });
    installHandler(kvm.slot(0)!.userspace, 0x20, 0x2000);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(vcpu.kvm.ops.interruptAllowed(vcpu, true)).toBe(1);
    vcpu.interrupt(0x20);
    let run = vcpu.runVcpu();
    // The IVT page was not yet in the EPT: delivery hit an EPT violation, the event came back
    // through IDT-vectoring information and was re-injected (vmx_complete_interrupts).
    expect(count(vcpu, 'EPT_VIOLATION')).toBeGreaterThan(0);
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.io.port).toBe(0x80);
    expect(run.ioData[0]).toBe(0x20);
    run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT); // IRET back to the HLT loop; not delivered twice
    expect(toVmx(vcpu).vmcs.read32(F.VM_ENTRY_INTR_INFO_FIELD) & D.INTR_INFO_VALID_MASK).toBe(0);
  });

  it('HLT not intercepted: the guest halts in guest mode (KVM_EXIT_INTR), an injected interrupt wakes it', () => {
    const { vcpu, kvm, vmx } = realModeVm((a) => { a.sti().hlt().out(0x81, al).hlt(); });
    installHandler(kvm.slot(0)!.userspace, 0x21, 0x2000);
    vmx.vmcs.write32(F.CPU_BASED_VM_EXEC_CONTROL, vmx.vmcs.read32(F.CPU_BASED_VM_EXEC_CONTROL) & ~D.CPU_BASED_HLT_EXITING);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_INTR);
    expect(count(vcpu, 'HLT')).toBe(0);
    expect(vmx.vmcs.read32(F.GUEST_ACTIVITY_STATE)).toBe(D.GUEST_ACTIVITY_HLT);
    vcpu.interrupt(0x21);
    let run = vcpu.runVcpu();
    expect(run.io.port).toBe(0x80);
    expect(run.ioData[0]).toBe(0x21);
    run = vcpu.runVcpu();
    expect(run.io.port).toBe(0x81); // IRET returned after the HLT
  });

  it('interrupt window: exits when the guest enables interrupts (KVM_EXIT_IRQ_WINDOW_OPEN)', () => {
    const { vcpu } = realModeVm((a) => { a.cli().out(0x81, al).sti().nop().nop().hlt(); });
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(vcpu.kvm.ops.interruptAllowed(vcpu, false)).toBe(0);
    vcpu.run.requestInterruptWindow = true;
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IRQ_WINDOW_OPEN);
    expect(count(vcpu, 'INTERRUPT_WINDOW')).toBe(1);
    expect(toVmx(vcpu).vmcs.read32(F.CPU_BASED_VM_EXEC_CONTROL) & D.CPU_BASED_INTR_WINDOW_EXITING).toBe(0);
  });

  it('KVM_NMI: setNmi injects an NMI; NMIs stay blocked until IRET', () => {
    const { vcpu, kvm } = realModeVm((a) => { const l = new Label('l'); a.bind(l); a.hlt(); a.jmp(l); });
    installHandler(kvm.slot(0)!.userspace, 2, 0x3000);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(vcpu.kvm.ops.nmiAllowed(vcpu, true)).toBe(1);
    vcpu.nmi();
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.ioData[0]).toBe(2);
    expect(vcpu.kvm.ops.getNmiMask(vcpu)).toBe(true);
    expect(vcpu.kvm.ops.nmiAllowed(vcpu, false)).toBe(0);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(vcpu.kvm.ops.getNmiMask(vcpu)).toBe(false);
  });

  it('queueException / cancelInjection round-trip through the entry field', () => {
    const { vcpu, vmx } = realModeVm((a) => a.hlt());
    vcpu.runVcpu();
    const ops = vcpu.kvm.ops;
    vcpu.arch.exception.nr = 13; vcpu.arch.exception.hasErrorCode = true; vcpu.arch.exception.errorCode = 0x18;
    vcpu.arch.exception.injected = true;
    vcpu.kvm.ops.setCr0(vcpu, 0x11n); // protected mode: the error code is delivered
    ops.queueException(vcpu);
    expect(vmx.vmcs.read32(F.VM_ENTRY_INTR_INFO_FIELD) >>> 0).toBe((0x80000000 | 0x800 | 0x300 | 13) >>> 0);
    expect(vmx.vmcs.read32(F.VM_ENTRY_EXCEPTION_ERROR_CODE)).toBe(0x18);
    vcpu.arch.exception.injected = false;
    ops.cancelInjection(vcpu);
    expect(vmx.vmcs.read32(F.VM_ENTRY_INTR_INFO_FIELD)).toBe(0);
    expect(vcpu.arch.exception).toMatchObject({ injected: true, nr: 13, hasErrorCode: true, errorCode: 0x18 });
    // #BP is a software exception with an instruction length.
    vcpu.arch.exception.nr = 3; vcpu.arch.exception.hasErrorCode = false;
    ops.queueException(vcpu);
    expect(vmx.vmcs.read32(F.VM_ENTRY_INTR_INFO_FIELD) >>> 0).toBe((0x80000000 | 0x600 | 3) >>> 0);
    ops.setNmiMask(vcpu, true);
    expect(vmx.vmcs.read32(F.GUEST_INTERRUPTIBILITY_INFO) & D.GUEST_INTR_STATE_NMI).toBe(D.GUEST_INTR_STATE_NMI);
    ops.enableNmiWindow(vcpu);
    expect(vmx.vmcs.read32(F.CPU_BASED_VM_EXEC_CONTROL) & D.CPU_BASED_NMI_WINDOW_EXITING).toBe(D.CPU_BASED_NMI_WINDOW_EXITING);
  });
});

describe('VMX-preemption timer', () => {
  const spin = () => realModeVm((a) => { const l = new Label('l'); a.bind(l); a.jmp(l); });

  it('setHvTimer: the guest exits with PREEMPTION_TIMER at the deadline (rate from IA32_VMX_MISC)', () => {
    const { vcpu } = spin();
    vcpu.runBudget = 200_000;
    const start = vcpu.cpu.state.tsc + vcpu.arch.tscOffset;
    const r = vcpu.kvm.ops.setHvTimer!(vcpu, start + 50_000n);
    expect(r).toEqual({ result: 0, expired: false });
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_INTR);
    expect(count(vcpu, 'PREEMPTION_TIMER')).toBe(1);
    expect(toVmx(vcpu).hvTimerExpired).toBe(true);
    expect(vcpu.cpu.state.tsc).toBeGreaterThanOrEqual(start + 50_000n - (1n << BigInt(PREEMPTION_TIMER_RATE)));
  });

  it('cancelHvTimer disarms it; an unreachable deadline is -ERANGE', () => {
    const { vcpu } = spin();
    vcpu.runBudget = 100_000;
    vcpu.kvm.ops.setHvTimer!(vcpu, 10_000n);
    vcpu.kvm.ops.cancelHvTimer!(vcpu);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_INTR);
    expect(count(vcpu, 'PREEMPTION_TIMER')).toBe(0);
    expect(vcpu.kvm.ops.setHvTimer!(vcpu, 1n << 62n).result).toBe(-34);
  });

  it('requestImmediateExit: the next entry exits at once through a zero timer', () => {
    const { vcpu } = spin();
    vcpu.runBudget = 1000;
    vcpu.kvm.ops.requestImmediateExit(vcpu);
    vcpu.runVcpu();
    expect(count(vcpu, 'PREEMPTION_TIMER')).toBe(1);
  });
});

describe('TSC offset', () => {
  it('writeL1TscOffset sets the VMCS TSC offset the guest RDTSC adds', () => {
    const { vcpu, vmx } = realModeVm((a) => a.rdtsc().hlt());
    vcpu.setMsr(MSR.IA32_TSC, 0x1234_0000_0000n);
    const off = vmx.vmcs.read64(F.TSC_OFFSET);
    expect(off).toBe(vcpu.arch.tscOffset);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    const r = vcpu.getRegs();
    const tsc = (r.rdx << 32n) | r.rax;
    expect(tsc).toBeGreaterThanOrEqual(0x1234_0000_0000n);
    expect(tsc).toBeLessThan(0x1234_0000_0000n + 100n);
  });
});

describe('Intel architectural PMU', () => {
  const N = 37;
  function pmuVm() {
    const { vcpu, vmx } = realModeVm((a) => {
      for (let i = 0; i < N; i++) a.nop();
      a.mov(ecx, 0x40000000).rdpmc().hlt();
    });
    // CPUID.0AH: version 2, 4 counters of 48 bits, 3 fixed counters of 48 bits.
    const cpuid = vcpu.getCpuid2().filter((e) => e.function !== 0xa);
    cpuid.push({ function: 0xa, index: 0, flags: 0, eax: 2 | (4 << 8) | (48 << 16) | (7 << 24), ebx: 0, ecx: 0, edx: 3 | (48 << 5) });
    vcpu.setCpuid2(cpuid);
    return { vcpu, vmx };
  }

  it('fixed counter 0 and a general counter programmed for event C0H count retired instructions exactly', () => {
    const { vcpu } = pmuVm();
    vcpu.setMsr(MSR_CORE_PERF_FIXED_CTR_CTRL, 0x333n);
    vcpu.setMsr(MSR_P6_EVNTSEL0, (1n << 22n) | (3n << 16n) | 0xc0n);
    vcpu.setMsr(MSR_CORE_PERF_GLOBAL_CTRL, (7n << 32n) | 1n);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    // RDPMC reads the N NOPs and the MOV ECX retired before it.
    expect(vcpu.getRegs().rax).toBe(BigInt(N + 1));
    // RDPMC and HLT exit and KVM completes them; kvm_skip_emulated_instruction counts each as
    // retired (kvm_pmu_instruction_retired), so the counters end at N + 3.
    expect(vcpu.getMsr(MSR_CORE_PERF_FIXED_CTR0)).toBe(BigInt(N + 3));
    expect(vcpu.getMsr(MSR_IA32_PERFCTR0)).toBe(BigInt(N + 3));
    // Fixed counter 1 counts cycles: one per instruction on this processor.
    expect(vcpu.getMsr(MSR_CORE_PERF_FIXED_CTR0 + 1)).toBe(BigInt(N + 3));
    expect(vcpu.exitCounts.get('RDPMC')).toBe(1);
  });

  it('a disabled counter does not count; a guest write to a reserved bit is refused', () => {
    const { vcpu } = pmuVm();
    vcpu.setMsr(MSR_CORE_PERF_FIXED_CTR_CTRL, 0x333n);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(vcpu.getMsr(MSR_CORE_PERF_FIXED_CTR0)).toBe(0n);
    expect(() => vcpu.setMsr(MSR_CORE_PERF_GLOBAL_CTRL, 1n << 40n)).toThrow(/rejected/);
    expect(vcpu.kvm.ops.pmuOps.isValidRdpmcEcx(vcpu, 0x40000002)).toBe(true);
    expect(vcpu.kvm.ops.pmuOps.isValidRdpmcEcx(vcpu, 0x40000003)).toBe(false);
    expect(vcpu.getRegs().rax & 0xffffffffn).toBe(0n);
    void KvmReg;
  });
});

describe('the time slice', () => {
  it('a KVM_RUN retires at most runBudget instructions across all its VM entries', () => {
    const { vcpu } = realModeVm((a) => { const l = new Label('l'); a.bind(l); a.cpuid(); a.nop(); a.jmp(l); });
    vcpu.runBudget = 1000;
    const before = vcpu.cpu.state.instructionsRetired;
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_INTR);
    // CPUID is emulated (not retired by the processor); NOP and JMP are.
    expect(vcpu.cpu.state.instructionsRetired - before).toBe(1000);
  });
});
