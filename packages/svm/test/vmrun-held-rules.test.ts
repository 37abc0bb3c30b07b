/**
 * VMRUN derives the processor's guest-mode rules from the VMCB (intercept vectors, IOPM/MSRPM
 * bases, ASID, nested paging). The emulated hardware keeps the previous VMRUN's rules for a
 * clean-bit group it still holds (APM 15.15.3); a group marked dirty is read again. This pins
 * down that a new MSRPM base, with the IOPM group marked dirty, takes effect at the next VMRUN.
 */
import { KvmExitReason, KvmVcpu, MSR } from '@tsvisor/core';
import { Msrpm, SvmBackend, svmOf, VMCB_CONTROL, VmcbCleanBit } from '@tsvisor/svm';
import { BENCH_RESULT_PORT, bootGuest, buildLongModeGuest, eax, ecx, runUntilStop } from '@tsvisor/testkit';

/** CPUID, CPUID, RDMSR(LSTAR) (passed through by KVM's MSRPM), report EAX, HLT; `atCpuid` at each CPUID exit. */
function run(atCpuid: (vcpu: KvmVcpu, n: number) => void) {
  const guest = buildLongModeGuest((a) => {
    a.xor(eax, eax).cpuid();
    a.xor(eax, eax).cpuid();
    a.mov(ecx, MSR.LSTAR).rdmsr();
    a.db([0xba, BENCH_RESULT_PORT & 0xff, BENCH_RESULT_PORT >> 8, 0, 0, 0xef]); // mov edx, port; out dx, eax
    a.cli().hlt();
  });
  const { vcpu } = bootGuest(SvmBackend, guest);
  let cpuids = 0;
  let msrExits = 0;
  vcpu.kvm.setTrace(new Set(['kvm_exit']), (_name, _id, msg) => {
    const m = String(msg);
    if (m.startsWith('reason cpuid ')) atCpuid(vcpu, ++cpuids);
    else if (m.startsWith('reason msr ') && cpuids === 2) msrExits++;
  });
  vcpu.setMsrs([{ index: MSR.LSTAR, data: 0xffffffff81c00000n }]);
  const reports: number[] = [];
  const out = runUntilStop(vcpu, { ports: { [BENCH_RESULT_PORT]: { out: (_p, _s, v) => void reports.push(v >>> 0) } } });
  return { out, reports, msrExits };
}

describe('SVM: guest-mode rules of clean-bit groups at VMRUN', () => {
  test('KVM passes RDMSR(LSTAR) through: no exit', () => {
    const { out, reports, msrExits } = run(() => {});
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(reports).toEqual([0x81c00000]);
    expect(msrExits).toBe(0);
  });

  test('a new MSRPM base with the IOPM group dirty applies at the next VMRUN', () => {
    const { out, reports, msrExits } = run((v, n) => {
      if (n !== 1) return;
      const svm = svmOf(v);
      const all = Msrpm.alloc(v.kvm.hostMemory);
      all.interceptAll();
      svm.vmcb.write64(VMCB_CONTROL.MSRPM_BASE_PA, BigInt(all.pa));
      svm.vmcb.markDirty(VmcbCleanBit.IOPM);
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    // The RDMSR now exits, and KVM emulates it with the same result.
    expect(msrExits).toBe(1);
    expect(reports).toEqual([0x81c00000]);
  });
});
