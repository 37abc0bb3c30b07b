/**
 * The exit path's caches (issue 8, exit round trip), on both backends: an exit handled in the
 * kernel changes nothing the VM-entry checks read (so the next entry does not check again),
 * and anything the backend writes to the control block afterwards is still checked or loaded
 * at the next entry, as SDM 27.3 / APM 15.5.1 and the VMCB clean bits (APM 15.15.3) require.
 */
import { BackendClass, KvmExitReason, KvmVcpu } from '@tsvisor/core';
import { F, toVmx, VmxBackend } from '@tsvisor/vmx';
import { SvmBackend, svmOf, VMCB_CONTROL, VMCB_SAVE, VmcbCleanBit } from '@tsvisor/svm';
import { BENCH_RESULT_PORT, bootGuest, buildExitLoop, runUntilStop } from '@tsvisor/testkit';

const N = 200;
const EFER_SVME = 1n << 12n;

/** Boot the CPUID loop (N exits, then its count on BENCH_RESULT_PORT and HLT); call `atExit` after each handled exit. */
function cpuidLoop(backend: BackendClass, atExit: (vcpu: KvmVcpu, n: number) => void) {
  const { vcpu } = bootGuest(backend, buildExitLoop('cpuid', N, {}));
  let exits = 0;
  vcpu.kvm.setTrace(new Set(['kvm_exit']), () => atExit(vcpu, ++exits));
  const results: number[] = [];
  const out = runUntilStop(vcpu, { ports: { [BENCH_RESULT_PORT]: { out: (_p, _s, v) => void results.push(v) } } });
  return { vcpu, out, results };
}

describe('VMX: VMCS generations across exits handled in the kernel', () => {
  test('CPUID exits save guest state without moving the generations the entry checks key on', () => {
    const seen: [number, number][] = [];
    const { out, results } = cpuidLoop(VmxBackend as unknown as BackendClass, (vcpu) => {
      const v = toVmx(vcpu).vmcs;
      seen.push([v.ctlGeneration, v.guestGeneration]);
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(results).toEqual([N]);
    // The loop's exits (after the boot stub's) leave both generations where they were.
    const tail = seen.slice(-N / 2);
    expect(new Set(tail.map(([c, g]) => `${c}/${g}`)).size).toBe(1);
  });

  test('a VMWRITE of the same value changes nothing; a different value bumps its group only', () => {
    const { vcpu } = bootGuest(VmxBackend as unknown as BackendClass, buildExitLoop('cpuid', 1, {}));
    runUntilStop(vcpu);
    const v = toVmx(vcpu).vmcs;
    const [c0, g0] = [v.ctlGeneration, v.guestGeneration];
    v.write32(F.GUEST_ACTIVITY_STATE, v.read32(F.GUEST_ACTIVITY_STATE));
    v.write32(F.EXCEPTION_BITMAP, v.read32(F.EXCEPTION_BITMAP));
    expect([v.ctlGeneration, v.guestGeneration]).toEqual([c0, g0]);
    v.writeNat(F.GUEST_RFLAGS, v.readNat(F.GUEST_RFLAGS) ^ 0x40n);
    expect([v.ctlGeneration, v.guestGeneration]).toEqual([c0, g0 + 1]);
    v.write32(F.EXCEPTION_BITMAP, v.read32(F.EXCEPTION_BITMAP) ^ (1 << 6));
    expect([v.ctlGeneration, v.guestGeneration]).toEqual([c0 + 1, g0 + 1]);
    // The VMX-preemption timer value is read by no entry check (SDM 27.3): no check re-runs for it.
    v.write32(F.VMX_PREEMPTION_TIMER_VALUE, 12345);
    expect([v.ctlGeneration, v.guestGeneration]).toEqual([c0 + 1, g0 + 1]);
  });

  test('an invalid guest state written between exits still fails the next entry (SDM 27.3.1.4)', () => {
    let broken = false;
    const { out, results } = cpuidLoop(VmxBackend as unknown as BackendClass, (vcpu, n) => {
      // Half-way through the loop: RFLAGS bit 1 must be 1.
      if (n === N && !broken) {
        broken = true;
        const v = toVmx(vcpu).vmcs;
        v.writeNat(F.GUEST_RFLAGS, v.readNat(F.GUEST_RFLAGS) & ~2n);
      }
    });
    expect(broken).toBe(true);
    expect(results).toEqual([]);
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_FAIL_ENTRY);
  });
});

describe('SVM: the clean-bit cache across exits handled in the kernel', () => {
  test('CPUID exits leave no group marked written: VMRUN serves the clean groups from the processor', () => {
    const written: number[] = [];
    const { out, results } = cpuidLoop(SvmBackend as unknown as BackendClass, (vcpu) => written.push(svmOf(vcpu).vmcb.writtenGroups));
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(results).toEqual([N]);
    expect(written.slice(-N / 2).every((w) => w === 0)).toBe(true);
  });

  test('a write to a group between exits is snapshotted; marked dirty it is checked at the next VMRUN', () => {
    let broken = false;
    const { out, results } = cpuidLoop(SvmBackend as unknown as BackendClass, (vcpu, n) => {
      if (n === N && !broken) {
        broken = true;
        const v = svmOf(vcpu).vmcb;
        v.write64(VMCB_SAVE.EFER, v.read64(VMCB_SAVE.EFER) & ~EFER_SVME);
        expect((v.writtenGroups >>> VmcbCleanBit.CRX) & 1).toBe(1);
        v.markDirty(VmcbCleanBit.CRX);
      }
    });
    expect(broken).toBe(true);
    expect(results).toEqual([]);
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_FAIL_ENTRY);
  });

  test('the same write left marked clean runs on with the cached EFER (APM 15.15.3), and EFER in memory is what #VMEXIT stored', () => {
    let efer = -1n;
    const { out, results, vcpu } = cpuidLoop(SvmBackend as unknown as BackendClass, (vcpu, n) => {
      const v = svmOf(vcpu).vmcb;
      if (n === N) {
        efer = v.read64(VMCB_SAVE.EFER);
        v.write64(VMCB_SAVE.EFER, efer & ~EFER_SVME);
      }
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(results).toEqual([N]);
    expect(svmOf(vcpu).vmcb.read64(VMCB_SAVE.EFER)).toBe(efer);
    expect(svmOf(vcpu).vmcb.read32(VMCB_CONTROL.VMCB_CLEAN) & (1 << VmcbCleanBit.CRX)).not.toBe(0);
  });
});
