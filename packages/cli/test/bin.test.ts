/**
 * The built command, spawned as a user runs it: `tsvisor` through the committed launcher
 * (what npm links into node_modules/.bin) and dist/bin.js. Needs `tsc -b` first (npm test does it).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { DEMO_BANNER_PREFIX, DEMO_FS_BASE } from '@tsvisor/testkit';

const pkgDir = path.join(__dirname, '..');
const launcher = path.join(pkgDir, 'bin', 'tsvisor.js');
const built = path.join(pkgDir, 'dist', 'bin.js');
const repoRoot = path.join(pkgDir, '..', '..');

describe('the tsvisor executable', () => {
  it('package.json bin points at the committed, executable launcher', () => {
    const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { bin: Record<string, string>; files: string[] };
    expect(pkg.bin).toEqual({ tsvisor: 'bin/tsvisor.js' });
    expect(pkg.files).toContain('bin');
    expect(readFileSync(launcher, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    expect(statSync(launcher).mode & 0o111).toBe(0o111);
  });

  it('dist/bin.js is built with its shebang', () => {
    expect(existsSync(built)).toBe(true);
    expect(readFileSync(built, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  });

  it('npm linked it: node_modules/.bin/tsvisor', () => {
    const link = path.join(repoRoot, 'node_modules', '.bin', 'tsvisor');
    expect(existsSync(link)).toBe(true);
    expect(realpathSync(link)).toBe(realpathSync(launcher));
  });

  it('bad input: status 2 and one line on stderr', () => {
    const r = spawnSync(launcher, ['run', '--backend', 'nonesuch'], { encoding: 'utf8', cwd: repoRoot });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^tsvisor: unknown backend 'nonesuch'[^\n]*\n$/);
  });

  it('runs the demo on svm: banner, FS base, status 0', () => {
    const r = spawnSync(process.execPath, [built, 'run', '--backend', 'svm'], { encoding: 'utf8', cwd: repoRoot });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.startsWith(`${DEMO_BANNER_PREFIX}AuthenticAMD\n`)).toBe(true);
    expect(r.stdout).toContain(`: 0x${DEMO_FS_BASE.toString(16).padStart(16, '0')}\n`);
  });
});
