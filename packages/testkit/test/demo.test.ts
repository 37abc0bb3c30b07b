import {
  DEMO_BANNER_PREFIX,
  DEMO_FS_BASE,
  DEMO_POST_CODE,
  MSR_FS_BASE,
  buildDemoGuest,
  demoExpectedOutput,
  disassemble,
  disassembleRange,
  texts,
} from '../src';

const h = (n: number) => `0x${n.toString(16)}`;

describe('demo guest', () => {
  const g = buildDemoGuest();
  const sec = (name: string) => g.assembled.sections.find((s) => s.name === name)!;

  test('load information', () => {
    expect(g.loadAddress).toBe(0x7c00);
    expect(g.entry).toBe(0x7c00);
    expect([g.cs, g.ip]).toEqual([0, 0x7c00]);
    expect(g.image.length).toBeLessThan(1024);
    expect(g.fsBase).toBe(DEMO_FS_BASE);
    expect(g.postCode).toBe(DEMO_POST_CODE);
    // canonical: bits 63:47 all equal
    const top = DEMO_FS_BASE >> 47n;
    expect(top === 0n || top === (1n << 17n) - 1n).toBe(true);
    expect(MSR_FS_BASE).toBe(0xc0000100);
  });

  test('decodes as 16-bit, then 32-bit, then 64-bit code', () => {
    const real = disassembleRange(g.assembled, sec('real16').start, sec('real16').end, { count: 9 });
    expect(real[0].text).toBe('cli');
    expect(real[8].text).toBe(`jmp 8:${h(sec('prot32').start)}`);
    const prot = texts(disassembleRange(g.assembled, sec('prot32').start, sec('prot32').end));
    expect(prot[0]).toBe('mov eax, 0x10');
    expect(prot[prot.length - 1]).toBe(`jmp 0x18:${h(sec('long64').start)}`);
    expect(prot).toContain('wrmsr');
  });

  test('64-bit stage: banner with the CPUID vendor, WRMSR FS base, port I/O, HLT loop', () => {
    const s = sec('long64');
    const main = g.assembled.addressOf(g.labels.main);
    const halt = g.haltAddress;
    const serialWrite = g.assembled.addressOf(g.labels.serialWrite);
    const prefix = g.symbols[Object.keys(g.symbols).find((k) => k.startsWith('str_tsvisor'))!];
    const lines = disassembleRange(g.assembled, main, halt + 3);
    const nextLoop = lines[1].address; // print loop head
    const done = lines.find((l) => l.text === 'xor eax, eax')!.address;
    const newline = lines.find((l) => l.text.startsWith('lea rsi') && l.address > done)!.text.match(/0x[0-9a-f]+/)![0];
    expect(texts(lines)).toEqual([
      // serialPrint(prefix)
      `lea rsi, [rel ${h(prefix)}]`,
      'mov dx, 0x3f8',
      'mov al, [rsi]',
      'test al, al',
      `je ${h(done)}`,
      'out dx, al',
      'inc rsi',
      `jmp ${h(nextLoop + 4)}`,
      // vendor
      'xor eax, eax',
      'cpuid',
      'sub rsp, 0x10',
      'mov [rsp], ebx',
      'mov [rsp+4], edx',
      'mov [rsp+8], ecx',
      'mov rsi, rsp',
      'mov ecx, 0xc',
      `call ${h(serialWrite)}`,
      'add rsp, 0x10',
      `lea rsi, [rel ${newline}]`,
      'mov ecx, 1',
      `call ${h(serialWrite)}`,
      // FS base
      'mov ecx, 0xc0000100',
      'mov eax, 0x1000',
      'mov edx, 0x7e57',
      'wrmsr',
      // port I/O
      'mov dx, 0x3fd',
      'in al, dx',
      `mov al, ${h(DEMO_POST_CODE)}`,
      'out 0x80, al',
      // halt
      'cli',
      'hlt',
      `jmp ${h(halt)}`,
    ]);
    expect(main).toBe(g.symbols.boot_long_user);
    expect(s.bitness).toBe(64);
  });

  test('the serial write routine', () => {
    const at = g.assembled.addressOf(g.labels.serialWrite);
    const lines = texts(disassembleRange(g.assembled, at, g.assembled.end, { count: 7 }));
    expect(lines).toEqual([
      'test rcx, rcx',
      `je ${h(at + 0x11)}`,
      'mov dx, 0x3f8',
      'mov al, [rsi]',
      'out dx, al',
      'inc rsi',
      `loop ${h(at + 9)}`,
    ]);
    expect(texts(disassembleRange(g.assembled, at + 0x11, at + 0x12))).toEqual(['ret']);
  });

  test('strings in the image', () => {
    const text = new TextDecoder().decode(g.image);
    expect(text).toContain(`${DEMO_BANNER_PREFIX}\0`);
    expect(text).toContain('\n\0');
    expect(demoExpectedOutput('GenuineIntel')).toBe('tsvisor demo: long mode, CPU vendor GenuineIntel\n');
    expect(g.expectedOutput('AuthenticAMD')).toBe('tsvisor demo: long mode, CPU vendor AuthenticAMD\n');
  });

  test('haltAddress is a HLT', () => {
    const off = g.haltAddress - g.loadAddress;
    expect(texts(disassemble(g.image.subarray(off, off + 1), 64))).toEqual(['hlt']);
  });

  test('deterministic', () => {
    expect(Buffer.from(buildDemoGuest().image).equals(Buffer.from(g.image))).toBe(true);
  });
});
