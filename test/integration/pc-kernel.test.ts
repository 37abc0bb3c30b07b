/**
 * Issue 6, "Done when": one Multiboot kernel built with the testkit (pc-kernel-guest.ts) that
 * sets up long mode itself, discovers the ACPI tables, reads the PM timer and the TSC, takes
 * LAPIC-timer interrupts, IOAPIC-routed device interrupts (RTC periodic, edge; pc-testdev ISA
 * line, level with remote IRR) and IPIs with a vCPU it starts by INIT/SIPI, prints over COM1
 * and exits through isa-debug-exit, booted by the Machine on both backends: the exact serial
 * output, the same on VMX and SVM, the exit status, and identical output and exit counts on
 * two runs of the same guest.
 */
import { BackendClass, Machine } from '@tsvisor/core';
import { VmxBackend } from '@tsvisor/vmx';
import { SvmBackend } from '@tsvisor/svm';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { expectedSerial, pcKernel } from './pc-kernel-guest';
import { tempDir, tsvisor, writeTemp } from './cli-guests';

const BACKENDS: [string, BackendClass][] = [['vmx', VmxBackend], ['svm', SvmBackend]];
const EXIT_VALUE = 0x5a;

function run(backend: BackendClass, smp: number) {
  const k = pcKernel({ smp, exitValue: EXIT_VALUE });
  const m = Machine.create({ backend, kernel: { name: 'pc-kernel', data: k.image }, memory: 64 << 20, smp, maxInstructions: 50_000_000 });
  try {
    const r = m.runSync();
    return {
      serial: r.serialOutput,
      status: r.status,
      reason: r.reason,
      message: r.message,
      instructions: r.instructions,
      exits: r.vcpus.map((v) => v.exits),
      wallMs: r.wallMs,
    };
  } finally {
    m.destroy();
  }
}

describe.each([1, 2])('PC kernel with %d vCPU(s)', (smp) => {
  const results: Record<string, ReturnType<typeof run>> = {};

  it.each(BACKENDS)('runs on %s: exact serial output, exit through 0xF4, reproducible', (name, backend) => {
    const a = run(backend, smp);
    expect(a.serial).toBe(expectedSerial({ smp, exitValue: EXIT_VALUE }));
    expect(a.reason).toBe('debug-exit');
    expect(a.status).toBe(EXIT_VALUE);
    expect(a.exits).toHaveLength(smp);
    const b = run(backend, smp);
    expect(b.serial).toBe(a.serial);
    expect(b.exits).toEqual(a.exits);
    expect(b.instructions).toBe(a.instructions);
    results[name] = a;
  });

  it('prints the same on both backends', () => {
    expect(results.vmx?.serial).toBeDefined();
    expect(results.svm?.serial).toBe(results.vmx.serial);
  });
});

describe('PC kernel through the CLI (tsvisor run, in-process)', () => {
  interface Row { reason: string; count: number }
  const counts = (json: { vcpus: { exits: { rows: Row[] } }[] }) =>
    json.vcpus.map((v) => Object.fromEntries(v.exits.rows.filter((r) => r.count > 0).map((r) => [r.reason, r.count])));

  it.each(['vmx', 'svm'])('--backend %s --smp 2: status = the value written to 0xF4, exact serial, same exit counts twice', async (backend) => {
    const kernel = writeTemp(pcKernel({ smp: 2, exitValue: EXIT_VALUE }).image, 'pc-kernel.bin');
    const once = async () => {
      const serial = path.join(tempDir(), 'serial.txt');
      const r = await tsvisor(['run', kernel, '--backend', backend, '-m', '64M', '--smp', '2', '--serial', serial, '--json']);
      expect(r.stderr).toBe('');
      return { status: r.status, serial: readFileSync(serial, 'latin1'), json: JSON.parse(r.stdout) };
    };
    const a = await once();
    expect(a.status).toBe(EXIT_VALUE);
    expect(a.json.reason).toBe('debug-exit');
    expect(a.serial).toBe(expectedSerial({ smp: 2, exitValue: EXIT_VALUE }));
    const b = await once();
    expect(b.serial).toBe(a.serial);
    expect(counts(b.json)).toEqual(counts(a.json));
    expect(b.json.instructions).toBe(a.json.instructions);
  });
});
