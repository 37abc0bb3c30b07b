/**
 * What the processor keeps from one guest-mode run to the next must never outlive what it was
 * derived from. Two such caches: the resumption link (re-entry right after an instruction whose
 * exit the VMM skipped finds the next block without a lookup) and the mode-input check at entry
 * (CR0/CR3/CR4/EFER/DR7 through CpuState.sysWrites; DR0-3 compared while DR7 enables a breakpoint).
 */
import { describe, it, expect } from '@jest/globals';
import { GuestExitKind, InterceptInsn } from '../../src/cpu/guest-mode';
import { hex, load, longMode, machine, reg, w64, Machine } from './harness';

// 0x1000: cpuid; inc eax; jmp 0x1000
const LOOP = hex('0f a2  ff c0  eb fa');

function cpuidLoop(tier: 'interpreter' | 'jit'): Machine {
  const m = machine('intel', 4, tier);
  longMode(m, 0x1000);
  load(m, 0x1000, LOOP);
  m.rules.insn[InterceptInsn.CPUID] = 1;
  m.cpu.state.setGpr(0, 0n);
  return m;
}

/** Run to the CPUID exit, then skip it as a VMM does (RIP += the exit's instruction length). */
function exitAndSkip(m: Machine): void {
  expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.INSTRUCTION);
  expect(m.cpu.exit.insn).toBe(InterceptInsn.CPUID);
  m.cpu.state.rip = m.cpu.exit.nextRip;
}

describe.each(['interpreter', 'jit'] as const)('re-entry after a skipped exit (%s)', (tier) => {
  it('code after the exiting instruction rewritten between exit and entry runs as rewritten', () => {
    const m = cpuidLoop(tier);
    for (let i = 0; i < 40; i++) exitAndSkip(m); // hot: compiled blocks and resumption links in place
    const before = reg(m, 0);
    exitAndSkip(m);
    expect(reg(m, 0)).toBe(before + 1n);
    // The host (KVM writing guest memory) turns INC EAX into DEC EAX and tells the processor.
    m.ram.set([0xff, 0xc8], 0x1002);
    m.cpu.notifyWrite(m.base + 0x1002, 2);
    exitAndSkip(m);
    exitAndSkip(m);
    expect(reg(m, 0)).toBe(before - 1n);
  });

  it('re-entry somewhere else (not skipped; a redirected RIP) runs the code that is there', () => {
    const m = cpuidLoop(tier);
    load(m, 0x1100, hex('ff c0 ff c0 f4')); // inc eax; inc eax; hlt
    for (let i = 0; i < 40; i++) exitAndSkip(m);
    // Not skipped: the CPUID exits again, nothing else ran.
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.INSTRUCTION);
    const at = reg(m, 0);
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.INSTRUCTION);
    expect(reg(m, 0)).toBe(at);
    // Redirected (as an injected event or KVM_SET_REGS would): the code at the new RIP runs.
    m.cpu.state.rip = 0x1100n;
    m.rules.insn[InterceptInsn.HLT] = 1;
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.INSTRUCTION);
    expect(m.cpu.exit.insn).toBe(InterceptInsn.HLT);
    expect(reg(m, 0)).toBe(at + 2n);
  });

  it('a TLB flush with the code page remapped between exit and entry fetches through the new mapping', () => {
    const m = cpuidLoop(tier);
    // A second copy of the loop whose INC is a DEC, at GPA 0x5000.
    load(m, 0x5000, hex('0f a2  ff c8  eb fa'));
    for (let i = 0; i < 40; i++) exitAndSkip(m);
    const before = reg(m, 0);
    // Replace the 2 MiB page at 0 (harness identity map, PD at 0x12000) by a page table that
    // maps linear page 0x1000 to 0x5000 and every other page to itself, then flush the TLB.
    for (let i = 0; i < 512; i++) w64(m, 0x13000 + i * 8, BigInt((i === 1 ? 0x5000 : i * 0x1000) | 7));
    w64(m, 0x12000, BigInt(0x13000 | 7));
    m.cpu.flushTlbAll();
    exitAndSkip(m);
    exitAndSkip(m);
    expect(reg(m, 0)).toBe(before - 2n);
  });
});

describe('mode inputs at VM entry', () => {
  // 0x1000: nop; nop; nop; nop; hlt — with #DB exiting, an instruction breakpoint exits before its instruction.
  function bpMachine(): Machine {
    const m = machine('intel', 4, 'jit');
    longMode(m, 0x1000);
    load(m, 0x1000, hex('90 90 90 90 f4'));
    m.rules.excExit.add(1);
    return m;
  }

  it('DR0 changed between two runs while DR7 enables breakpoint 0 moves the breakpoint', () => {
    const m = bpMachine();
    m.cpu.state.dr[0] = 0x1001n;
    m.cpu.state.dr7 = 0x401n; // L0, execute, 1 byte
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.state.rip).toBe(0x1001n);
    // Only DR0 changes (DR7 and everything sysWrites counts stay): the next entry must see it.
    m.cpu.state.rip = 0x1000n;
    m.cpu.state.dr[0] = 0x1003n;
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(1);
    expect(m.cpu.state.rip).toBe(0x1003n);
  });

  it('DR0 changed while DR7 disables it, then DR7 enabling it: the breakpoint is at the new DR0', () => {
    const m = bpMachine();
    m.cpu.state.dr[0] = 0x1001n;
    m.cpu.state.dr7 = 0x400n;
    m.rules.insn[InterceptInsn.HLT] = 1;
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.INSTRUCTION);
    m.cpu.state.rip = 0x1000n;
    m.cpu.state.dr[0] = 0x1002n;
    m.cpu.state.dr7 = 0x401n;
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.state.rip).toBe(0x1002n);
  });

  it('CR4 written between runs (a backend loading guest state) takes effect at the next entry', () => {
    // 0x1000: mov rax, cr4; hlt
    const m = machine('intel', 4, 'jit');
    longMode(m, 0x1000);
    load(m, 0x1000, hex('0f 20 e0 f4'));
    m.rules.insn[InterceptInsn.HLT] = 1;
    m.cpu.runGuest(m.rules, 100);
    const cr4 = m.cpu.state.cr4;
    expect(reg(m, 0)).toBe(cr4);
    m.cpu.state.rip = 0x1000n;
    const writes = m.cpu.state.sysWrites;
    m.cpu.state.cr4 = cr4 | 0x200n; // OSFXSR
    expect(m.cpu.state.sysWrites).toBe(writes + 1);
    m.cpu.runGuest(m.rules, 100);
    expect(reg(m, 0)).toBe(cr4 | 0x200n);
  });
});
