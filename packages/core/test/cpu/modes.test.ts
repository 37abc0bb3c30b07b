import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { hex, load, machine, realMode, writeGdt, identityMap4, w32, w64, r32, reg, protMode } from './harness';

describe('mode transitions', () => {
  it('boots real → protected → long mode and runs 64-bit code', () => {
    const m = machine();
    writeGdt(m);
    // GDTR image at 0x4f0: limit 0x5f, base 0x500
    m.ram[0x4f0] = 0x5f; m.ram[0x4f1] = 0; w32(m, 0x4f2, 0x500);
    identityMap4(m);
    // .code16: cli; lgdt [0x4f0]; mov eax,cr0; or al,1; mov cr0,eax; ljmp 0x08:pm32
    // .code32 pm32: mov ax,0x10; mov ds/es/ss,ax; mov esp,0x7000; cr4|=PAE; cr3=0x10000;
    //   EFER.LME via rdmsr/wrmsr; cr0|=PG; ljmp 0x18:lm64
    // .code64 lm64: mov rax,0x123456789abcdef0; mov rbx,rax; shr rbx,4; push rbx; pop rcx; hlt
    load(m, 0x1000, hex(`fa 0f 01 16 f0 04 0f 20 c0 0c 01 0f 22 c0 ea 13 10 08 00 66 b8 10 00 8e d8 8e c0 8e d0 bc 00 70 00 00
      0f 20 e0 83 c8 20 0f 22 e0 b8 00 00 01 00 0f 22 d8 b9 80 00 00 c0 0f 32 0d 00 01 00 00 0f 30 0f 20 c0 0d 00 00 00 80
      0f 22 c0 ea 53 10 00 00 18 00 48 b8 f0 de bc 9a 78 56 34 12 48 89 c3 48 c1 eb 04 53 59 f4`));
    realMode(m, 0x1000);
    const kind = m.cpu.runGuest(m.rules, 1000);
    expect(m.cpu.hostError).toBeNull();
    expect(kind).toBe(GuestExitKind.HALTED);
    const s = m.cpu.state;
    expect(s.activity).toBe(1);
    expect(reg(m, 0)).toBe(0x123456789abcdef0n);
    expect(reg(m, 3)).toBe(0x0123456789abcdefn);
    expect(reg(m, 1)).toBe(0x0123456789abcdefn);
    expect(s.efer & 0x500n).toBe(0x500n);
    expect(s.segSel[1]).toBe(0x18);
    expect(s.instructionsRetired).toBe(30);
    expect(s.tsc).toBe(30n);
  });
});

describe('call gates', () => {
  it('CALL through a 32-bit call gate to an inner privilege copies the gate\'s parameter count from the old stack', () => {
    const m = machine();
    protMode(m, 0x1000);
    // Gate 0x48: 32-bit call gate, DPL 3, target 0x08:0x1800, 2 parameters.
    const off = 0x1800;
    const lo = (0x08 << 16) | (off & 0xffff);
    const hi = (off & 0xffff0000) | 0x8000 | (3 << 13) | (0xc << 8) | 2;
    w64(m, 0x500 + 9 * 8, (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0));
    // TSS at base 0: ESP0 = 0x9000, SS0 = 0x10.
    w32(m, 4, 0x9000); w32(m, 8, 0x10);
    const s = m.cpu.state;
    s.segSel[1] = 0x33; s.segAttr[1] = 0xc0fb;
    for (const i of [0, 2, 3, 4, 5]) { s.segSel[i] = 0x3b; s.segAttr[i] = 0xc0f3; }
    s.cpl = 3;
    // push 0x11111111; push 0x22222222; call far 0x4b:0; (ring 0 at 0x1800:) hlt
    load(m, 0x1000, hex('68 11 11 11 11 68 22 22 22 22 9a 00 00 00 00 4b 00 f4'));
    load(m, 0x1800, hex('f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(s.cpl).toBe(0);
    expect(s.segSel[1]).toBe(0x08);
    expect(Number(reg(m, 4))).toBe(0x9000 - 6 * 4);
    const words = Array.from({ length: 6 }, (_, i) => r32(m, 0x9000 - 24 + i * 4));
    expect(words).toEqual([0x1011, 0x33, 0x22222222, 0x11111111, 0x6ff8, 0x3b]);
  });
});
