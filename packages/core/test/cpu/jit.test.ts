/**
 * The block-compilation tier (cpu/jit.ts): compiled blocks must give exactly the interpreter's
 * results. Random programs built from the instruction forms the compiler specializes (and a
 * few it hands to the interpreter's handlers), looped often enough to be compiled, run in both
 * tiers from the same state and compared register by register, flag by flag, byte by byte,
 * with the same retired-instruction count. Plus: self-modifying code drops compiled blocks,
 * budgets are exact inside compiled loops, faults inside compiled code are precise.
 */
import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { hex, load, machine, longMode, Machine, protMode, realMode } from './harness';

function mach(tier: 'interpreter' | 'jit'): Machine {
  return machine('intel', 4, tier);
}

/** FNV-1a of a byte range. */
function hashOf(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 16777619);
  return h >>> 0;
}

/** xorshift32, seeded. */
function prng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return x >>> 0; };
}

const REGS = [0, 1, 2, 3, 5]; // EAX ECX EDX EBX EBP (ESI = data pointer, EDI = loop counter)
const modrm = (mod: number, reg: number, rm: number): number => (mod << 6) | ((reg & 7) << 3) | (rm & 7);

/** One random instruction (bytes). `bits` 32 or 64. */
function randomInsn(rnd: () => number, bits: number): number[] {
  const pick = <T>(a: T[]): T => a[rnd() % a.length];
  const r1 = pick(REGS), r2 = pick(REGS);
  const b8 = rnd() % 8; // AL..BH (no REX)
  const disp = (rnd() % 30) * 4 + (rnd() % 4);
  const w = bits === 64 && rnd() % 2 === 0 ? [0x48] : [];
  const o16 = rnd() % 6 === 0 ? [0x66] : [];
  const pre = o16.length ? o16 : w;
  const alu = pick([0x01, 0x09, 0x11, 0x19, 0x21, 0x29, 0x31, 0x39, 0x85]);
  const imm8 = rnd() % 2 ? rnd() % 4 : rnd() & 0xff; // small values make equal compares likely
  const imm32 = [rnd() & 0xff, rnd() & 0xff, rnd() & 0xff, rnd() & 0xff];
  switch (rnd() % 30) {
    case 0: case 1: case 2: return [...pre, alu, modrm(3, r2, r1)];
    case 3: return [alu - 1 === 0x84 ? 0x84 : alu - 1, modrm(3, rnd() % 8, b8)]; // 8-bit r/m, r
    case 4: case 5: return [...pre, 0x83, modrm(3, rnd() % 8, r1), imm8];
    case 6: return [...w, 0x81, modrm(3, rnd() % 8, r1), ...imm32];
    case 7: return [0x80, modrm(3, rnd() % 8, b8), imm8];
    case 8: return [...pre, 0xff, modrm(3, rnd() % 2, r1)]; // INC/DEC
    case 9: return [0xfe, modrm(3, rnd() % 2, b8)];
    case 10: return [...w, 0xc1, modrm(3, pick([4, 5, 7, 0, 1]), r1), rnd() % 70]; // SHL SHR SAR ROL ROR imm
    case 11: return [...w, 0xd1, modrm(3, pick([4, 5, 7]), r1)];
    case 12: return [...pre, 0x0f, 0xaf, modrm(3, r1, r2)]; // IMUL r, r/m
    case 13: return [0x6b, modrm(3, r1, r2), imm8]; // IMUL r, r/m, imm8
    case 14: return [0x0f, pick([0xa4, 0xac]), modrm(3, r2, r1), rnd() % 40]; // SHLD/SHRD r/m32, r32, imm8
    case 15: return [...pre, 0x0f, pick([0xb6, 0xbe]), modrm(3, r1, b8)]; // MOVZX/MOVSX r, r8
    case 16: return [...w, 0x0f, pick([0xb7, 0xbf]), modrm(3, r1, r2)];
    case 17: return [...w, 0x8d, modrm(1, r1, 4), (pick([0, 1, 2, 3]) << 6) | (r2 << 3) | r1, imm8]; // LEA r, [r1 + r2*s + d8]
    case 18: return [0x0f, 0x90 | (rnd() % 16), modrm(3, 0, b8)]; // SETcc r8
    case 19: return [...w, 0x0f, 0x40 | (rnd() % 16), modrm(3, r1, r2)]; // CMOVcc
    case 20: return [...pre, 0x89, modrm(1, r1, 6), disp]; // MOV [esi+d8], r
    case 21: return [...pre, 0x8b, modrm(1, r1, 6), disp]; // MOV r, [esi+d8]
    case 22: return [...pre, alu === 0x85 ? 0x85 : alu, modrm(1, r1, 6), disp]; // ALU [esi+d8], r (RMW)
    case 23: return [...pre, alu === 0x85 ? 0x03 : alu + 2, modrm(1, r1, 6), disp]; // ALU r, [esi+d8]
    case 24: return [0x80, modrm(1, rnd() % 8, 6), disp, imm8]; // ALU byte [esi+d8], imm8
    case 25: return [...w, 0x0f, 0xb6, modrm(1, r1, 6), disp]; // MOVZX r, byte [esi+d8]
    case 26: return [0xc6, modrm(1, 0, 6), disp, imm8]; // MOV byte [esi+d8], imm8
    case 27: return [...w, 0xb8 + r1, ...imm32, ...(w.length ? imm32 : [])]; // MOV r, imm
    case 28: return [0xf8 + (rnd() % 2)]; // CLC / STC (handler)
    default: return [...w, 0xff, modrm(1, rnd() % 2, 6), disp]; // INC/DEC [esi+d8] (handler)
  }
}

/** A program: setup, then a body of `len` random instructions (some guarded by Jcc) looped `iters` times, HLT. */
function randomProgram(seed: number, bits: number, iters: number): Uint8Array {
  const rnd = prng(seed);
  const out: number[] = [0xbf, iters & 0xff, (iters >>> 8) & 0xff, 0, 0]; // mov edi, iters
  const body: number[] = [];
  const len = 8 + (rnd() % 24);
  for (let i = 0; i < len; i++) {
    const insn = randomInsn(rnd, bits);
    if (rnd() % 6 === 0) body.push(0x70 | (rnd() % 16), insn.length); // Jcc over the next instruction
    body.push(...insn);
  }
  // dec edi; jnz body (rel32)
  body.push(0xff, 0xcf);
  const rel = -(body.length + 6);
  body.push(0x0f, 0x85, rel & 0xff, (rel >> 8) & 0xff, (rel >> 16) & 0xff, (rel >> 24) & 0xff);
  out.push(...body, 0xf4);
  return Uint8Array.from(out);
}

function runIn(tier: 'interpreter' | 'jit', bits: number, code: Uint8Array, init: number[]): Machine {
  const m = mach(tier);
  if (bits === 64) longMode(m, 0x1000); else protMode(m, 0x1000);
  load(m, 0x1000, code);
  for (let i = 0; i < 0x100; i++) m.ram[0x3000 + i] = (i * 37 + 11) & 0xff;
  const s = m.cpu.state;
  for (let i = 0; i < 16; i++) { s.gprLo[i] = init[i]; s.gprHi[i] = bits === 64 ? init[16 + i] : 0; }
  s.gprLo[6] = 0x3000; s.gprHi[6] = 0; s.gprLo[4] = 0x8000; s.gprHi[4] = 0;
  s.rflags = 2 | (init[32] & 0x8d5);
  let kind: GuestExitKind;
  do { kind = m.cpu.runGuest(m.rules, 1 + ((init[33] >>> 0) % 5000)); } while (kind === GuestExitKind.BUDGET);
  expect(kind).toBe(GuestExitKind.HALTED);
  return m;
}

describe('JIT tier', () => {
  for (const bits of [32, 64]) {
    it(`random ${bits}-bit programs: compiled blocks match the interpreter exactly`, () => {
      let compiled = 0, total = 0;
      for (let p = 0; p < 40; p++) {
        const seed = 0x5eed0000 + p * 7919 + bits;
        const code = randomProgram(seed, bits, 200 + (p % 3) * 37);
        const rnd = prng(seed ^ 0x1234567);
        const init = Array.from({ length: 34 }, () => (rnd() % 3 === 0 ? rnd() % 4 : rnd() | 0));
        const a = runIn('interpreter', bits, code, init);
        const b = runIn('jit', bits, code, init);
        const ctx = `seed ${seed.toString(16)} code ${Buffer.from(code).toString('hex')}`;
        for (let i = 0; i < 16; i++) {
          expect([ctx, i, a.cpu.state.getGpr(i).toString(16)]).toEqual([ctx, i, b.cpu.state.getGpr(i).toString(16)]);
        }
        expect([ctx, a.cpu.state.rflags.toString(16)]).toEqual([ctx, b.cpu.state.rflags.toString(16)]);
        expect([ctx, a.cpu.state.rip]).toEqual([ctx, b.cpu.state.rip]);
        expect([ctx, a.cpu.state.instructionsRetired]).toEqual([ctx, b.cpu.state.instructionsRetired]);
        expect(Buffer.from(a.ram.subarray(0x3000, 0x3100)).equals(Buffer.from(b.ram.subarray(0x3000, 0x3100)))).toBe(true);
        expect(a.cpu.stats.compiledInstructions).toBe(0);
        compiled += b.cpu.stats.compiledInstructions;
        total += b.cpu.state.instructionsRetired;
      }
      expect(compiled / total).toBeGreaterThan(0.4); // most of the work ran compiled
    });
  }

  it('random programs in 16-bit real mode (re-interpreted encodings, wild stores): both tiers agree', () => {
    let compiled = 0;
    for (let p = 0; p < 8; p++) {
      const seed = 0x16160000 + p * 104729;
      const code = randomProgram(seed, 32, 200);
      const rnd = prng(seed ^ 0x7654321);
      const init = Array.from({ length: 34 }, () => (rnd() % 3 === 0 ? rnd() % 4 : rnd() | 0));
      const res: string[] = [];
      for (const tier of ['interpreter', 'jit'] as const) {
        const m = mach(tier);
        realMode(m, 0x1000);
        load(m, 0x1000, code);
        const s = m.cpu.state;
        for (let i = 0; i < 8; i++) s.gprLo[i] = init[i] & 0xffff;
        s.gprLo[6] = 0x3000; s.gprLo[4] = 0x8000;
        s.rflags = 2 | (init[32] & 0x8d5);
        let total = 0;
        for (let n = 0; n < 400; n++) {
          const k = m.cpu.runGuest(m.rules, 1 + ((init[33] >>> 0) % 3000));
          total = s.instructionsRetired;
          if (k !== GuestExitKind.BUDGET || total > 50000) break;
        }
        const regs = Array.from({ length: 8 }, (_, i) => s.getGpr(i).toString(16)).join(',');
        res.push(`${regs} fl=${s.rflags.toString(16)} ip=${s.rip.toString(16)} n=${total} act=${s.activity} ` +
          Buffer.from(m.ram.subarray(0, 0x10000)).toString('base64').length + ':' + hashOf(m.ram.subarray(0, 0x10000)));
        if (tier === 'jit') compiled += m.cpu.stats.compiledInstructions;
      }
      expect([seed, res[1]]).toEqual([seed, res[0]]);
    }
    expect(compiled).toBeGreaterThan(10000);
  });

  it('self-modifying code drops a compiled loop and its successor sees the new bytes', () => {
    for (const tier of ['interpreter', 'jit'] as const) {
      const m = mach(tier);
      longMode(m, 0x1000);
      // 0x1000: mov ecx,300; xor eax,eax
      // 0x1007: l: add eax,1; dec ecx; jnz l           (compiled after 64 iterations)
      // 0x100e: cmp ebx,1; je done; mov byte [0x1009],2; mov ecx,300; mov ebx,1; jmp l
      // done: hlt          → eax = 300 * 1 + 300 * 2
      load(m, 0x1000, hex(`b9 2c 01 00 00 31 c0
        83 c0 01 ff c9 75 f9
        83 fb 01 74 14 c6 04 25 09 10 00 00 02 b9 2c 01 00 00 bb 01 00 00 00 eb e0
        f4`));
      expect(m.cpu.runGuest(m.rules, 10000)).toBe(GuestExitKind.HALTED);
      expect(m.cpu.state.getGpr(0)).toBe(900n);
      if (tier === 'jit') expect(m.cpu.stats.blocksCompiled).toBeGreaterThan(0);
    }
  });

  it('a store inside a compiled loop into its own code stops it after that instruction', () => {
    for (const tier of ['interpreter', 'jit'] as const) {
      const m = mach(tier);
      longMode(m, 0x1000);
      // 0x1000: mov ecx,200; xor eax,eax
      // 0x1007: l: add eax,1; mov byte [0x1500],cl; cmp ecx,100; jne skip; mov byte [0x1009],5; skip: dec ecx; jnz l; hlt
      // The first 100 iterations add 1, the rest add 5 (the immediate at 0x1009 is patched at ecx = 100).
      load(m, 0x1000, hex(`b9 c8 00 00 00 31 c0
        83 c0 01 88 0c 25 00 15 00 00 83 f9 64 75 08 c6 04 25 09 10 00 00 05 ff c9 75 e5 f4`));
      expect(m.cpu.runGuest(m.rules, 100000)).toBe(GuestExitKind.HALTED);
      expect(m.cpu.state.getGpr(0)).toBe(BigInt(101 * 1 + 99 * 5));
    }
  });

  it('budgets are exact inside a compiled loop, and retired counts add up', () => {
    const code = hex('b9 10 27 00 00 31 c0 83 c0 03 ff c9 75 f9 f4'); // mov ecx,10000; xor eax,eax; l: add eax,3; dec ecx; jnz l; hlt
    const counts: number[][] = [];
    for (const tier of ['interpreter', 'jit'] as const) {
      const m = mach(tier);
      longMode(m, 0x1000);
      load(m, 0x1000, code);
      const seen: number[] = [];
      for (;;) {
        const k = m.cpu.runGuest(m.rules, 777);
        seen.push(m.cpu.state.instructionsRetired, Number(m.cpu.state.getGpr(1)));
        if (k === GuestExitKind.HALTED) break;
        expect(k).toBe(GuestExitKind.BUDGET);
      }
      expect(m.cpu.state.instructionsRetired).toBe(2 + 3 * 10000 + 1);
      expect(m.cpu.state.getGpr(0)).toBe(30000n);
      counts.push(seen);
    }
    expect(counts[1]).toEqual(counts[0]);
  });

  it('a page fault inside a compiled block is precise (RIP, registers, flags)', () => {
    const res: string[] = [];
    for (const tier of ['interpreter', 'jit'] as const) {
      const m = mach(tier);
      longMode(m, 0x1000);
      m.rules.excExit.add(14);
      // mov ecx,100; mov rsi,0x3c0000; l: add eax,ecx; mov edx,[rsi]; add rsi,0x1000; sub ebx,1; dec ecx; jnz l; hlt
      load(m, 0x1000, hex('b9 64 00 00 00 48 c7 c6 00 00 3c 00 01 c8 8b 16 48 81 c6 00 10 00 00 83 eb 01 ff c9 75 ee f4'));
      // Map only the first 4 MiB (identityMap4 does): the access at 0x400000 is a #PF (not present).
      const k = m.cpu.runGuest(m.rules, 100000);
      const s = m.cpu.state;
      res.push([k, s.rip.toString(16), s.getGpr(0), s.getGpr(1), s.getGpr(3), s.getGpr(6).toString(16), s.rflags & 0x8d5, s.instructionsRetired].join(' '));
    }
    expect(res[1]).toEqual(res[0]);
  });
});
