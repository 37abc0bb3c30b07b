/**
 * What `tsvisor run` reports: --trace lines, the --stats table, the --json object, the
 * status line on an interactive terminal, and --dump-control-block with several vCPUs.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { KVM_TRACEPOINT_NAMES } from '@tsvisor/core';
import type { RunJson } from '@tsvisor/cli';
import { helloKernel, smpKernel, spinKernel, tempDir, tsvisor, writeTemp } from './cli-guests';

const hello = writeTemp(helloKernel(7), 'hello.elf');

describe.each(['vmx', 'svm'])('--trace on %s', (backend) => {
  it('prints one line per event on stderr, kvm_exit in the backend vocabulary', async () => {
    const r = await tsvisor(['run', hello, '--backend', backend, '-m', '32M', '--trace', 'kvm_exit,kvm_pio,kvm_entry,kvm_userspace_exit']);
    expect(r.status).toBe(7);
    const lines = r.stderr.trimEnd().split('\n');
    for (const l of lines) expect(l).toMatch(/^vcpu0 \[000\] \d+\.\d{9}: (kvm_exit|kvm_pio|kvm_entry|kvm_userspace_exit): /);
    const exits = lines.filter((l) => l.includes(': kvm_exit: '));
    const io = backend === 'vmx' ? 'IO_INSTRUCTION' : 'io';
    expect(exits.some((l) => l.includes(`reason ${io} `))).toBe(true);
    // A kvm_pio line follows the kvm_exit of the OUT that caused it; each exit has one kvm_exit line.
    const i = lines.findIndex((l) => l.includes('kvm_pio: pio_write at 0x3f8'));
    expect(lines[i - 1]).toContain(`kvm_exit: reason ${io}`);
    const report = new Map(r.stdout.split('\n').map((l) => /^ {2}(\S+)\s+(\d+)$/.exec(l)).filter((m) => m).map((m) => [m![1], Number(m![2])]));
    expect(exits.length).toBe(report.get('total'));
    expect(lines.filter((l) => l.includes(': kvm_entry: ')).length).toBe(exits.length);
  });
});

describe('--trace', () => {
  it('--trace-file takes the lines; kvm_apic shows LAPIC register writes, INIT and SIPI', async () => {
    const file = path.join(tempDir(), 'trace.txt');
    const r = await tsvisor(['run', writeTemp(smpKernel(1, 0)), '--backend', 'svm', '-m', '32M', '--smp', '2', '--trace', 'kvm_apic,kvm_apic_ipi', '--trace-file', file]);
    expect(r.status).toBe(0);
    expect(r.stderr).toBe('');
    const trace = readFileSync(file, 'utf8');
    expect(trace).toMatch(/^vcpu0 \[000\] [\d.]+: kvm_apic: apic_write 0x300 = 0xc4500$/m);
    expect(trace).toMatch(/^vcpu0 \[000\] [\d.]+: kvm_apic_ipi: /m);
    expect(trace).toMatch(/^vcpu1 \[001\] [\d.]+: kvm_apic: INIT$/m);
    expect(trace).toMatch(/^vcpu1 \[001\] [\d.]+: kvm_apic: SIPI vector 0x8$/m);
  });

  it('an unknown tracepoint → status 2, one line listing the valid ones', async () => {
    const r = await tsvisor(['run', hello, '--backend', 'vmx', '--trace', 'kvm_exit,kvm_teleport']);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`tsvisor: --trace: unknown tracepoint kvm_teleport (valid: ${KVM_TRACEPOINT_NAMES.join(', ')})\n`);
    for (const t of ['kvm_exit', 'kvm_entry', 'kvm_pio', 'kvm_mmio', 'kvm_msr', 'kvm_cpuid', 'kvm_inj_virq', 'kvm_page_fault', 'kvm_apic', 'kvm_hypercall']) {
      expect(KVM_TRACEPOINT_NAMES).toContain(t);
    }
  });
});

describe('--stats', () => {
  it('prints a perf-kvm-stat table per vCPU and for all, with shares summing to 100%, and MIPS', async () => {
    const r = await tsvisor(['run', writeTemp(smpKernel(1, 0)), '--backend', 'vmx', '-m', '32M', '--smp', '2', '--stats']);
    expect(r.status).toBe(0);
    const out = r.stdout;
    const at = out.indexOf('--- exit statistics (vmx; time: wall time per KVM_RUN, charged to the exit that ended it)\n');
    expect(at).toBeGreaterThan(0);
    const tables = out.slice(at).split('\n');
    expect(tables).toContainEqual(expect.stringMatching(/^vCPU 0 \(\d+ instructions\):$/));
    expect(tables).toContainEqual(expect.stringMatching(/^vCPU 1 \(\d+ instructions\):$/));
    expect(tables).toContainEqual(expect.stringMatching(/^all vCPUs \(\d+ instructions\):$/));
    expect(tables).toContainEqual(expect.stringMatching(/^ {2}exit reason +count +exits% +time% +time ms$/));
    expect(tables).toContainEqual(expect.stringMatching(/^ {2}IO_INSTRUCTION +\d+ +\d+\.\d\d% +\d+\.\d\d% +\d+\.\d{3}$/));
    expect(tables).toContainEqual(expect.stringMatching(/^ {2}total +\d+ +100\.00% +100\.00% +\d+\.\d{3}$/));
    expect(tables[tables.length - 2]).toMatch(/^instructions retired: \d+ in \d+ ms wall: \d+\.\d\d MIPS$/);
  });
});

describe('--json', () => {
  it('prints one JSON object and nothing else on stdout (COM1 is captured into it)', async () => {
    const r = await tsvisor(['run', hello, '--backend', 'svm', '-m', '32M', '--smp', '2', '--json']);
    expect(r.status).toBe(7);
    expect(r.stderr).toBe('');
    expect(r.stdout.endsWith('}\n')).toBe(true);
    const j = JSON.parse(r.stdout) as RunJson;
    expect(j).toMatchObject({
      status: 7, reason: 'debug-exit', debugExitValue: 7, qemuStatus: 15,
      backend: { name: 'svm', vendor: 'amd', package: '@tsvisor/svm', source: 'built-in' },
      fsBase: '0x0000000000000000',
    });
    expect(j.serial.startsWith('hello from multiboot\n')).toBe(true);
    expect(j.instructions).toBe(j.vcpus[0].instructions + j.vcpus[1].instructions);
    expect(j.vcpus.map((v) => v.id)).toEqual([0, 1]);
    expect(j.vcpus[1].mpState).toBe('INIT_RECEIVED');
    const io = j.exits.rows.find((x) => x.reason === 'io')!;
    expect(io.count).toBeGreaterThan(10);
    expect(j.exits.exits).toBe(j.exits.rows.reduce((s, x) => s + x.count, 0));
    expect(j.exits.rows.reduce((s, x) => s + x.timePct, 0)).toBeCloseTo(100, 5);
    expect(j.vcpus[0].userspaceExits.KVM_EXIT_IO).toBeGreaterThan(10);
    expect(typeof j.mips).toBe('number');
  });

  it('with --serial stdio the guest output comes first and the JSON object is the last line', async () => {
    const r = await tsvisor(['run', hello, '--backend', 'vmx', '-m', '32M', '--json', '--serial', 'stdio']);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('hello from multiboot');
    expect(JSON.parse(lines[lines.length - 1]).status).toBe(7);
  });

  it('a run that did not end well carries its message and status', async () => {
    const r = await tsvisor(['run', writeTemp(spinKernel()), '--backend', 'vmx', '-m', '32M', '--json', '--max-instructions', '5000']);
    expect(r.status).toBe(6);
    const j = JSON.parse(r.stdout) as RunJson;
    expect(j).toMatchObject({ status: 6, reason: 'max-instructions', instructions: 5000 });
    expect(j.message).toContain('--max-instructions 5000');
  });
});

describe('the status line', () => {
  it('is drawn on an interactive stderr during a long run, redrawn with \\r, and erased before the report', async () => {
    let stderr = '';
    const r = await tsvisor(['run', writeTemp(spinKernel()), '--backend', 'vmx', '-m', '32M', '--timeout', '1.6'], {
      stderr: { write: (c) => (stderr += String(c)), isTTY: true },
    });
    expect(r.status).toBe(6);
    const draws = stderr.split('\r').filter((s) => s.startsWith('tsvisor: ') && s.includes(' MIPS'));
    expect(draws.length).toBeGreaterThanOrEqual(1);
    expect(draws.length).toBeLessThanOrEqual(4);
    expect(draws[0]).toMatch(/^tsvisor: [\d,]+ instructions, \d+\.\d MIPS, [\d,]+ exits\/s, \d+\.\d s\x1b\[K$/);
    expect(stderr).toContain('\r\x1b[K');
    expect(stderr.endsWith('(--timeout) and ' + stderr.split('(--timeout) and ')[1])).toBe(true);
  });

  it('is not drawn when stderr is not a terminal', async () => {
    const r = await tsvisor(['run', writeTemp(spinKernel()), '--backend', 'vmx', '-m', '32M', '--timeout', '1.2']);
    expect(r.stderr).not.toContain('\r');
  });
});

describe('--dump-control-block', () => {
  it('prints one control block per vCPU', async () => {
    const r = await tsvisor(['run', writeTemp(smpKernel(1, 0)), '--backend', 'vmx', '-m', '32M', '--smp', '2', '--dump-control-block']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('--- vmx control block (vCPU 0)\n');
    expect(r.stdout).toContain('--- vmx control block (vCPU 1)\n');
  });
});
