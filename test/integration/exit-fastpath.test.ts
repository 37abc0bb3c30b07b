/**
 * The exit fastpath (KVM's EXIT_FASTPATH_REENTER_GUEST): CPUID and INVD are completed by the
 * vendor right after the VM exit and the guest is re-entered without core's slow path — unless
 * the slow path has work. Each case here would fail if the fastpath skipped what it must keep:
 * counting the exit, firing a timer that fell due, ending the KVM_RUN when its slice is spent,
 * delivering the single-step #DB the skip queued, or the IDT-vectoring re-injection.
 */
import { BackendClass, ExitFastpathCompletion, KvmExitReason } from '@tsvisor/core';
import {
  Assembler, Label, bootGuest, buildLongModeGuest, emitIdtSetup, emitIdtTable, idtLabels, runUntilStop,
  dr6, eax, qword, r12, r13, rax, rbx, rsp,
} from '@tsvisor/testkit';
import { SvmBackend } from '@tsvisor/svm';
import { VmxBackend } from '@tsvisor/vmx';

const N = 500;

/** N × CPUID leaf 0 and N/5 × INVD; R13 = EBX of the last CPUID; then HLT. */
function cpuidLoop(): ReturnType<typeof buildLongModeGuest> {
  return buildLongModeGuest((a: Assembler) => {
    a.mov(r12, N);
    const l = a.here('l');
    a.xor(eax, eax).cpuid();
    a.mov(r13, rbx);
    a.dec(r12);
    a.jnz(l);
    a.mov(r12, N / 5);
    const m = a.here('m');
    a.invd();
    a.dec(r12);
    a.jnz(m);
    a.hlt();
  });
}

describe.each([['vmx', VmxBackend], ['svm', SvmBackend]] as [string, BackendClass][])('%s', (name, B) => {
  const cpuidName = name === 'vmx' ? 'CPUID' : 'cpuid';
  const invdName = name === 'vmx' ? 'INVD' : 'invd';

  it('completes CPUID and INVD exits on the fastpath, counted as exits, with the results KVM gives', () => {
    const { kvm, vcpu } = bootGuest(B, cpuidLoop(), { memory: 4 << 20 });
    const runs: number[] = [];
    const out = runUntilStop(vcpu, { onExit: (run) => { runs.push(run.exitReason); } });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    // Leaf 0 EBX is the vendor signature's first word (GenuineIntel / AuthenticAMD).
    expect(Number(vcpu.getRegs().r13 & 0xffffffffn)).toBe(name === 'vmx' ? 0x756e6547 : 0x68747541);
    expect(vcpu.exitCounts.get(cpuidName)).toBe(N);
    expect(vcpu.exitCounts.get(invdName)).toBe(N / 5);
    expect(kvm.stats.cpuidExits).toBe(N);
    expect(kvm.stats.exits).toBeGreaterThanOrEqual(N + N / 5);
    // All of it in one KVM_RUN: the fastpath never returns to userspace by itself.
    expect(runs).toEqual([KvmExitReason.KVM_EXIT_HLT]);
  });

  it('the vendor run reports REENTER_GUEST for a CPUID exit and NONE for one it leaves to handleExit', () => {
    const { kvm, vcpu } = bootGuest(B, buildLongModeGuest((a) => { a.xor(eax, eax).cpuid(); a.hlt(); }), { memory: 4 << 20 });
    kvm.ops.vcpuLoad(vcpu, 0);
    kvm.ops.prepareGuestSwitch(vcpu);
    // Entries until the CPUID: the boot stub's own exits (if any) go to handleExit as usual.
    let r = kvm.ops.run(vcpu);
    for (let i = 0; i < 50 && r !== ExitFastpathCompletion.EXIT_FASTPATH_REENTER_GUEST; i++) {
      kvm.ops.handleExit(vcpu, r);
      r = kvm.ops.run(vcpu);
    }
    expect(r).toBe(ExitFastpathCompletion.EXIT_FASTPATH_REENTER_GUEST);
    // The fastpath skipped the CPUID: RIP is at the HLT, whose exit is not a fastpath one.
    const rip = vcpu.getRegs().rip;
    expect(kvm.ops.run(vcpu)).toBe(ExitFastpathCompletion.EXIT_FASTPATH_NONE);
    expect(vcpu.getRegs().rip).toBe(rip);
    kvm.ops.vcpuPut(vcpu);
  });

  it('a timer that falls due while the guest loops on CPUID fires at the next exit', () => {
    const { kvm, vcpu } = bootGuest(B, buildLongModeGuest((a) => {
      const l = new Label('spin');
      a.bind(l);
      a.xor(eax, eax).cpuid();
      a.jmp(l);
    }), { memory: 4 << 20 });
    let firedAt = -1;
    const deadline = vcpu.cpu.state.instructionsRetired + 20_000;
    kvm.clock.addTimer(deadline, () => { firedAt = vcpu.cpu.state.instructionsRetired; });
    vcpu.runBudget = 1_000_000;
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_INTR);
    // Three instructions per iteration: the next exit after the deadline is at most 3 later.
    expect(firedAt).toBeGreaterThanOrEqual(deadline);
    expect(firedAt - deadline).toBeLessThanOrEqual(3);
  });

  it('a KVM_RUN of CPUID exits ends when its slice is spent', () => {
    const { vcpu } = bootGuest(B, buildLongModeGuest((a) => {
      const l = new Label('spin');
      a.bind(l);
      a.cpuid();
      a.jmp(l);
    }), { memory: 4 << 20 });
    vcpu.runVcpu();
    vcpu.runBudget = 1000;
    const before = vcpu.cpu.state.instructionsRetired;
    const cpuids = vcpu.exitCounts.get(cpuidName) ?? 0;
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_INTR);
    // CPUID retires through kvm_skip_emulated_instruction: 500 × (CPUID + JMP).
    expect(vcpu.cpu.state.instructionsRetired - before).toBe(1000);
    expect((vcpu.exitCounts.get(cpuidName) ?? 0) - cpuids).toBe(500);
  });

  it('single-stepping over CPUID raises the #DB the skip queued, with DR6.BS, after the CPUID', () => {
    const g = buildLongModeGuest((a) => {
      const t = idtLabels(a);
      const db = a.label('db');
      emitIdtSetup(a, 1, db, t);
      a.xor(eax, eax);
      a.pushf();
      a.or(qword(rsp, 0), 0x100);
      // TF set by POPF traps after the instruction that follows it: the CPUID.
      a.popf();
      a.cpuid();
      a.here('after');
      a.nop();
      a.hlt();
      a.bind(db);
      a.mov(r12, qword(rsp, 0));
      a.mov(rax, dr6);
      a.mov(r13, rax);
      a.hlt();
      emitIdtTable(a, t);
    });
    const { vcpu } = bootGuest(B, g, { memory: 4 << 20 });
    const out = runUntilStop(vcpu);
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    const r = vcpu.getRegs();
    expect(r.r12).toBe(BigInt(g.symbols.after));
    expect(r.r13 & 0x4000n).toBe(0x4000n);
    expect(vcpu.exitCounts.get(cpuidName)).toBe(1);
  });
});
