/**
 * End to end, in-process: `tsvisor run` on each built-in backend, through main().
 * These need the processor and both backends.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { DEMO_BANNER_PREFIX, DEMO_FS_BASE } from '@tsvisor/testkit';
import { ExitStatus } from '@tsvisor/cli';
import { AMD_CPUINFO, INTEL_CPUINFO, runCli, tempDir, writeGuest } from './helpers';

const fsBaseHex = `0x${DEMO_FS_BASE.toString(16).padStart(16, '0')}`;

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

describe.each([
  ['vmx', 'GenuineIntel'],
  ['svm', 'AuthenticAMD'],
])('tsvisor run --backend %s (the demo guest)', (name, vendor) => {
  let r: Awaited<ReturnType<typeof runCli>>;
  beforeAll(async () => {
    r = await runCli(['run', '-m', '32M', '--backend', name]);
  });

  it('exits 0 with nothing on stderr', () => {
    expect(r.stderr).toBe('');
    expect(r.status).toBe(ExitStatus.OK);
  });

  it(`prints the banner with ${vendor} first`, () => {
    expect(r.stdout.startsWith(`${DEMO_BANNER_PREFIX}${vendor}\n`)).toBe(true);
  });

  it('prints the FS base read back through the backend getMsr, equal to DEMO_FS_BASE', () => {
    expect(r.stdout).toContain(`FS base (MSR 0xc0000100, read with ${name} getMsr): ${fsBaseHex}\n`);
  });

  it('says how the run ended and prints the exits table in the backend vocabulary with a total', () => {
    expect(r.stdout).toContain(`--- tsvisor: guest halted (every vCPU in HLT with nothing to wake it) on backend ${name}`);
    expect(r.stdout).toContain(`exits by reason (${name}):`);
    const rows = exitRows(r.stdout);
    const total = rows.get('total');
    rows.delete('total');
    expect(rows.size).toBeGreaterThan(0);
    expect([...rows.values()].reduce((a, b) => a + b, 0)).toBe(total);
  });
});

describe('tsvisor run: backend choice and reports', () => {
  it('the two backends name their exits differently', async () => {
    const vmx = exitRows((await runCli(['run', '-m', '32M', '--backend', 'vmx'])).stdout);
    const svm = exitRows((await runCli(['run', '-m', '32M', '--backend', 'svm'])).stdout);
    vmx.delete('total');
    svm.delete('total');
    expect([...vmx.keys()].sort()).not.toEqual([...svm.keys()].sort());
  });

  it('auto picks svm on an AMD host and vmx on an Intel host', async () => {
    const amd = await runCli(['run', '-m', '32M'], { readCpuinfo: () => AMD_CPUINFO });
    expect(amd.status).toBe(0);
    expect(amd.stdout).toContain(`${DEMO_BANNER_PREFIX}AuthenticAMD`);
    expect(amd.stdout).toContain('auto: host vendor_id AuthenticAMD');
    const intel = await runCli(['run', '-m', '32M', '--backend', 'auto'], { readCpuinfo: () => INTEL_CPUINFO });
    expect(intel.stdout).toContain(`${DEMO_BANNER_PREFIX}GenuineIntel`);
  });

  it('a backend named by package or by path runs like a built-in', async () => {
    const repo = path.join(__dirname, '..', '..', '..');
    const byPackage = await runCli(['run', '-m', '32M', '--backend', '@tsvisor/svm'], { cwd: repo });
    expect(byPackage.status).toBe(0);
    expect(byPackage.stdout).toContain(`${DEMO_BANNER_PREFIX}AuthenticAMD`);
    const byPath = await runCli(['run', '-m', '32M', '--backend', './packages/vmx'], { cwd: repo });
    expect(byPath.status).toBe(0);
    expect(byPath.stdout).toContain(`${DEMO_BANNER_PREFIX}GenuineIntel`);
  });

  it.each([
    ['vmx', 'VMCS'],
    ['svm', 'VMCB'],
  ])('--dump-control-block on %s prints its %s after the report', async (name, block) => {
    const r = await runCli(['run', '-m', '32M', '--backend', name, '--dump-control-block']);
    expect(r.status).toBe(0);
    const at = r.stdout.indexOf(`--- ${name} control block\n`);
    expect(at).toBeGreaterThan(r.stdout.indexOf('exits by reason'));
    expect(r.stdout.slice(at)).toContain(block);
  });

  it('--dump-control-block on a backend module without dumpControlBlock says so on stderr', async () => {
    const dir = tempDir();
    const mod = path.join(dir, 'wrapped-vmx.js');
    // Re-export only the backend class: same backend, no dumpControlBlock.
    writeFileSync(mod, `exports.VmxBackend = require(${JSON.stringify(require.resolve('@tsvisor/vmx'))}).VmxBackend;\n`);
    const r = await runCli(['run', '-m', '32M', '--backend', mod, '--dump-control-block']);
    expect(r.status).toBe(0);
    expect(r.stderr).toBe('tsvisor: backend vmx has no control-block dump (its module exports no dumpControlBlock)\n');
  });
});

describe('tsvisor run GUEST (flat binaries)', () => {
  // mov dx, 0x3f8; mov al, 'R'; out dx, al; mov al, '\n'; out dx, al; hlt
  const REAL = [0xba, 0xf8, 0x03, 0xb0, 0x52, 0xee, 0xb0, 0x0a, 0xee, 0xf4];
  // mov edx, 0x3f8; mov al, 'P'|'L'; out dx, al; mov al, '\n'; out dx, al; hlt
  const wide = (ch: string) => [0xba, 0xf8, 0x03, 0x00, 0x00, 0xb0, ch.charCodeAt(0), 0xee, 0xb0, 0x0a, 0xee, 0xf4];

  it.each(['vmx', 'svm'])('real mode at 0x7c00 on %s', async (backend) => {
    const r = await runCli(['run', '-m', '32M', writeGuest(REAL), '--backend', backend]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.startsWith('R\n--- tsvisor: guest halted')).toBe(true);
  });

  it.each(['vmx', 'svm'])('protected and long mode at 1 MiB on %s', async (backend) => {
    const p = await runCli(['run', '-m', '32M', writeGuest(wide('P')), '--backend', backend, '--mode', 'protected', '--load-addr', '0x100000']);
    expect(p.stderr).toBe('');
    expect(p.stdout.startsWith('P\n')).toBe(true);
    const l = await runCli(['run', '-m', '32M', writeGuest(wide('L')), '--backend', backend, '--mode', 'long', '--load-addr', '0x100000']);
    expect(l.stderr).toBe('');
    expect(l.stdout.startsWith('L\n')).toBe(true);
  });

  it('an entry point past the start of the image', async () => {
    const r = await runCli(['run', '-m', '32M', writeGuest([0x0f, 0x0b, ...REAL]), '--backend', 'vmx', '--entry', '0x7c02']);
    expect(r.status).toBe(0);
    expect(r.stdout.startsWith('R\n')).toBe(true);
  });

  it.each(['vmx', 'svm'])('a triple fault → status 3 with one line on stderr on %s', async (backend) => {
    // ud2 in protected mode with an empty IDT: #UD → #GP → #DF → shutdown
    const r = await runCli(['run', '-m', '32M', writeGuest([0x0f, 0x0b]), '--backend', backend, '--mode', 'protected', '--load-addr', '0x100000']);
    expect(r.status).toBe(ExitStatus.TRIPLE_FAULT);
    expect(r.stderr).toMatch(/^tsvisor: vCPU 0: triple fault \(KVM_EXIT_SHUTDOWN\) at RIP 0x[0-9a-f]+\n$/);
    expect(r.stdout).toContain(`exits by reason (${backend}):`);
  });

  it.each(['vmx', 'svm'])('--max-instructions on a guest that never halts → status 6 on %s', async (backend) => {
    const r = await runCli(['run', '-m', '32M', writeGuest([0xeb, 0xfe]), '--backend', backend, '--max-instructions', '1000']);
    expect(r.status).toBe(ExitStatus.TIMEOUT);
    expect(r.stderr).toBe('tsvisor: stopped after 1000 instructions (--max-instructions 1000) before the guest finished\n');
    expect(r.stdout).toContain('instructions retired: 1000\n');
  });

  it('--timeout on a guest that never halts → status 6', async () => {
    const r = await runCli(['run', '-m', '32M', writeGuest([0xeb, 0xfe]), '--backend', 'vmx', '--timeout', '0.2']);
    expect(r.status).toBe(ExitStatus.TIMEOUT);
    expect(r.stderr).toContain('(--timeout)');
  });
});
