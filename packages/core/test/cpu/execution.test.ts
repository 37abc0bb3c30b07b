import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { hex, load, longMode, machine, protMode, reg, realMode } from './harness';

describe('execution', () => {
  it('self-modifying code: a write into translated code is seen at once', () => {
    const m = machine();
    longMode(m, 0x1000);
    // mov ecx,5; xor eax,eax; l: add eax,1; inc byte [rip-7] (the immediate of the add); dec ecx; jnz l; hlt
    load(m, 0x1000, hex('b9 05 00 00 00 31 c0 83 c0 01 fe 05 f9 ff ff ff ff c9 75 f3 f4'));
    expect(m.cpu.runGuest(m.rules, 1000)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 0)).toBe(15n);
  });

  it('a store to the next instruction in the same block takes effect', () => {
    const m = machine();
    longMode(m, 0x1000);
    // mov byte [rip+0], 0x90 ... overwrite the following 'hlt'-free instruction:
    // c6 05 00 00 00 00 90 : mov byte [rip+0],0x90 → next byte (at 0x1007) becomes NOP
    // 0x1007: 0xcc (int3) would trap if executed unmodified; then 'mov eax,1; hlt'
    load(m, 0x1000, hex('c6 05 00 00 00 00 90 cc b8 01 00 00 00 f4'));
    m.rules.excExit.add(3);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 0)).toBe(1n);
  });

  it('notifyWrite drops translated code written by someone else', () => {
    const m = machine();
    longMode(m, 0x1000);
    load(m, 0x1000, hex('b8 01 00 00 00 f4'));
    m.cpu.runGuest(m.rules, 10);
    expect(reg(m, 0)).toBe(1n);
    m.ram[0x1001] = 2;
    m.cpu.notifyWrite(m.base + 0x1001, 1);
    m.cpu.state.rip = 0x1000n; m.cpu.state.activity = 0;
    m.cpu.runGuest(m.rules, 10);
    expect(reg(m, 0)).toBe(2n);
  });

  it('REP MOVSB / STOSB in 32-bit mode', () => {
    const m = machine();
    protMode(m, 0x1000);
    for (let i = 0; i < 16; i++) m.ram[0x2000 + i] = i + 1;
    load(m, 0x1000, hex('b9 10 00 00 00 be 00 20 00 00 bf 00 30 00 00 fc f3 a4 b0 5a b9 04 00 00 00 f3 aa f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect([...m.ram.subarray(0x3000, 0x3014)]).toEqual([...Array.from({ length: 16 }, (_, i) => i + 1), 0x5a, 0x5a, 0x5a, 0x5a]);
    expect(reg(m, 1)).toBe(0n);
    expect(reg(m, 7)).toBe(0x3014n);
  });

  it('64-bit flags: ADD overflow, MUL 128-bit product', () => {
    const m = machine();
    longMode(m, 0x1000);
    // mov rax,0x7fffffffffffffff; add rax,1; pushfq; pop rbx; mov rcx,-1; mov rdx,3; mul rdx; hlt
    load(m, 0x1000, hex('48 b8 ff ff ff ff ff ff ff 7f 48 83 c0 01 9c 5b 48 c7 c1 ff ff ff ff 48 c7 c2 03 00 00 00 48 f7 e2 f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    const f = Number(reg(m, 3));
    expect(f & 0x8d5).toBe(0x800 | 0x80 | 0x10 | 0x4); // OF SF AF PF; CF=0 ZF=0
    // rax = 0x8000000000000000 * 3 = 0x1_8000000000000000
    expect(reg(m, 0)).toBe(0x8000000000000000n);
    expect(reg(m, 2)).toBe(1n);
  });

  it('real-mode segment arithmetic and 16-bit wrap', () => {
    const m = machine();
    realMode(m, 0x1000);
    // mov ax,0x200; mov ds,ax; mov word [0x10],0x1234; mov bx,[0x10]; hlt
    load(m, 0x1000, hex('b8 00 02 8e d8 c7 06 10 00 34 12 8b 1e 10 00 f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(m.ram[0x2010]).toBe(0x34);
    expect(reg(m, 3) & 0xffffn).toBe(0x1234n);
  });
});

describe('REP MOVS / STOS page-run fast path', () => {
  function fnv(b: Uint8Array): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 16777619);
    return h >>> 0;
  }
  it('matches the element-wise path (forced by an armed data breakpoint elsewhere) on random cases', () => {
    let x = 0x2545f491;
    const rnd = (): number => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return x >>> 0; };
    for (let t = 0; t < 24; t++) {
      const bits = t % 2 ? 64 : 32;
      const op = [0xa4, 0xa5, 0xaa, 0xab][rnd() % 4];
      const pfx: number[] = [];
      if (op & 1) { const r = rnd() % 3; if (r === 1) pfx.push(0x66); else if (r === 2 && bits === 64) pfx.push(0x48); }
      const a16 = bits === 32 && rnd() % 4 === 0;
      if (a16) pfx.unshift(0x67);
      const std = rnd() % 2 === 1;
      const code = [...(std ? [0xfd] : [0xfc]), ...pfx, 0xf3, op, 0xf4];
      const base = a16 ? 0x4000 : 0x100000;
      const span = a16 ? 0xb000 : 0x40000;
      const rsi = base + (rnd() % span), dist = rnd() % 4 === 0 ? (rnd() % 17) - 8 : (rnd() % span) - span / 2;
      const rdi = Math.max(base, Math.min(base + span, rsi + dist));
      const rcx = rnd() % 4 === 0 ? rnd() % 9000 : rnd() % 300;
      const r0 = rnd() | 0, r0h = rnd() | 0;
      const res: string[] = [];
      for (const forceSlow of [false, true]) {
        const m = machine('intel', 4);
        // Code at 0x20000, outside every range the strings may write (16-bit offsets wrap within 64 KiB):
        // a REP overwriting its own bytes re-fetches at partial steps, which differ between the paths.
        if (bits === 64) longMode(m, 0x20000); else protMode(m, 0x20000);
        load(m, 0x20000, Uint8Array.from(code));
        for (let i = 0x100000; i < 0x160000; i += 4) m.ram[i] = (i >>> 2) & 0xff;
        for (let i = 0x4000; i < 0x10000; i += 3) m.ram[i] = i & 0xff;
        const s = m.cpu.state;
        s.gprLo[6] = rsi; s.gprLo[7] = rdi; s.gprLo[1] = rcx; s.gprLo[0] = r0; s.gprHi[0] = bits === 64 ? r0h : 0;
        if (forceSlow) { s.dr[0] = 0x3ff000n; s.dr7 = 0x000d0401n; }
        let k: GuestExitKind;
        let guard = 0;
        do { k = m.cpu.runGuest(m.rules, 100000); } while (k === GuestExitKind.BUDGET && ++guard < 1000);
        res.push([k, s.getGpr(1), s.getGpr(6).toString(16), s.getGpr(7).toString(16), s.rip, fnv(m.ram.subarray(0, 0x10000)), fnv(m.ram.subarray(0xc0000, 0x180000))].join(' '));
      }
      expect([t, code, res[0]]).toEqual([t, code, res[1]]);
    }
  });

  it('REP MOVSB with destination = source + 1 replicates the first byte (element order), across pages', () => {
    const m = machine();
    longMode(m, 0x1000);
    m.ram[0x200ff0] = 0x5a;
    // mov esi,0x200ff0; mov edi,0x200ff1; mov ecx,0x40; cld; rep movsb; hlt
    load(m, 0x1000, hex('be f0 0f 20 00 bf f1 0f 20 00 b9 40 00 00 00 fc f3 a4 f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect([...m.ram.subarray(0x200ff0, 0x201031)].every((b) => b === 0x5a)).toBe(true);
    expect(m.ram[0x201031]).toBe(0);
  });
});
