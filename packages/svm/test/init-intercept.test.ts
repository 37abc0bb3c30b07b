/**
 * The INIT intercept (AMD APM Vol. 2 15.13, intercept vector 3 bit 3; EXITCODE 0x63): with it
 * set, an INIT signal in the guest is a #VMEXIT(INIT) at the next instruction boundary, and
 * KVM's handler for it (nop_on_interception) resumes the guest; without it the processor takes
 * the INIT itself and waits for a start-up IPI, running nothing.
 */
import { KvmExitReason, KvmVcpu } from '@tsvisor/core';
import { al, Label } from '@tsvisor/testkit';
import { svmOf, SvmExit, VMCB_CONTROL, Intercept1, VmcbCleanBit } from '@tsvisor/svm';
import { longModeGuest } from './helpers';

function spinner() {
  return longModeGuest((a) => { const l = new Label('l'); a.bind(l); a.inc(al); a.out(0x80, al); a.jmp(l); });
}

function exitCodes(vcpu: KvmVcpu): string[] {
  const lines: string[] = [];
  vcpu.kvm.setTrace(new Set(['kvm_exit']), (_ev, _id, text) => { lines.push(text.split(' ')[1]); });
  return lines;
}

function setInitIntercept(vcpu: KvmVcpu, on: boolean): void {
  const v = svmOf(vcpu).vmcb;
  v.setBit32(VMCB_CONTROL.INTERCEPT_MISC1, Intercept1.INIT, on);
  v.markDirty(VmcbCleanBit.I);
}

describe('INIT intercept', () => {
  it('with the intercept, INIT is #VMEXIT(INIT) (0x63) and the guest goes on running', () => {
    const { vcpu } = spinner();
    setInitIntercept(vcpu, true);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    const codes = exitCodes(vcpu);
    vcpu.cpu.signalInit();
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(codes).toContain('init');
    expect(svmOf(vcpu).vmcb.read64(VMCB_CONTROL.EXITCODE)).toBe(BigInt(SvmExit.IOIO)); // the next exit: the guest ran on
    expect(codes.indexOf('init')).toBeLessThan(codes.lastIndexOf('io'));
  });

  it('without it, the processor takes the INIT: nothing retires until a start-up IPI', () => {
    const { vcpu } = spinner();
    setInitIntercept(vcpu, false);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    const codes = exitCodes(vcpu);
    vcpu.cpu.signalInit();
    const before = vcpu.cpu.state.instructionsRetired;
    vcpu.runVcpu();
    expect(codes).not.toContain('init');
    // Only the OUT that KVM completes as the run resumes (complete_fast_pio_out) retires.
    expect(vcpu.cpu.state.instructionsRetired).toBe(before + 1);
  });
});
