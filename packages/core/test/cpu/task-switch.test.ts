/**
 * The processor's hardware task switch run bare (taskSwitchExits = false, as passthroughRules
 * has it): SDM Vol. 3A 7.3 — JMP/CALL to a TSS or a task gate, IRET with NT, an exception
 * through a task gate in the IDT with its error code on the new stack, 16-bit TSSs, the
 * pre-commit checks (#GP/#TS/#NP, nothing changed) and post-commit faults (new task's context),
 * the T flag's #DB, virtual-8086 tasks, the PAE PDPTE load with the new CR3; and the TASK_SWITCH exit when the
 * rules say switches exit.
 */
import { GuestExitKind, passthroughRules } from '../../src/cpu/guest-mode';
import { TestRules, machine, protMode, load, hex, w32, w64, r32, reg, Machine } from './harness';

const GDT = 0x500;
const TSS_A = 0x2000, TSS_B = 0x2100, TSS_C = 0x2200, TSS_D = 0x2300;
const SEL_A = 0x48, SEL_B = 0x50, SEL_GATE = 0x58, SEL_C = 0x60, SEL_D = 0x68, SEL_GATE3 = 0x70;
const IDT = 0x3000;

function tssDesc(base: number, limit: number, type: number, dpl = 0, present = 1): bigint {
  const lo = ((limit & 0xffff) | ((base & 0xffff) << 16)) >>> 0;
  const hi = (((base >>> 16) & 0xff) | (type << 8) | (dpl << 13) | (present << 15) | (limit & 0xf0000) | (base & 0xff000000)) >>> 0;
  return (BigInt(hi) << 32n) | BigInt(lo);
}
function taskGate(sel: number, dpl = 0): bigint {
  return (BigInt(0x8500 | (dpl << 13)) << 32n) | BigInt((sel << 16) >>> 0);
}
function desc(m: Machine, sel: number): number {
  return r32(m, GDT + sel + 4);
}
/** A 32-bit TSS for a flat ring-0 task starting at `eip`. */
function tss32(m: Machine, base: number, eip: number, esp: number, opts: { cs?: number; t?: boolean; eax?: number } = {}): void {
  for (let i = 0; i < 0x68; i += 4) w32(m, base + i, 0);
  w32(m, base + 0x20, eip);
  w32(m, base + 0x24, 0x2);
  w32(m, base + 0x28, opts.eax ?? 0);
  w32(m, base + 0x38, esp);
  for (let i = 0; i < 6; i++) w32(m, base + 0x48 + 4 * i, i === 1 ? (opts.cs ?? 0x08) : 0x10);
  w32(m, base + 0x64, opts.t ? 1 : 0);
}

function setup(): { m: Machine; rules: TestRules } {
  const m = machine();
  protMode(m, 0x10000);
  const s = m.cpu.state;
  s.gdtrLimit = 0xff;
  w64(m, GDT + SEL_A, tssDesc(TSS_A, 0x67, 0xb));
  w64(m, GDT + SEL_B, tssDesc(TSS_B, 0x67, 0x9));
  w64(m, GDT + SEL_GATE, taskGate(SEL_B));
  w64(m, GDT + SEL_C, tssDesc(TSS_C, 0x2b, 0x1));
  w64(m, GDT + SEL_D, tssDesc(TSS_D, 0x67, 0x9));
  w64(m, GDT + SEL_GATE3, taskGate(SEL_B, 3));
  s.segSel[6] = SEL_A; s.segBaseLo[6] = TSS_A; s.segLimit[6] = 0x67; s.segAttr[6] = 0x8b;
  s.idtrBase = BigInt(IDT); s.idtrLimit = 0x7ff;
  tss32(m, TSS_B, 0x11000, 0x8000, { eax: 0x1234 });
  const rules = Object.assign(new TestRules(), { taskSwitchExits: false });
  return { m, rules };
}

describe('hardware task switch (bare processor)', () => {
  it('passthroughRules lets the processor switch tasks itself', () => {
    expect(passthroughRules().taskSwitchExits).toBe(false);
  });

  it('JMP far to a TSS: saves the old task, loads the new one, moves the busy bit', () => {
    const { m, rules } = setup();
    load(m, 0x10000, hex(`b8 78 56 34 12   # mov eax, 0x12345678
                          ea 00 00 00 00 50 00  # jmp 0x50:0`));
    load(m, 0x11000, hex('f4'));
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.HALTED);
    const s = m.cpu.state;
    expect(s.segSel[6]).toBe(SEL_B);
    expect(reg(m, 0)).toBe(0x1234n);
    expect(s.rip).toBe(0x11001n);
    expect(Number(s.cr0 & 8n)).toBe(8); // CR0.TS
    expect(s.rflags & 0x4000).toBe(0); // JMP does not set NT
    // Old TSS: EIP after the JMP, EAX, selectors; old descriptor not busy, new one busy.
    expect(r32(m, TSS_A + 0x20)).toBe(0x1000c);
    expect(r32(m, TSS_A + 0x28)).toBe(0x12345678);
    expect(r32(m, TSS_A + 0x4c)).toBe(0x08);
    expect((desc(m, SEL_A) >>> 8) & 0xf).toBe(0x9);
    expect((desc(m, SEL_B) >>> 8) & 0xf).toBe(0xb);
    expect(r32(m, TSS_B) & 0xffff).toBe(0); // no back link for JMP
  });

  it('CALL through a task gate nests (NT, back link, both busy); IRET returns and frees the callee', () => {
    const { m, rules } = setup();
    load(m, 0x10000, hex(`9a 00 00 00 00 58 00  # call 0x58:0
                          f4`));
    load(m, 0x11000, hex(`b9 99 00 00 00  # mov ecx, 0x99
                          cf              # iretd`));
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.HALTED);
    const s = m.cpu.state;
    expect(s.segSel[6]).toBe(SEL_A);
    expect(s.rip).toBe(0x10008n);
    expect(r32(m, TSS_B) & 0xffff).toBe(SEL_A); // previous-task link
    // The callee's saved state: ECX, EIP after IRET, EFLAGS with NT cleared by the IRET.
    expect(r32(m, TSS_B + 0x2c)).toBe(0x99);
    expect(r32(m, TSS_B + 0x20)).toBe(0x11006);
    expect(r32(m, TSS_B + 0x24) & 0x4000).toBe(0);
    expect((desc(m, SEL_A) >>> 8) & 0xf).toBe(0xb);
    expect((desc(m, SEL_B) >>> 8) & 0xf).toBe(0x9);
  });

  it('an exception through a task gate pushes its error code on the new task stack', () => {
    const { m, rules } = setup();
    w64(m, IDT + 13 * 8, taskGate(SEL_B));
    load(m, 0x10000, hex(`66 b8 f8 00   # mov ax, 0xf8 (beyond the GDT limit)
                          8e d8         # mov ds, ax  -> #GP(0xf8)`));
    load(m, 0x11000, hex('f4'));
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.state.segSel[6]).toBe(SEL_B);
    expect(reg(m, 4)).toBe(0x7ffcn);
    expect(r32(m, 0x7ffc)).toBe(0xf8);
    expect(r32(m, TSS_B) & 0xffff).toBe(SEL_A);
    expect(m.cpu.state.rflags & 0x4000).toBe(0x4000); // NT
    expect(r32(m, TSS_A + 0x20)).toBe(0x10004); // the faulting instruction
  });

  it('a 16-bit TSS: 16-bit fields, FS/GS become null', () => {
    const { m, rules } = setup();
    for (let i = 0; i < 0x2c; i += 2) m.ram[TSS_C + i] = 0, m.ram[TSS_C + i + 1] = 0;
    const w16 = (a: number, v: number) => { m.ram[a] = v & 0xff; m.ram[a + 1] = v >>> 8; };
    w16(TSS_C + 0x0e, 0x1000); // IP
    w16(TSS_C + 0x10, 0x2);
    w16(TSS_C + 0x12, 0xbeef); // AX
    w16(TSS_C + 0x1a, 0x6000); // SP
    w16(TSS_C + 0x22, 0x10); w16(TSS_C + 0x24, 0x08); w16(TSS_C + 0x26, 0x10); w16(TSS_C + 0x28, 0x10);
    load(m, 0x10000, hex('ea 00 00 00 00 60 00'));
    load(m, 0x1000, hex('f4'));
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.HALTED);
    const s = m.cpu.state;
    expect(s.segSel[6]).toBe(SEL_C);
    expect(reg(m, 0)).toBe(0xbeefn);
    expect(s.rip).toBe(0x1001n);
    expect(s.segAttr[4] & 0x10000).toBe(0x10000);
    expect(s.segAttr[5] & 0x10000).toBe(0x10000);
    expect((desc(m, SEL_C) >>> 8) & 0xf).toBe(0x3);
  });

  it('JMP to a busy TSS is #GP(selector) before the commit point: nothing changes', () => {
    const { m, rules } = setup();
    rules.excExit.add(13);
    load(m, 0x10000, hex('ea 00 00 00 00 48 00')); // jmp to the current (busy) task
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(13);
    expect(m.cpu.exit.errorCode).toBe(SEL_A);
    expect(m.cpu.state.rip).toBe(0x10000n);
    expect(r32(m, TSS_A + 0x20)).toBe(0);
  });

  it('task gate DPL below CPL/RPL is #GP(gate), a not-present TSS is #NP, a short TSS #TS', () => {
    const { m, rules } = setup();
    rules.excExit.add(13).add(11).add(10);
    load(m, 0x10000, hex('ea 00 00 00 00 5b 00')); // RPL 3 on a DPL-0 gate
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect([m.cpu.exit.vector, m.cpu.exit.errorCode]).toEqual([13, SEL_GATE]);

    w64(m, GDT + SEL_B, tssDesc(TSS_B, 0x67, 0x9, 0, 0));
    m.cpu.state.rip = 0x10000n;
    load(m, 0x10000, hex('ea 00 00 00 00 50 00'));
    m.cpu.flushCode();
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect([m.cpu.exit.vector, m.cpu.exit.errorCode]).toEqual([11, SEL_B]);

    w64(m, GDT + SEL_B, tssDesc(TSS_B, 0x50, 0x9));
    m.cpu.state.rip = 0x10000n;
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect([m.cpu.exit.vector, m.cpu.exit.errorCode]).toEqual([10, SEL_B]);
    expect(m.cpu.state.segSel[6]).toBe(SEL_A);
  });

  it('a bad CS in the new TSS faults after the commit point, in the new task (#TS(CS))', () => {
    const { m, rules } = setup();
    rules.excExit.add(10);
    tss32(m, TSS_D, 0x11000, 0x8000, { cs: 0x10 }); // a data segment as CS
    load(m, 0x10000, hex('ea 00 00 00 00 68 00'));
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect([m.cpu.exit.vector, m.cpu.exit.errorCode]).toEqual([10, 0x10]);
    expect(m.cpu.state.segSel[6]).toBe(SEL_D);
    expect(m.cpu.state.rip).toBe(0x11000n);
    expect(r32(m, TSS_A + 0x20)).toBe(0x10007);
  });

  it('the T flag raises #DB (DR6.BT) before the new task runs; DR7 local enables are cleared', () => {
    const { m, rules } = setup();
    rules.excExit.add(1);
    m.cpu.state.dr7 = 0x403n; // L0 | G0
    tss32(m, TSS_B, 0x11000, 0x8000, { t: true });
    load(m, 0x10000, hex('ea 00 00 00 00 50 00'));
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(1);
    expect(m.cpu.state.rip).toBe(0x11000n);
    expect(m.cpu.state.dr6 & 0x8000n).toBe(0x8000n);
    expect(m.cpu.state.dr7).toBe(0x402n);
  });

  it('a TSS whose EFLAGS image has VM = 1 starts a virtual-8086 task at CPL 3', () => {
    const { m, rules } = setup();
    rules.excExit.add(13);
    tss32(m, TSS_B, 0x0010, 0x100, { eax: 0x55 });
    w32(m, TSS_B + 0x24, 0x20002); // VM
    for (let i = 0; i < 6; i++) w32(m, TSS_B + 0x48 + 4 * i, 0x1100); // base 0x11000
    load(m, 0x10000, hex('ea 00 00 00 00 50 00'));
    load(m, 0x11010, hex('40 f4')); // inc ax; hlt (#GP(0) at CPL 3)
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.EXCEPTION);
    const s = m.cpu.state;
    expect([m.cpu.exit.vector, m.cpu.exit.errorCode]).toEqual([13, 0]);
    expect(s.rflags & 0x20000).toBe(0x20000);
    expect(s.cpl).toBe(3);
    expect([s.segSel[1], s.segBaseLo[1], s.segLimit[1]]).toEqual([0x1100, 0x11000, 0xffff]);
    expect(s.rip).toBe(0x11n);
    expect(reg(m, 0)).toBe(0x56n);
  });

  it('under PAE paging the new CR3 loads the PDPTE registers; a reserved bit is #GP(0) in the new task', () => {
    const { m, rules } = setup();
    const s = m.cpu.state;
    // PDPT at 0x40000 → PD at 0x41000 with 2 MiB pages for 0-4 MiB.
    w64(m, 0x40000, 0x41001n);
    w64(m, 0x41000, 0x83n);
    w64(m, 0x41008, 0x200083n);
    s.cr4 = 0x20n; s.cr3 = 0x40000n; s.cr0 |= 0x80000000n;
    w64(m, 0x44000, 0x41001n); // a second PDPT for the new task
    w32(m, TSS_B + 0x1c, 0x44000);
    load(m, 0x10000, hex('ea 00 00 00 00 50 00'));
    load(m, 0x11000, hex('f4'));
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.HALTED);
    expect(s.cr3).toBe(0x44000n);
    expect(s.getPdptr(0)).toBe(0x41001n);

    // Back to task A's CR3 with a PDPT whose entry sets a reserved bit (R/W): #GP(0) after the commit.
    rules.excExit.add(13);
    w64(m, 0x45000, 0x41003n);
    tss32(m, TSS_A, 0x11000, 0x8000);
    w32(m, TSS_A + 0x1c, 0x45000);
    load(m, 0x11000, hex('ea 00 00 00 00 48 00'));
    m.cpu.flushCode();
    s.rip = 0x11000n;
    s.activity = 0; // it halted in task B
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect([m.cpu.exit.vector, m.cpu.exit.errorCode]).toEqual([13, 0]);
    expect(s.segSel[6]).toBe(SEL_A);
    expect(s.cr3).toBe(0x44000n);
  });

  it('when the rules say so the switch exits: selector, source, error code, RIP at INT n', () => {
    const { m } = setup();
    const rules = new TestRules();
    load(m, 0x10000, hex('9a 00 00 00 00 58 00'));
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.TASK_SWITCH);
    expect([m.cpu.exit.taskSelector, m.cpu.exit.taskSource, m.cpu.exit.insnLength]).toEqual([SEL_B, 0, 7]);
    expect(m.cpu.state.segSel[6]).toBe(SEL_A);
    expect(m.cpu.state.rip).toBe(0x10000n);

    w64(m, IDT + 0x40 * 8, taskGate(SEL_B, 0));
    load(m, 0x10000, hex('cd 40'));
    m.cpu.flushCode();
    m.cpu.state.rip = 0x10000n;
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.TASK_SWITCH);
    const ex = m.cpu.exit;
    expect([ex.taskSelector, ex.taskSource, ex.insnLength, ex.vectoring.valid, ex.vectoring.vector]).toEqual([SEL_B, 3, 2, true, 0x40]);
    expect(m.cpu.state.rip).toBe(0x10000n);

    w64(m, IDT + 13 * 8, taskGate(SEL_B));
    load(m, 0x10000, hex('66 b8 f8 00 8e d8'));
    m.cpu.flushCode();
    m.cpu.state.rip = 0x10000n;
    expect(m.cpu.runGuest(rules, 100)).toBe(GuestExitKind.TASK_SWITCH);
    expect([ex.taskSource, ex.hasErrorCode, ex.errorCode, ex.vectoring.vector]).toEqual([3, true, 0xf8, 13]);
    expect(m.cpu.state.rip).toBe(0x10004n);
  });
});
