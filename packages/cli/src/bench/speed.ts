/**
 * Guest speed: MIPS (retired instructions / wall seconds of KVM_RUN until the guest halts)
 * for the CPU-bound sieve + xorshift workload in 32- and 64-bit mode, the memory-bound page
 * walk and the string workload, per backend and per processor tier.
 */
import {
  buildCpuBench32, buildCpuBench64, buildMemWalkBench, buildStringBench, cpuBenchExpected, GuestImage,
} from '@tsvisor/testkit';
import { BenchSizes, SpeedWorkload } from './options';
import { Stat, stat } from './stats';
import { BenchBackend, bootBench, CpuTier, cpuNs, drive, expectHalt, nowNs } from './vm';

export interface SpeedGuest {
  workload: SpeedWorkload;
  description: string;
  guest: GuestImage;
  memory: number;
  expected: number[];
  /** Bytes the guest moves or touches per run (string workload: for MB/s). */
  bytes?: number;
  /** Another result accepted as correct, and why. */
  alsoAccept?: { values: number[]; why: string };
}

/**
 * The testkit's 32-bit xorshift starts from EDX:EAX = 0x01393C62:B5A8B844, which is not the
 * 64-bit seed 88172645463325252 (0x0139408D:CBBF7A44) that cpuBenchExpected uses; until the
 * constant is fixed the 32-bit guest is checked against its own seed.
 */
export const CPU32_GUEST_SEED = 0x01393c62b5a8b844n;

/** Low 32 bits of xorshift64 after `iterations` steps from `seed` (on 32-bit halves: fast). */
export function xorshiftLow32(seed: bigint, iterations: number): number {
  let hi = Number(seed >> 32n) | 0;
  let lo = Number(seed & 0xffffffffn) | 0;
  for (let i = 0; i < iterations; i++) {
    hi ^= (hi << 13) | (lo >>> 19); lo ^= lo << 13;
    lo ^= (lo >>> 7) | (hi << 25); hi ^= hi >>> 7;
    hi ^= (hi << 17) | (lo >>> 15); lo ^= lo << 17;
  }
  return lo >>> 0;
}

export const CPU64_SEED = 88172645463325252n;

export function speedGuest(workload: SpeedWorkload, s: BenchSizes): SpeedGuest {
  const cpu = { sieveRounds: s.sieveRounds, xorshiftIterations: s.xorshiftIterations };
  // cpuBenchExpected's BigInt loop is slow for QEMU's large guests; xorshiftLow32 is the same function.
  switch (workload) {
    case 'cpu32':
      return {
        workload, description: `sieve 128 KiB x${s.sieveRounds} + xorshift64 x${s.xorshiftIterations}, 32-bit`, guest: buildCpuBench32(cpu), memory: 4 << 20, expected: [cpuBenchExpected({ xorshiftIterations: 0 })[0], xorshiftLow32(CPU64_SEED, s.xorshiftIterations)],
        alsoAccept: {
          values: [cpuBenchExpected({ xorshiftIterations: 0 })[0], xorshiftLow32(CPU32_GUEST_SEED, s.xorshiftIterations)],
          why: 'testkit buildCpuBench32 seeds xorshift with 0x01393C62B5A8B844, not 88172645463325252 (0x0139408DCBBF7A44); checked against its own seed',
        },
      };
    case 'cpu64':
      return {
        workload, description: `sieve 128 KiB x${s.sieveRounds} + xorshift64 x${s.xorshiftIterations}, 64-bit`, guest: buildCpuBench64(cpu), memory: 4 << 20,
        expected: [cpuBenchExpected({ xorshiftIterations: 0 })[0], xorshiftLow32(CPU64_SEED, s.xorshiftIterations)],
      };
    case 'memwalk':
      return {
        workload, description: `one qword per page over ${s.memwalkBytes >> 20} MiB x${s.memwalkRounds}, 64-bit`,
        guest: buildMemWalkBench(s.memwalkBytes, s.memwalkRounds), memory: 0x1000000 + s.memwalkBytes + (1 << 20), expected: [0],
      };
    case 'string':
      return {
        workload, description: `REP MOVSB 1 MiB + REP STOSQ 1 MiB x${s.stringRounds}, 64-bit`,
        guest: buildStringBench(s.stringRounds), memory: 32 << 20, expected: [1], bytes: s.stringRounds * 2 * (1 << 20),
      };
  }
}

export interface SpeedResult {
  workload: SpeedWorkload;
  description: string;
  backend: BenchBackend;
  tier: CpuTier;
  instructions: number;
  /** Share of the instructions retired by JIT-compiled blocks. */
  compiledShare: number;
  checksum: { expected: number[]; got: number[]; ok: boolean; note?: string };
  seconds: Stat;
  mips: Stat;
  /** MIPS over this process's CPU time instead of wall time (what an idle host would show). */
  mipsCpu: Stat;
  /** String workload: guest bytes moved/stored per second, MB/s. */
  mbPerSecond?: Stat;
}

interface OneRun {
  ns: number;
  cpuNs: number;
  instructions: number;
  compiled: number;
  results: number[];
}

export function runSpeedOnce(g: SpeedGuest, backend: BenchBackend, tier: CpuTier): OneRun {
  const { vcpu, kvm } = bootBench(backend, g.guest, { memory: g.memory, tier });
  try {
    const c0 = cpuNs();
    const t0 = nowNs();
    const r = drive(vcpu);
    const ns = nowNs() - t0;
    const cns = cpuNs() - c0;
    expectHalt(`${g.workload} on ${backend}/${tier}`, vcpu, r);
    return { ns, cpuNs: cns, instructions: vcpu.cpu.state.instructionsRetired, compiled: vcpu.cpu.stats.compiledInstructions, results: r.results };
  } finally {
    kvm.destroy();
  }
}

export function benchSpeed(g: SpeedGuest, backend: BenchBackend, tier: CpuTier, repeat: number, warmup = true): SpeedResult {
  if (warmup) runSpeedOnce(g, backend, tier); // V8 compiles the processor's hot paths
  const runs: OneRun[] = [];
  for (let i = 0; i < repeat; i++) runs.push(runSpeedOnce(g, backend, tier));
  const last = runs[runs.length - 1];
  const got = last.results;
  const same = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i] >>> 0);
  let ok = runs.every((r) => same(r.results, g.expected));
  let note: string | undefined;
  if (!ok && g.alsoAccept && runs.every((r) => same(r.results, g.alsoAccept!.values))) {
    ok = true;
    note = g.alsoAccept.why;
  }
  const seconds = stat(runs.map((r) => r.ns / 1e9));
  return {
    workload: g.workload,
    description: g.description,
    backend,
    tier,
    instructions: last.instructions,
    compiledShare: last.instructions ? last.compiled / last.instructions : 0,
    checksum: { expected: g.expected.map((v) => v >>> 0), got, ok, ...(note ? { note } : {}) },
    seconds,
    mips: stat(runs.map((r) => r.instructions / (r.ns / 1e3))),
    mipsCpu: stat(runs.map((r) => r.instructions / (Math.max(r.cpuNs, 1) / 1e3))),
    mbPerSecond: g.bytes ? stat(runs.map((r) => g.bytes! / (r.ns / 1e3))) : undefined,
  };
}
