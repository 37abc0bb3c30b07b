/**
 * Exit round trips of one backend measured in processes of their own. A tsvisor process runs
 * one backend; measured in a process that has also run the other backend (and every speed
 * workload), the processor's and core's hot code has seen both vendors' objects and is
 * polymorphic, which adds 10–50 % to a round trip of a few hundred nanoseconds, by an amount
 * that depends on what ran before. And on these hosts one process's runs agree with each other
 * while fresh processes differ by up to 2× (docs/performance.md, "The spread between
 * processes"): a median over the runs of one process is the median of one sample. So with both
 * backends selected, `bench` measures each of a backend's `repeat` runs in a fresh child
 * (`tsvisor bench --json -b B --only <exits> --repeat 1`) and takes the median over them.
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import type { ExitResult } from './exits';
import type { BenchOptions, ExitWorkload } from './options';
import { CLI_DIR } from './startup';
import { stat } from './stats';
import type { BenchBackend } from './vm';

export interface IsolatedExits {
  exits: ExitResult[];
  errors: { section: string; backend?: BenchBackend; message: string }[];
}

/** The child's arguments: the same profile and repetitions, one backend, only these exits. */
export function isolatedExitArgs(workloads: readonly ExitWorkload[], backend: BenchBackend, o: BenchOptions): string[] {
  const args = [path.join(CLI_DIR, 'dist', 'bin.js'), 'bench', '--json', '--no-qemu', '--backend', backend, '--only', workloads.join(',')];
  if (o.profile === 'quick') args.push('--quick');
  if (o.profile === 'tiny') args.push('--tiny');
  args.push('--repeat', '1');
  return args;
}

/** `o.sizes.repeat` children, one run each; per exit, the figures over all of them. */
export async function benchExitsAcrossProcesses(workloads: readonly ExitWorkload[], backend: BenchBackend, o: BenchOptions): Promise<IsolatedExits> {
  const runs: IsolatedExits[] = [];
  for (let i = 0; i < o.sizes.repeat; i++) runs.push(await benchExitsIsolated(workloads, backend, o));
  const exits: ExitResult[] = [];
  for (const w of workloads) {
    const per = runs.map((r) => r.exits.find((x) => x.exit === w)).filter((x): x is ExitResult => x !== undefined);
    if (!per.length) continue;
    const all = (f: (x: ExitResult) => number[]) => per.flatMap(f);
    const med = (f: (x: ExitResult) => number) => stat(per.map(f)).median;
    exits.push({
      ...per[0],
      iterations: Math.min(...per.map((x) => x.iterations)),
      ns: stat(all((x) => x.ns.samples)),
      nsCpu: stat(all((x) => x.nsCpu.samples)),
      withSeconds: med((x) => x.withSeconds),
      baselineSeconds: med((x) => x.baselineSeconds),
      checksum: { ...per[0].checksum, ok: per.every((x) => x.checksum.ok) },
      note: [per[0].note, `${per.length} processes`].filter(Boolean).join('; '),
    });
  }
  return { exits, errors: runs.flatMap((r) => r.errors) };
}

export function benchExitsIsolated(workloads: readonly ExitWorkload[], backend: BenchBackend, o: BenchOptions): Promise<IsolatedExits> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, isolatedExitArgs(workloads, backend, o), { maxBuffer: 16 << 20, env: process.env }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`the child measuring ${backend}'s exits failed: ${err.message}${stderr ? `\n${stderr.trim()}` : ''}`));
        return;
      }
      try {
        const r = JSON.parse(stdout) as IsolatedExits;
        resolve({ exits: r.exits, errors: r.errors });
      } catch (e) {
        reject(new Error(`the child measuring ${backend}'s exits printed no JSON report: ${(e as Error).message}`));
      }
    });
  });
}
