import { describe, it, expect } from '@jest/globals';
import { GuestExitKind, InterceptInsn, EventType } from '../../src/cpu/guest-mode';
import { gate32, gate64, hex, load, longMode, machine, protMode, realMode, reg, w32, w64 } from './harness';

describe('exceptions and interrupts', () => {
  it('delivers #PF through the 64-bit IDT with error code and CR2', () => {
    const m = machine();
    longMode(m, 0x1000);
    // mov rax,0x40000000; mov rbx,[rax]; hlt
    load(m, 0x1000, hex('48 c7 c0 00 00 00 40 48 8b 18 f4'));
    // handler: mov rbx,cr2; pop rcx (error code); mov rdx,[rsp] (return RIP); hlt
    load(m, 0x3000, hex('0f 20 d3 59 48 8b 14 24 f4'));
    gate64(m, 0x2000, 14, 0x3000);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.hostError).toBeNull();
    expect(m.cpu.state.cr2).toBe(0x40000000n);
    expect(reg(m, 3)).toBe(0x40000000n);
    expect(reg(m, 1)).toBe(0n); // not present, read, supervisor
    expect(reg(m, 2)).toBe(0x1007n); // faulting instruction
    // The stack was 16-byte aligned and held SS, RSP, RFLAGS, CS, RIP.
    expect(reg(m, 4)).toBe(0x7000n - 5n * 8n + 8n - 8n + 8n - 8n);
  });

  it('a #PF the rules intercept exits without writing CR2 and leaves RIP at the instruction', () => {
    const m = machine();
    longMode(m, 0x1000);
    load(m, 0x1000, hex('48 c7 c0 00 00 00 40 48 8b 18 f4'));
    m.rules.excExit.add(14);
    m.cpu.state.cr2 = 0x1234n;
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    const ex = m.cpu.exit;
    expect(ex.vector).toBe(14);
    expect(ex.hasErrorCode).toBe(true);
    expect(ex.errorCode).toBe(0);
    expect(ex.faultAddress).toBe(0x40000000n);
    expect(m.cpu.state.cr2).toBe(0x1234n);
    expect(m.cpu.state.rip).toBe(0x1007n);
    expect(m.cpu.state.instructionsRetired).toBe(1);
  });

  it('write to a read-only user page from CPL3 gives error code 7', () => {
    const m = machine();
    longMode(m, 0x1000);
    // map 0x400000 via a 4 KiB page table: PD[2] -> PT at 0x13000, PT[0] = 0x5000 | P | U (read-only)
    w64(m, 0x12010, BigInt(0x13000 | 7));
    w64(m, 0x13000, BigInt(0x5000 | 5));
    // user code at 0x1000 (identity map is user-accessible): mov rax,0x400000; mov byte [rax],1; hlt
    load(m, 0x1000, hex('48 c7 c0 00 00 40 00 c6 00 01 f4'));
    const s = m.cpu.state;
    s.segSel[1] = 0x43; s.segAttr[1] = 0xa0fb; s.cpl = 3;
    s.segSel[2] = 0x3b; s.segAttr[2] = 0xc0f3;
    m.rules.excExit.add(14);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.errorCode).toBe(7);
    expect(m.cpu.exit.faultAddress).toBe(0x400000n);
  });

  it('delivers #GP with a selector error code through a 32-bit IDT', () => {
    const m = machine();
    protMode(m, 0x1000);
    m.cpu.state.idtrBase = 0x2000n; m.cpu.state.idtrLimit = 0x7ff;
    // mov ax,0x4b; mov ds,ax (beyond GDT limit) ; hlt
    load(m, 0x1000, hex('66 b8 4b 00 8e d8 f4'));
    load(m, 0x3000, hex('59 5a f4')); // pop ecx (error); pop edx (eip); hlt
    gate32(m, 0x2000, 13, 0x3000);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 1)).toBe(0x48n);
    expect(reg(m, 2)).toBe(0x1004n);
  });

  it('escalates to a triple fault: SHUTDOWN, or TRIPLE_FAULT when the vendor exits on it', () => {
    for (const exits of [false, true]) {
      const m = machine();
      protMode(m, 0x1000);
      m.cpu.state.idtrBase = 0x2000n; m.cpu.state.idtrLimit = 0; // every vector is beyond the limit
      load(m, 0x1000, hex('0f 0b')); // ud2
      m.rules.shutdownExits = exits;
      const k = m.cpu.runGuest(m.rules, 100);
      expect(m.cpu.hostError).toBeNull();
      if (exits) {
        expect(k).toBe(GuestExitKind.TRIPLE_FAULT);
      } else {
        expect(k).toBe(GuestExitKind.SHUTDOWN);
        expect(m.cpu.state.activity).toBe(2);
        expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.SHUTDOWN);
      }
    }
  });

  it('a #DF that the rules intercept exits with the first event in exit.vectoring', () => {
    const m = machine();
    protMode(m, 0x1000);
    m.cpu.state.idtrBase = 0x2000n; m.cpu.state.idtrLimit = 0x7ff;
    // #GP gate not present → #NP while delivering #GP → #DF
    load(m, 0x1000, hex('66 b8 4b 00 8e d8 f4'));
    m.rules.excExit.add(8);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(8);
    expect(m.cpu.exit.vectoring.valid).toBe(true);
    expect(m.cpu.exit.vectoring.vector).toBe(13);
  });

  it('real-mode INT goes through the IVT and IRET returns', () => {
    const m = machine();
    realMode(m, 0x1000);
    // mov ax,0; int 0x21; add ax,1; hlt; handler at 0x1009: mov ax,41; iret
    load(m, 0x1000, hex('b8 00 00 cd 21 83 c0 01 f4 b8 29 00 cf'));
    w32(m, 0x21 * 4, 0x00001009);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 0) & 0xffffn).toBe(42n);
    expect(m.cpu.state.instructionsRetired).toBe(6);
  });

  it('injects an external interrupt at entry and wakes a halted processor', () => {
    const m = machine();
    longMode(m, 0x1000);
    load(m, 0x1000, hex('f4 f4')); // hlt; hlt
    load(m, 0x3000, hex('48 c7 c3 07 00 00 00 48 cf')); // mov rbx,7; iretq
    gate64(m, 0x2000, 0x30, 0x3000);
    m.cpu.state.rflags = 0x202;
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.state.rip).toBe(0x1001n);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    const inj = m.cpu.injection;
    inj.valid = true; inj.type = EventType.EXTERNAL_INTERRUPT; inj.vector = 0x30; inj.hasErrorCode = false;
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(inj.valid).toBe(false);
    expect(reg(m, 3)).toBe(7n);
    expect(m.cpu.state.rip).toBe(0x1002n);
    expect(m.cpu.state.rflags & 0x200).toBe(0x200);
  });

  it('INT3 in 64-bit mode pushes the next RIP; an intercepted #BP exits at the INT3', () => {
    const m = machine();
    longMode(m, 0x1000);
    load(m, 0x1000, hex('cc f4'));
    load(m, 0x3000, hex('48 8b 1c 24 f4')); // mov rbx,[rsp]; hlt
    gate64(m, 0x2000, 3, 0x3000, 3);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 3)).toBe(0x1001n);
    const m2 = machine();
    longMode(m2, 0x1000);
    load(m2, 0x1000, hex('cc f4'));
    m2.rules.excExit.add(3);
    expect(m2.cpu.runGuest(m2.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m2.cpu.exit.vector).toBe(3);
    expect(m2.cpu.exit.insnLength).toBe(1);
    expect(m2.cpu.state.rip).toBe(0x1000n);
  });

  it('divide by zero raises #DE', () => {
    const m = machine();
    longMode(m, 0x1000);
    load(m, 0x1000, hex('31 c9 f7 f1 f4')); // xor ecx,ecx; div ecx
    m.rules.excExit.add(0);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(0);
    expect(m.cpu.exit.hasErrorCode).toBe(false);
    expect(m.cpu.state.rip).toBe(0x1002n);
  });
});

export { InterceptInsn };
