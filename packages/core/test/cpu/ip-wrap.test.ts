/**
 * 16-bit code: sequential execution past IP 0xFFFF continues at IP 0 of the same code segment
 * (the instruction pointer is 16 bits wide), an instruction whose bytes pass the CS limit
 * faults, and a branch target beyond the CS limit raises #GP(0) (SDM Vol. 3A 6.3, JMP).
 */
import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { hex, load, machine, Machine, realMode, reg } from './harness';

function mach(tier: 'interpreter' | 'jit'): Machine {
  return machine('intel', 4, tier);
}

/** Real mode with CS = `sel` (base sel << 4, limit 0xFFFF) at IP `ip`. */
function realCs(m: Machine, sel: number, ip: number): void {
  realMode(m, ip);
  const s = m.cpu.state;
  s.segSel[1] = sel; s.segBaseLo[1] = sel << 4;
}

describe.each(['interpreter', 'jit'] as const)('16-bit IP wrap (%s)', (tier) => {
  it('sequential execution past IP 0xFFFF continues at IP 0 of the segment, also in the middle of a page', () => {
    const m = mach(tier);
    // CS base 0x10080 (not page aligned): IP 0xFFFC is linear 0x2007C, IP 0 is linear 0x10080.
    realCs(m, 0x1008, 0xfffc);
    load(m, 0x2007c, hex('40 40 90 90')); // inc ax; inc ax; nop; nop (ends at IP 0x10000)
    load(m, 0x20080, hex('41 f4')); // linear continuation (wrong): inc cx; hlt
    load(m, 0x10080, hex('43 f4')); // IP 0: inc bx; hlt
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.hostError).toBeNull();
    expect(reg(m, 0)).toBe(2n);
    expect(reg(m, 3)).toBe(1n);
    expect(reg(m, 1)).toBe(0n);
    expect(m.cpu.state.rip).toBe(2n);
    expect(m.cpu.state.instructionsRetired).toBe(6);
  });

  it('an operand-size-prefixed instruction ending at 0x10000 wraps IP too', () => {
    const m = mach(tier);
    realCs(m, 0x1008, 0xfffa);
    load(m, 0x2007a, hex('66 b8 78 56 34 12')); // mov eax,0x12345678 (IP 0xFFFA..0xFFFF)
    load(m, 0x10080, hex('43 f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 0)).toBe(0x12345678n);
    expect(reg(m, 3)).toBe(1n);
    expect(m.cpu.state.rip).toBe(2n);
  });

  it('an instruction whose bytes pass the CS limit (straddling 0xFFFF) raises #GP(0)', () => {
    const m = mach(tier);
    realCs(m, 0x1008, 0xfffe);
    load(m, 0x2007e, hex('b8 34 12')); // mov ax,0x1234: 3 bytes from IP 0xFFFE
    m.rules.excExit.add(13);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(13);
    expect(m.cpu.state.rip).toBe(0xfffen);
    expect(reg(m, 0)).toBe(0n);
  });

  it('a 32-bit branch target beyond the CS limit raises #GP(0) at the branch', () => {
    const m = mach(tier);
    realCs(m, 0, 0x100);
    load(m, 0x100, hex('66 e9 ff fe 00 00')); // jmp dword 0x10005
    m.rules.excExit.add(13);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(13);
    expect(m.cpu.state.rip).toBe(0x100n);
  });
});
