/**
 * Control-block fuzzing, SVM (issue #9): random and boundary values written into VMCB bytes
 * before VMRUN. Every case must end in a successful entry (some defined exit) or VMEXIT_INVALID
 * surfacing as KVM_EXIT_FAIL_ENTRY — never a host error — and the valid VMCB, restored, must be
 * accepted again.
 */
import { BackendClass, KvmExitReason } from '@tsvisor/core';
import { SvmBackend, svmOf, VMCB_CONTROL } from '@tsvisor/svm';
import { bootGuest, buildLongModeGuest, Prng, runUntilStop } from '@tsvisor/testkit';

const BOUNDARY = [0, 1, 0x7f, 0x80, 0xff];
const CASES = Number(process.env.TSVISOR_CB_FUZZ_CASES ?? 400);

it(`${CASES} corrupted VMCBs: defined answers only, and the valid one stays accepted`, () => {
  const guest = buildLongModeGuest((a) => {
    const top = a.here('top');
    a.hlt();
    a.jmp(top);
  });
  const { vcpu } = bootGuest(SvmBackend as unknown as BackendClass, guest);
  expect(runUntilStop(vcpu).exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
  const vmcb = svmOf(vcpu).vmcb;
  const valid = vmcb.bytes.slice();
  const r = new Prng(0x5eed);
  const outcomes: Record<string, number> = {};
  for (let i = 0; i < CASES; i++) {
    const bad = valid.slice();
    const n = 1 + r.below(4);
    for (let k = 0; k < n; k++) {
      // Half the hits in the control area (intercepts, ASID, EVENTINJ, N_CR3 …), half in the save area.
      const off = r.below(2) ? r.below(0x100) : 0x400 + r.below(0x300);
      bad[off] = r.below(3) ? r.pick(BOUNDARY) : r.next() & 0xff;
    }
    vmcb.bytes.set(bad);
    vmcb.view.setUint32(VMCB_CONTROL.VMCB_CLEAN.offset, 0, true); // make the hardware read everything
    const out = runUntilStop(vcpu, { maxRuns: 50 });
    expect(vcpu.run.hostError).toBe('');
    const k = KvmExitReason[out.exitReason];
    outcomes[k] = (outcomes[k] ?? 0) + 1;
    if (out.exitReason === KvmExitReason.KVM_EXIT_FAIL_ENTRY) {
      expect(out.run.failEntry.hardwareEntryFailureReason).toBe(0xffffffffn);
    }
    // Restore the valid state: it must be accepted (the guest halts again).
    vmcb.bytes.set(valid);
    vmcb.view.setUint32(VMCB_CONTROL.VMCB_CLEAN.offset, 0, true);
    const again = runUntilStop(vcpu, { maxRuns: 50 });
    expect(KvmExitReason[again.exitReason]).toBe('KVM_EXIT_HLT');
  }
  // eslint-disable-next-line no-console
  console.log(`VMCB fuzz: ${JSON.stringify(outcomes)}`);
  expect(outcomes.KVM_EXIT_FAIL_ENTRY).toBeGreaterThan(0);
});
