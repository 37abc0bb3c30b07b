/**
 * Debug registers (SDM Vol. 3B ch. 19): instruction breakpoints (faults, suppressed by RF),
 * data write and read/write breakpoints of lengths 1/2/4/8 (traps), I/O breakpoints with
 * CR4.DE, general detect (DR7.GD), single-step, REP string iterations, and DR6 reporting.
 *
 * Every test runs in 64-bit mode with a #DB handler at 0x1800 that records DR6 at [0x3000],
 * the pushed RIP at [0x3008] (and the n-th at [0x3040 + 8n]), the pushed RFLAGS at [0x3010],
 * RCX at [0x3018], counts in R15, sets RF and clears TF in the stacked RFLAGS and IRETQs:
 *   mov rax,dr6; mov [0x3000],rax; mov rax,[rsp]; mov [0x3008],rax; mov [0x3040+r15*8],rax
 *   mov rax,[rsp+16]; mov [0x3010],rax; mov rax,rcx; mov [0x3018],rax; inc r15
 *   or qword [rsp+16],0x10000; and qword [rsp+16],~0x100; iretq
 */
import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { gate64, hex, load, longMode, machine, reg, Machine } from './harness';

const HANDLER = '0f 21 f0 48 89 04 25 00 30 00 00 48 8b 04 24 48 89 04 25 08 30 00 00 4a 89 04 fd 40 30 00 00 48 8b 44 24 10 48 89 04 25 10 30 00 00 48 89 c8 48 89 04 25 18 30 00 00 49 ff c7 48 81 4c 24 10 00 00 01 00 48 81 64 24 10 ff fe ff ff 48 cf';
const RF = 0x10000;

function dbgMachine(code: string): Machine {
  const m = machine();
  longMode(m, 0x1000);
  gate64(m, 0x2000, 1, 0x1800);
  load(m, 0x1800, hex(HANDLER));
  load(m, 0x1000, hex(code));
  m.cpu.state.gprLo[4] = 0x8000;
  return m;
}
const q = (m: Machine, a: number): bigint => new DataView(m.ram.buffer).getBigUint64(a, true);

describe('debug registers', () => {
  it('instruction breakpoint: #DB fault before the instruction, RF lets it run once', () => {
    // mov rax,0x1013; mov dr0,rax; mov eax,1; mov dr7,rax; nop; 0x1013: inc ebx; inc ebx; hlt
    const m = dbgMachine('48 c7 c0 13 10 00 00 0f 23 c0 b8 01 00 00 00 0f 23 f8 90 ff c3 ff c3 f4');
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 15)).toBe(1n);
    expect(q(m, 0x3008)).toBe(0x1013n);
    expect(q(m, 0x3000) & 0xfn).toBe(1n);
    expect(q(m, 0x3010) & BigInt(RF)).toBe(0n); // instruction-breakpoint #DB pushes RF as it was (0)
    expect(reg(m, 3)).toBe(2n);
    expect(m.cpu.state.rflags & RF).toBe(0); // cleared after the resumed instruction
  });

  it('data breakpoints: write-only (len 4) and read/write (len 8) trap after the access', () => {
    // DR1 = 0x3100 (W, len 4), DR2 = 0x3200 (RW, len 8); DR7 = 0x0bd00014
    // mov byte [0x3102],5 → trap at 0x1020; mov eax,[0x3100] (read: no); mov al,[0x3208] (no);
    // mov al,[0x3207] → trap at 0x1035; hlt
    const m = dbgMachine('b8 00 31 00 00 0f 23 c8 b8 00 32 00 00 0f 23 d0 b8 14 00 d0 0b 0f 23 f8 c6 04 25 02 31 00 00 05 8b 04 25 00 31 00 00 8a 04 25 08 32 00 00 8a 04 25 07 32 00 00 f4');
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 15)).toBe(2n);
    expect(q(m, 0x3040)).toBe(0x1020n);
    expect(q(m, 0x3048)).toBe(0x1035n);
    expect(q(m, 0x3000) & 0xfn).toBe(4n);
    expect(q(m, 0x3000) & 0xffff0ff0n).toBe(0xffff0ff0n);
    expect(m.ram[0x3102]).toBe(5);
  });

  it('I/O breakpoint with CR4.DE traps after OUT to the port', () => {
    // cr4 |= DE; DR3 = 0x80, R/W3 = 10, L3; out 0x81,al (no); out 0x80,al → trap at 0x101d; hlt
    const m = dbgMachine('0f 20 e0 83 c8 08 0f 22 e0 b8 80 00 00 00 0f 23 d8 b8 40 00 00 20 0f 23 f8 e6 81 e6 80 f4');
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 15)).toBe(1n);
    expect(q(m, 0x3008)).toBe(0x101dn);
    expect(q(m, 0x3000) & 0xfn).toBe(8n);
  });

  it('general detect: MOV DR faults with DR6.BD, GD cleared, RF pushed as 1', () => {
    // mov eax,0x2400; mov dr7,rax; mov ebx,7; 0x100d: mov rax,dr0; inc ebx; hlt
    const m = dbgMachine('b8 00 24 00 00 0f 23 f8 bb 07 00 00 00 0f 21 c0 ff c3 f4');
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 15)).toBe(1n);
    expect(q(m, 0x3008)).toBe(0x100dn);
    expect(q(m, 0x3000) & 0x2000n).toBe(0x2000n);
    expect(q(m, 0x3010) & BigInt(RF)).toBe(BigInt(RF));
    expect(m.cpu.state.dr7 & 0x2000n).toBe(0n);
    expect(reg(m, 3)).toBe(8n);
  });

  it('a data breakpoint inside REP STOSB traps after that iteration with RF = 1, then the string completes', () => {
    // DR0 = 0x3105 (W, len 1); rdi = 0x3100, rcx = 16, al = 0xaa; 0x101d: rep stosb; hlt
    const m = dbgMachine('b8 05 31 00 00 0f 23 c0 b8 01 00 01 00 0f 23 f8 bf 00 31 00 00 b9 10 00 00 00 b0 aa fc f3 aa f4');
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 15)).toBe(1n);
    expect(q(m, 0x3008)).toBe(0x101dn);
    expect(q(m, 0x3018)).toBe(10n);
    expect(q(m, 0x3010) & BigInt(RF)).toBe(BigInt(RF));
    expect([...m.ram.subarray(0x3100, 0x3106)].every((b) => b === 0xaa)).toBe(true); // (the handler clobbers AL)
    expect(reg(m, 1)).toBe(0n);
    expect(reg(m, 7)).toBe(0x3110n);
  });

  it('single-step and a data breakpoint on the same instruction are reported together (BS | B1)', () => {
    // DR1 = 0x3100 (W len 4); pushfq; or [rsp],TF; popfq; 0x101a: mov byte [0x3101],1; 0x1022: hlt
    const m = dbgMachine('b8 00 31 00 00 0f 23 c8 b8 04 00 d0 00 0f 23 f8 9c 48 81 0c 24 00 01 00 00 9d c6 04 25 01 31 00 00 01 f4');
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 15)).toBe(1n);
    expect(q(m, 0x3008)).toBe(0x1022n);
    expect(q(m, 0x3000) & 0x400fn).toBe(0x4002n);
  });

  it('disarmed breakpoints restore the TLB fast path', () => {
    const m = dbgMachine('b8 00 31 00 00 0f 23 c8 b8 04 00 d0 00 0f 23 f8 31 c0 0f 23 f8 c6 04 25 00 31 00 00 01 f4');
    // ... mov dr7,rax (armed); xor eax,eax; mov dr7,rax (disarmed); mov byte [0x3100],1; hlt
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 15)).toBe(0n);
    expect(m.cpu.dbgData).toBe(false);
    expect(m.ram[0x3100]).toBe(1);
  });
});
