import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { hex, load, machine, realMode, writeGdt, identityMap4, w32, reg } from './harness';

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
