import { describe, it, expect } from '@jest/globals';
import { GuestExitKind, InterceptInsn, CrAccessType, ACCESS_READ } from '../../src/cpu/guest-mode';
import { EmulationResult, MmioBus, PortBus } from '../../src/cpu/x86-cpu';
import { hex, load, longMode, machine, reg } from './harness';

// cpuid; hlt; out 0x80,al; in al,dx; rdmsr; wrmsr; mov cr3,rax; vmcall; rdtsc; pause; invlpg [rax+8]
const CODE = hex('0f a2 f4 e6 80 ec 0f 32 0f 30 0f 22 d8 0f 01 c1 0f 31 f3 90 0f 01 78 08');

function setup(vendor: 'intel' | 'amd' = 'intel') {
  const m = machine(vendor);
  longMode(m, 0x1000);
  load(m, 0x1000, CODE);
  return m;
}

describe('guest-mode intercepts', () => {
  it('CPUID exits before executing, with length, bytes and next RIP', () => {
    const m = setup();
    m.rules.insn[InterceptInsn.CPUID] = 1;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.INSTRUCTION);
    const ex = m.cpu.exit;
    expect(ex.insn).toBe(InterceptInsn.CPUID);
    expect(ex.insnLength).toBe(2);
    expect([...ex.insnBytes.subarray(0, 2)]).toEqual([0x0f, 0xa2]);
    expect(ex.nextRip).toBe(0x1002n);
    expect(m.cpu.state.rip).toBe(0x1000n);
    expect(m.cpu.state.instructionsRetired).toBe(0);
  });

  it('the exit reports exactly the exiting instruction\'s bytes, zero past them, whichever exit came before', () => {
    const m = setup();
    m.rules.insn[InterceptInsn.CPUID] = 1;
    m.rules.insn[InterceptInsn.INVLPG] = 1;
    m.cpu.state.rip = 0x1014n; // invlpg [rax+8]
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.INSTRUCTION);
    expect(m.cpu.exit.insn).toBe(InterceptInsn.INVLPG);
    // Not read: the next exit's bytes must not keep any of these four.
    m.cpu.state.rip = 0x1000n;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.INSTRUCTION);
    expect(m.cpu.exit.insnBytesCount).toBe(2);
    expect([...m.cpu.exit.insnBytes]).toEqual([0x0f, 0xa2, ...new Array(13).fill(0)]);
    m.cpu.state.rip = 0x1014n;
    m.cpu.runGuest(m.rules, 10);
    expect(m.cpu.exit.insnBytesCount).toBe(4);
    expect([...m.cpu.exit.insnBytes]).toEqual([0x0f, 0x01, 0x78, 0x08, ...new Array(11).fill(0)]);
  });

  it('CPUID not intercepted reports the vendor string', () => {
    for (const [v, s] of [['intel', 'GenuineIntel'], ['amd', 'AuthenticAMD']] as const) {
      const m = setup(v);
      m.cpu.state.setGpr(0, 0n);
      m.cpu.runGuest(m.rules, 1);
      const w = (i: number) => Number(reg(m, i));
      const str = [w(3), w(2), w(1)].map((x) => String.fromCharCode(x & 0xff, (x >> 8) & 0xff, (x >> 16) & 0xff, (x >>> 24) & 0xff)).join('');
      expect(str).toBe(s);
    }
  });

  it('HLT exits when intercepted, else halts', () => {
    const m = setup();
    m.cpu.state.rip = 0x1002n;
    m.rules.insn[InterceptInsn.HLT] = 1;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.INSTRUCTION);
    expect(m.cpu.exit.insn).toBe(InterceptInsn.HLT);
    expect(m.cpu.state.activity).toBe(0);
    m.rules.insn[InterceptInsn.HLT] = 0;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.state.activity).toBe(1);
    expect(m.cpu.state.rip).toBe(0x1003n);
  });

  it('IN/OUT exit with port, size, direction; else go to the port bus', () => {
    const m = setup();
    m.cpu.state.rip = 0x1003n;
    m.cpu.state.setGpr(0, 0x41n);
    m.cpu.state.setGpr(2, 0x3f8n);
    m.rules.ioExit = true;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.IO);
    const ex = m.cpu.exit;
    expect([ex.port, ex.size, ex.isIn, ex.isString, ex.immediate]).toEqual([0x80, 1, false, false, true]);
    m.rules.ioExit = false;
    const seen: number[] = [];
    const bus: PortBus = { in: (p) => (p === 0x3f8 ? 0x99 : 0), out: (p, _s, v) => { seen.push(p, v); } };
    m.cpu.ports = bus;
    m.cpu.runGuest(m.rules, 2);
    expect(seen).toEqual([0x80, 0x41]);
    expect(reg(m, 0) & 0xffn).toBe(0x99n);
  });

  it('string OUTS exits with isString/isRep/addrSize/segment', () => {
    const m = machine();
    longMode(m, 0x1000);
    // mov eax,0x41; mov edx,0x3f8; out dx,al; rep outsb
    load(m, 0x1000, hex('b8 41 00 00 00 ba f8 03 00 00 ee f3 6e'));
    m.rules.ioExit = true;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.IO);
    expect(m.cpu.exit.immediate).toBe(false);
    m.cpu.state.rip = 0x100bn;
    m.cpu.state.setGpr(1, 3n);
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.IO);
    const ex = m.cpu.exit;
    expect([ex.port, ex.isString, ex.isRep, ex.addrSize, ex.segment, ex.isIn]).toEqual([0x3f8, true, true, 8, 3, false]);
  });

  it('RDMSR/WRMSR exit with the index and EDX:EAX; else use the processor MSRs', () => {
    const m = setup();
    m.cpu.state.rip = 0x1006n;
    m.cpu.state.setGpr(1, 0xc0000082n);
    m.cpu.state.setGpr(0, 0x11223344n);
    m.cpu.state.setGpr(2, 0xffff8000n);
    m.rules.msrExit = true;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.MSR_READ);
    expect(m.cpu.exit.msrIndex).toBe(0xc0000082);
    m.cpu.state.rip = 0x1008n;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.MSR_WRITE);
    expect(m.cpu.exit.value).toBe(0xffff800011223344n);
    m.rules.msrExit = false;
    expect(m.cpu.runGuest(m.rules, 1)).toBe(GuestExitKind.BUDGET);
    expect(m.cpu.state.lstar).toBe(0xffff800011223344n);
    // Unknown MSR: #GP(0)
    m.cpu.state.rip = 0x1006n;
    m.cpu.state.setGpr(1, 0x12345n);
    m.rules.excExit.add(13);
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(13);
  });

  it('MOV to CR3 exits with the value and GPR', () => {
    const m = setup();
    m.cpu.state.rip = 0x100an;
    m.cpu.state.setGpr(0, 0x10000n);
    m.rules.crWrite.add(3);
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.CR_ACCESS);
    const ex = m.cpu.exit;
    expect([ex.crNumber, ex.crAccessType, ex.gpr, ex.value]).toEqual([3, CrAccessType.MOV_TO_CR, 0, 0x10000n]);
  });

  it('VMCALL exits when intercepted and is #UD otherwise', () => {
    const m = setup('amd');
    m.cpu.state.rip = 0x100dn;
    m.rules.insn[InterceptInsn.VMCALL] = 1;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.INSTRUCTION);
    expect(m.cpu.exit.insn).toBe(InterceptInsn.VMCALL);
    expect(m.cpu.exit.insnLength).toBe(3);
    m.rules.insn[InterceptInsn.VMCALL] = 0;
    m.rules.excExit.add(6);
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(6);
  });

  it('RDTSC, PAUSE and INVLPG exits', () => {
    const m = setup();
    m.cpu.state.rip = 0x1010n;
    m.rules.insn[InterceptInsn.RDTSC] = 1;
    m.rules.insn[InterceptInsn.PAUSE] = 1;
    m.rules.insn[InterceptInsn.INVLPG] = 1;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.INSTRUCTION);
    expect(m.cpu.exit.insn).toBe(InterceptInsn.RDTSC);
    m.cpu.state.rip = 0x1012n;
    m.cpu.runGuest(m.rules, 10);
    expect(m.cpu.exit.insn).toBe(InterceptInsn.PAUSE);
    m.cpu.state.rip = 0x1014n;
    m.cpu.state.setGpr(0, 0x5000n);
    m.cpu.runGuest(m.rules, 10);
    expect(m.cpu.exit.insn).toBe(InterceptInsn.INVLPG);
    expect(m.cpu.exit.faultAddress).toBe(0x5008n);
  });

  it('RDTSC not intercepted reads the deterministic TSC plus offset', () => {
    const m = setup();
    m.cpu.state.rip = 0x1010n;
    m.cpu.state.tsc = 1000n;
    m.cpu.state.tscOffset = 5n;
    m.cpu.runGuest(m.rules, 1);
    expect(reg(m, 0)).toBe(1005n);
    expect(m.cpu.state.tsc).toBe(1001n);
  });

  it('irq window, NMI window, kick, MTF and budget', () => {
    const m = setup();
    load(m, 0x1000, hex('90 90 90 90 90 90'));
    m.rules.irqWindowExiting = true;
    m.cpu.state.rflags = 0x2;
    expect(m.cpu.runGuest(m.rules, 3)).toBe(GuestExitKind.BUDGET);
    expect(m.cpu.state.instructionsRetired).toBe(3);
    m.cpu.state.rflags = 0x202;
    expect(m.cpu.runGuest(m.rules, 3)).toBe(GuestExitKind.INTERRUPT_WINDOW);
    m.rules.irqWindowExiting = false;
    m.rules.nmiWindowExiting = true;
    expect(m.cpu.runGuest(m.rules, 3)).toBe(GuestExitKind.NMI_WINDOW);
    m.rules.nmiWindowExiting = false;
    m.cpu.kick = true;
    expect(m.cpu.runGuest(m.rules, 3)).toBe(GuestExitKind.EXTERNAL_INTERRUPT);
    m.rules.monitorTrapFlag = true;
    expect(m.cpu.runGuest(m.rules, 3)).toBe(GuestExitKind.MONITOR_TRAP_FLAG);
    expect(m.cpu.state.instructionsRetired).toBe(4);
  });

  it('an unbacked GPA stops with MMIO before any side effect', () => {
    const m = machine('intel', 4);
    longMode(m, 0x1000);
    // identity map covers 4 MiB of a 4 MiB RAM: map 0x600000 (unbacked) with a 2 MiB page
    new DataView(m.ram.buffer).setBigUint64(0x12018, 0x600083n, true);
    // push rax; mov rax,[0x600010]; hlt
    load(m, 0x1000, hex('50 48 8b 04 25 10 00 60 00 f4'));
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.MMIO);
    const ex = m.cpu.exit;
    expect(ex.gpa).toBe(0x600010n);
    expect(ex.gla).toBe(0x600010n);
    expect(ex.access & ACCESS_READ).toBe(ACCESS_READ);
    expect(m.cpu.state.rip).toBe(0x1001n);
    expect(ex.insnLength).toBe(8);
    // Core emulates it:
    const bus: MmioBus = {
      read: (gpa, size, out) => { expect(gpa).toBe(0x600010n); expect(size).toBe(8); out.set([1, 2, 3, 4, 5, 6, 7, 8]); return true; },
      write: () => undefined,
    };
    expect(m.cpu.emulateInstruction(bus)).toBe(EmulationResult.DONE);
    expect(reg(m, 0)).toBe(0x0807060504030201n);
    expect(m.cpu.state.rip).toBe(0x1009n);
  });

  it('emulateInstruction abandons an MMIO read userspace must answer', () => {
    const m = machine('intel', 4);
    longMode(m, 0x1000);
    new DataView(m.ram.buffer).setBigUint64(0x12018, 0x600083n, true);
    load(m, 0x1000, hex('48 8b 04 25 10 00 60 00 f4'));
    m.cpu.state.setGpr(0, 77n);
    const bus: MmioBus = { read: () => false, write: () => undefined };
    expect(m.cpu.emulateInstruction(bus)).toBe(EmulationResult.NEEDS_USERSPACE_READ);
    expect(reg(m, 0)).toBe(77n);
    expect(m.cpu.state.rip).toBe(0x1000n);
    const writes: bigint[] = [];
    load(m, 0x1000, hex('48 89 04 25 10 00 60 00'));
    m.cpu.flushCode();
    const bus2: MmioBus = { read: () => false, write: (g, s, d) => { writes.push(g, BigInt(s), BigInt(d[0])); } };
    expect(m.cpu.emulateInstruction(bus2)).toBe(EmulationResult.DONE);
    expect(writes).toEqual([0x600010n, 8n, 77n]);
  });
});
