/**
 * Ctrl-C on the real process: `tsvisor run` on a kernel that spins forever stops promptly
 * on SIGINT with status 130, after printing the report and the stats gathered so far.
 * Spawns the built command (dist/bin.js; `npm test` builds it first).
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { spinKernel, writeTemp } from './cli-guests';

const bin = path.join(__dirname, '..', '..', 'packages', 'cli', 'dist', 'bin.js');

it('SIGINT during a run: status 130 within a second or two, with the stats so far', async () => {
  const kernel = writeTemp(spinKernel(), 'spin.elf');
  const child = spawn(process.execPath, [bin, 'run', kernel, '--backend', 'vmx', '-m', '32M', '--stats'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  // Wait until the guest is running (its first line is out), then press Ctrl-C.
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`the guest did not start: ${stderr}`)), 20_000);
    child.stdout.on('data', () => {
      if (stdout.includes('spinning\n')) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  await new Promise((r) => setTimeout(r, 200));
  const sent = Date.now();
  child.kill('SIGINT');
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  expect(Date.now() - sent).toBeLessThan(2000);
  expect(code).toBe(130);
  expect(stderr).toMatch(/^tsvisor: interrupted \(Ctrl-C\) after \d+ instructions\n$/);
  expect(stdout).toContain('--- tsvisor: run interrupted (Ctrl-C) on backend vmx');
  expect(stdout).toMatch(/instructions retired: \d+ in \d+ ms wall: [\d.]+ MIPS\n$/);
}, 30_000);
