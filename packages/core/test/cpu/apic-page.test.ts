/**
 * The APIC-page seam (GuestModeRules.apicPage / cr8) and the INIT/SIPI inputs, on the bare
 * processor: every access to the page reaches the handler (nothing cached), a page-crossing
 * access hands over only its part on the page, a trap-like result stops the guest after the
 * instruction retired, fetches can exit, and CR8 can be virtualized.
 */
import { describe, it, expect } from '@jest/globals';
import {
  APIC_ACCESS_DONE, APIC_ACCESS_DONE_TRAP, APIC_ACCESS_EXIT, ApicPageHandler, GuestExit, GuestExitKind,
} from '../../src/cpu/guest-mode';
import { hex, load, longMode, machine, protMode, w32 } from './harness';

class LogHandler implements ApicPageHandler {
  gpaPage = 0x3000;
  hpaPage = -1;
  readonly result = new Uint32Array(2);
  readonly log: [number, number, number, number][] = [];
  access(offset: number, size: number, kind: number, lo: number, _hi: number, exit: GuestExit): number {
    this.log.push([offset, size, kind, lo]);
    if (kind === 2) { exit.kind = GuestExitKind.APIC_ACCESS; exit.gpa = BigInt(offset); return APIC_ACCESS_EXIT; }
    if (kind === 1) { exit.kind = GuestExitKind.APIC_WRITE; exit.gpa = BigInt(offset); return APIC_ACCESS_DONE_TRAP; }
    this.result[0] = offset === 0x80 ? 0xaabbccdd : 0x1234;
    this.result[1] = 0;
    return APIC_ACCESS_DONE;
  }
}

describe('the APIC-page seam', () => {
  it('reads and writes go to the handler every time, crossing accesses in part, writes trap after the instruction', () => {
    const m = machine();
    protMode(m, 0x1000);
    load(m, 0x1000, hex(`
      a1 80 30 00 00                 # mov eax, [0x3080]
      c7 05 b0 30 00 00 05 00 00 00  # mov dword [0x30b0], 5
      8b 1d fe 2f 00 00              # mov ebx, [0x2ffe]   (2 bytes of RAM, 2 of the APIC page)
      a1 80 30 00 00                 # mov eax, [0x3080]
      f4                             # hlt`));
    w32(m, 0x2ffc, 0xbeef0000);
    const h = new LogHandler();
    m.rules.apicPage = h;
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.APIC_WRITE);
    expect(m.cpu.exit.gpa).toBe(0xb0n);
    expect(m.cpu.state.rip).toBe(0x100fn); // trap-like: after the write retired
    expect(m.cpu.state.instructionsRetired).toBe(2);
    expect(m.cpu.state.getGpr(0)).toBe(0xaabbccddn);
    expect(m.ram[0x30b0]).toBe(0); // the write went to the handler, not to memory
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.state.getGpr(3)).toBe(0x1234beefn);
    expect(h.log).toEqual([[0x80, 4, 0, 0], [0xb0, 4, 1, 5], [0, 2, 0, 0], [0x80, 4, 0, 0]]);
  });

  it('a trap-like write inside a hot (compiled) loop stops right after that write', () => {
    const m = machine();
    protMode(m, 0x1000);
    load(m, 0x1000, hex(`
      b9 c8 00 00 00        # mov ecx, 200
      89 0d b0 30 00 00     # l: mov [0x30b0], ecx
      49                    # dec ecx
      75 f7                 # jnz l
      f4                    # hlt`));
    const seen: number[] = [];
    m.rules.apicPage = {
      gpaPage: 0x3000, hpaPage: -1, result: new Uint32Array(2),
      access(_o: number, _s: number, _k: number, lo: number, _hi: number, exit: GuestExit): number {
        seen.push(lo);
        if (lo !== 3) return APIC_ACCESS_DONE;
        exit.kind = GuestExitKind.APIC_WRITE;
        return APIC_ACCESS_DONE_TRAP;
      },
    };
    expect(m.cpu.runGuest(m.rules, 10_000)).toBe(GuestExitKind.APIC_WRITE);
    expect(seen.length).toBe(198);
    expect(m.cpu.state.rip).toBe(0x100bn); // after the MOV that wrote 3
    expect(m.cpu.state.getGpr(1)).toBe(3n);
    expect(m.cpu.state.instructionsRetired).toBe(1 + 197 * 3 + 1);
    expect(m.cpu.stats.compiledRuns).toBeGreaterThan(0);
  });

  it('a fetch from the page exits when the handler says so; without a handler the page is memory', () => {
    const m = machine();
    protMode(m, 0x1000);
    load(m, 0x1000, hex('e9 fb 1f 00 00')); // jmp 0x3000
    load(m, 0x3000, hex('f4'));
    const h = new LogHandler();
    m.rules.apicPage = h;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.APIC_ACCESS);
    expect(m.cpu.state.rip).toBe(0x3000n);
    expect(h.log).toEqual([[0, 1, 2, 0]]);
    m.rules.apicPage = null;
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.HALTED);
  });

  it('CR8 virtualization: MOV CR8 reads and writes through the rules, a trap stops after the instruction', () => {
    const m = machine();
    longMode(m, 0x1000);
    load(m, 0x1000, hex(`
      b8 07 00 00 00   # mov eax, 7
      44 0f 22 c0      # mov cr8, rax
      44 0f 20 c3      # mov rbx, cr8
      f4               # hlt`));
    let vtpr = 0;
    m.rules.cr8 = {
      read: () => vtpr >> 4,
      write: (v: number, exit: GuestExit) => { vtpr = v << 4; exit.kind = GuestExitKind.TPR_BELOW_THRESHOLD; return APIC_ACCESS_DONE_TRAP; },
    };
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.TPR_BELOW_THRESHOLD);
    expect(vtpr).toBe(0x70);
    expect(m.cpu.state.rip).toBe(0x1009n);
    expect(m.cpu.state.cr8).toBe(0n); // the processor's own CR8 is untouched
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.state.getGpr(3)).toBe(7n);
  });
});

describe('INIT and SIPI without exits', () => {
  it('INIT puts the processor in wait-for-SIPI in its INIT state; a SIPI starts it at vector:0000', () => {
    const m = machine();
    protMode(m, 0x1000);
    load(m, 0x1000, hex('eb fe')); // jmp $
    load(m, 0x8000, hex('f4')); // hlt
    m.cpu.signalInit();
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.state.activity).toBe(3);
    expect(m.cpu.state.cr0 & 1n).toBe(0n);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED); // still waiting
    m.cpu.signalSipi(0x08);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.state.activity).toBe(1); // the HLT at 0800:0000 ran
    expect(m.cpu.state.segSel[1]).toBe(0x800);
    expect(m.cpu.state.rip).toBe(1n);
  });
});
