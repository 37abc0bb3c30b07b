/**
 * Start-up: wall time from spawning `node packages/cli/bin/tsvisor.js run --backend B` (the
 * built-in demo guest) to the guest's first instruction (reported by startup-probe.js, which
 * the child preloads) and to the process's exit after the demo guest halts. Also `node -e 0`,
 * Node's own start-up on this machine, for scale.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Stat, stat } from './stats';
import { BenchBackend } from './vm';

export interface StartupResult {
  backend: BenchBackend;
  command: string;
  firstGuestInstructionMs: Stat;
  guestEndMs: Stat;
  /** `node -e 0` on this machine (ms, median) — the floor under both figures. */
  nodeStartupMs: number;
}

/** packages/cli (this file is packages/cli/dist/bench/startup.js or src/bench/startup.ts). */
export const CLI_DIR = path.resolve(__dirname, '..', '..');
export const CLI_LAUNCHER = path.join(CLI_DIR, 'bin', 'tsvisor.js');
const PROBE = path.join(CLI_DIR, 'dist', 'bench', 'startup-probe.js');

export function startupAvailable(): string | null {
  if (!existsSync(path.join(CLI_DIR, 'dist', 'bin.js'))) return `${path.join(CLI_DIR, 'dist', 'bin.js')} is missing (build first)`;
  if (!existsSync(PROBE)) return `${PROBE} is missing (build first)`;
  return null;
}

const epochMs = () => performance.timeOrigin + performance.now();

function spawnTimed(args: string[], env: NodeJS.ProcessEnv): Promise<{ startMs: number; endMs: number; code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const startMs = epochMs();
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ startMs, endMs: epochMs(), code, stderr }));
  });
}

export async function benchStartup(backend: BenchBackend, repeat: number): Promise<StartupResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tsvisor-bench-'));
  try {
    const nodeRuns: number[] = [];
    for (let i = 0; i < repeat; i++) {
      const r = await spawnTimed(['-e', '0'], process.env);
      nodeRuns.push(r.endMs - r.startMs);
    }
    const first: number[] = [];
    const end: number[] = [];
    const args = [CLI_LAUNCHER, 'run', '--backend', backend];
    for (let i = -1; i < repeat; i++) {
      const file = path.join(dir, `probe-${i + 1}.txt`);
      const env = {
        ...process.env,
        TSVISOR_BENCH_STARTUP_FILE: file,
        NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${JSON.stringify(PROBE).slice(1, -1)}`.trim(),
      };
      const r = await spawnTimed(args, env);
      if (r.code !== 0) throw new Error(`startup: '${args.join(' ')}' exited with ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
      const m = existsSync(file) ? /first-guest-entry ([\d.]+)/.exec(readFileSync(file, 'utf8')) : null;
      if (!m) throw new Error('startup: the probe did not record the first guest entry');
      if (i < 0) continue; // warm-up: file-system caches
      first.push(Number(m[1]) - r.startMs);
      end.push(r.endMs - r.startMs);
    }
    return {
      backend,
      command: `node packages/cli/bin/tsvisor.js ${args.slice(1).join(' ')}`,
      firstGuestInstructionMs: stat(first),
      guestEndMs: stat(end),
      nodeStartupMs: stat(nodeRuns).median,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
