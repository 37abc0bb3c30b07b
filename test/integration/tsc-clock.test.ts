/**
 * The guest TSC follows the VM clock (kvm/clock.ts) on both backends: a vCPU halted until a
 * LAPIC-timer interrupt sees the TSC advanced by the idle time, a TSC-deadline timer fires
 * when RDTSC has reached its deadline, and in the virtual clock every run reads the same
 * values. (Test-only use of the backend packages; core's sources never import them.)
 */
import { BackendClass, KvmExitReason } from '@tsvisor/core';
import {
  Assembler, bootGuest, buildLongModeGuest, emitIdtSetup, emitIdtTable, idtLabels, runUntilStop, wrmsrImm,
  eax, ecx, edx, rax, rbx, rdx, r12, r13, r14, r15,
} from '@tsvisor/testkit';
import { SvmBackend } from '@tsvisor/svm';
import { VmxBackend } from '@tsvisor/vmx';

const backends: [string, BackendClass][] = [['svm', SvmBackend], ['vmx', VmxBackend]];
/** One-shot LAPIC timer: 100 000 bus cycles at divide-by-1 = 100 000 ns. */
const ONE_SHOT = 100_000;
/** TSC-deadline timer: 2 000 000 TSC ticks (2 ms) after the first wake-up. */
const DEADLINE_DELTA = 2_000_000;

/** rax = rdtsc (64-bit). */
function rdtsc64(a: Assembler): void {
  a.rdtsc().shl(rdx, 32).or(rax, rdx);
}

/**
 * R12 = TSC before a one-shot LAPIC timer HLT, R13 = TSC after the wake-up, R14 = the
 * TSC-deadline the guest arms next (R13 + DEADLINE_DELTA), RBX = TSC after that wake-up,
 * R15 = interrupts taken.
 */
function tscGuest(a: Assembler): void {
  const handler = a.label('timer_handler');
  const t = idtLabels(a);
  a.xor(r15, r15);
  emitIdtSetup(a, 0x40, handler, t);
  wrmsrImm(a, 0x1b, 0xfee00d00); // IA32_APIC_BASE: x2APIC
  wrmsrImm(a, 0x80f, 0x1ff); // SVR: software enable
  wrmsrImm(a, 0x83e, 0xb); // divide by 1
  wrmsrImm(a, 0x832, 0x40); // LVT timer: one-shot, vector 0x40
  rdtsc64(a);
  a.mov(r12, rax);
  wrmsrImm(a, 0x838, ONE_SHOT); // initial count: the timer starts
  a.sti();
  a.hlt();
  a.cli(); // the handler's IRETQ set IF again: keep the next interrupt for the STI; HLT below
  rdtsc64(a);
  a.mov(r13, rax);
  wrmsrImm(a, 0x832, 0x40040); // LVT timer: TSC-deadline mode (bits 18:17 = 10b), vector 0x40
  a.mov(rax, r13).add(rax, DEADLINE_DELTA).mov(r14, rax).mov(rdx, rax).shr(rdx, 32).mov(ecx, 0x6e0).wrmsr();
  a.sti();
  a.hlt();
  rdtsc64(a);
  a.mov(rbx, rax);
  a.cli();
  a.hlt();
  a.bind(handler);
  a.inc(r15);
  wrmsrImm(a, 0x80b, 0); // EOI
  a.iretq();
  emitIdtTable(a, t);
  void eax; void edx;
}

function runTscGuest(backend: BackendClass, mode: 'virtual' | 'host') {
  const { kvm, vcpu } = bootGuest(backend, buildLongModeGuest((a) => tscGuest(a)));
  kvm.createIrqchip();
  kvm.clock.setMode(mode);
  const out = runUntilStop(vcpu);
  const r = vcpu.getRegs();
  return { kvm, vcpu, out, before: r.r12, after: r.r13, deadline: r.r14, afterDeadline: r.rbx, irqs: r.r15 };
}

describe.each(backends)('guest TSC follows the VM clock (%s)', (_name, backend) => {
  it('virtual clock: HLT until a LAPIC timer advances the TSC by the idle time; TSC-deadline and RDTSC agree; reproducible', () => {
    const a = runTscGuest(backend, 'virtual');
    expect(KvmExitReason[a.out.exitReason]).toBe('KVM_EXIT_HLT');
    expect(a.irqs).toBe(2n);
    // The one-shot timer was armed a few instructions after the first RDTSC; the vCPU retired
    // only a handful of instructions while the 100 000 ns passed in HLT.
    const slept = a.after - a.before;
    expect(slept).toBeGreaterThanOrEqual(BigInt(ONE_SHOT));
    expect(slept).toBeLessThan(BigInt(ONE_SHOT + 100));
    // The deadline interrupt arrives when the TSC has reached the deadline, not before.
    expect(a.afterDeadline).toBeGreaterThanOrEqual(a.deadline);
    expect(a.afterDeadline - a.deadline).toBeLessThan(100n);
    // The guest's TSC is the vCPU's clock: TSC ticks are ns of its time line.
    expect(a.vcpu.kvm.clock.guestTsc(a.vcpu)).toBe(BigInt(a.kvm.clock.nowNs(a.vcpu)));
    expect(a.vcpu.cpu.state.instructionsRetired).toBeLessThan(5000);
    const b = runTscGuest(backend, 'virtual');
    expect([b.before, b.after, b.deadline, b.afterDeadline]).toEqual([a.before, a.after, a.deadline, a.afterDeadline]);
  });

  it('host clock: the TSC advances by at least the idle time and the TSC-deadline interrupt comes at or after its deadline', () => {
    const a = runTscGuest(backend, 'host');
    expect(KvmExitReason[a.out.exitReason]).toBe('KVM_EXIT_HLT');
    expect(a.irqs).toBe(2n);
    expect(a.after - a.before).toBeGreaterThanOrEqual(BigInt(ONE_SHOT));
    expect(a.afterDeadline).toBeGreaterThanOrEqual(a.deadline);
    // The TSC runs in host time, whether or not the vCPU executes.
    const t0 = a.kvm.clock.guestTsc(a.vcpu);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3);
    expect(a.kvm.clock.guestTsc(a.vcpu) - t0).toBeGreaterThanOrEqual(3_000_000n);
  });
});
