/**
 * The instruction-set extensions of cpu/ext.ts: BCD adjusts, SALC, POPCNT/LZCNT/TZCNT, MOVBE,
 * CRC32, BMI1/BMI2, ADCX/ADOX, with values from the SDM's examples and definitions (the
 * differential harness in test/diff covers random inputs against the host), and the CPUID
 * bits that advertise them.
 */
import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { hex, load, longMode, machine, protMode, reg, realMode } from './harness';

const CF = 1, PF = 4, AF = 0x10, ZF = 0x40, SF = 0x80, OF = 0x800;
const STATUS = CF | PF | AF | ZF | SF | OF;

function run32(code: string) {
  const m = machine();
  protMode(m, 0x1000);
  load(m, 0x1000, hex(code));
  const kind = m.cpu.runGuest(m.rules, 1000);
  return { m, kind };
}
function run64(code: string) {
  const m = machine();
  longMode(m, 0x1000);
  load(m, 0x1000, hex(code));
  const kind = m.cpu.runGuest(m.rules, 1000);
  return { m, kind };
}
const lo16 = (v: bigint): number => Number(v & 0xffffn);

describe('BCD adjusts and SALC (32-bit protected mode)', () => {
  it('DAA / DAS (SDM examples), AAA / AAS', () => {
    // mov al,0x79; mov bl,0x35; add al,bl; daa; pushfd; pop ecx; mov dl,al
    // mov al,0x35; sub al,0x47; das; pushfd; pop esi; mov dh,al
    // mov ax,8; add al,9; aaa; mov bx,ax; mov ax,0x0203; sub al,5; aas; mov di,ax; hlt
    const { m, kind } = run32('b0 79 b3 35 00 d8 27 9c 59 88 c2 b0 35 2c 47 2f 9c 5e 88 c6 66 b8 08 00 04 09 37 66 89 c3 66 b8 03 02 2c 05 3f 66 89 c7 f4');
    expect(kind).toBe(GuestExitKind.HALTED);
    expect(lo16(reg(m, 2)) & 0xff).toBe(0x14); // 79 + 35 = 114 (BCD)
    expect(Number(reg(m, 1)) & (STATUS & ~OF)).toBe(CF | AF | PF);
    expect(lo16(reg(m, 2)) >> 8).toBe(0x88); // 35 - 47 = -12 → 88 with borrow
    expect(Number(reg(m, 6)) & (STATUS & ~OF)).toBe(CF | AF | PF | SF);
    expect(lo16(reg(m, 3))).toBe(0x0107); // 8 + 9 = 17 → AH=1, AL=7
    expect(lo16(reg(m, 7))).toBe(0x0108); // 0x0203: 3 - 5 → AH=1, AL=8
  });

  it('AAM / AAD with base 10 and 16, SALC', () => {
    // mov ax,0x3f; aam; mov bx,ax; mov ax,0x3f; aam 16; mov cx,ax; mov ax,0x0603; aad; mov dx,ax
    // mov ax,0x0102; aad 16; mov si,ax; stc; salc; mov edi,eax; clc; salc; mov ebp,eax; hlt
    const { m, kind } = run32('66 b8 3f 00 d4 0a 66 89 c3 66 b8 3f 00 d4 10 66 89 c1 66 b8 03 06 d5 0a 66 89 c2 66 b8 02 01 d5 10 66 89 c6 f9 d6 89 c7 f8 d6 89 c5 f4');
    expect(kind).toBe(GuestExitKind.HALTED);
    expect(lo16(reg(m, 3))).toBe(0x0603);
    expect(lo16(reg(m, 1))).toBe(0x030f);
    expect(lo16(reg(m, 2))).toBe(0x003f);
    expect(lo16(reg(m, 6))).toBe(0x0012);
    expect(reg(m, 7)).toBe(0xffn);
    expect(reg(m, 5)).toBe(0n);
  });

  it('AAM 0 raises #DE', () => {
    const m = machine();
    protMode(m, 0x1000);
    m.rules.excExit.add(0);
    load(m, 0x1000, hex('b0 05 d4 00 f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(0);
    expect(m.cpu.state.rip).toBe(0x1002n);
  });

  it('BCD adjusts and SALC are #UD in 64-bit mode', () => {
    for (const b of ['27', '2f', '37', '3f', 'd4 0a', 'd5 0a', 'd6']) {
      const m = machine();
      longMode(m, 0x1000);
      m.rules.excExit.add(6);
      load(m, 0x1000, hex(b + ' f4'));
      expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.EXCEPTION);
      expect(m.cpu.exit.vector).toBe(6);
    }
  });

  it('DAA works in real mode too', () => {
    const m = machine();
    realMode(m, 0x1000);
    load(m, 0x1000, hex('b0 79 b3 35 00 d8 27 f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(Number(reg(m, 0)) & 0xff).toBe(0x14);
  });
});

describe('bit counts, MOVBE, CRC32 (64-bit)', () => {
  it('POPCNT / LZCNT / TZCNT values and flags', () => {
    // mov rbx,0xf0f0f0f0f0f0f0f0; popcnt rax,rbx; mov ebx,0x10000; lzcnt ecx,ebx; xor ebx,ebx; lzcnt rdx,rbx
    // pushfq; pop r8; mov rbx,1<<63; tzcnt rsi,rbx; tzcnt di,bx; pushfq; pop r9; popcnt r10,rbx; popcnt r11,r12
    // pushfq; pop r12; hlt
    const { m, kind } = run64('48 bb f0 f0 f0 f0 f0 f0 f0 f0 f3 48 0f b8 c3 bb 00 00 01 00 f3 0f bd cb 31 db f3 48 0f bd d3 9c 41 58 48 bb 00 00 00 00 00 00 00 80 f3 48 0f bc f3 66 f3 0f bc fb 9c 41 59 f3 4c 0f b8 d3 f3 4d 0f b8 dc 9c 41 5c f4');
    expect(kind).toBe(GuestExitKind.HALTED);
    expect(reg(m, 0)).toBe(32n);
    expect(reg(m, 1)).toBe(15n);
    expect(reg(m, 2)).toBe(64n);
    expect(Number(reg(m, 8)) & (CF | ZF)).toBe(CF);
    expect(reg(m, 6)).toBe(63n);
    expect(lo16(reg(m, 7))).toBe(16);
    expect(Number(reg(m, 9)) & (CF | ZF)).toBe(CF);
    expect(reg(m, 10)).toBe(1n);
    expect(reg(m, 11)).toBe(0n);
    expect(Number(reg(m, 12)) & STATUS).toBe(ZF);
  });

  it('MOVBE loads and stores byte-reversed', () => {
    // mov dword [0x3000],0x11223344; movbe eax,[0x3000]; mov rbx,0x0102030405060708; movbe [0x3008],rbx
    // mov rcx,[0x3008]; movbe dx,[0x3000]; hlt
    const { m, kind } = run64('c7 04 25 00 30 00 00 44 33 22 11 0f 38 f0 04 25 00 30 00 00 48 bb 08 07 06 05 04 03 02 01 48 0f 38 f1 1c 25 08 30 00 00 48 8b 0c 25 08 30 00 00 66 0f 38 f0 14 25 00 30 00 00 f4');
    expect(kind).toBe(GuestExitKind.HALTED);
    expect(reg(m, 0)).toBe(0x44332211n);
    expect(reg(m, 1)).toBe(0x0807060504030201n);
    expect(lo16(reg(m, 2))).toBe(0x4433);
  });

  it('CRC32 computes CRC-32C: check value of "123456789" is 0xE3069283', () => {
    // memory and register forms, 8/32/64-bit sources, with the conventional ~0 init and final NOT.
    const { m, kind } = run64('48 b8 31 32 33 34 35 36 37 38 48 89 04 25 00 30 00 00 c6 04 25 08 30 00 00 39 b8 ff ff ff ff f2 48 0f 38 f1 04 25 00 30 00 00 f2 0f 38 f0 04 25 08 30 00 00 f7 d0 bb ff ff ff ff 48 b9 31 32 33 34 35 36 37 38 f2 0f 38 f1 d9 48 c1 e9 20 f2 0f 38 f1 d9 b1 39 f2 0f 38 f0 d9 f7 d3 f4');
    expect(kind).toBe(GuestExitKind.HALTED);
    expect(reg(m, 0)).toBe(0xe3069283n);
    expect(reg(m, 3)).toBe(0xe3069283n);
  });
});

describe('BMI1 / BMI2 / ADX (64-bit)', () => {
  it('ANDN BEXTR BLSI BLSMSK BLSR BZHI PDEP PEXT', () => {
    const { m, kind } = run64('48 bb 00 ff 00 ff 00 ff 00 ff 48 b9 0f 0f 0f 0f 0f 0f 0f 0f c4 e2 e0 f2 c1 ba 04 08 00 00 c4 e2 e8 f7 f3 48 c7 c7 00 0f 0f 00 c4 e2 b8 f3 df c4 e2 b0 f3 d7 c4 e2 a8 f3 cf ba 0c 00 00 00 c4 62 e8 f5 db ba 0b 00 00 00 49 c7 c4 f0 00 00 00 c4 42 eb f5 ec ba cd ab 00 00 41 bc 00 ff 00 00 c4 42 ea f5 f4 f4');
    expect(kind).toBe(GuestExitKind.HALTED);
    expect(reg(m, 0)).toBe(0x000f000f000f000fn); // andn rax, rbx, rcx
    expect(reg(m, 6)).toBe(0xf0n); // bextr rsi, rbx, start 4 len 8
    expect(reg(m, 8)).toBe(0x100n); // blsi
    expect(reg(m, 9)).toBe(0x1ffn); // blsmsk
    expect(reg(m, 10)).toBe(0xf0e00n); // blsr
    expect(reg(m, 11)).toBe(0xf00n); // bzhi 12
    expect(reg(m, 13)).toBe(0xb0n); // pdep 0b1011 into mask 0xf0
    expect(reg(m, 14)).toBe(0xabn); // pext 0xabcd with mask 0xff00
  });

  it('MULX RORX SARX SHLX SHRX', () => {
    const { m, kind } = run64('48 c7 c2 ff ff ff ff 48 c7 c3 ff ff ff ff c4 e2 fb f6 cb 48 be 01 00 00 00 00 00 00 80 c4 e3 fb f0 fe 04 41 b8 41 00 00 00 c4 62 ba f7 ce c4 62 b9 f7 d6 c4 62 bb f7 de 41 bc 01 00 00 80 c4 43 7b f0 ec 01 f4');
    expect(kind).toBe(GuestExitKind.HALTED);
    expect(reg(m, 1)).toBe(0xfffffffffffffffen); // mulx high
    expect(reg(m, 0)).toBe(1n); // mulx low
    expect(reg(m, 7)).toBe(0x1800000000000000n); // rorx 4
    expect(reg(m, 9)).toBe(0xc000000000000000n); // sarx by 65 & 63
    expect(reg(m, 10)).toBe(2n); // shlx
    expect(reg(m, 11)).toBe(0x4000000000000000n); // shrx
    expect(reg(m, 13)).toBe(0xc0000000n); // rorx r13d, r12d, 1
  });

  it('ADCX uses and sets only CF, ADOX only OF', () => {
    const { m, kind } = run64('48 c7 c0 ff ff ff ff 48 c7 c3 01 00 00 00 31 c9 f9 66 48 0f 38 f6 c3 0f 92 c1 48 c7 c2 ff ff ff ff 48 c7 c6 02 00 00 00 49 c7 c0 ff ff ff 7f 41 83 c0 01 f3 48 0f 38 f6 d6 41 0f 90 c1 9c 41 5a f4');
    expect(kind).toBe(GuestExitKind.HALTED);
    expect(reg(m, 0)).toBe(1n);
    expect(reg(m, 1)).toBe(1n);
    expect(reg(m, 2)).toBe(2n);
    expect(reg(m, 9) & 0xffn).toBe(1n);
    expect(Number(reg(m, 10)) & (CF | OF | SF)).toBe(OF | SF);
  });

  it('BLSI / BLSMSK / BZHI flags on edge inputs', () => {
    const { m, kind } = run64('31 db c4 e2 f8 f3 db 9c 41 58 c4 e2 f8 f3 d3 9c 41 59 ba 40 00 00 00 c4 e2 e8 f5 c8 9c 41 5a f4');
    expect(kind).toBe(GuestExitKind.HALTED);
    expect(Number(reg(m, 8)) & (CF | ZF | SF | OF)).toBe(ZF);
    expect(Number(reg(m, 9)) & (CF | ZF | SF | OF)).toBe(CF | SF);
    expect(Number(reg(m, 10)) & (CF | ZF | SF | OF)).toBe(CF | SF);
    expect(reg(m, 1)).toBe(0xffffffffffffffffn);
  });

  it('VEX-encoded BMI is #UD in real mode', () => {
    const m = machine();
    realMode(m, 0x1000);
    m.rules.excExit.add(6);
    // andn eax, ebx, ecx (VEX with ModRM.mod = 11 decodes as VEX in real mode too)
    load(m, 0x1000, hex('c4 e2 60 f2 c1 f4'));
    expect(m.cpu.runGuest(m.rules, 10)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(6);
  });
});

describe('CPUID advertises the extensions', () => {
  it('leaf 1 ECX MOVBE/POPCNT, leaf 7 EBX BMI1/BMI2/ADX, 0x80000001 ECX ABM; not SSE4.2', () => {
    const m = machine();
    const out = new Int32Array(4);
    m.cpu.cpuid(1, 0, out);
    expect(out[2] & (1 << 22)).not.toBe(0);
    expect(out[2] & (1 << 23)).not.toBe(0);
    expect(out[2] & (1 << 20)).toBe(0);
    m.cpu.cpuid(7, 0, out);
    expect(out[1] & ((1 << 3) | (1 << 8) | (1 << 19))).toBe((1 << 3) | (1 << 8) | (1 << 19));
    m.cpu.cpuid(0x80000001, 0, out);
    expect(out[2] & (1 << 5)).not.toBe(0);
  });
});

describe('DIV / IDIV without BigInt (32-bit limbs)', () => {
  it('128/64 unsigned and signed, with small and large divisors, and the #DE overflow cases', () => {
    // div rcx: 2^64 / 3; 2^64 / (2^32+1); idiv: -7 / 2; -2^63 / 1; -2^63 / -1 (#DE)
    const m = machine();
    longMode(m, 0x1000);
    m.rules.excExit.add(0);
    load(m, 0x1000, hex('ba 01 00 00 00 31 c0 b9 03 00 00 00 48 f7 f1 49 89 c0 49 89 d1 ba 01 00 00 00 31 c0 48 b9 01 00 00 00 01 00 00 00 48 f7 f1 49 89 c2 49 89 d3 48 c7 c0 f9 ff ff ff 48 99 b9 02 00 00 00 48 f7 f9 49 89 c4 49 89 d5 48 b8 00 00 00 00 00 00 00 80 48 99 b9 01 00 00 00 48 f7 f9 49 89 c6 48 b8 00 00 00 00 00 00 00 80 48 99 48 c7 c1 ff ff ff ff 48 f7 f9 f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(0);
    expect(reg(m, 8)).toBe(0x5555555555555555n);
    expect(reg(m, 9)).toBe(1n);
    expect(reg(m, 10)).toBe(0xffffffffn);
    expect(reg(m, 11)).toBe(1n);
    expect(reg(m, 12)).toBe(BigInt.asUintN(64, -3n));
    expect(reg(m, 13)).toBe(BigInt.asUintN(64, -1n));
    expect(reg(m, 14)).toBe(0x8000000000000000n);
  });

  it('64/32 signed and unsigned with EDX != 0', () => {
    // edx:eax = -7; idiv 2 → -3 r -1; edx:eax = 0x5_00001234; div 7
    const { m, kind } = run32('ba ff ff ff ff b8 f9 ff ff ff b9 02 00 00 00 f7 f9 89 c6 89 d7 ba 05 00 00 00 b8 34 12 00 00 b9 07 00 00 00 f7 f1 89 c3 89 d5 f4');
    expect(kind).toBe(GuestExitKind.HALTED);
    expect(reg(m, 6)).toBe(0xfffffffdn);
    expect(reg(m, 7)).toBe(0xffffffffn);
    expect(reg(m, 3)).toBe(0xb6db7050n);
    expect(reg(m, 5)).toBe(4n);
  });
});
