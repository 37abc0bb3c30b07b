/**
 * Benchmark workloads (issue #8), as guests: CPU-bound (sieve + xorshift), memory-bound (a
 * page walk larger than any TLB), string instructions, and exit loops whose per-exit cost is
 * (time with the operation − time without) / N. Every workload reports a checksum on port
 * BENCH_RESULT_PORT so a benchmark can also prove the guest computed the right thing.
 */
import {
  Assembler, al, dx, eax, ebx, ecx, edx, edi, esi, rax, rbx, rcx, rdx, rdi, rsi, r8, r12, byte, dword, qword,
} from '../asm';
import { Code } from 'iced-x86';
import { BootOptions, GuestImage, buildLongModeGuest, buildProtectedModeGuest } from './boot';

export const BENCH_RESULT_PORT = 0x504;
/** Where the sieve's 128 KiB byte array lives (guest-physical, identity-mapped). */
export const SIEVE_BASE = 0x200000;
export const SIEVE_SIZE = 128 * 1024;
/** Primes below 131072: the sieve's checksum. */
export const SIEVE_PRIMES = 12251;

/** Report EAX on BENCH_RESULT_PORT (the workloads' checksum channel). */
export function reportEax(a: Assembler): void {
  a.mov(edx, BENCH_RESULT_PORT);
  a.out(dx, eax);
}

/** Sieve of Eratosthenes over SIEVE_SIZE bytes, leaving the prime count in EAX (32- or 64-bit code). */
function emitSieve(a: Assembler): void {
  // Mark every entry "prime" (1), then strike multiples.
  a.cld();
  a.mov(edi, SIEVE_BASE);
  a.mov(eax, 0x01010101);
  a.mov(ecx, SIEVE_SIZE / 4);
  a.repStosd();
  a.mov(ebx, 2);
  const outer = a.here();
  const done = a.label();
  const next = a.label();
  a.mov(eax, ebx);
  a.imul(eax, ebx);
  a.cmp(eax, SIEVE_SIZE);
  a.jae(done);
  a.cmp(byte(ebx, SIEVE_BASE), 0);
  a.je(next);
  a.mov(edx, eax);
  const inner = a.here();
  a.mov(byte(edx, SIEVE_BASE), 0);
  a.add(edx, ebx);
  a.cmp(edx, SIEVE_SIZE);
  a.jb(inner);
  a.bind(next);
  a.inc(ebx);
  a.jmp(outer);
  a.bind(done);
  // Count entries 2..N-1 still marked.
  a.xor(eax, eax);
  a.mov(ecx, 2);
  const count = a.here();
  a.movzx(edx, byte(ecx, SIEVE_BASE));
  a.add(eax, edx);
  a.inc(ecx);
  a.cmp(ecx, SIEVE_SIZE);
  a.jb(count);
}

export interface CpuBenchOptions {
  /** Sieve passes. */
  sieveRounds?: number;
  /** xorshift64 iterations. */
  xorshiftIterations?: number;
  boot?: BootOptions;
}

/**
 * The CPU-bound workload of issue #8 in 64-bit mode: `sieveRounds` sieves, then a 64-bit
 * xorshift loop; reports the prime count and the xorshift state's low 32 bits, then halts.
 */
export function buildCpuBench64(opts: CpuBenchOptions = {}): GuestImage {
  const rounds = opts.sieveRounds ?? 4;
  const iters = opts.xorshiftIterations ?? 1_000_000;
  return buildLongModeGuest((a) => {
    a.mov(r12, rounds);
    const again = a.here('sieve_round');
    emitSieve(a);
    a.dec(r12);
    a.jnz(again);
    reportEax(a);
    // xorshift64 (Marsaglia): x ^= x << 13; x ^= x >> 7; x ^= x << 17
    a.mov(rax, 88172645463325252n);
    a.mov(rcx, iters);
    const loop = a.here('xorshift');
    a.mov(rdx, rax).shl(rdx, 13).xor(rax, rdx);
    a.mov(rdx, rax).shr(rdx, 7).xor(rax, rdx);
    a.mov(rdx, rax).shl(rdx, 17).xor(rax, rdx);
    a.dec(rcx);
    a.jnz(loop);
    reportEax(a);
    a.cli().hlt();
  }, { ...opts.boot });
}

/**
 * The same workload in 32-bit protected mode (no paging): the xorshift64 state is kept in
 * EDX:EAX and shifted with SHLD/SHRD.
 */
export function buildCpuBench32(opts: CpuBenchOptions = {}): GuestImage {
  const rounds = opts.sieveRounds ?? 4;
  const iters = opts.xorshiftIterations ?? 1_000_000;
  return buildProtectedModeGuest((a) => {
    a.mov(esi, rounds);
    const again = a.here('sieve_round');
    emitSieve(a);
    a.dec(esi);
    a.jnz(again);
    reportEax(a);
    // x in EDX:EAX (seed 88172645463325252 = 0x0139408D_CBBF7A44 as hi:lo).
    a.mov(eax, 0xcbbf7a44).mov(edx, 0x0139408d);
    a.mov(esi, iters);
    const loop = a.here('xorshift');
    // t = x << 13
    a.mov(ebx, eax).mov(ecx, edx).op(Code.Shld_rm32_r32_imm8, ecx, ebx, 13).shl(ebx, 13).xor(eax, ebx).xor(edx, ecx);
    // t = x >> 7
    a.mov(ebx, eax).mov(ecx, edx).op(Code.Shrd_rm32_r32_imm8, ebx, ecx, 7).shr(ecx, 7).xor(eax, ebx).xor(edx, ecx);
    // t = x << 17
    a.mov(ebx, eax).mov(ecx, edx).op(Code.Shld_rm32_r32_imm8, ecx, ebx, 17).shl(ebx, 17).xor(eax, ebx).xor(edx, ecx);
    a.dec(esi);
    a.jnz(loop);
    reportEax(a);
    a.cli().hlt();
  }, { ...opts.boot });
}

/** Reference results of the CPU workloads: [prime count, low 32 bits of xorshift state]. */
export function cpuBenchExpected(opts: CpuBenchOptions = {}): [number, number] {
  const iters = opts.xorshiftIterations ?? 1_000_000;
  let x = 88172645463325252n;
  const M = (1n << 64n) - 1n;
  for (let i = 0; i < iters; i++) {
    x ^= (x << 13n) & M;
    x ^= x >> 7n;
    x ^= (x << 17n) & M;
  }
  return [SIEVE_PRIMES, Number(x & 0xffffffffn)];
}

/**
 * Memory-bound: read one qword per page over `bytes` (stride one page plus a cache line, so
 * every access touches a new page), `rounds` times. Needs RAM up to 0x1000000 + bytes.
 */
export function buildMemWalkBench(bytes = 32 << 20, rounds = 8): GuestImage {
  return buildLongModeGuest((a) => {
    a.xor(eax, eax);
    a.mov(r12, rounds);
    const round = a.here('walk_round');
    a.mov(rsi, 0x1000000);
    a.mov(rcx, Math.floor(bytes / 4160));
    const step = a.here('walk_step');
    a.add(rax, qword(rsi));
    a.add(rsi, 4160);
    a.dec(rcx);
    a.jnz(step);
    a.dec(r12);
    a.jnz(round);
    reportEax(a);
    a.cli().hlt();
  });
}

/** String instructions: REP MOVSB and REP STOSQ over 1 MiB buffers, `rounds` times. */
export function buildStringBench(rounds = 16): GuestImage {
  return buildLongModeGuest((a) => {
    a.cld();
    a.mov(r12, rounds);
    const round = a.here('string_round');
    a.mov(rsi, 0x1000000).mov(rdi, 0x1100000).mov(rcx, 1 << 20);
    a.repMovsb();
    a.mov(rdi, 0x1200000).mov(rax, r12).mov(rcx, 1 << 17);
    a.repStosq();
    a.dec(r12);
    a.jnz(round);
    a.mov(rsi, 0x1200000);
    a.mov(eax, dword(rsi));
    reportEax(a);
    a.cli().hlt();
  });
}

export type ExitOp = 'none' | 'cpuid' | 'hypercall' | 'rdmsr' | 'wrmsr' | 'pio-user' | 'pio-kernel' | 'mmio-user';

export interface ExitLoopOptions {
  /** The native hypercall of the backend (vmcall on VMX, vmmcall on SVM). */
  hypercall?: 'vmcall' | 'vmmcall';
  /** Port for 'pio-kernel' (an in-kernel device, e.g. the ACPI PM timer). */
  kernelPort?: number;
  /** Port for 'pio-user' (unclaimed by the kernel: a KVM_EXIT_IO each time). */
  userPort?: number;
  /** Guest-physical address for 'mmio-user' (unbacked, identity-mapped). */
  mmioAddress?: number;
}

/**
 * `iterations` repetitions of one exiting operation in a tight loop (or of nothing, for the
 * baseline); reports the iteration count and halts.
 */
export function buildExitLoop(op: ExitOp, iterations: number, o: ExitLoopOptions = {}): GuestImage {
  return buildLongModeGuest((a) => {
    if (op === 'wrmsr') {
      // Write EFER back with its own value: always intercepted, never changes state.
      a.mov(ecx, 0xc0000080).rdmsr().mov(r8, rax).mov(rbx, rdx);
    }
    a.mov(r12, iterations);
    const loop = a.here('exit_loop');
    switch (op) {
      case 'none': break;
      case 'cpuid': a.xor(eax, eax).cpuid(); break;
      case 'hypercall': a.mov(eax, 1); if ((o.hypercall ?? 'vmcall') === 'vmcall') a.vmcall(); else a.vmmcall(); break;
      case 'rdmsr': a.mov(ecx, 0x1b).rdmsr(); break; // IA32_APIC_BASE: intercepted on both vendors
      case 'wrmsr': a.mov(ecx, 0xc0000080).mov(rax, r8).mov(rdx, rbx).wrmsr(); break;
      case 'pio-user': a.mov(edx, o.userPort ?? 0x510).out(dx, al); break;
      case 'pio-kernel': a.mov(edx, o.kernelPort ?? 0x608).in(eax, dx); break;
      case 'mmio-user': a.mov(rsi, o.mmioAddress ?? 0x3f000000).mov(eax, dword(rsi)); break;
    }
    a.dec(r12);
    a.jnz(loop);
    a.mov(eax, iterations >>> 0);
    reportEax(a);
    a.cli().hlt();
  });
}
