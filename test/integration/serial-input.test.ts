/**
 * COM1 receive (issue #6): bytes queued for the UART's receiver reach a guest that polls LSR.DR
 * and reads RBR; the guest echoes them and exits through 0xF4. Runs under both clocks.
 */
import { BackendClass, Machine } from '@tsvisor/core';
import { SvmBackend } from '@tsvisor/svm';
import { VmxBackend } from '@tsvisor/vmx';

// Real mode at 0x1000:0000: l: mov dx,0x3fd; in al,dx; test al,1; jz l; mov dx,0x3f8; in al,dx;
// out dx,al; cmp al,10; jne l; mov al,0x2a; out 0xf4,al
const ECHO = [
  0xba, 0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0xf8, // l: mov dx,0x3fd; in al,dx; test al,1; jz l
  0xba, 0xf8, 0x03, 0xec, 0xee, // mov dx,0x3f8; in al,dx; out dx,al
  0x3c, 0x0a, 0x75, 0xef, // cmp al,10; jne l
  0xb0, 0x2a, 0xe6, 0xf4, // mov al,42; out 0xf4,al
  0xeb, 0xfe,
];

describe.each([['vmx', VmxBackend], ['svm', SvmBackend]])('%s', (_n, B) => {
  it.each(['virtual', 'host'] as const)('echoes serial input with the %s clock', (clock) => {
    const m = Machine.create({
      backend: B as unknown as BackendClass, memory: 8 << 20, kernel: { name: 'echo.bin', data: Uint8Array.from(ECHO) },
      format: 'flat', loadAddr: 0x10000, entry: 0x10000, mode: 'real', clock, serial: null,
      serialInput: new TextEncoder().encode('hello, guest\n'), timeoutMs: 10_000,
    });
    try {
      const r = m.runSync();
      expect(r.serialOutput).toBe('hello, guest\n');
      expect(r.debugExitValue).toBe(42);
      expect(r.status).toBe(42);
    } finally {
      m.destroy();
    }
  });
});
