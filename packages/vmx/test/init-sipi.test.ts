/**
 * INIT and start-up IPIs in VMX non-root operation (SDM 26.2): INIT always exits (reason 3);
 * a SIPI exits (reason 4, qualification = the vector) only in the wait-for-SIPI activity state
 * and is discarded otherwise. KVM delivers INIT/SIPI to its guests through the emulated LAPIC
 * (kvm_apic_accept_events), never as these exits, so kvm_vmx_exit_handlers has no entry for
 * them: vmx_handle_exit reports them as unexpected, with a VMCS dump.
 */
import { KvmExitReason, KvmInternalError } from '@tsvisor/core';
import { F, ExitReason, GUEST_ACTIVITY_WAIT_SIPI } from '@tsvisor/vmx';
import { al, Label } from '@tsvisor/testkit';
import { realModeVm } from './helpers';

function spinner() {
  return realModeVm((a) => { const l = new Label('l'); a.bind(l); a.inc(al); a.out(0x80, al); a.jmp(l); });
}

describe('INIT and SIPI exits', () => {
  it('an INIT signal exits at the next instruction boundary; KVM has no handler for it', () => {
    const { vcpu, vmx } = spinner();
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    vcpu.cpu.signalInit();
    const run = vcpu.runVcpu();
    expect(vmx.exitReason).toBe(ExitReason.INIT_SIGNAL);
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_INTERNAL_ERROR);
    expect(run.internal.suberror).toBe(KvmInternalError.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON);
    expect(run.internalMessage).toMatch(/INIT_SIGNAL/);
  });

  it('a SIPI outside wait-for-SIPI is discarded; in wait-for-SIPI nothing runs until one exits with its vector', () => {
    const a = spinner();
    a.vcpu.cpu.signalSipi(0x12);
    expect(a.vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(a.vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_IO);

    const b = spinner();
    b.vmx.vmcs.write32(F.GUEST_ACTIVITY_STATE, GUEST_ACTIVITY_WAIT_SIPI);
    const before = b.vcpu.cpu.state.instructionsRetired;
    expect(b.vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_INTR); // waiting: no instruction retires
    expect(b.vcpu.cpu.state.instructionsRetired).toBe(before);
    b.vcpu.cpu.signalSipi(0x12);
    const run = b.vcpu.runVcpu();
    expect(b.vmx.exitReason).toBe(ExitReason.SIPI_SIGNAL);
    expect(b.vmx.vmcs.readNat(F.EXIT_QUALIFICATION)).toBe(0x12n);
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_INTERNAL_ERROR);
    expect(b.vmx.vmcs.read32(F.GUEST_ACTIVITY_STATE)).toBe(GUEST_ACTIVITY_WAIT_SIPI);
  });
});
