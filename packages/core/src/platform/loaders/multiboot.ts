/**
 * Multiboot 1 kernels (Multiboot Specification 0.6.96), as QEMU's -kernel/-append/-initrd
 * load them: the header is searched in the first 8 KiB (32-bit aligned, magic 0x1BADB002,
 * magic + flags + checksum = 0 mod 2^32). With flags bit 16 the a.out-kludge addresses say
 * where the file goes; otherwise the kernel must be ELF and its PT_LOAD segments are used.
 * Modules (`--initrd` files) are placed page-aligned after the kernel. The kernel is entered
 * in 32-bit protected mode, paging off, EAX = 0x2BADB002, EBX = the Multiboot information
 * structure, flat CS/DS/ES/FS/GS/SS, interrupts off.
 */
import type { E820Entry } from '../devices/fw-cfg';
import type { GuestRam } from '../memory';
import { BOOT_GDT } from './boot-state';
import { isElf, loadElfSegments, parseElf } from './elf';
import { GuestLoadError, hex } from './errors';
import { LoadedImage } from './flat';

export const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;
export const MULTIBOOT_SEARCH = 8192;
export const MB_PAGE_ALIGN = 1 << 0;
export const MB_MEMORY_INFO = 1 << 1;
export const MB_VIDEO_MODE = 1 << 2;
export const MB_AOUT_KLUDGE = 1 << 16;

/** multiboot_info.flags bits. */
export const MBI_MEM = 1 << 0;
export const MBI_BOOTDEV = 1 << 1;
export const MBI_CMDLINE = 1 << 2;
export const MBI_MODS = 1 << 3;
export const MBI_MMAP = 1 << 6;
export const MBI_LOADER_NAME = 1 << 9;

/** Where the information structure and its strings and tables go (free low memory below the EBDA). */
export const MBI_BASE = 0x9000;
export const MBI_LIMIT = 0x9fc00;
export const MBI_SIZE = 88;
export const BOOT_LOADER_NAME = 'tsvisor';

export interface MultibootHeader {
  offset: number;
  flags: number;
  headerAddr: number;
  loadAddr: number;
  loadEndAddr: number;
  bssEndAddr: number;
  entryAddr: number;
}

export interface MultibootModule {
  /** The module's string (QEMU: the file name and its arguments). */
  name: string;
  data: Uint8Array;
}

export interface MultibootOptions {
  cmdline?: string;
  modules?: readonly MultibootModule[];
  e820: readonly E820Entry[];
}

/** Find the header, or null when the file has none (not a Multiboot kernel). Errors for a header that is there but broken. */
export function findMultibootHeader(file: string, image: Uint8Array): MultibootHeader | null {
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const limit = Math.min(MULTIBOOT_SEARCH, image.length) - 12;
  let badChecksumAt = -1;
  for (let off = 0; off <= limit; off += 4) {
    if (dv.getUint32(off, true) !== MULTIBOOT_HEADER_MAGIC) continue;
    const flags = dv.getUint32(off + 4, true);
    const sum = (MULTIBOOT_HEADER_MAGIC + flags + dv.getUint32(off + 8, true)) >>> 0;
    if (sum !== 0) {
      if (badChecksumAt < 0) badChecksumAt = off;
      continue;
    }
    const h: MultibootHeader = { offset: off, flags, headerAddr: 0, loadAddr: 0, loadEndAddr: 0, bssEndAddr: 0, entryAddr: 0 };
    if (flags & MB_AOUT_KLUDGE) {
      if (off + 32 > image.length) throw new GuestLoadError(file, `truncated Multiboot header at offset ${hex(off)}: flags bit 16 needs 32 bytes, the file ends at ${hex(image.length)}`);
      h.headerAddr = dv.getUint32(off + 12, true);
      h.loadAddr = dv.getUint32(off + 16, true);
      h.loadEndAddr = dv.getUint32(off + 20, true);
      h.bssEndAddr = dv.getUint32(off + 24, true);
      h.entryAddr = dv.getUint32(off + 28, true);
    }
    return h;
  }
  if (badChecksumAt >= 0) {
    throw new GuestLoadError(file, `Multiboot header at offset ${hex(badChecksumAt)} has a bad checksum (magic + flags + checksum must be 0 mod 2^32)`);
  }
  return null;
}

export function loadMultiboot(ram: GuestRam, file: string, image: Uint8Array, opts: MultibootOptions): LoadedImage {
  const h = findMultibootHeader(file, image);
  if (!h) throw new GuestLoadError(file, `no Multiboot header (magic ${hex(MULTIBOOT_HEADER_MAGIC)}) in the first 8 KiB`);
  const unsupported = h.flags & 0xfff8;
  if (unsupported) throw new GuestLoadError(file, `Multiboot header requires features this loader does not know (flags bits ${hex(unsupported)} in 0..15)`);

  let ranges: [number, number][];
  let entry: number;
  if (h.flags & MB_AOUT_KLUDGE) {
    if (h.loadAddr > h.headerAddr) throw new GuestLoadError(file, `Multiboot load_addr ${hex(h.loadAddr)} is above header_addr ${hex(h.headerAddr)}`);
    const fileStart = h.offset - (h.headerAddr - h.loadAddr);
    if (fileStart < 0) throw new GuestLoadError(file, `Multiboot header_addr ${hex(h.headerAddr)} - load_addr ${hex(h.loadAddr)} puts the load start before the beginning of the file`);
    const loadEnd = h.loadEndAddr === 0 ? h.loadAddr + (image.length - fileStart) : h.loadEndAddr;
    if (loadEnd < h.loadAddr) throw new GuestLoadError(file, `Multiboot load_end_addr ${hex(loadEnd)} is below load_addr ${hex(h.loadAddr)}`);
    const size = loadEnd - h.loadAddr;
    if (fileStart + size > image.length) {
      throw new GuestLoadError(file, `truncated Multiboot kernel: load_addr..load_end_addr needs ${hex(size)} bytes from file offset ${hex(fileStart)}, the file has ${hex(image.length)}`);
    }
    const bssEnd = h.bssEndAddr === 0 ? loadEnd : h.bssEndAddr;
    if (bssEnd < loadEnd) throw new GuestLoadError(file, `Multiboot bss_end_addr ${hex(bssEnd)} is below load_end_addr ${hex(loadEnd)}`);
    if (!ram.contains(h.loadAddr, Math.max(1, bssEnd - h.loadAddr))) {
      throw new GuestLoadError(file, `Multiboot kernel [${hex(h.loadAddr)}, ${hex(bssEnd)}) lies outside guest RAM ${ram.describe()}`);
    }
    entry = h.entryAddr;
    if (entry < h.loadAddr || entry >= loadEnd) throw new GuestLoadError(file, `Multiboot entry_addr ${hex(entry)} is outside the loaded image [${hex(h.loadAddr)}, ${hex(loadEnd)})`);
    ram.write(h.loadAddr, image.subarray(fileStart, fileStart + size));
    if (bssEnd > loadEnd) ram.fill(loadEnd, bssEnd - loadEnd, 0);
    ranges = [[h.loadAddr, bssEnd]];
  } else {
    if (!isElf(image)) throw new GuestLoadError(file, 'Multiboot header without flags bit 16 (a.out kludge), so the kernel must be ELF, but the file is not');
    const info = parseElf(file, image);
    entry = info.entry;
    if (entry >= 0x1_0000_0000) throw new GuestLoadError(file, `ELF entry ${hex(entry)} is above 4 GiB: a Multiboot kernel is entered in 32-bit mode`);
    ranges = loadElfSegments(ram, file, image, info, 'protected');
  }
  for (const [s, e] of ranges) {
    if (s < MBI_LIMIT && e > BOOT_GDT) {
      throw new GuestLoadError(file, `Multiboot kernel [${hex(s)}, ${hex(e)}) overlaps low memory tsvisor keeps for the GDT and boot information [${hex(BOOT_GDT)}, ${hex(MBI_LIMIT)})`);
    }
  }

  // Modules, page-aligned after the kernel (bit 0 asks for that; we always do it).
  const kernelEnd = Math.max(...ranges.map((r) => r[1]));
  let cursor = Math.ceil(kernelEnd / 4096) * 4096;
  const mods: { start: number; end: number; name: string }[] = [];
  for (const m of opts.modules ?? []) {
    const start = cursor;
    const end = start + m.data.length;
    if (!ram.contains(start, Math.max(1, m.data.length))) {
      throw new GuestLoadError(m.name, `Multiboot module of ${m.data.length} bytes at ${hex(start)} does not fit in guest RAM ${ram.describe()}; give more memory with -m`);
    }
    ram.write(start, m.data);
    mods.push({ start, end, name: m.name });
    cursor = Math.ceil(end / 4096) * 4096;
  }

  // The information structure, then the memory map, module list and strings after it.
  const enc = new TextEncoder();
  let p = MBI_BASE + MBI_SIZE;
  const alloc = (n: number, align = 4) => {
    p = Math.ceil(p / align) * align;
    const at = p;
    p += n;
    if (p > MBI_LIMIT) throw new GuestLoadError(file, `the Multiboot information (command line, module names, memory map) does not fit below ${hex(MBI_LIMIT)}`);
    return at;
  };
  const putString = (s: string) => {
    const b = enc.encode(s + '\0');
    const at = alloc(b.length, 1);
    ram.write(at, b);
    return at;
  };
  ram.fill(MBI_BASE, MBI_SIZE, 0);
  let flags = MBI_MEM | MBI_MMAP | MBI_LOADER_NAME | MBI_CMDLINE;
  const lowRam = opts.e820.find((e) => e.type === 1 && e.base === 0);
  const upper = opts.e820.find((e) => e.type === 1 && e.base === 0x100000);
  ram.writeU32(MBI_BASE + 4, Math.floor((lowRam?.length ?? 0) / 1024)); // mem_lower, KiB
  ram.writeU32(MBI_BASE + 8, Math.floor((upper?.length ?? 0) / 1024)); // mem_upper, KiB from 1 MiB to the first hole
  ram.writeU32(MBI_BASE + 16, putString(opts.cmdline ?? ''));
  if (mods.length) {
    flags |= MBI_MODS;
    const list = alloc(16 * mods.length);
    mods.forEach((m, i) => {
      ram.writeU32(list + 16 * i, m.start);
      ram.writeU32(list + 16 * i + 4, m.end);
      ram.writeU32(list + 16 * i + 8, putString(m.name));
      ram.writeU32(list + 16 * i + 12, 0);
    });
    ram.writeU32(MBI_BASE + 20, mods.length);
    ram.writeU32(MBI_BASE + 24, list);
  }
  // mmap: entries of {u32 size = 20, u64 base, u64 length, u32 type}; size excludes itself.
  const mmap = alloc(24 * opts.e820.length);
  opts.e820.forEach((e, i) => {
    const at = mmap + 24 * i;
    ram.writeU32(at, 20);
    ram.writeU64(at + 4, BigInt(e.base));
    ram.writeU64(at + 12, BigInt(e.length));
    ram.writeU32(at + 20, e.type);
  });
  ram.writeU32(MBI_BASE + 44, 24 * opts.e820.length);
  ram.writeU32(MBI_BASE + 48, mmap);
  ram.writeU32(MBI_BASE + 64, putString(BOOT_LOADER_NAME));
  ram.writeU32(MBI_BASE, flags);

  return {
    kind: 'multiboot',
    boot: { mode: 'protected', entry, rax: MULTIBOOT_BOOTLOADER_MAGIC, rbx: MBI_BASE, rsp: 0 },
    ranges: [...ranges, ...mods.map((m): [number, number] => [m.start, m.end])],
  };
}
