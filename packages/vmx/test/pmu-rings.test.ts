/**
 * PMU privilege-level filtering (SDM Vol. 3B 20.2.1.1 IA32_PERFEVTSELx USR/OS, 20.2.2
 * IA32_FIXED_CTR_CTRL enable 1 OS / 2 USR / 3 all): a guest works at CPL 0 and at CPL 3
 * (SYSEXIT / SYSENTER), and each counter reads exactly what retired at its rings. An instruction
 * that changes CPL counts at the CPL it started at.
 */
import { KvmExitReason } from '@tsvisor/core';
import {
  MSR_CORE_PERF_FIXED_CTR0, MSR_CORE_PERF_FIXED_CTR_CTRL, MSR_CORE_PERF_GLOBAL_CTRL, MSR_IA32_PMC0, MSR_P6_EVNTSEL0,
} from '@tsvisor/vmx';
import { al, bootGuest, buildProtectedModeGuest, ecx, edx, Label, wrmsrImm } from '@tsvisor/testkit';
import { VMX } from './helpers';

const K_LOOP = 300;
const U_LOOP = 170;
/**
 * CPL 0 between the two OUTs: the first OUT itself — it exits to userspace (which programs the
 * counters) and KVM completes it on the next KVM_RUN (complete_fast_pio_out →
 * kvm_skip_emulated_instruction, which counts it as retired) — then MOV, 2×K_LOOP (DEC, JNZ),
 * MOV, MOV, SYSEXIT. The second OUT is completed only by the KVM_RUN after the checks.
 */
const OS_INSNS = 1 + 1 + 2 * K_LOOP + 3;
/** CPL 3: MOV, 2×U_LOOP, SYSENTER. */
const USR_INSNS = 1 + 2 * U_LOOP + 1;

function ringGuest() {
  return buildProtectedModeGuest((a) => {
    const user = new Label('user');
    const kentry = new Label('kentry');
    const k1 = new Label('k1');
    const u1 = new Label('u1');
    // SYSENTER_CS = 0x08 (the stub's flat code; SS 0x10; user CS 0x1B, SS 0x23), entry, stack.
    wrmsrImm(a, 0x174, 0x08);
    a.mov(ecx, 0x176);
    a.mov(edx, 0);
    a.db(0xb8); a.dd(kentry); // mov eax, kentry
    a.wrmsr();
    wrmsrImm(a, 0x175, 0x7000);
    a.out(0x80, al); // the host programs the counters here
    a.mov(ecx, K_LOOP);
    a.bind(k1);
    a.dec(ecx);
    a.jnz(k1);
    a.db(0xba); a.dd(user); // mov edx, user
    a.mov(ecx, 0x6000);
    a.db(0x0f, 0x35); // sysexit → CPL 3
    a.bind(user);
    a.mov(ecx, U_LOOP);
    a.bind(u1);
    a.dec(ecx);
    a.jnz(u1);
    a.db(0x0f, 0x34); // sysenter → CPL 0
    a.bind(kentry);
    a.out(0x80, al);
    a.hlt();
  });
}

describe('PMU OS/USR filtering', () => {
  it('general and fixed counters count retired instructions and cycles per CPL exactly', () => {
    const { vcpu } = bootGuest(VMX, ringGuest(), { memory: 1 << 20 });
    vcpu.runBudget = 2_000_000;
    // CPUID.0AH: version 2, 4 general counters, 3 fixed counters, 48 bits wide.
    const cpuid = vcpu.getCpuid2().filter((e) => e.function !== 0xa);
    cpuid.push({ function: 0xa, index: 0, flags: 0, eax: 2 | (4 << 8) | (48 << 16) | (7 << 24), ebx: 0, ecx: 0, edx: 3 | (48 << 5) });
    vcpu.setCpuid2(cpuid);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    const EN = 1n << 22n, USR = 1n << 16n, OS = 1n << 17n;
    vcpu.setMsr(MSR_P6_EVNTSEL0, EN | USR | 0xc0n); // instructions, CPL 3
    vcpu.setMsr(MSR_P6_EVNTSEL0 + 1, EN | OS | 0xc0n); // instructions, CPL 0
    vcpu.setMsr(MSR_P6_EVNTSEL0 + 2, EN | USR | OS | 0xc0n); // instructions, all
    vcpu.setMsr(MSR_P6_EVNTSEL0 + 3, EN | USR | 0x3cn); // core cycles, CPL 3
    // Fixed: 0 instructions OS only, 1 core cycles USR only, 2 reference cycles all.
    vcpu.setMsr(MSR_CORE_PERF_FIXED_CTR_CTRL, 0x321n);
    vcpu.setMsr(MSR_CORE_PERF_GLOBAL_CTRL, (7n << 32n) | 0xfn);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(vcpu.getMsr(MSR_IA32_PMC0)).toBe(BigInt(USR_INSNS));
    expect(vcpu.getMsr(MSR_IA32_PMC0 + 1)).toBe(BigInt(OS_INSNS));
    expect(vcpu.getMsr(MSR_IA32_PMC0 + 2)).toBe(BigInt(OS_INSNS + USR_INSNS));
    expect(vcpu.getMsr(MSR_IA32_PMC0 + 3)).toBe(BigInt(USR_INSNS)); // one cycle per instruction
    expect(vcpu.getMsr(MSR_CORE_PERF_FIXED_CTR0)).toBe(BigInt(OS_INSNS));
    expect(vcpu.getMsr(MSR_CORE_PERF_FIXED_CTR0 + 1)).toBe(BigInt(USR_INSNS));
    expect(vcpu.getMsr(MSR_CORE_PERF_FIXED_CTR0 + 2)).toBe(BigInt(OS_INSNS + USR_INSNS));
    // Reprogramming folds what was counted: a USR-only counter switched to OS-only keeps its value.
    vcpu.setMsr(MSR_P6_EVNTSEL0, EN | OS | 0xc0n);
    expect(vcpu.getMsr(MSR_IA32_PMC0)).toBe(BigInt(USR_INSNS));
    expect(vcpu.getMsr(MSR_P6_EVNTSEL0)).toBe(EN | OS | 0xc0n);
  });
});
