/** `tsvisor bench` options and the sizes of each workload per profile. */
import { parseArgs } from 'node:util';
import { CliError } from '../status';
import { BenchBackend, BENCH_BACKENDS, CPU_TIERS, CpuTier } from './vm';

export const SPEED_WORKLOADS = ['cpu32', 'cpu64', 'memwalk', 'string'] as const;
export const EXIT_WORKLOADS = ['cpuid', 'hypercall', 'rdmsr', 'wrmsr', 'pio-kernel', 'pm-timer', 'pio-user', 'mmio-user', 'hlt-timer', 'ipi'] as const;
export const OTHER_WORKLOADS = ['dirty-log', 'startup', 'memory', 'qemu'] as const;
export type SpeedWorkload = (typeof SPEED_WORKLOADS)[number];
export type ExitWorkload = (typeof EXIT_WORKLOADS)[number];
export type Workload = SpeedWorkload | ExitWorkload | (typeof OTHER_WORKLOADS)[number];
export const ALL_WORKLOADS: readonly Workload[] = [...SPEED_WORKLOADS, ...EXIT_WORKLOADS, ...OTHER_WORKLOADS];
const GROUPS: Record<string, readonly Workload[]> = {
  speed: SPEED_WORKLOADS,
  exits: EXIT_WORKLOADS,
  dirty: ['dirty-log'],
  all: ALL_WORKLOADS,
};

export type Profile = 'full' | 'quick' | 'tiny';

export interface BenchSizes {
  repeat: number;
  /** One untimed run first (V8 compiles the hot paths; translation caches warm). */
  warmup: boolean;
  sieveRounds: number;
  xorshiftIterations: number;
  memwalkBytes: number;
  memwalkRounds: number;
  stringRounds: number;
  exitIterations: number;
  hltIterations: number;
  ipiIterations: number;
  dirtyMiB: number;
  dirtyRounds: number;
  memorySlotMiB: number;
  memoryVcpus: number;
}

export const PROFILES: Record<Profile, BenchSizes> = {
  full: {
    repeat: 5, warmup: true, sieveRounds: 4, xorshiftIterations: 1_000_000, memwalkBytes: 32 << 20, memwalkRounds: 16, stringRounds: 8,
    exitIterations: 10_000, hltIterations: 5_000, ipiIterations: 2_000, dirtyMiB: 256, dirtyRounds: 5,
    memorySlotMiB: 512, memoryVcpus: 8,
  },
  quick: {
    repeat: 3, warmup: true, sieveRounds: 1, xorshiftIterations: 250_000, memwalkBytes: 32 << 20, memwalkRounds: 4, stringRounds: 2,
    exitIterations: 2_000, hltIterations: 500, ipiIterations: 200, dirtyMiB: 256, dirtyRounds: 3,
    memorySlotMiB: 256, memoryVcpus: 4,
  },
  tiny: {
    repeat: 1, warmup: false, sieveRounds: 1, xorshiftIterations: 1_000, memwalkBytes: 1 << 20, memwalkRounds: 1, stringRounds: 1,
    exitIterations: 200, hltIterations: 20, ipiIterations: 10, dirtyMiB: 4, dirtyRounds: 2,
    memorySlotMiB: 16, memoryVcpus: 2,
  },
};

export interface BenchOptions {
  json: boolean;
  profile: Profile;
  sizes: BenchSizes;
  workloads: Workload[];
  backends: BenchBackend[];
  tiers: CpuTier[];
  /** Run QEMU (when installed) for the speed workloads. */
  qemu: boolean;
}

export const BENCH_HELP = `Usage: tsvisor bench [options]      (also: npm run bench -- [options])

Benchmarks tsvisor on both backends (docs/performance.md): guest speed in MIPS per execution
tier, exit round trips in ns, dirty logging, start-up time, host memory; and, when
qemu-system-x86_64 is on PATH, the same guests under QEMU TCG for comparison. Every figure is
the median over repeated runs, with min and max.

Options:
      --json             print one JSON object instead of the table
      --quick            fewer repetitions and smaller workloads
      --only LIST        comma-separated workloads or groups:
                           speed (${SPEED_WORKLOADS.join(', ')})
                           exits (${EXIT_WORKLOADS.join(', ')})
                           dirty-log, startup, memory, qemu
  -b, --backend B        vmx | svm | both (default both)
      --tier T           ${CPU_TIERS.join(' | ')} | all: processor tiers for the speed workloads (default all)
      --repeat N         runs per figure (default 5, --quick 3)
      --no-qemu          do not run QEMU even when it is installed
  -h, --help             show this help
`;

export type BenchCommand = { kind: 'help' } | { kind: 'bench'; options: BenchOptions };

export function parseBenchArgs(argv: readonly string[]): BenchCommand {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        json: { type: 'boolean' },
        quick: { type: 'boolean' },
        tiny: { type: 'boolean' },
        only: { type: 'string' },
        backend: { type: 'string', short: 'b' },
        tier: { type: 'string' },
        repeat: { type: 'string' },
        'no-qemu': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new CliError(`bench: ${(e as Error).message}`);
  }
  const v = parsed.values;
  if (v.help) return { kind: 'help' };
  if (parsed.positionals.length) throw new CliError(`bench takes no arguments, got '${parsed.positionals[0]}'`);
  const profile: Profile = v.tiny ? 'tiny' : v.quick ? 'quick' : 'full';
  const sizes = { ...PROFILES[profile] };
  if (v.repeat !== undefined) {
    const n = Number(v.repeat);
    if (!Number.isInteger(n) || n < 1 || n > 1000) throw new CliError(`bench: --repeat expects an integer 1..1000, got '${v.repeat}'`);
    sizes.repeat = n;
  }
  let workloads: Workload[] = [...ALL_WORKLOADS];
  if (v.only !== undefined) {
    const set = new Set<Workload>();
    for (const w of v.only.split(',').map((s) => s.trim()).filter(Boolean)) {
      const g = GROUPS[w] ?? (ALL_WORKLOADS.includes(w as Workload) ? [w as Workload] : null);
      if (!g) throw new CliError(`bench: unknown workload '${w}' in --only (workloads: ${ALL_WORKLOADS.join(', ')}; groups: ${Object.keys(GROUPS).join(', ')})`);
      for (const x of g) set.add(x);
    }
    if (!set.size) throw new CliError('bench: --only needs at least one workload');
    workloads = ALL_WORKLOADS.filter((w) => set.has(w));
  }
  const b = v.backend ?? 'both';
  if (b !== 'both' && !BENCH_BACKENDS.includes(b as BenchBackend)) throw new CliError(`bench: --backend expects vmx, svm or both, got '${b}'`);
  const backends = b === 'both' ? [...BENCH_BACKENDS] : [b as BenchBackend];
  const t = v.tier ?? 'all';
  if (t !== 'all' && !CPU_TIERS.includes(t as CpuTier)) throw new CliError(`bench: --tier expects ${CPU_TIERS.join(', ')} or all, got '${t}'`);
  const tiers = t === 'all' ? [...CPU_TIERS] : [t as CpuTier];
  return { kind: 'bench', options: { json: !!v.json, profile, sizes, workloads, backends, tiers, qemu: !v['no-qemu'] } };
}
