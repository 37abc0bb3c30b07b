import {
  MULTIBOOT_AOUT_KLUDGE,
  MULTIBOOT_BOOTLOADER_MAGIC,
  MULTIBOOT_HEADER_MAGIC,
  MULTIBOOT_MEMORY_INFO,
  MULTIBOOT_PAGE_ALIGN,
  buildMultiboot,
  buildMultibootKernel,
  createMultiboot,
  disassemble,
  eax,
  esp,
  parseMultibootHeader,
  serialPrintString,
  texts,
} from '../src';

describe('Multiboot 1 kernels', () => {
  const k = buildMultibootKernel((a) => {
    a.mov(esp, 0x90000);
    a.cmp(eax, MULTIBOOT_BOOTLOADER_MAGIC);
    serialPrintString(a, 'multiboot ok\n');
    a.hlt();
  });

  test('header fields (a.out kludge)', () => {
    const hd = k.header;
    expect(hd.magic).toBe(MULTIBOOT_HEADER_MAGIC);
    expect(hd.flags).toBe(MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO | MULTIBOOT_AOUT_KLUDGE);
    expect((hd.magic + hd.flags + hd.checksum) >>> 0).toBe(0);
    expect(hd.headerAddr).toBe(0x100000);
    expect(hd.loadAddr).toBe(0x100000);
    expect(hd.loadEndAddr).toBe(0x100000 + k.image.length);
    expect(hd.bssEndAddr).toBe(hd.loadEndAddr);
    expect(hd.entryAddr).toBe(0x100020);
    expect(k.entry).toBe(hd.entryAddr);
    expect(k.loadAddress).toBe(0x100000);
  });

  test('parseMultibootHeader finds what a loader would', () => {
    const p = parseMultibootHeader(k.image)!;
    expect(p.offset).toBe(0);
    expect(p).toMatchObject(k.header);
    const bad = k.image.slice();
    bad[8] ^= 1; // break the checksum
    expect(parseMultibootHeader(bad)).toBeUndefined();
    // a header at a later 4-byte boundary is found too
    const shifted = new Uint8Array(k.image.length + 64);
    shifted.set(k.image, 64);
    expect(parseMultibootHeader(shifted)!.offset).toBe(64);
  });

  test('entry code decodes as 32-bit', () => {
    const off = k.entry - k.loadAddress;
    const lines = texts(disassemble(k.image.subarray(off), 32, k.entry, { count: 4 }));
    expect(lines).toEqual(['mov esp, 0x90000', 'cmp eax, 0x2badb002', `mov esi, 0x${k.symbols.str_multiboot_ok_.toString(16)}`, 'mov dx, 0x3f8']);
  });

  test('options: load address, bss, flags; sections added later stay before the end marker', () => {
    const b = createMultiboot({ loadAddress: 0x200000, bssSize: 0x3000, flags: 0 });
    b.code.hlt();
    const extra = b.image.section(32, { align: 0x1000, name: 'data' });
    extra.dd(1);
    const m = buildMultiboot(b);
    expect(m.header.flags).toBe(MULTIBOOT_AOUT_KLUDGE);
    expect(m.header.loadEndAddr).toBe(0x201004);
    expect(m.header.bssEndAddr).toBe(0x204004);
    expect(m.image.length).toBe(0x1004);
  });
});
