/**
 * Resource bounds (issue #9): a guest that spins, floods exits, rewrites its own code page or
 * floods the serial port is stopped by the instruction limit or the timeout, and captured
 * output stays bounded.
 */
import { BackendClass, Machine, MachineExitStatus } from '@tsvisor/core';
import { VmxBackend } from '@tsvisor/vmx';
import { SvmBackend } from '@tsvisor/svm';

const LOAD = 0x10000;
// 16-bit real-mode snippets (flat binaries at 0x1000:0000 → linear 0x10000).
const SERIAL_FLOOD = [0xba, 0xf8, 0x03, 0xb0, 0x41, 0xee, 0xeb, 0xfd]; // mov dx,0x3f8; mov al,'A'; l: out dx,al; jmp l
const EXIT_FLOOD = [0xe6, 0x80, 0xeb, 0xfc]; // l: out 0x80,al; jmp l
const SMC_LOOP = [0xc6, 0x06, 0x08, 0x00, 0x90, 0xeb, 0xf9, 0x90, 0x90]; // l: mov byte [8],0x90; jmp l (own code page)
const SPIN = [0xeb, 0xfe]; // jmp $

function run(backend: BackendClass, code: number[], opts: { maxInstructions?: number; timeoutMs?: number; captureLimit?: number }) {
  const m = Machine.create({
    backend, memory: 16 << 20, kernel: { name: 'bound.bin', data: Uint8Array.from(code) }, format: 'flat',
    loadAddr: LOAD, entry: LOAD, mode: 'real', serial: null, ...opts,
  });
  try {
    const t0 = Date.now();
    const r = m.runSync();
    return { r, ms: Date.now() - t0 };
  } finally {
    m.destroy();
  }
}

describe.each([['vmx', VmxBackend], ['svm', SvmBackend]])('%s', (_n, B) => {
  const backend = B as unknown as BackendClass;
  it('a serial flood stops at the instruction limit with bounded captured output', () => {
    const { r } = run(backend, SERIAL_FLOOD, { maxInstructions: 200_000, captureLimit: 4096 });
    expect(r.status).toBe(MachineExitStatus.TIMEOUT);
    // The first 4 KiB, then one line saying how much was dropped.
    expect(r.serialOutput.length).toBeLessThanOrEqual(4096 + 64);
    expect(r.serialOutput).toMatch(/\[tsvisor: \d+ more bytes not captured\]$/);
    expect(r.serialOutput.startsWith('AAAA')).toBe(true);
  });
  it('an exit flood and a self-modifying loop stop at the instruction limit', () => {
    for (const code of [EXIT_FLOOD, SMC_LOOP]) {
      const { r } = run(backend, code, { maxInstructions: 100_000 });
      expect(r.status).toBe(MachineExitStatus.TIMEOUT);
      expect(r.instructions).toBeGreaterThanOrEqual(100_000);
    }
  });
  it('a spinning guest stops at the timeout', () => {
    const { r, ms } = run(backend, SPIN, { timeoutMs: 300 });
    expect(r.status).toBe(MachineExitStatus.TIMEOUT);
    expect(ms).toBeLessThan(5000);
  });
});
