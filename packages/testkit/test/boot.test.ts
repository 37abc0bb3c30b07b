import {
  BOOT_GDT,
  BOOT_SELECTORS,
  buildGuest,
  buildLongModeGuest,
  buildProtectedModeGuest,
  createLongModeBoot,
  disassembleRange,
  eax,
  GuestImage,
  texts,
} from '../src';

const h = (n: number) => `0x${n.toString(16)}`;

function section(g: GuestImage, name: string) {
  const s = g.assembled.sections.find((x) => x.name === name);
  if (!s) throw new Error(`no section ${name}`);
  return s;
}

function code(g: GuestImage, name: string, count?: number): string[] {
  const s = section(g, name);
  return texts(disassembleRange(g.assembled, s.start, s.end, { count }));
}

/** The 16-bit stub: 9 instructions, then the GDT. */
function realStub(g: GuestImage, csBase = 0): string[] {
  const prot = section(g, 'prot32').start;
  return [
    'cli',
    'mov ax, cs',
    'mov ds, ax',
    `o32 lidt [${h(g.symbols.boot_null_idtr - csBase)}]`,
    `o32 lgdt [${h(g.symbols.boot_gdtr - csBase)}]`,
    'mov eax, cr0',
    'or eax, 1',
    'mov cr0, eax',
    `jmp 8:${h(prot)}`,
  ];
}

const protPrologue = [
  'mov eax, 0x10',
  'mov ds, eax',
  'mov es, eax',
  'mov fs, eax',
  'mov gs, eax',
  'mov ss, eax',
  'mov esp, 0x80000',
];

describe('long-mode boot stub', () => {
  const g = buildLongModeGuest((a) => {
    a.mov(eax, 0x1234);
    a.hlt();
  });

  test('entry state and layout', () => {
    expect(g.loadAddress).toBe(0x7c00);
    expect(g.entry).toBe(0x7c00);
    expect([g.cs, g.ip]).toEqual([0, 0x7c00]);
    expect(g.mode).toBe('real');
    expect(g.layout).toMatchObject({
      pml4: 0x70000,
      pdpt: 0x71000,
      pd: 0x72000,
      pt: undefined,
      pageTableBase: 0x70000,
      pageTableEnd: 0x73000,
      paging: '2m',
      identityMapped: 0x40000000,
      stackTop: 0x80000,
    });
    expect(g.image.length).toBe(g.assembled.end - g.loadAddress);
    expect(g.assembled.sections.map((s) => [s.name, s.bitness])).toEqual([
      ['real16', 16],
      ['prot32', 32],
      ['long64', 64],
    ]);
  });

  test('16-bit stage: IDT/GDT load, CR0.PE, far jump to the 32-bit code segment', () => {
    expect(code(g, 'real16', 9)).toEqual(realStub(g));
  });

  test('GDT and GDTR contents', () => {
    const dv = new DataView(g.image.buffer, g.image.byteOffset);
    const gdt = g.symbols.boot_gdt;
    expect(gdt % 8).toBe(0);
    BOOT_GDT.forEach((d, i) => expect(dv.getBigUint64(gdt - g.loadAddress + i * 8, true)).toBe(d));
    const gdtr = g.symbols.boot_gdtr - g.loadAddress;
    expect(dv.getUint16(gdtr, true)).toBe(5 * 8 - 1);
    expect(dv.getUint32(gdtr + 2, true)).toBe(gdt);
    const idtr = g.symbols.boot_null_idtr - g.loadAddress;
    expect(dv.getUint16(idtr, true)).toBe(0);
    // descriptor fields the processor will check
    const code64 = BOOT_GDT[BOOT_SELECTORS.CODE64 >> 3];
    expect((code64 >> 53n) & 1n).toBe(1n); // L
    expect((code64 >> 54n) & 1n).toBe(0n); // D must be 0 with L=1
    const code32 = BOOT_GDT[BOOT_SELECTORS.CODE32 >> 3];
    expect((code32 >> 54n) & 1n).toBe(1n); // D: 32-bit default
    expect((code32 >> 40n) & 0xffn).toBe(0x9an); // present, DPL0, code, execute/read
  });

  test('32-bit stage: segments, stack, page tables, PAE, EFER.LME, CR0.PG, far jump to 64-bit', () => {
    const long = section(g, 'long64').start;
    const fill = g.symbols.boot_fill_leaf;
    expect(code(g, 'prot32')).toEqual([
      ...protPrologue,
      'cld',
      'mov edi, 0x70000',
      'xor eax, eax',
      'mov ecx, 0xc00',
      'rep stosd',
      'mov dword [0x70000], 0x71003',
      'mov dword [0x71000], 0x72003',
      'mov edi, 0x72000',
      'mov eax, 0x83',
      'mov ecx, 0x200',
      'mov [edi], eax',
      'add eax, 0x200000',
      'add edi, 8',
      `loop ${h(fill)}`,
      'mov eax, cr4',
      'or eax, 0x20',
      'mov cr4, eax',
      'mov eax, 0x70000',
      'mov cr3, eax',
      'mov ecx, 0xc0000080',
      'rdmsr',
      'or eax, 0x100',
      'wrmsr',
      'mov eax, cr0',
      'or eax, 0x80000000',
      'mov cr0, eax',
      `jmp 0x18:${h(long)}`,
    ]);
  });

  test('64-bit stage: data segments, stack, then the user code', () => {
    expect(code(g, 'long64')).toEqual([
      'mov eax, 0x20',
      'mov ds, eax',
      'mov es, eax',
      'mov fs, eax',
      'mov gs, eax',
      'mov ss, eax',
      'mov rsp, 0x80000',
      'mov eax, 0x1234',
      'hlt',
    ]);
    expect(g.symbols.boot_long_user).toBe(section(g, 'long64').start + 5 + 5 * 2 + 7);
  });
});

describe('boot stub options', () => {
  test('CS:IP other than 0:load — descriptor pointers are CS-relative', () => {
    const g = buildLongModeGuest((a) => a.hlt(), { loadAddress: 0x10000, cs: 0x1000 });
    expect([g.cs, g.ip, g.entry]).toEqual([0x1000, 0, 0x10000]);
    expect(section(g, 'real16').csBase).toBe(0x10000);
    const lines = disassembleRange(g.assembled, 0x10000, section(g, 'real16').end, { count: 9 });
    expect(lines[0].ip).toBe(0);
    expect(texts(lines)).toEqual(realStub(g, 0x10000));
    // the GDTR holds the linear GDT address, not the CS-relative one
    const dv = new DataView(g.image.buffer, g.image.byteOffset);
    expect(dv.getUint32(g.symbols.boot_gdtr - 0x10000 + 2, true)).toBe(g.symbols.boot_gdt);
  });

  test("paging '4k' maps 2 MiB through a page table", () => {
    const g = buildLongModeGuest((a) => a.hlt(), { paging: '4k', pageTableBase: 0x20000, stackTop: 0x30000, loadAddress: 0x1000 });
    expect(g.layout).toMatchObject({ pml4: 0x20000, pdpt: 0x21000, pd: 0x22000, pt: 0x23000, pageTableEnd: 0x24000, identityMapped: 0x200000 });
    const prot = code(g, 'prot32');
    expect(prot.slice(7, 20)).toEqual([
      'cld',
      'mov edi, 0x20000',
      'xor eax, eax',
      'mov ecx, 0x1000',
      'rep stosd',
      'mov dword [0x20000], 0x21003',
      'mov dword [0x21000], 0x22003',
      'mov dword [0x22000], 0x23003',
      'mov edi, 0x23000',
      'mov eax, 3',
      'mov ecx, 0x200',
      'mov [edi], eax',
      'add eax, 0x1000',
    ]);
    expect(prot).toContain('mov esp, 0x30000');
    expect(code(g, 'long64')).toContain('mov rsp, 0x30000');
  });

  test('without the null IDT the stub skips LIDT', () => {
    const g = buildLongModeGuest((a) => a.hlt(), { nullIdt: false });
    const lines = code(g, 'real16', 8);
    expect(lines.some((t) => t.includes('lidt'))).toBe(false);
    expect(lines).toContain(`o32 lgdt [${h(g.symbols.boot_gdtr)}]`);
  });

  test('layout conflicts are rejected', () => {
    expect(() => buildLongModeGuest((a) => a.hlt(), { loadAddress: 0x70100, cs: 0x7000 })).toThrow(/overlaps the page tables/);
    expect(() => buildLongModeGuest((a) => a.hlt(), { pageTableBase: 0x70800 })).toThrow(/4 KiB aligned/);
    expect(() => buildLongModeGuest((a) => a.hlt(), { loadAddress: 0x20000 })).toThrow(/not reachable/);
    expect(() => buildLongModeGuest((a) => a.hlt(), { stackTop: 0x7c10 })).toThrow(/stack/);
  });

  test('user code can add its own sections after the stub', () => {
    const stub = createLongModeBoot();
    const data = stub.image.section(64, { align: 0x1000, name: 'data' });
    const v = data.here('value');
    data.dq(0x1122334455667788n);
    stub.long.mov(eax, 0).hlt();
    stub.long.vmcall();
    const g = buildGuest(stub);
    expect(g.symbols.value % 0x1000).toBe(0);
    expect(g.assembled.addressOf(v)).toBe(g.symbols.value);
  });
});

describe('protected-mode boot stub', () => {
  const g = buildProtectedModeGuest((a) => {
    a.mov(eax, 0xcafe);
    a.hlt();
  });

  test('real → protected, then user code with paging off', () => {
    expect(code(g, 'real16', 9)).toEqual(realStub(g));
    expect(code(g, 'prot32')).toEqual([...protPrologue, 'mov eax, 0xcafe', 'hlt']);
    expect(g.assembled.sections.map((s) => s.name)).toEqual(['real16', 'prot32']);
    expect(g.layout.pml4).toBeUndefined();
    expect(g.layout.pageTableEnd).toBe(g.layout.pageTableBase);
  });
});
