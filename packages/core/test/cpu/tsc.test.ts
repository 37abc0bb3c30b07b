/**
 * The time-stamp counter: RDTSC, RDTSCP and RDMSR(IA32_TSC) read the exact number of
 * instructions retired before them (one tick per instruction without a time source), in the
 * interpreter and in compiled blocks alike; with a time source (core's host clock) they read it.
 */
import { describe, it, expect } from '@jest/globals';
import { X86Cpu, TscSource } from '../../src/cpu/x86-cpu';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { hex, load, machine, longMode, Machine, protMode, reg } from './harness';

function mach(tier: 'interpreter' | 'jit'): Machine {
  return machine('intel', 4, tier);
}

/**
 * 200 iterations of: rdtsc; mov esi,eax; add ebx,1; add ebx,2; <second read>; sub eax,esi;
 * cmp eax,<expected>; je ok; inc r8d; ok: dec r9d; jnz top — R8 counts wrong differences.
 */
const LOOPS64: [string, string][] = [
  ['RDTSC', '45 31 c0 41 b9 c8 00 00 00 0f 31 89 c6 83 c3 01 83 c3 02 0f 31 29 f0 83 f8 04 74 03 41 ff c0 41 ff c9 75 e5 f4'],
  ['RDTSCP', '45 31 c0 41 b9 c8 00 00 00 0f 31 89 c6 83 c3 01 83 c3 02 0f 01 f9 29 f0 83 f8 04 74 03 41 ff c0 41 ff c9 75 e4 f4'],
  // mov ecx,0x10; rdmsr: one more instruction between the reads (expected 5)
  ['RDMSR(IA32_TSC)', '45 31 c0 41 b9 c8 00 00 00 0f 31 89 c6 83 c3 01 83 c3 02 b9 10 00 00 00 0f 32 29 f0 83 f8 05 74 03 41 ff c0 41 ff c9 75 e0 f4'],
];

describe.each(['interpreter', 'jit'] as const)('TSC reads are exact (%s tier)', (tier) => {
  it.each(LOOPS64)('back-to-back %s differ by exactly the instructions retired between them (64-bit)', (_name, code) => {
    const m = mach(tier);
    longMode(m, 0x1000);
    load(m, 0x1000, hex(code));
    m.cpu.state.tsc = 1000n;
    expect(m.cpu.runGuest(m.rules, 100_000)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.hostError).toBeNull();
    expect(reg(m, 9)).toBe(0n); // all 200 iterations ran
    expect(reg(m, 8)).toBe(0n); // no wrong difference
    if (tier === 'jit') expect(m.cpu.stats.compiledInstructions).toBeGreaterThan(0);
    // The counter advanced by exactly the instructions retired.
    expect(m.cpu.state.tsc).toBe(1000n + BigInt(m.cpu.state.instructionsRetired));
  });

  it('back-to-back RDTSC differ by exactly the retired count (32-bit)', () => {
    const m = mach(tier);
    protMode(m, 0x1000);
    // xor edi,edi; mov ebp,200; top: rdtsc; mov esi,eax; add ebx,1; add ebx,2; rdtsc; sub eax,esi;
    // cmp eax,4; je ok; inc edi; ok: dec ebp; jnz top; hlt
    load(m, 0x1000, hex('31 ff bd c8 00 00 00 0f 31 89 c6 83 c3 01 83 c3 02 0f 31 29 f0 83 f8 04 74 01 47 4d 75 e9 f4'));
    expect(m.cpu.runGuest(m.rules, 100_000)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 5)).toBe(0n);
    expect(reg(m, 7)).toBe(0n);
  });

  it('the first RDTSC reads the count retired since entry (state.tsc + instructions before it)', () => {
    const m = mach(tier);
    longMode(m, 0x1000);
    // nop x3; rdtsc; hlt
    load(m, 0x1000, hex('90 90 90 0f 31 f4'));
    m.cpu.state.tsc = 0x1_0000_0000n;
    m.cpu.state.tscOffset = 7n;
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect((reg(m, 2) << 32n) | reg(m, 0)).toBe(0x1_0000_0000n + 3n + 7n);
  });
});

describe('TSC time source', () => {
  it('RDTSC reads the source, the counter is refreshed from it at exit, and WRMSR(IA32_TSC) sets it', () => {
    const m = mach('interpreter');
    longMode(m, 0x1000);
    let t = 5_000_000;
    const src: TscSource = { now: () => t, set: (v) => { t = v; } };
    m.cpu.tscSource = src;
    // rdtsc; mov r12,rax; mov ecx,0x10; xor edx,edx; mov eax,0x1234; wrmsr; rdtsc; hlt
    load(m, 0x1000, hex('0f 31 49 89 c4 b9 10 00 00 00 31 d2 b8 34 12 00 00 0f 30 0f 31 f4'));
    m.cpu.state.tscOffset = 10n;
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 12)).toBe(5_000_010n);
    expect(t).toBe(0x1234 - 10);
    expect(reg(m, 0)).toBe(0x1234n);
    expect(m.cpu.state.tsc).toBe(BigInt(0x1234 - 10));
  });
});

describe('the TSC counter (CpuState halves)', () => {
  it('adds across the 32-bit boundary, from below zero, and wraps at 2^64', async () => {
    const { CpuState } = await import('../../src/cpu/state');
    const s = new CpuState();
    s.tsc = 0xffff_fff0n;
    s.addTsc(0x20);
    expect(s.tsc).toBe(0x1_0000_0010n);
    s.addTsc(5);
    expect(s.tsc).toBe(0x1_0000_0015n);
    s.tsc = -5n;
    s.addTsc(10);
    expect(s.tsc).toBe(5n);
    s.tsc = -1n; // 2^64 - 1 as an unsigned count
    s.addTsc(1);
    expect(BigInt.asUintN(64, s.tsc)).toBe(0n);
  });
});
