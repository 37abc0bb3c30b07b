/**
 * VMRUN loads the guest's STAR, LSTAR, CSTAR, SFMASK, KernelGSBase and SYSENTER_CS/ESP/EIP
 * from the save area (KVM's VMLOAD with it: hardware.ts loads them with the rest). The emulated
 * hardware skips that load while the slots still hold what the last #VMEXIT stored and the
 * processor ran nothing else since: a value KVM writes there (KVM_SET_MSRS from userspace, or
 * KVM itself through set_msr at an exit) must still be what the guest runs with.
 */
import { KvmExitReason, KvmVcpu, MSR } from '@tsvisor/core';
import { Assembler, BENCH_RESULT_PORT, buildLongModeGuest, eax, ecx } from '@tsvisor/testkit';
import { runWithCpuidHooks } from './helpers';

/**
 * Report RDMSR(LSTAR) and RDMSR(SYSENTER_ESP) (the processor's values: SVM passes those MSRs
 * through), CPUID ×3, report them again, HLT. `atExit` at each CPUID exit, `atReport` in userspace.
 */
function run(atExit: (vcpu: KvmVcpu, n: number) => void, atReport: (vcpu: KvmVcpu, n: number) => void = () => {}) {
  const report = (a: Assembler) => {
    for (const msr of [MSR.LSTAR, MSR.IA32_SYSENTER_ESP]) {
      a.mov(ecx, msr).rdmsr();
      a.db([0xba, BENCH_RESULT_PORT & 0xff, BENCH_RESULT_PORT >> 8, 0, 0, 0xef]); // mov edx, port; out dx, eax
    }
  };
  const guest = buildLongModeGuest((a) => {
    for (let i = 0; i < 2; i++) a.xor(eax, eax).cpuid();
    report(a);
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    report(a);
    a.cli().hlt();
  });
  const { out, reports } = runWithCpuidHooks(guest, atExit, atReport);
  return { out, reports };
}

describe('SVM: VMLOAD-state MSRs at VMRUN', () => {
  test('KVM_SET_MSRS between two runs reaches the guest', () => {
    const { out, reports } = run(() => {}, (v, n) => {
      if (n === 2) v.setMsrs([{ index: MSR.LSTAR, data: 0xffffffff81234560n }, { index: MSR.IA32_SYSENTER_ESP, data: 0x5a5a0000n }]);
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(reports).toHaveLength(4);
    expect(reports[0]).not.toBe(0x81234560);
    expect(reports.slice(2)).toEqual([0x81234560, 0x5a5a0000]);
  });

  test('set_msr by KVM at an exit reaches the guest', () => {
    const { out, reports } = run((v, n) => {
      if (n === 4) v.kvm.ops.setMsr(v, { index: MSR.LSTAR, data: 0xffffffff80abc000n, hostInitiated: true });
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(reports[0]).not.toBe(0x80abc000);
    expect(reports[2]).toBe(0x80abc000);
  });
});
