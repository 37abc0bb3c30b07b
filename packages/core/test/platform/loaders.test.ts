import { GuestRam, GuestLoadError, loadFlat, loadElf, loadMultiboot, parseElf, e820Map, ramLayout, MBI_BASE, MULTIBOOT_BOOTLOADER_MAGIC } from '../../src';
import { buildMultibootKernel } from '@tsvisor/testkit';

function ram(size = 8 * 2 ** 20) {
  const r = new GuestRam();
  r.add(0, new Uint8Array(size));
  return r;
}

/** A minimal ELF: one PT_LOAD of `code` at `paddr`. */
function elf(is64: boolean, paddr: number, code: Uint8Array, patch?: (dv: DataView) => void): Uint8Array {
  const eh = is64 ? 64 : 52;
  const ph = is64 ? 56 : 32;
  const b = new Uint8Array(eh + ph + code.length);
  const dv = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, 1, 1]);
  dv.setUint16(16, 2, true);
  dv.setUint16(18, is64 ? 62 : 3, true);
  if (is64) {
    dv.setBigUint64(24, BigInt(paddr), true);
    dv.setBigUint64(32, BigInt(eh), true);
    dv.setUint16(54, ph, true);
    dv.setUint16(56, 1, true);
    dv.setUint32(eh, 1, true);
    dv.setBigUint64(eh + 8, BigInt(eh + ph), true);
    dv.setBigUint64(eh + 16, BigInt(paddr), true);
    dv.setBigUint64(eh + 24, BigInt(paddr), true);
    dv.setBigUint64(eh + 32, BigInt(code.length), true);
    dv.setBigUint64(eh + 40, BigInt(code.length + 16), true);
  } else {
    dv.setUint32(24, paddr, true);
    dv.setUint32(28, eh, true);
    dv.setUint16(42, ph, true);
    dv.setUint16(44, 1, true);
    dv.setUint32(eh, 1, true);
    dv.setUint32(eh + 4, eh + ph, true);
    dv.setUint32(eh + 8, paddr, true);
    dv.setUint32(eh + 12, paddr, true);
    dv.setUint32(eh + 16, code.length, true);
    dv.setUint32(eh + 20, code.length + 16, true);
  }
  b.set(code, eh + ph);
  patch?.(dv);
  return b;
}

describe('flat loader', () => {
  it('loads at the address and derives real-mode CS:IP', () => {
    const r = ram();
    const img = loadFlat(r, 'boot.bin', Uint8Array.of(0xf4), { loadAddr: 0x7c00 });
    expect(r.read(0x7c00, 1)[0]).toBe(0xf4);
    expect(img.boot).toMatchObject({ mode: 'real', entry: 0x7c00 });
  });
  it('rejects images outside RAM, empty files and overlaps with the long-mode page tables', () => {
    expect(() => loadFlat(ram(), 'big.bin', new Uint8Array(16), { loadAddr: 8 * 2 ** 20 - 8 })).toThrow(/big.bin: 16 bytes at 0x7ffff8 .* do not fit in guest RAM/);
    expect(() => loadFlat(ram(), 'e.bin', new Uint8Array(0), { loadAddr: 0 })).toThrow(/e.bin: the file is empty/);
    expect(() => loadFlat(ram(), 'pt.bin', new Uint8Array(16), { loadAddr: 0x2000, mode: 'long' })).toThrow(GuestLoadError);
    expect(() => loadFlat(ram(), 'r.bin', new Uint8Array(16), { loadAddr: 0x1000, entry: 0x100000 })).toThrow(/not reachable in real mode/);
  });
});

describe('ELF loader', () => {
  it('loads ELF32 (protected mode) and ELF64 (long mode) PT_LOAD segments with BSS zeroed', () => {
    const r = ram();
    r.fill(0x200000, 64, 0xee);
    const a = loadElf(r, 'k32', elf(false, 0x200000, Uint8Array.of(0x90, 0xf4)));
    expect(a.boot).toMatchObject({ mode: 'protected', entry: 0x200000 });
    expect([...r.read(0x200000, 4)]).toEqual([0x90, 0xf4, 0, 0]);
    const b = loadElf(r, 'k64', elf(true, 0x300000, Uint8Array.of(0xf4)));
    expect(b.boot.mode).toBe('long');
  });
  it('names the problem in malformed files', () => {
    const good = elf(false, 0x200000, Uint8Array.of(0xf4));
    expect(() => parseElf('x', good.subarray(0, 10))).toThrow(/x: truncated ELF file: 10 bytes/);
    expect(() => parseElf('x', Uint8Array.from([0x7f, 0x45, 0x4c, 0x47, ...good.subarray(4)]))).toThrow(/not an ELF file: magic is 7f 45 4c 47/);
    expect(() => parseElf('x', elf(false, 0x200000, Uint8Array.of(0xf4), (dv) => dv.setUint8(4, 3)))).toThrow(/ELF class 3/);
    expect(() => parseElf('x', elf(false, 0x200000, Uint8Array.of(0xf4), (dv) => dv.setUint16(18, 40, true)))).toThrow(/ELF machine 40 \(e_machine\) is not 3 \(EM_386\)/);
    expect(() => parseElf('x', good.subarray(0, 60))).toThrow(/truncated ELF file: 1 program headers at offset 0x34/);
    expect(() => parseElf('x', elf(false, 0x200000, Uint8Array.of(0xf4), (dv) => dv.setUint32(52 + 16, 0x1000, true)))).toThrow(/p_filesz 0x1000 is larger than p_memsz/);
    expect(() => loadElf(ram(), 'x', elf(false, 0x7fffff0, Uint8Array.of(0xf4)))).toThrow(/x: ELF program header 0: segment \[0x7fffff0, 0x8000001\) lies outside guest RAM/);
    expect(() => loadElf(ram(), 'x', elf(true, 0x200000, Uint8Array.of(0xf4), (dv) => dv.setBigUint64(24, 0x100000000n, true)))).toThrow(/above 4 GiB/);
  });
});

describe('Multiboot loader', () => {
  const e820 = e820Map(ramLayout(8 * 2 ** 20));
  it('loads an a.out-kludge kernel, modules, the command line and the memory map', () => {
    const k = buildMultibootKernel((a) => { a.hlt(); });
    const r = ram();
    const img = loadMultiboot(r, 'k', k.image, { cmdline: 'k root=x', modules: [{ name: 'initrd.img', data: Uint8Array.of(1, 2, 3) }], e820 });
    expect(img.boot).toMatchObject({ mode: 'protected', entry: k.entry, rax: MULTIBOOT_BOOTLOADER_MAGIC, rbx: MBI_BASE });
    expect([...r.read(k.loadAddress, 16)]).toEqual([...k.image.subarray(0, 16)]);
    const flags = r.readU32(MBI_BASE);
    expect(flags & 0x24d).toBe(0x24d); // MEM, CMDLINE, MODS, MMAP, LOADER_NAME
    expect(r.readU32(MBI_BASE + 4)).toBe(639);
    expect(r.readU32(MBI_BASE + 8)).toBe(7 * 1024);
    expect(Buffer.from(r.read(r.readU32(MBI_BASE + 16), 8)).toString()).toBe('k root=x');
    expect(r.readU32(MBI_BASE + 20)).toBe(1);
    const mod = r.readU32(MBI_BASE + 24);
    const start = r.readU32(mod);
    expect(start % 4096).toBe(0);
    expect(r.readU32(mod + 4) - start).toBe(3);
    expect([...r.read(start, 3)]).toEqual([1, 2, 3]);
    expect(Buffer.from(r.read(r.readU32(mod + 8), 10)).toString()).toBe('initrd.img');
    expect(r.readU32(MBI_BASE + 44)).toBe(24 * e820.length);
    const mm = r.readU32(MBI_BASE + 48);
    expect(r.readU32(mm)).toBe(20);
    expect(r.readU32(mm + 20)).toBe(1);
  });
  it('loads an ELF Multiboot kernel (no flag 16)', () => {
    const hdr = new Uint8Array(12);
    const dv = new DataView(hdr.buffer);
    dv.setUint32(0, 0x1badb002, true);
    dv.setUint32(4, 2, true);
    dv.setUint32(8, (-(0x1badb002 + 2)) >>> 0, true);
    const code = new Uint8Array([...hdr, 0xf4]);
    const f = elf(false, 0x100000, code, (v) => v.setUint32(24, 0x10000c, true));
    const img = loadMultiboot(ram(), 'e', f, { e820 });
    expect(img.boot.entry).toBe(0x10000c);
  });
  it('rejects a missing header, a bad checksum, unknown required flags and kernels outside RAM', () => {
    const k = buildMultibootKernel((a) => { a.hlt(); });
    expect(() => loadMultiboot(ram(), 'none', new Uint8Array(64), { e820 })).toThrow(/none: no Multiboot header/);
    const bad = k.image.slice();
    bad[8] ^= 1;
    expect(() => loadMultiboot(ram(), 'sum', bad, { e820 })).toThrow(/bad checksum/);
    const flags = k.image.slice();
    const dv = new DataView(flags.buffer);
    dv.setUint32(4, dv.getUint32(4, true) | 0x8, true);
    dv.setUint32(8, (-(0x1badb002 + dv.getUint32(4, true))) >>> 0, true);
    expect(() => loadMultiboot(ram(), 'f', flags, { e820 })).toThrow(/flags bits 0x8/);
    const high = buildMultibootKernel((a) => { a.hlt(); }, { loadAddress: 0x7ff000 });
    expect(() => loadMultiboot(ram(), 'hi', high.image, { e820, modules: [{ name: 'm', data: new Uint8Array(8192) }] })).toThrow(/does not fit in guest RAM/);
    expect(() => loadMultiboot(ram(), 't', k.image.subarray(0, k.image.length - 1), { e820 })).toThrow(/truncated Multiboot kernel/);
  });
});
