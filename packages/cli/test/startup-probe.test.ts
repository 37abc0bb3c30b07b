/**
 * The start-up benchmark's probe (src/bench/startup-probe.ts), preloaded into a real `tsvisor
 * run`: it records the first guest entry, loads nothing of tsvisor's itself (the command loads
 * its modules in its own order), and changes nothing the command prints. Needs `tsc -b` first.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';

const pkgDir = path.join(__dirname, '..');
const launcher = path.join(pkgDir, 'bin', 'tsvisor.js');
const probe = path.join(pkgDir, 'dist', 'bench', 'startup-probe.js');

describe('the start-up probe', () => {
  it('marks the first guest entry between the spawn and the exit, and changes no output', () => {
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'tsvisor-probe-')), 'probe.txt');
    const loadOrder = path.join(path.dirname(file), 'order.js');
    writeFileSync(loadOrder, `process.on('exit', () => require('fs').appendFileSync(${JSON.stringify(file)}, 'modules ' + JSON.stringify(Object.keys(require.cache)) + '\\n'));`);
    const start = performance.timeOrigin + performance.now();
    const probed = spawnSync(process.execPath, [launcher, 'run', '--backend', 'vmx'], {
      encoding: 'utf8',
      env: { ...process.env, TSVISOR_BENCH_STARTUP_FILE: file, NODE_OPTIONS: `--require ${probe} --require ${loadOrder}` },
    });
    const end = performance.timeOrigin + performance.now();
    const plain = spawnSync(process.execPath, [launcher, 'run', '--backend', 'vmx'], { encoding: 'utf8' });
    expect(probed.status).toBe(0);
    expect(probed.stdout).toBe(plain.stdout);
    const text = readFileSync(file, 'utf8');
    const m = /^first-guest-entry ([\d.]+)$/m.exec(text);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(start);
    expect(Number(m![1])).toBeLessThan(end);
    expect(text.match(/first-guest-entry/g)).toHaveLength(1);
    // Core is first loaded by the command (after its launcher), not by the probe.
    const modules = JSON.parse(/^modules (.*)$/m.exec(text)![1]) as string[];
    const launcherAt = modules.findIndex((f) => f.endsWith(path.join('cli', 'bin', 'tsvisor.js')));
    const coreAt = modules.findIndex((f) => f.includes(`${path.sep}core${path.sep}dist${path.sep}`));
    expect(launcherAt).toBeGreaterThanOrEqual(0);
    expect(coreAt).toBeGreaterThan(launcherAt);
  });
});
