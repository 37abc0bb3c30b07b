/**
 * Control-block fuzzing, VMX (issue #9): random and boundary values VMWRITEn into VMCS fields
 * (through the backend's field API, as a buggy or hostile kvm-intel would) before VM entry.
 * Every case must end in a successful entry (some defined exit) or a failed entry with the
 * SDM's reason — never a host error — and the valid VMCS, restored, must be accepted again.
 */
import { BackendClass, KvmExitReason } from '@tsvisor/core';
import { VmxBackend, toVmx, VMCS_FIELDS, VmcsFieldType } from '@tsvisor/vmx';
import { bootGuest, buildLongModeGuest, Prng, runUntilStop } from '@tsvisor/testkit';

const CASES = Number(process.env.TSVISOR_CB_FUZZ_CASES ?? 400);

it(`${CASES} corrupted VMCSs: defined answers only, and the valid one stays accepted`, () => {
  const guest = buildLongModeGuest((a) => {
    const top = a.here('top');
    a.hlt();
    a.jmp(top);
  });
  const { vcpu } = bootGuest(VmxBackend as unknown as BackendClass, guest);
  expect(runUntilStop(vcpu).exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
  const vmcs = toVmx(vcpu).vmcs;
  // Writable fields (exit-information fields are read-only: VMWRITE gives error 13).
  const writable = [...VMCS_FIELDS.values()].filter((f) => f.type !== VmcsFieldType.EXIT_INFO);
  const snapshot = () => writable.map((f) => vmcs.vmread(f.encoding));
  const valid = snapshot();
  const boundary = [0n, 1n, 0x7fffffffn, 0x80000000n, 0xffffffffn, (1n << 63n), (1n << 64n) - 1n, 0xfffn, 0x1000n];
  const r = new Prng(0xc0ffee);
  const outcomes: Record<string, number> = {};
  for (let i = 0; i < CASES; i++) {
    const n = 1 + r.below(3);
    for (let k = 0; k < n; k++) {
      const f = r.pick(writable);
      const v = r.below(2) ? r.pick(boundary) : (BigInt(r.next()) << 32n) | BigInt(r.next());
      vmcs.vmwrite(f.encoding, v);
    }
    const out = runUntilStop(vcpu, { maxRuns: 50 });
    expect(vcpu.run.hostError).toBe('');
    const k = KvmExitReason[out.exitReason];
    outcomes[k] = (outcomes[k] ?? 0) + 1;
    if (out.exitReason === KvmExitReason.KVM_EXIT_FAIL_ENTRY) {
      const reason = out.run.failEntry.hardwareEntryFailureReason;
      // A VM-instruction error (7 controls, 8 host state) or exit reason 33/34 with bit 31 set.
      expect([7n, 8n, 0x80000021n, 0x80000022n]).toContain(reason);
    }
    writable.forEach((f, j) => vmcs.vmwrite(f.encoding, valid[j]));
    const again = runUntilStop(vcpu, { maxRuns: 50 });
    expect(KvmExitReason[again.exitReason]).toBe('KVM_EXIT_HLT');
  }
  // eslint-disable-next-line no-console
  console.log(`VMCS fuzz: ${JSON.stringify(outcomes)}`);
  expect(outcomes.KVM_EXIT_FAIL_ENTRY).toBeGreaterThan(0);
});
