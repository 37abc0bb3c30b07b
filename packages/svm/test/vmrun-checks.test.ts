/**
 * VMRUN consistency checks (AMD APM Vol. 2 15.5.1): an illegal VMCB makes VMRUN exit at once
 * with EXITCODE = VMEXIT_INVALID (-1), which svm_handle_exit reports as KVM_EXIT_FAIL_ENTRY
 * with hardware_entry_failure_reason = the (32-bit) exit code, as KVM does.
 */
import { Kvm, KvmExitReason } from '@tsvisor/core';
import {
  SvmBackend, svmOf, vmrunConsistencyCheck, eventInjIsLegal, Vmcb, VMCB_CONTROL, VMCB_SAVE, Intercept2, VmcbCleanBit,
  SVM_EXIT_ERR_U64,
} from '@tsvisor/svm';

const EFER_SVME = 1n << 12n, EFER_LME = 1n << 8n, EFER_LMA = 1n << 10n;
const CR0_PE = 1n, CR0_NW = 1n << 29n, CR0_CD = 1n << 30n, CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;

/** A real-mode vCPU parked on a HLT at 0x1000, run once (so KVM has allocated its ASID). */
function haltedVcpu() {
  const kvm = Kvm.create({ backend: SvmBackend });
  kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n });
  kvm.slot(0)!.userspace.set([0xf4, 0xf4], 0x1000);
  const vcpu = kvm.createVcpu(0);
  const s = vcpu.getSregs();
  vcpu.setSregs({ ...s, cs: { ...s.cs, selector: 0, base: 0n } });
  vcpu.setRegs({ ...vcpu.getRegs(), rip: 0x1000n });
  expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
  return vcpu;
}

/** The VMCB KVM builds at RESET, with the ASID it allocates at the first VMRUN. */
function freshVmcb(): { vmcb: Vmcb; kvm: Kvm } {
  const kvm = Kvm.create({ backend: SvmBackend });
  const vmcb = svmOf(kvm.createVcpu(0)).vmcb;
  vmcb.write32(VMCB_CONTROL.GUEST_ASID, 1);
  return { vmcb, kvm };
}

type Mutation = [string, (v: Vmcb) => void];

const longMode = (v: Vmcb) => {
  v.write64(VMCB_SAVE.EFER, EFER_SVME | EFER_LME | EFER_LMA);
  v.write64(VMCB_SAVE.CR0, CR0_PE | CR0_PG);
  v.write64(VMCB_SAVE.CR4, CR4_PAE);
};

const INVALID: Mutation[] = [
  ['EFER.SVME is zero', (v) => v.write64(VMCB_SAVE.EFER, v.read64(VMCB_SAVE.EFER) & ~EFER_SVME)],
  ['CR0.CD is zero and CR0.NW is set', (v) => v.write64(VMCB_SAVE.CR0, (v.read64(VMCB_SAVE.CR0) & ~CR0_CD) | CR0_NW)],
  ['CR0[63:32] are not zero', (v) => v.write64(VMCB_SAVE.CR0, v.read64(VMCB_SAVE.CR0) | (1n << 32n))],
  ['an MBZ bit of CR3 is set', (v) => v.write64(VMCB_SAVE.CR3, 1n << 33n) /* legacy mode: bits 63:32 */],
  ['an MBZ bit of CR3 is set', (v) => { longMode(v); v.writeSeg(VMCB_SAVE.CS, 0x18, 0x29b, 0xffffffff, 0n); v.write64(VMCB_SAVE.CR3, 1n << 50n); }],
  ['an MBZ bit of CR4 is set', (v) => v.write64(VMCB_SAVE.CR4, 1n << 13n /* VMXE: reserved on AMD */)],
  ['DR6[63:32] are not zero', (v) => v.write64(VMCB_SAVE.DR6, 0xffff0ff0n | (1n << 32n))],
  ['DR7[63:32] are not zero', (v) => v.write64(VMCB_SAVE.DR7, 0x400n | (1n << 40n))],
  ['an MBZ bit of EFER is set', (v) => v.write64(VMCB_SAVE.EFER, EFER_SVME | (1n << 9n))],
  ['EFER.LME and CR0.PG are both set and CR4.PAE is zero', (v) => { longMode(v); v.write64(VMCB_SAVE.CR4, 0n); }],
  ['EFER.LME and CR0.PG are both non-zero and CR0.PE is zero', (v) => { longMode(v); v.write64(VMCB_SAVE.CR0, CR0_PG); }],
  ['EFER.LME, CR0.PG, CR4.PAE, CS.L and CS.D are all non-zero', (v) => {
    longMode(v);
    v.writeSeg(VMCB_SAVE.CS, 0x18, 0x09b | (1 << 9) | (1 << 10), 0xffffffff, 0n);
  }],
  ['the VMRUN intercept bit is clear', (v) => v.setBit32(VMCB_CONTROL.INTERCEPT_MISC2, Intercept2.VMRUN, false)],
  ['the MSR intercept table extends beyond the maximum physical address', (v) => v.write64(VMCB_CONTROL.MSRPM_BASE_PA, (1n << 48n) - 0x1000n)],
  ['the IOIO intercept table extends beyond the maximum physical address', (v) => v.write64(VMCB_CONTROL.IOPM_BASE_PA, (1n << 48n) - 0x2000n)],
  ['illegal event injection (APM 15.20)', (v) => v.write64(VMCB_CONTROL.EVENTINJ, BigInt((1 << 31) >>> 0) | (1n << 8n) /* type 1 */)],
  ['ASID is equal to zero', (v) => v.write32(VMCB_CONTROL.GUEST_ASID, 0)],
];

describe('VMRUN consistency checks (APM 15.5.1)', () => {
  test("KVM's VMCB after RESET passes, and so does a valid long-mode state", () => {
    const { vmcb } = freshVmcb();
    expect(vmrunConsistencyCheck(vmcb)).toBeNull();
    longMode(vmcb);
    vmcb.writeSeg(VMCB_SAVE.CS, 0x18, 0x09b | (1 << 9), 0xffffffff, 0n);
    expect(vmrunConsistencyCheck(vmcb)).toBeNull();
  });

  test.each(INVALID)('%s → VMEXIT_INVALID', (rule, mutate) => {
    const { vmcb } = freshVmcb();
    mutate(vmcb);
    expect(vmrunConsistencyCheck(vmcb)?.rule).toBe(rule);
  });

  test.each(INVALID)('%s → KVM_EXIT_FAIL_ENTRY through KVM_RUN', (rule, mutate) => {
    const vcpu = haltedVcpu();
    const svm = svmOf(vcpu);
    mutate(svm.vmcb);
    svm.vmcb.markAllDirty();
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_FAIL_ENTRY);
    expect(run.failEntry.hardwareEntryFailureReason).toBe(0xffffffffn);
    expect(svm.vmcb.read64(VMCB_CONTROL.EXITCODE)).toBe(SVM_EXIT_ERR_U64);
    expect(run.internalMessage).toContain(rule);
    expect(run.internalMessage).toContain('VMCB at host-physical');
    expect(vcpu.exitCounts.get('invalid')).toBe(1);
  });

  test('an illegal state set through KVM_SET_SREGS (CR0.NW without CD) fails entry, it is not an exception', () => {
    const kvm = Kvm.create({ backend: SvmBackend });
    kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n });
    const vcpu = kvm.createVcpu(0);
    const s = vcpu.getSregs();
    vcpu.setSregs({ ...s, cr0: CR0_NW | (1n << 4n) });
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_FAIL_ENTRY);
    expect(run.internalMessage).toContain('CR0.CD is zero and CR0.NW is set');
  });

  test('EVENTINJ legality: types 0, 2, 3, 4; exception with vector 2 is illegal', () => {
    const V = 1n << 31n;
    expect(eventInjIsLegal(0n)).toBe(true);
    expect(eventInjIsLegal(V | 0x20n)).toBe(true);
    expect(eventInjIsLegal(V | (2n << 8n) | 2n)).toBe(true);
    expect(eventInjIsLegal(V | (3n << 8n) | 14n | (1n << 11n))).toBe(true);
    expect(eventInjIsLegal(V | (4n << 8n) | 0x80n)).toBe(true);
    expect(eventInjIsLegal(V | (3n << 8n) | 2n)).toBe(false);
    for (const t of [1n, 5n, 6n, 7n]) expect(eventInjIsLegal(V | (t << 8n))).toBe(false);
  });

  test('a failed VMRUN loads no guest state', () => {
    const vcpu = haltedVcpu();
    const svm = svmOf(vcpu);
    const before = vcpu.cpu.state.instructionsRetired;
    svm.vmcb.write32(VMCB_CONTROL.GUEST_ASID, 0);
    svm.vmcb.markDirty(VmcbCleanBit.ASID);
    vcpu.runVcpu();
    expect(vcpu.cpu.state.instructionsRetired).toBe(before);
  });
});
