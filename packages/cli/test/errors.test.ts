/**
 * User errors end the command with exit status 2 and exactly one line on stderr.
 */
import { chmodSync } from 'node:fs';
import * as path from 'node:path';
import { ExitStatus } from '@tsvisor/cli';
import { FIXTURES, installFakePackage, runCli, tempDir, writeGuest } from './helpers';

const HLT = [0xf4];

function oneLine(stderr: string): string {
  expect(stderr.endsWith('\n')).toBe(true);
  expect(stderr.trimEnd().split('\n')).toHaveLength(1);
  return stderr.trimEnd();
}

describe('tsvisor run: user errors', () => {
  it('unknown backend → status 2, one line naming it and the choices', async () => {
    const cwd = tempDir();
    const r = await runCli(['run', '--backend', 'hyperv'], { cwd });
    expect(r.status).toBe(ExitStatus.USAGE);
    expect(r.stdout).toBe('');
    expect(oneLine(r.stderr)).toBe(`tsvisor: unknown backend 'hyperv': not one of vmx, svm, auto, and no package 'hyperv' can be resolved from ${cwd}`);
  });

  it('missing guest file → status 2, one line', async () => {
    const r = await runCli(['run', '/nonexistent/kernel.bin', '--backend', 'vmx']);
    expect(r.status).toBe(ExitStatus.USAGE);
    expect(oneLine(r.stderr)).toBe("tsvisor: cannot read guest file '/nonexistent/kernel.bin': no such file");
  });

  it('unreadable guest file → status 2, one line', async () => {
    const dir = tempDir();
    const r = await runCli(['run', dir]);
    expect(r.status).toBe(ExitStatus.USAGE);
    expect(oneLine(r.stderr)).toBe(`tsvisor: cannot read guest file '${dir}': it is a directory`);
    if (process.getuid?.() !== 0) {
      const file = writeGuest(HLT);
      chmodSync(file, 0o000);
      const denied = await runCli(['run', file]);
      expect(denied.status).toBe(ExitStatus.USAGE);
      expect(oneLine(denied.stderr)).toContain('permission denied');
    }
  });

  it('empty guest file → status 2', async () => {
    const r = await runCli(['run', writeGuest([])]);
    expect(r.status).toBe(ExitStatus.USAGE);
    expect(oneLine(r.stderr)).toContain('is empty');
  });

  it('unknown option → status 2', async () => {
    const r = await runCli(['run', '--turbo']);
    expect(r.status).toBe(ExitStatus.USAGE);
    expect(oneLine(r.stderr)).toBe("tsvisor: run: unknown option '--turbo' (try: tsvisor run --help)");
  });

  it('unknown command → status 2', async () => {
    const r = await runCli(['start']);
    expect(r.status).toBe(ExitStatus.USAGE);
    oneLine(r.stderr);
  });

  it('a module that is not a backend is refused, naming what is missing', async () => {
    const mod = path.join(FIXTURES, 'not-a-backend.js');
    const r = await runCli(['run', writeGuest(HLT), '--backend', mod]);
    expect(r.status).toBe(ExitStatus.USAGE);
    expect(oneLine(r.stderr)).toBe(
      `tsvisor: backend module '${mod}' (${mod}) is not a tsvisor backend: ` +
        'none of its exports (Emulator, version) is a class decorated with @backend({ name, vendor }) from @tsvisor/core',
    );
  });

  it('a relative path resolves from the current directory', async () => {
    const r = await runCli(['run', writeGuest(HLT), '--backend', './not-a-backend.js'], { cwd: FIXTURES });
    expect(r.status).toBe(ExitStatus.USAGE);
    expect(oneLine(r.stderr)).toContain('is not a tsvisor backend');
    const missing = await runCli(['run', '--backend', './nowhere.js'], { cwd: FIXTURES });
    expect(missing.status).toBe(ExitStatus.USAGE);
    expect(oneLine(missing.stderr)).toBe(`tsvisor: backend path './nowhere.js' does not exist (looked for ${path.join(FIXTURES, 'nowhere.js')})`);
  });

  it('an installed package that is not a backend is refused the same way', async () => {
    const cwd = tempDir();
    installFakePackage(cwd, 'not-a-vmm', {}, 'exports.hello = () => "hi";');
    const r = await runCli(['run', writeGuest(HLT), '--backend', 'not-a-vmm'], { cwd });
    expect(r.status).toBe(ExitStatus.USAGE);
    expect(oneLine(r.stderr)).toMatch(/^tsvisor: backend module 'not-a-vmm' \(.*index\.js\) is not a tsvisor backend: none of its exports \(hello\)/);
  });

  it('a backend that misses required hooks is refused, naming the hooks', async () => {
    const mod = path.join(FIXTURES, 'half-backend.js');
    const r = await runCli(['run', writeGuest(HLT), '--backend', mod]);
    expect(r.status).toBe(ExitStatus.USAGE);
    expect(oneLine(r.stderr)).toBe(`tsvisor: backend 'half' cannot be bound: missing required hooks: getMsr, handleExit (from ${mod})`);
  });

  it('a guest that does not fit in RAM → status 2', async () => {
    const r = await runCli(['run', writeGuest(HLT), '--load-addr', '0x200000', '--mode', 'protected', '-m', '2M', '--backend', 'vmx']);
    expect(r.status).toBe(ExitStatus.USAGE);
    expect(oneLine(r.stderr)).toMatch(/^tsvisor: .*guest\.bin: 1 bytes at 0x200000 .*do not fit in guest RAM/);
  });
});

describe('help and version', () => {
  it('--help lists the commands and exit statuses', async () => {
    const r = await runCli(['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('run [GUEST]');
    expect(r.stdout).toContain('6 --max-instructions/--timeout');
    expect(r.stdout).toContain('130 interrupted (Ctrl-C)');
  });

  it('run --help lists every option', async () => {
    const r = await runCli(['run', '--help']);
    expect(r.status).toBe(0);
    for (const o of ['--backend', '--memory', '--smp', '--append', '--initrd', '--load-addr', '--entry', '--mode', '--serial', '--debugcon', '--clock',
      '--max-instructions', '--timeout', '--trace', '--trace-file', '--stats', '--json', '--dump-control-block']) {
      expect(r.stdout).toContain(o);
    }
  });

  it('--version prints the package version', async () => {
    const r = await runCli(['--version']);
    expect(r).toEqual({ status: 0, stdout: 'tsvisor 0.1.0\n', stderr: '' });
  });
});
