/**
 * `tsvisor bench` (issue 8): guest speed per tier, exit round trips, dirty logging, start-up,
 * host memory, on each backend, and QEMU TCG side by side when it is installed. Figures are
 * medians over repeated runs with min and max. `runBench` is the suite as a function (the
 * smoke test runs it with tiny sizes); `benchCommand` prints a table or one JSON object.
 */
import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import { CliIo } from '../io';
import { CliError, ExitStatus } from '../status';
import { benchDirtyLog, DirtyResult } from './dirty';
import { benchExit, ExitResult } from './exits';
import { benchExitsAcrossProcesses } from './exits-isolated';
import { benchMemory, MemoryResult } from './memory';
import {
  BENCH_HELP, BenchOptions, EXIT_WORKLOADS, ExitWorkload, parseBenchArgs, SPEED_WORKLOADS, SpeedWorkload,
} from './options';
import { modelInstructions, QemuInfo, qemuInfo, QemuRunner } from './qemu';
import { benchSpeed, speedGuest, SpeedResult } from './speed';
import { benchStartup, startupAvailable, StartupResult } from './startup';
import { round, Stat, stat } from './stats';
import { BenchBackend, CpuTier, DEFAULT_TIER } from './vm';

export * from './options';
export type { Stat } from './stats';
export type { SpeedResult, ExitResult, DirtyResult, StartupResult, MemoryResult };

export interface QemuResult {
  workload: SpeedWorkload;
  /** tsvisor's retired instructions for QEMU's (larger) guest, from its exact linear model. */
  instructions: number;
  seconds: Stat;
  mips: Stat;
  /** String workload: bytes moved/stored per second, MB/s (the ratio uses it). */
  mbPerSecond?: Stat;
  checksumOk: boolean;
  /** tsvisor's median MIPS (default tier; MB/s for the string workload) divided by QEMU's, per backend. */
  ratio: Partial<Record<BenchBackend, number>>;
}

export interface TargetCheck {
  target: string;
  backend: BenchBackend;
  goal: string;
  value: number | null;
  unit: string;
  met: boolean | null;
  note?: string;
}

export interface BenchReport {
  tool: 'tsvisor bench';
  date: string;
  host: { node: string; platform: string; cpuModel: string; cpus: number; loadavg: number[]; uptime: string };
  profile: BenchOptions['profile'];
  repeat: number;
  backends: BenchBackend[];
  tiers: CpuTier[];
  defaultTier: CpuTier;
  tierNote: string;
  speed: SpeedResult[];
  exits: ExitResult[];
  dirtyLog: DirtyResult[];
  startup: StartupResult[];
  memory: MemoryResult[];
  qemu: QemuInfo & { results: QemuResult[] };
  targets: TargetCheck[];
  skipped: { section: string; why: string }[];
  errors: { section: string; backend?: BenchBackend; message: string }[];
}

const TIER_NOTE = 'tiers from X86CpuOptions.tier (jit = default: hot blocks compiled to JavaScript; interpreter); '
  + 'Kvm.createVcpu does not take a tier yet, so the benchmark sets it on each new vCPU before it runs';

function uptimeLine(): string {
  try {
    return execFileSync('uptime', { encoding: 'utf8' }).trim();
  } catch {
    return `load average: ${os.loadavg().map((l) => l.toFixed(2)).join(', ')}`;
  }
}

export interface BenchHooks {
  /** Progress lines (the CLI writes them to stderr). */
  progress?(line: string): void;
}

export async function runBench(o: BenchOptions, hooks: BenchHooks = {}): Promise<BenchReport> {
  const say = hooks.progress ?? (() => undefined);
  const s = o.sizes;
  const want = new Set(o.workloads);
  const report: BenchReport = {
    tool: 'tsvisor bench',
    date: new Date().toISOString(),
    host: { node: process.version, platform: `${os.platform()} ${os.arch()}`, cpuModel: os.cpus()[0]?.model ?? 'unknown', cpus: os.cpus().length, loadavg: os.loadavg().map((l) => round(l)), uptime: uptimeLine() },
    profile: o.profile,
    repeat: s.repeat,
    backends: o.backends,
    tiers: o.tiers,
    defaultTier: DEFAULT_TIER,
    tierNote: TIER_NOTE,
    speed: [], exits: [], dirtyLog: [], startup: [], memory: [],
    qemu: { available: false, note: 'not run', results: [] },
    targets: [],
    skipped: [],
    errors: [],
  };
  const attempt = async (section: string, backend: BenchBackend | undefined, f: () => unknown) => {
    try {
      await f();
    } catch (e) {
      const message = (e as Error)?.message ?? String(e);
      report.errors.push({ section, backend, message });
      say(`  ! ${section}${backend ? ` (${backend})` : ''}: ${message}`);
    }
  };

  for (const w of SPEED_WORKLOADS.filter((x) => want.has(x))) {
    const g = speedGuest(w, s);
    for (const b of o.backends) {
      for (const t of o.tiers) {
        say(`speed ${w} ${b} ${t}`);
        await attempt(`speed ${w} ${t}`, b, () => report.speed.push(benchSpeed(g, b, t, s.repeat, s.warmup)));
      }
    }
  }
  const exitWorkloads = EXIT_WORKLOADS.filter((x) => want.has(x));
  if (exitWorkloads.length > 0 && o.backends.length > 1 && !startupAvailable()) {
    // Each run in a fresh process with one backend, as tsvisor runs (exits-isolated.ts).
    for (const b of o.backends) {
      say(`exits ${exitWorkloads.join(',')} ${b} (${s.repeat} processes)`);
      await attempt('exits', b, async () => {
        const r = await benchExitsAcrossProcesses(exitWorkloads, b, o);
        report.exits.push(...r.exits);
        report.errors.push(...r.errors);
      });
    }
  } else {
    for (const w of exitWorkloads) {
      for (const b of o.backends) {
        say(`exit ${w} ${b}`);
        await attempt(`exit ${w}`, b, () => report.exits.push(benchExit(w, b, s)));
      }
    }
  }
  if (want.has('dirty-log')) {
    for (const b of o.backends) {
      say(`dirty-log ${s.dirtyMiB} MiB ${b}`);
      await attempt('dirty-log', b, () => report.dirtyLog.push(benchDirtyLog(b, s)));
    }
  }
  if (want.has('startup')) {
    const why = startupAvailable();
    if (why) report.skipped.push({ section: 'startup', why });
    else {
      for (const b of o.backends) {
        say(`startup ${b}`);
        await attempt('startup', b, async () => report.startup.push(await benchStartup(b, s.repeat)));
      }
    }
  }
  if (want.has('memory')) {
    const why = startupAvailable();
    if (why) report.skipped.push({ section: 'memory', why });
    else {
      for (const b of o.backends) {
        say(`memory ${b}`);
        await attempt('memory', b, async () => report.memory.push(await benchMemory(b, s.memorySlotMiB, s.memoryVcpus)));
      }
    }
  }
  if (want.has('qemu')) {
    const info = o.qemu ? qemuInfo() : { available: false, note: 'QEMU column skipped (--no-qemu)' };
    report.qemu = { ...info, results: [] };
    if (info.available) {
      const runner = new QemuRunner();
      try {
        for (const w of SPEED_WORKLOADS.filter((x) => want.has(x))) {
          say(`qemu ${w}`);
          await attempt(`qemu ${w}`, undefined, async () => {
            const { sizes, instructions } = modelInstructions(w, s, o.backends[0]);
            const g = speedGuest(w, sizes);
            const last = g.alsoAccept?.values ?? g.expected;
            const r = await runner.run(g.guest, last[last.length - 1], s.repeat);
            const mips = stat(r.seconds.samples.map((sec) => instructions / sec / 1e6));
            // REP string instructions retire once per instruction, not per byte: compare bytes per second there.
            const mbPerSecond = g.bytes ? stat(r.seconds.samples.map((sec) => g.bytes! / sec / 1e6)) : undefined;
            const ratio: QemuResult['ratio'] = {};
            for (const b of o.backends) {
              const mine = report.speed.find((x) => x.workload === w && x.backend === b && x.tier === DEFAULT_TIER)
                ?? report.speed.find((x) => x.workload === w && x.backend === b);
              if (mine) ratio[b] = mbPerSecond && mine.mbPerSecond ? mine.mbPerSecond.median / mbPerSecond.median : mine.mips.median / mips.median;
            }
            report.qemu.results.push({ workload: w, instructions, seconds: r.seconds, mips, mbPerSecond, checksumOk: r.checksumOk, ratio });
          });
        }
      } finally {
        runner.dispose();
      }
    } else {
      report.skipped.push({ section: 'qemu', why: info.note });
    }
  }
  report.targets = targets(report, o);
  return report;
}

function targets(r: BenchReport, o: BenchOptions): TargetCheck[] {
  const out: TargetCheck[] = [];
  for (const b of o.backends) {
    for (const w of ['cpu32', 'cpu64'] as const) {
      const x = r.speed.find((y) => y.workload === w && y.backend === b && y.tier === DEFAULT_TIER);
      if (x) out.push({ target: `CPU-bound ${w} (${DEFAULT_TIER} tier)`, backend: b, goal: '>= 100 MIPS', value: round(x.mips.median), unit: 'MIPS', met: x.mips.median >= 100 });
    }
    const c = r.exits.find((y) => y.exit === 'cpuid' && y.backend === b);
    if (c) out.push({ target: 'CPUID exit round trip', backend: b, goal: '< 1000 ns', value: round(c.ns.median), unit: 'ns', met: c.ns.median < 1000 });
    const d = r.dirtyLog.find((y) => y.backend === b);
    if (d) {
      const full = d.slotMiB === 256;
      out.push({
        target: `dirty-log harvest, ${d.slotMiB} MiB slot`, backend: b, goal: '< 5 ms per round (256 MiB)', value: round(d.harvestMs.median), unit: 'ms',
        met: full ? d.harvestMs.median < 5 : null, note: full ? undefined : 'not the 256 MiB slot of the target',
      });
    }
    const st = r.startup.find((y) => y.backend === b);
    if (st) out.push({ target: 'start-up to first guest instruction', backend: b, goal: '< 300 ms', value: round(st.firstGuestInstructionMs.median), unit: 'ms', met: st.firstGuestInstructionMs.median < 300 });
  }
  return out;
}

// ---- the table ----

function fmt(v: number | undefined | null): string {
  if (v === undefined || v === null || !Number.isFinite(v)) return '-';
  const r = round(v);
  return Math.abs(r) >= 1e5 ? r.toExponential(2) : String(r);
}

function fmtStat(x: Stat | undefined): string {
  return x ? `${fmt(x.median)} [${fmt(x.min)}..${fmt(x.max)}]` : '-';
}

function table(title: string, header: string[], rows: string[][]): string {
  if (!rows.length) return '';
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : (c ?? '').padEnd(widths[i]))).join('  ').trimEnd();
  return `${title}\n${line(header)}\n${line(widths.map((w) => '-'.repeat(w)))}\n${rows.map(line).join('\n')}\n\n`;
}

export function formatReport(r: BenchReport): string {
  let out = `tsvisor bench (${r.profile}, ${r.repeat} runs per figure: median [min..max]) — ${r.date}\n`;
  out += `host: ${r.host.cpuModel} x${r.host.cpus}, Node ${r.host.node}; ${r.host.uptime}\n`;
  out += `tiers: ${r.tierNote}\n\n`;
  out += table('Guest speed', ['workload', 'backend', 'tier', 'instructions', 'MIPS', 'MIPS (CPU time)', 'seconds', 'checksum'],
    r.speed.map((x) => [x.workload, x.backend, x.tier, String(x.instructions), fmtStat(x.mips), fmt(x.mipsCpu.median),
      fmtStat(x.seconds), (x.checksum.ok ? 'ok' : 'MISMATCH') + (x.mbPerSecond ? `  (${fmt(x.mbPerSecond.median)} MB/s)` : '') + (x.checksum.note ? ' *' : '')]));
  const notes = [...new Set(r.speed.filter((x) => x.checksum.note).map((x) => x.checksum.note))];
  if (notes.length) out += notes.map((n) => `* ${n}\n`).join('') + '\n';
  out += table('Exit round trips (loop with N operations - loop without) / N', ['exit', 'backend', 'ns per exit', 'ns (CPU time)', 'N', 'checksum', 'what'],
    r.exits.map((x) => [x.exit, x.backend, fmtStat(x.ns), fmt(x.nsCpu.median), String(x.iterations * x.perIteration), x.checksum.ok ? 'ok' : 'MISMATCH', x.description]));
  out += table('Dirty logging (guest writes one byte per page, one sweep of the slot per round)',
    ['backend', 'mechanism', 'slot', 'dirty pages/round', 'harvest ms', 'harvest ms (CPU time)', 'MIPS logging', 'MIPS not logging', 'MIPS on / off (CPU time)', 'slowdown', 'exits while logging'],
    r.dirtyLog.map((x) => [x.backend, x.mechanism, `${x.slotMiB} MiB`, `${x.dirtyPagesPerRound}/${x.pagesInSlot}`, fmtStat(x.harvestMs), fmt(x.harvestCpuMs.median), fmtStat(x.mipsLogging), fmtStat(x.mipsNotLogging),
      `${fmt(x.mipsLoggingCpu.median)} / ${fmt(x.mipsNotLoggingCpu.median)}`, `${fmt(x.slowdown)}x`,
      Object.entries(x.exitsLogging).map(([k, v]) => `${k}:${v}`).join(' ')]));
  out += table('Start-up (spawn of `node packages/cli/bin/tsvisor.js run --backend B`, demo guest)', ['backend', 'to first guest instruction ms', 'to guest end (exit) ms', 'node -e 0 ms'],
    r.startup.map((x) => [x.backend, fmtStat(x.firstGuestInstructionMs), fmtStat(x.guestEndMs), fmt(x.nodeStartupMs)]));
  out += table('Host memory (RSS deltas in a fresh process)', ['backend', 'MiB per vCPU', 'MiB per GiB RAM (untouched)', 'MiB per GiB RAM (touched by the guest)'],
    r.memory.map((x) => [x.backend, fmt(x.perVcpuMiB), fmt(x.perGiBUntouchedMiB), fmt(x.perGiBTouchedMiB)]));
  if (r.qemu.results.length) {
    out += table(`QEMU TCG (${r.qemu.version}; same guests as Multiboot kernels, larger loop counts)`,
      ['workload', 'QEMU MIPS', 'QEMU seconds', ...r.backends.map((b) => `tsvisor ${b} / QEMU`), 'checksum'],
      r.qemu.results.map((x) => [x.workload, x.mbPerSecond ? `${fmtStat(x.mbPerSecond)} MB/s` : fmtStat(x.mips), fmtStat(x.seconds), ...r.backends.map((b) => (x.ratio[b] !== undefined ? `${fmt(x.ratio[b]! * 100)}%` : '-')), x.checksumOk ? 'ok' : 'MISMATCH']));
  }
  out += table('Targets (issue 8)', ['target', 'backend', 'goal', 'measured', 'met'],
    r.targets.map((t) => [t.target, t.backend, t.goal, `${fmt(t.value)} ${t.unit}`, t.met === null ? `n/a (${t.note})` : t.met ? 'yes' : 'NO']));
  for (const k of r.skipped) out += `skipped ${k.section}: ${k.why}\n`;
  for (const e of r.errors) out += `error in ${e.section}${e.backend ? ` (${e.backend})` : ''}: ${e.message}\n`;
  return out;
}

/** The `bench` subcommand. Exit status 0 unless the options are wrong or a workload failed. */
export async function benchCommand(argv: readonly string[], io: Pick<CliIo, 'stdout' | 'stderr'>): Promise<number> {
  try {
    const cmd = parseBenchArgs(argv);
    if (cmd.kind === 'help') {
      io.stdout.write(BENCH_HELP);
      return ExitStatus.OK;
    }
    const report = await runBench(cmd.options, { progress: (l) => io.stderr.write(`bench: ${l}\n`) });
    io.stdout.write(cmd.options.json ? JSON.stringify(report) + '\n' : formatReport(report));
    const bad = report.errors.length > 0 || report.speed.some((x) => !x.checksum.ok) || report.exits.some((x) => !x.checksum.ok);
    return bad ? ExitStatus.SOFTWARE : ExitStatus.OK;
  } catch (e) {
    if (e instanceof CliError) {
      io.stderr.write(`tsvisor: ${e.message}\n`);
      return e.status;
    }
    throw e;
  }
}

export type { ExitWorkload };
