/**
 * An instruction whose bytes cross a page boundary is fetched from both pages and translated
 * alone, uncached (decode.ts `crossing`), so it is decoded again every time it runs. Each of
 * those decodes must release its iced-x86 decoder exactly once: a second free handed the
 * WebAssembly allocator a null pointer and corrupted its heap, and after some tens of thousands
 * of crossings every later decode failed with "memory access out of bounds" — a guest loop
 * turned into a host error.
 */
import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { hex, load, machine, protMode, reg } from './harness';

describe('instructions crossing a page boundary', () => {
  it('run 200,000 times without a host error and with the right result', () => {
    const m = machine();
    protMode(m, 0x1ffa);
    // 0x1ffa: mov ecx, 200000
    // 0x1fff: add eax, 1        (83 c0 01: crosses from page 0x1000 into page 0x2000)
    // 0x2002: loop 0x1fff       (e2 fb)
    // 0x2004: hlt
    load(m, 0x1ffa, hex('b9 40 0d 03 00  83 c0 01  e2 fb  f4'));
    let kind = GuestExitKind.NONE;
    for (let i = 0; i < 100 && kind !== GuestExitKind.HALTED; i++) {
      kind = m.cpu.runGuest(m.rules, 1_000_000);
      expect(m.cpu.hostError).toBeNull();
    }
    expect(kind).toBe(GuestExitKind.HALTED);
    expect(reg(m, 0)).toBe(200000n);
    expect(reg(m, 1)).toBe(0n);
  });
});
