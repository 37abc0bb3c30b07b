/**
 * An instruction that exits and is completed by the hypervisor (CPUID, RDMSR, in-kernel port
 * I/O …) still retires for the guest: KVM's kvm_skip_emulated_instruction counts it for the PMU
 * (kvm_pmu_instruction_retired), and tsvisor's virtual clock — and so the TSC — is the
 * retired-instruction count. A loop of exiting instructions advances the TSC exactly as a loop
 * of the same number of non-exiting ones, on both backends.
 */
import { BackendClass, KvmExitReason } from '@tsvisor/core';
import { Assembler, bootGuest, buildLongModeGuest, runUntilStop, eax, ecx, rax, rdx, r12, r13, r14, rsi } from '@tsvisor/testkit';
import { SvmBackend } from '@tsvisor/svm';
import { VmxBackend } from '@tsvisor/vmx';

const N = 25;

/** RSI = 64-bit TSC. */
function tsc(a: Assembler): void {
  a.rdtsc().shl(rdx, 32).or(rax, rdx).mov(rsi, rax);
}

function guest() {
  return buildLongModeGuest((a) => {
    // R12: TSC delta over N × (xor eax,eax; cpuid) — CPUID always exits on both vendors.
    tsc(a);
    a.mov(r14, rsi);
    for (let i = 0; i < N; i++) { a.xor(eax, eax); a.cpuid(); }
    tsc(a);
    a.mov(r12, rsi).sub(r12, r14);
    // R13: the same with a non-exiting two-byte instruction in place of CPUID.
    tsc(a);
    a.mov(r14, rsi);
    for (let i = 0; i < N; i++) { a.xor(eax, eax); a.xor(ecx, ecx); }
    tsc(a);
    a.mov(r13, rsi).sub(r13, r14);
    a.hlt();
  });
}

describe.each([['vmx', VmxBackend], ['svm', SvmBackend]] as [string, BackendClass][])('%s', (_n, B) => {
  it('exiting instructions the hypervisor completes count as retired (TSC under the virtual clock)', () => {
    const { vcpu } = bootGuest(B, guest(), { memory: 4 << 20 });
    const out = runUntilStop(vcpu);
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    const r = vcpu.getRegs();
    expect(r.r13).toBeGreaterThan(0n);
    expect(r.r12).toBe(r.r13);
    expect(vcpu.exitCounts.size).toBeGreaterThan(0);
  });
});
