import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { longMode, machine, protMode, realMode, Machine } from './harness';

/** Deterministic xorshift32. */
function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return x >>> 0; };
}

const MODES: Array<[string, (m: Machine, ip: number) => void]> = [
  ['real', realMode],
  ['protected32', protMode],
  ['long64', longMode],
  ['compat32', (m, ip) => { longMode(m, ip); const s = m.cpu.state; s.segSel[1] = 0x08; s.segAttr[1] = 0xc09b; }],
];

describe('fuzz: random byte streams never hurt the host', () => {
  for (const [name, setup] of MODES) {
    it(`${name}: seeded random code runs to a defined exit`, () => {
      const next = rng(0x5eed + name.length * 977);
      const kinds = new Map<number, number>();
      for (let round = 0; round < 60; round++) {
        const m = machine(round & 1 ? 'amd' : 'intel', 4);
        setup(m, 0x8000);
        // Random code over 4 pages and random bytes in the IDT/GDT area half of the time.
        for (let i = 0x8000; i < 0xc000; i++) m.ram[i] = next() & 0xff;
        if (round & 2) for (let i = 0x2000; i < 0x2400; i++) m.ram[i] = next() & 0xff;
        const all = round % 3 === 0;
        m.rules.exceptionExits = () => all;
        m.rules.shutdownExits = (round & 4) !== 0;
        m.rules.ioExits = (p) => (p & 1) === 0;
        m.rules.msrExits = (i) => (i & 1) === 0;
        for (let step = 0; step < 40; step++) {
          const k = m.cpu.runGuest(m.rules, 500);
          expect(m.cpu.hostError).toBeNull();
          kinds.set(k, (kinds.get(k) ?? 0) + 1);
          if (k === GuestExitKind.SHUTDOWN || k === GuestExitKind.TRIPLE_FAULT) break;
          if (k === GuestExitKind.HALTED) { m.cpu.state.activity = 0; continue; }
          if (k !== GuestExitKind.BUDGET) {
            // Skip the exiting instruction like a backend would (or a byte, when it has no length).
            const len = m.cpu.exit.insnLength || 1;
            m.cpu.state.rip = m.cpu.state.rip + BigInt(len);
          }
        }
      }
      expect(kinds.size).toBeGreaterThan(1);
    });
  }
});
