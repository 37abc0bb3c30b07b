/**
 * `tsvisor run` end to end, in-process through main(), on Multiboot kernels built with the
 * testkit: COM1 output, the exit status from isa-debug-exit, --append and --initrd through
 * the Multiboot information structure, --smp with APs started by INIT/SIPI, reproducibility,
 * --serial/--debugcon targets, and the limits (--max-instructions, --timeout, Ctrl-C).
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ExitStatus } from '@tsvisor/cli';
import { haltKernel, helloKernel, smpKernel, spinKernel, tempDir, tsvisor, writeTemp } from './cli-guests';

const BACKENDS = ['vmx', 'svm'] as const;

/** The report's exits table as a map (reason → count). */
function exitRows(stdout: string): Map<string, number> {
  const lines = stdout.split('\n');
  const start = lines.findIndex((l) => l.startsWith('exits by reason'));
  const rows = new Map<string, number>();
  for (const l of lines.slice(start + 2)) {
    const m = /^ {2}(\S+)\s+(\d+)$/.exec(l);
    if (!m) break;
    rows.set(m[1], Number(m[2]));
  }
  return rows;
}

/** The guest's serial output: stdout up to the report. */
function serialOf(stdout: string): string {
  return stdout.slice(0, stdout.indexOf('--- tsvisor: '));
}

describe.each(BACKENDS)('tsvisor run on %s: a Multiboot kernel', (backend) => {
  const hello = writeTemp(helloKernel(0x2a), 'hello.elf');

  it('prints over COM1 and exits with the value it wrote to 0xF4, the same on two runs', async () => {
    const a = await tsvisor(['run', hello, '--backend', backend, '-m', '32M']);
    expect(a.stderr).toBe('');
    expect(a.status).toBe(0x2a);
    expect(serialOf(a.stdout)).toBe(`hello from multiboot\ncmdline: ${hello}\n`);
    expect(a.stdout).toContain(`--- tsvisor: guest wrote 0x2a to isa-debug-exit (exit status 42; QEMU's would be 85) on backend ${backend}`);
    const b = await tsvisor(['run', hello, '--backend', backend, '-m', '32M']);
    expect(b.status).toBe(0x2a);
    expect(serialOf(b.stdout)).toBe(serialOf(a.stdout));
    expect(exitRows(b.stdout)).toEqual(exitRows(a.stdout));
    expect(exitRows(a.stdout).get('total')).toBeGreaterThan(10);
  });

  it('--append reaches the Multiboot command line and --initrd files become modules', async () => {
    const one = writeTemp('first module\n', 'one.txt');
    const two = writeTemp('second\n', 'two.txt');
    const r = await tsvisor(['run', hello, '--backend', backend, '-m', '32M', '--append', 'console=ttyS0 quiet', '--initrd', one, '--initrd', two]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0x2a);
    expect(serialOf(r.stdout)).toBe(
      `hello from multiboot\ncmdline: ${hello} console=ttyS0 quiet\nmodule ${one}: first module\nmodule ${two}: second\n`,
    );
  });

  it('--smp 3: the BSP starts two APs with INIT/SIPI and each prints from its own CPU', async () => {
    const smp = writeTemp(smpKernel(2, 0x11), 'smp.elf');
    const r = await tsvisor(['run', smp, '--backend', backend, '-m', '32M', '--smp', '3']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0x11);
    const lines = serialOf(r.stdout).trimEnd().split('\n');
    expect(lines[0]).toBe('BSP: starting 2 APs');
    expect(lines.slice(1, 3).sort()).toEqual(['AP 1 up', 'AP 2 up']);
    expect(lines[3]).toBe('BSP: 2 APs up');
    expect(r.stdout).toMatch(/instructions retired: \d+ \(vCPU 0: \d+, vCPU 1: \d+, vCPU 2: \d+\)/);
    // Reproducible under the virtual clock, with several vCPUs too.
    const again = await tsvisor(['run', smp, '--backend', backend, '-m', '32M', '--smp', '3']);
    expect(again.stdout.replace(/ in \d+ ms/, '')).toBe(r.stdout.replace(/ in \d+ ms/, ''));
  });

  it('a kernel that halts for good ends with status 0', async () => {
    const r = await tsvisor(['run', writeTemp(haltKernel()), '--backend', backend, '-m', '32M']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(ExitStatus.OK);
    expect(r.stdout).toContain('--- tsvisor: guest halted');
  });

  it('--max-instructions stops a spinning kernel with status 6 and one line on stderr', async () => {
    const r = await tsvisor(['run', writeTemp(spinKernel()), '--backend', backend, '-m', '32M', '--max-instructions', '20000']);
    expect(r.status).toBe(ExitStatus.TIMEOUT);
    expect(r.stderr).toBe('tsvisor: stopped after 20000 instructions (--max-instructions 20000) before the guest finished\n');
    expect(r.stdout).toContain('instructions retired: 20000\n');
  });
});

describe('tsvisor run: limits and interruption', () => {
  it('--timeout stops a spinning kernel with status 6', async () => {
    const t0 = Date.now();
    const r = await tsvisor(['run', writeTemp(spinKernel()), '--backend', 'vmx', '-m', '32M', '--timeout', '0.3']);
    expect(r.status).toBe(ExitStatus.TIMEOUT);
    expect(r.stderr).toMatch(/^tsvisor: stopped after 0\.3 s \(--timeout\) and \d+ instructions before the guest finished\n$/);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('Ctrl-C stops the run promptly: status 130, the report and the stats gathered so far', async () => {
    let fire: (() => void) | null = null;
    const started = Date.now();
    const r = await tsvisor(['run', writeTemp(spinKernel()), '--backend', 'svm', '-m', '32M', '--stats'], {
      onInterrupt: (handler) => {
        fire = handler;
        const t = setTimeout(() => fire?.(), 200);
        return () => {
          clearTimeout(t);
          fire = null;
        };
      },
    });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(r.status).toBe(ExitStatus.INTERRUPTED);
    expect(r.stderr).toMatch(/^tsvisor: interrupted \(Ctrl-C\) after \d+ instructions\n$/);
    expect(r.stdout).toContain('--- tsvisor: run interrupted (Ctrl-C) on backend svm');
    expect(r.stdout).toContain('--- exit statistics (svm;');
    expect(fire).toBeNull(); // the handler is removed after the run
  });
});

describe('tsvisor run: where the streams go', () => {
  it('--serial FILE and --debugcon FILE; stdout then has only the report', async () => {
    const dir = tempDir();
    const serial = path.join(dir, 'com1.txt');
    const r = await tsvisor(['run', writeTemp(helloKernel(0)), '--backend', 'svm', '-m', '32M', '--serial', serial, '--debugcon', 'none']);
    expect(r.status).toBe(0);
    expect(r.stdout.startsWith('--- tsvisor: guest wrote 0x0 to isa-debug-exit')).toBe(true);
    expect(readFileSync(serial, 'latin1')).toMatch(/^hello from multiboot\ncmdline: /);
    const none = await tsvisor(['run', writeTemp(helloKernel(0)), '--backend', 'svm', '-m', '32M', '--serial', 'none']);
    expect(none.stdout.startsWith('--- tsvisor: ')).toBe(true);
  });

  it('--debugcon stdio shows port 0xE9 output (nowhere by default)', async () => {
    // mov al, 'D'; out 0xe9, al; mov al, '\n'; out 0xe9, al; cli; hlt
    const flat = writeTemp(Uint8Array.from([0xb0, 0x44, 0xe6, 0xe9, 0xb0, 0x0a, 0xe6, 0xe9, 0xfa, 0xf4]), 'e9.bin');
    const quiet = await tsvisor(['run', flat, '--backend', 'vmx', '-m', '32M']);
    expect(quiet.status).toBe(0);
    expect(quiet.stdout.startsWith('--- tsvisor: guest halted')).toBe(true);
    const shown = await tsvisor(['run', flat, '--backend', 'vmx', '-m', '32M', '--debugcon', 'stdio']);
    expect(shown.stdout.startsWith('D\n--- tsvisor: guest halted')).toBe(true);
  });
});
