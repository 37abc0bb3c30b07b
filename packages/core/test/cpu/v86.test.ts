/**
 * Virtual-8086 mode (SDM Vol. 3B ch. 20, without VME/PVI): entered by IRETD at CPL 0 with
 * EFLAGS.VM in the image; real-mode segment semantics at CPL 3; IOPL-sensitive CLI, STI,
 * PUSHF, POPF, INT n and IRET; I/O through the TSS bitmap; interrupts to a CPL-0 handler that
 * saves GS, FS, DS, ES and returns with IRETD.
 */
import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { gate32, hex, load, machine, Machine, protMode, reg, w32 } from './harness';

const VM = 0x20000;

/** 32-bit protected mode at CPL 0 with a TSS (ESP0 = 0x9000, SS0 = 0x10, I/O bitmap) and a 32-bit IDT at 0x2000. */
function setup(m: Machine): void {
  protMode(m, 0x1000);
  const s = m.cpu.state;
  w32(m, 0x3004, 0x9000);
  w32(m, 0x3008, 0x10);
  w32(m, 0x3064, 0x68 << 16); // I/O map base at 0x68
  m.ram.fill(0, 0x3068, 0x3068 + 8192);
  m.ram[0x3068 + 8192] = 0xff;
  m.ram[0x3068 + (0x80 >> 3)] |= 1 << (0x80 & 7); // port 0x80 denied
  s.segSel[6] = 0x48; s.segBaseLo[6] = 0x3000; s.segLimit[6] = 0x68 + 8192; s.segAttr[6] = 0x8b;
  s.idtrBase = 0x2000n; s.idtrLimit = 0x7ff;
  gate32(m, 0x2000, 0x21, 0x5000, 3);
  gate32(m, 0x2000, 0x22, 0x5100, 3);
}

/**
 * CPL-0 code at 0x1000: IRETD to v86 with GS=0 FS=0 DS=0x700 ES=0 SS:ESP=0800:0100,
 * EFLAGS = VM | IOPL `iopl` | 2, CS:EIP = 0400:0010 (linear 0x4010).
 */
function enterV86(m: Machine, iopl: number): void {
  const fl = (VM | (iopl << 12) | 2) >>> 0;
  const b = hex('6a 00 6a 00 68 00 07 00 00 6a 00 68 00 08 00 00 68 00 01 00 00 68 02 30 02 00 68 00 04 00 00 6a 10 cf');
  new DataView(b.buffer).setUint32(22, fl, true);
  load(m, 0x1000, b);
}

describe('virtual-8086 mode', () => {
  it('IRETD enters v86; INT n goes to a CPL-0 handler that saves GS FS DS ES and nulls them; IRETD returns to v86', () => {
    const m = machine();
    setup(m);
    enterV86(m, 3);
    w32(m, 0x7010, 0xbeef);
    // v86 at 0400:0010: mov ax,[0x10]; mov bx,ds; int 0x21; mov cx,0x55; int 0x22
    load(m, 0x4010, hex('a1 10 00 8c db cd 21 b9 55 00 cd 22'));
    // 0x21 handler: mov esi,esp; mov dx,ds; iretd.  0x22 handler: hlt
    load(m, 0x5000, hex('89 e6 66 8c da cf'));
    load(m, 0x5100, hex('f4'));
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.hostError).toBeNull();
    expect(reg(m, 0) & 0xffffn).toBe(0xbeefn); // DS base = 0x700 * 16
    expect(reg(m, 3) & 0xffffn).toBe(0x700n);
    expect(reg(m, 6)).toBe(0x9000n - 36n); // GS FS DS ES SS ESP EFLAGS CS EIP on the ring-0 stack
    expect(reg(m, 2) & 0xffffn).toBe(0n); // DS was null in the handler
    expect(reg(m, 1) & 0xffffn).toBe(0x55n); // back in v86 after IRETD
    // The frame of INT 0x22 (the last one) at 0x9000 - 36: EIP CS EFLAGS ESP SS ES DS FS GS.
    const dv = new DataView(m.ram.buffer);
    const frame = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((k) => dv.getUint32(0x9000 - 36 + 4 * k, true));
    expect(frame[0]).toBe(0x1c); // IP after int 0x22
    expect(frame[1]).toBe(0x400);
    expect(frame[2] & VM).toBe(VM);
    expect((frame[2] >>> 12) & 3).toBe(3);
    expect(frame[3]).toBe(0x100);
    expect(frame.slice(4)).toEqual([0x800, 0, 0x700, 0, 0]);
    // Now at CPL 0 in protected mode with VM clear.
    const s = m.cpu.state;
    expect(s.cpl).toBe(0);
    expect(s.rflags & VM).toBe(0);
    expect(s.segSel[1]).toBe(0x08);
    expect(s.segSel[3]).toBe(0);
  });

  it('segment loads and far JMP use base = selector * 16 at CPL 3', () => {
    const m = machine();
    setup(m);
    enterV86(m, 0);
    // mov ax,0x1234; mov es,ax; jmp 0x500:0  → cli at 0500:0000 faults (IOPL 0)
    load(m, 0x4010, hex('b8 34 12 8e c0 ea 00 00 00 05'));
    load(m, 0x5000, hex('fa'));
    m.rules.excExit.add(13);
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.EXCEPTION);
    const s = m.cpu.state;
    expect(s.segBaseLo[0]).toBe(0x12340);
    expect(s.segSel[1]).toBe(0x500);
    expect(s.segBaseLo[1]).toBe(0x5000);
    expect(s.segLimit[1]).toBe(0xffff);
    expect(s.rip).toBe(0n);
    expect(s.cpl).toBe(3);
    expect(s.rflags & VM).toBe(VM);
    expect(m.cpu.exit.vector).toBe(13);
    expect(m.cpu.exit.errorCode).toBe(0);
  });

  it.each([
    ['CLI', 'fa'], ['STI', 'fb'], ['PUSHF', '9c'], ['POPF', '9d'], ['INT n', 'cd 21'], ['IRET', 'cf'],
  ])('%s with IOPL < 3 raises #GP(0) in v86', (_name, code) => {
    const m = machine();
    setup(m);
    enterV86(m, 0);
    load(m, 0x4010, hex(code));
    m.rules.excExit.add(13);
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(13);
    expect(m.cpu.exit.errorCode).toBe(0);
    expect(m.cpu.state.rip).toBe(0x10n);
  });

  it('with IOPL 3, PUSHF/POPF run and cannot change IOPL; I/O still consults the TSS bitmap', () => {
    const m = machine();
    setup(m);
    enterV86(m, 3);
    // pushf; pop ax; push 0; popf (tries IOPL 0, IF 0); pushf; pop bx; out 0x80,al
    load(m, 0x4010, hex('9c 58 6a 00 9d 9c 5b e6 80'));
    m.rules.excExit.add(13);
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.EXCEPTION);
    expect(reg(m, 0) & 0x3000n).toBe(0x3000n); // IOPL 3 pushed (VM is pushed clear in the 16-bit image anyway)
    expect(reg(m, 3) & 0x3000n).toBe(0x3000n); // POPF kept IOPL
    expect(m.cpu.state.rflags & VM).toBe(VM);
    expect(m.cpu.exit.vector).toBe(13); // OUT to a port the bitmap denies, although IOPL = 3
    expect(m.cpu.state.rip).toBe(0x17n);
  });

  it('IRET inside v86 with IOPL 3 returns real-mode style (IP, CS, FLAGS)', () => {
    const m = machine();
    setup(m);
    enterV86(m, 3);
    // pushf; push cs; push 0x20; iret → 0400:0020: hlt (privileged at CPL 3: #GP)
    load(m, 0x4010, hex('9c 0e 6a 20 cf'));
    load(m, 0x4020, hex('f4'));
    m.rules.excExit.add(13);
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.state.rip).toBe(0x20n);
    expect(m.cpu.state.rflags & VM).toBe(VM);
    expect(m.cpu.state.rflags & 0x3000).toBe(0x3000);
    expect(reg(m, 4) & 0xffffn).toBe(0x100n);
  });

  it('an exception in v86 is delivered to the CPL-0 handler with its error code above the saved segments', () => {
    const m = machine();
    setup(m);
    enterV86(m, 0);
    gate32(m, 0x2000, 13, 0x5200, 0);
    load(m, 0x4010, hex('fa')); // cli: #GP(0)
    load(m, 0x5200, hex('f4'));
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.HALTED);
    const dv = new DataView(m.ram.buffer);
    const frame = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((k) => dv.getUint32(0x9000 - 40 + 4 * k, true));
    expect(frame.slice(0, 2)).toEqual([0, 0x10]); // error code, EIP of the CLI
    expect(frame[2]).toBe(0x400);
    expect(frame[3] & VM).toBe(VM);
    expect(frame.slice(4)).toEqual([0x100, 0x800, 0, 0x700, 0, 0]);
    expect(m.cpu.state.cpl).toBe(0);
  });

  it('an interrupt from v86 to a handler above CPL 0 raises #GP(selector)', () => {
    const m = machine();
    setup(m);
    enterV86(m, 3);
    // gate 0x21 → user code selector 0x33 (DPL 3)
    gate32(m, 0x2000, 0x21, 0x5000, 3, 0xe, 0x33);
    load(m, 0x4010, hex('cd 21'));
    m.rules.excExit.add(13);
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(13);
    expect(m.cpu.exit.errorCode).toBe(0x30);
  });
});
