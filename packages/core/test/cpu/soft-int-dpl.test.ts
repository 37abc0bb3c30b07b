/**
 * The gate-DPL check of software-generated events (Intel SDM Vol. 3A 6.12.1.1): INT n, INT3
 * and INTO from CPL > gate DPL raise #GP(vector * 8 + 2) — through interrupt, trap and task
 * gates alike — while INT1/ICEBP, exceptions and external interrupts ignore the gate's DPL.
 * VM-entry injection of types 4 and 6 checks it as the instructions do; type 5 does not
 * (SDM 27.6.1.1).
 */
import { describe, it, expect } from '@jest/globals';
import { EventType, GuestExitKind } from '../../src/cpu/guest-mode';
import { gate32, hex, load, machine, Machine, protMode, reg, w32 } from './harness';

const IDT = 0x2000, TSS = 0x3000, GP_HANDLER = 0x4000, HANDLER = 0x5000, USER = 0x1000;

/** Flat 32-bit protected mode at CPL 3 (CS 0x33, SS/DS 0x3b), a TSS giving the ring-0 stack. */
function user(code: string): Machine {
  const m = machine();
  protMode(m, USER);
  const s = m.cpu.state;
  s.idtrBase = BigInt(IDT); s.idtrLimit = 0x7ff;
  s.segBaseLo[6] = TSS;
  w32(m, TSS + 4, 0x8000); // ESP0
  w32(m, TSS + 8, 0x10); // SS0
  for (let i = 0; i < 6; i++) { s.segSel[i] = 0x3b; s.segAttr[i] = 0xc0f3; }
  s.segSel[1] = 0x33; s.segAttr[1] = 0xc0fb;
  s.cpl = 3;
  load(m, USER, hex(code));
  // #GP: pop ecx (error code); mov edx, 0x6d; hlt
  load(m, GP_HANDLER, hex('59 ba 6d 00 00 00 f4'));
  gate32(m, IDT, 13, GP_HANDLER);
  // The event's own handler: mov edx, 0x11; hlt
  load(m, HANDLER, hex('ba 11 00 00 00 f4'));
  return m;
}

/** Run to the HLT of one of the handlers: 'gp' with its error code, or 'handler'. */
function outcome(m: Machine): { ran: 'gp' | 'handler'; err: number; cpl: number } {
  expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
  expect(m.cpu.hostError).toBeNull();
  const ran = reg(m, 2) === 0x6dn ? 'gp' : reg(m, 2) === 0x11n ? 'handler' : (() => { throw new Error(`edx ${reg(m, 2)}`); })();
  return { ran, err: Number(reg(m, 1)), cpl: m.cpu.state.cpl };
}

// INT 0x40 (cd 40), INT3 (cc), INTO with OF = 1 (mov al,0x7f; add al,1; into), INT1 (f1).
const INSNS: Array<[string, string, number, boolean]> = [
  ['INT 0x40', 'cd 40', 0x40, true],
  ['INT3', 'cc', 3, true],
  ['INTO', 'b0 7f 04 01 ce', 4, true],
  ['INT1/ICEBP', 'f1', 1, false],
];

describe('gate DPL check of INT n, INT3, INTO (not INT1)', () => {
  for (const [name, code, vec, checked] of INSNS) {
    it(`${name} from CPL 3 through a DPL-0 interrupt gate: ${checked ? `#GP(${vec}*8+2)` : 'delivered'}`, () => {
      const m = user(code);
      gate32(m, IDT, vec, HANDLER, 0);
      const r = outcome(m);
      if (checked) expect(r).toEqual({ ran: 'gp', err: vec * 8 + 2, cpl: 0 });
      else expect(r.ran).toBe('handler');
    });

    it(`${name} from CPL 3 through a DPL-3 trap gate is delivered`, () => {
      const m = user(code);
      gate32(m, IDT, vec, HANDLER, 3, 0xf);
      expect(outcome(m).ran).toBe('handler');
    });

    if (checked) {
      it(`${name} from CPL 3 through a DPL-0 task gate: #GP(${vec}*8+2) before any switch`, () => {
        const m = user(code);
        // Task gate (type 5) naming TSS selector 0x48; the check comes before the TSS is looked at.
        w32(m, IDT + vec * 8, 0x48 << 16);
        w32(m, IDT + vec * 8 + 4, 0x8500);
        m.rules.taskSwitchExits = false;
        expect(outcome(m)).toEqual({ ran: 'gp', err: vec * 8 + 2, cpl: 0 });
        expect(m.cpu.state.segSel[6]).toBe(0);
      });
    }
  }

  const INJECTED: Array<[string, EventType, number, boolean]> = [
    ['software interrupt (type 4)', EventType.SOFTWARE_INTERRUPT, 0x40, true],
    ['software exception #BP (type 6)', EventType.SOFTWARE_EXCEPTION, 3, true],
    ['privileged software exception #DB (type 5)', EventType.PRIVILEGED_SOFTWARE_EXCEPTION, 1, false],
    ['hardware exception #BP (type 3)', EventType.HARDWARE_EXCEPTION, 3, false],
  ];
  for (const [name, type, vec, checked] of INJECTED) {
    it(`an injected ${name} at CPL 3 through a DPL-0 gate: ${checked ? '#GP' : 'delivered'}`, () => {
      const m = user('90 f4');
      gate32(m, IDT, vec, HANDLER, 0);
      const inj = m.cpu.injection;
      inj.valid = true; inj.type = type; inj.vector = vec; inj.hasErrorCode = false; inj.errorCode = 0;
      inj.insnLength = type === EventType.HARDWARE_EXCEPTION ? 0 : 1;
      const r = outcome(m);
      if (checked) expect(r).toEqual({ ran: 'gp', err: vec * 8 + 2, cpl: 0 });
      else expect(r.ran).toBe('handler');
    });
  }
});
