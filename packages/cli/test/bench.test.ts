/**
 * Smoke test of the benchmark suite (issue 8): not a timing test — the figures are never
 * checked, only that every workload still runs on both backends with tiny loop counts, that
 * the guests computed the right checksums, and that the JSON report keeps its shape.
 * Start-up, memory and QEMU spawn processes from the built dist/ and are left to `npm run bench`.
 */
import { BenchReport, formatReport, parseBenchArgs, runBench } from '../src/bench';
import { isolatedExitArgs } from '../src/bench/exits-isolated';
import { CliError } from '../src/status';

function tinyOptions(extra: string[] = []) {
  const cmd = parseBenchArgs(['--tiny', '--only', 'speed,exits,dirty-log', ...extra]);
  if (cmd.kind !== 'bench') throw new Error('expected bench options');
  return cmd.options;
}

const isStat = (x: unknown) => {
  const s = x as { median: number; min: number; max: number; samples: number[] };
  return typeof s.median === 'number' && s.min <= s.median && s.median <= s.max && Array.isArray(s.samples);
};

describe('tsvisor bench', () => {
  let report: BenchReport;

  beforeAll(async () => {
    report = await runBench(tinyOptions());
  }, 240_000);

  it('runs every speed, exit and dirty-log workload on both backends without errors', () => {
    expect(report.errors).toEqual([]);
    expect(report.backends).toEqual(['vmx', 'svm']);
    const speed = new Set(report.speed.map((x) => `${x.workload}/${x.backend}/${x.tier}`));
    for (const w of ['cpu32', 'cpu64', 'memwalk', 'string']) for (const b of ['vmx', 'svm']) for (const t of ['jit', 'interpreter']) expect(speed).toContain(`${w}/${b}/${t}`);
    expect(report.exits).toHaveLength(10 * 2);
    expect(report.dirtyLog.map((x) => x.mechanism)).toEqual(['pml', 'write-protect']);
  });

  it('every guest reported the expected checksum', () => {
    for (const x of report.speed) expect({ run: `${x.workload}/${x.backend}/${x.tier}`, ok: x.checksum.ok, got: x.checksum.got }).toEqual({ run: `${x.workload}/${x.backend}/${x.tier}`, ok: true, got: x.checksum.got });
    for (const x of report.exits) expect({ exit: `${x.exit}/${x.backend}`, ok: x.checksum.ok }).toEqual({ exit: `${x.exit}/${x.backend}`, ok: true });
    for (const d of report.dirtyLog) expect(d.dirtyPagesPerRound).toBe(d.pagesInSlot);
  });

  it('the report has the JSON shape the docs describe', () => {
    const j = JSON.parse(JSON.stringify(report)) as BenchReport;
    expect(j.tool).toBe('tsvisor bench');
    expect(typeof j.host.uptime).toBe('string');
    for (const x of j.speed) {
      expect(isStat(x.mips) && isStat(x.seconds)).toBe(true);
      expect(x.instructions).toBeGreaterThan(0);
      if (x.tier === 'interpreter') expect(x.compiledShare).toBe(0);
      expect(isStat(x.mipsCpu)).toBe(true);
    }
    for (const x of j.exits) expect(isStat(x.ns)).toBe(true);
    for (const x of j.dirtyLog) expect(isStat(x.harvestMs) && isStat(x.mipsLogging) && isStat(x.mipsNotLogging)).toBe(true);
    expect(j.targets.map((t) => t.target)).toEqual(expect.arrayContaining(['CPUID exit round trip', 'CPU-bound cpu64 (jit tier)']));
    const text = formatReport(report);
    for (const title of ['Guest speed', 'Exit round trips', 'Dirty logging', 'Targets']) expect(text).toContain(title);
  });

  it('measures each run of a backend\'s exits in a fresh child process with the same profile', () => {
    const o = tinyOptions(['--repeat', '2']);
    const args = isolatedExitArgs(['cpuid', 'hypercall'], 'svm', o);
    expect(args[0]).toMatch(/dist[\\/]bin\.js$/);
    expect(args.slice(1)).toEqual(['bench', '--json', '--no-qemu', '--backend', 'svm', '--only', 'cpuid,hypercall', '--tiny', '--repeat', '1']);
    // The smoke run above went through the children: one figure per exit and backend.
    expect(report.exits.filter((x) => x.backend === 'svm').map((x) => x.exit)).toHaveLength(10);
  });

  it('parses its options and rejects mistakes', () => {
    const o = tinyOptions(['--backend', 'svm', '--repeat', '2', '--tier', 'interpreter']);
    expect(o.backends).toEqual(['svm']);
    expect(o.sizes.repeat).toBe(2);
    expect(o.tiers).toEqual(['interpreter']);
    const q = parseBenchArgs(['--quick', '--only', 'cpuid,startup']);
    expect(q.kind === 'bench' && q.options.workloads).toEqual(['cpuid', 'startup']);
    expect(() => parseBenchArgs(['--only', 'nope'])).toThrow(CliError);
    expect(() => parseBenchArgs(['--backend', 'arm'])).toThrow(CliError);
    expect(() => parseBenchArgs(['--repeat', '0'])).toThrow(CliError);
  });
});
