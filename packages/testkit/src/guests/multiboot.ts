/**
 * Multiboot 1 kernels built from 32-bit code, for testing the CLI's Multiboot loader.
 *
 * The header uses the a.out kludge (flags bit 16), so a loader needs no ELF parsing:
 * header_addr / load_addr / load_end_addr / bss_end_addr / entry_addr say where the file
 * goes. The image starts with the header (it must lie in the first 8 KiB, 4-byte
 * aligned), so load_addr = header_addr and the file is loaded from offset 0.
 *
 * A Multiboot loader enters the kernel in 32-bit protected mode with paging off,
 * EAX = 0x2BADB002, EBX = physical address of the multiboot_info structure,
 * CS = flat 32-bit code, DS/ES/FS/GS/SS = flat data, interrupts disabled, and ESP
 * undefined — so the kernel sets up its own stack.
 */
import { Assembler, Image, Label } from '../asm';

export const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
/** EAX at kernel entry */
export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;
/** flags bit 0: align modules on 4 KiB */
export const MULTIBOOT_PAGE_ALIGN = 1 << 0;
/** flags bit 1: provide the memory map (mem_lower/mem_upper, mmap_*) */
export const MULTIBOOT_MEMORY_INFO = 1 << 1;
/** flags bit 2: video mode fields present */
export const MULTIBOOT_VIDEO_MODE = 1 << 2;
/** flags bit 16: header_addr..entry_addr are valid (a.out kludge) */
export const MULTIBOOT_AOUT_KLUDGE = 1 << 16;

export interface MultibootOptions {
  /** Physical load address (header_addr = load_addr). Default 0x100000 (1 MiB), as kernels conventionally use. */
  loadAddress?: number;
  /** Extra flags besides the a.out kludge (default MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO). */
  flags?: number;
  /** Zeroed bytes after the loaded image (bss_end_addr = load_end_addr + bssSize). Default 0. */
  bssSize?: number;
}

export interface MultibootHeaderFields {
  magic: number;
  flags: number;
  checksum: number;
  headerAddr: number;
  loadAddr: number;
  loadEndAddr: number;
  bssEndAddr: number;
  entryAddr: number;
}

export interface MultibootKernel {
  /** the kernel file: header, then code */
  image: Uint8Array;
  loadAddress: number;
  entry: number;
  header: MultibootHeaderFields;
  symbols: Record<string, number>;
}

export interface MultibootBuilder {
  image: Image;
  /** 32-bit section right after the header; its first byte is the entry point */
  code: Assembler;
  entry: Label;
}

/**
 * The image with a header section; append the kernel's 32-bit code to `code`, then call
 * `buildMultiboot`.
 */
export function createMultiboot(opts: MultibootOptions = {}): MultibootBuilder & { options: Required<MultibootOptions> } {
  const options = {
    loadAddress: opts.loadAddress ?? 0x100000,
    flags: opts.flags ?? MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO,
    bssSize: opts.bssSize ?? 0,
  };
  if (options.loadAddress % 4) throw new Error('Multiboot header must be 4-byte aligned');
  const image = new Image({ base: options.loadAddress });
  const hdr = image.section(32, { origin: options.loadAddress, name: 'multiboot_header' });
  const code = image.section(32, { align: 16, name: 'text' });
  const entry = code.here('multiboot_entry');
  const header = hdr.here('multiboot_header');
  const end = new Label('multiboot_load_end');
  const flags = (options.flags | MULTIBOOT_AOUT_KLUDGE) >>> 0;
  // magic + flags + checksum must sum to 0 (mod 2^32)
  const checksum = -(MULTIBOOT_HEADER_MAGIC + flags) >>> 0;
  hdr.dd(MULTIBOOT_HEADER_MAGIC, flags, checksum);
  hdr.dd(header, header, end, end.plus(options.bssSize), entry);
  // The load end is the end of the last section: a trailing section binds it.
  const tail = image.section(32, { name: 'multiboot_end' });
  tail.bind(end);
  return { image, code, entry, options };
}

/** Assemble a Multiboot builder into a kernel file. */
export function buildMultiboot(b: MultibootBuilder): MultibootKernel {
  // keep the end marker last even if the caller added sections after `code`
  const secs = b.image.sections;
  const endIdx = secs.findIndex((s) => s.options.name === 'multiboot_end');
  if (endIdx >= 0 && endIdx !== secs.length - 1) secs.push(...secs.splice(endIdx, 1));
  const asm = b.image.assemble();
  const dv = new DataView(asm.bytes.buffer, asm.bytes.byteOffset);
  const header: MultibootHeaderFields = {
    magic: dv.getUint32(0, true),
    flags: dv.getUint32(4, true),
    checksum: dv.getUint32(8, true),
    headerAddr: dv.getUint32(12, true),
    loadAddr: dv.getUint32(16, true),
    loadEndAddr: dv.getUint32(20, true),
    bssEndAddr: dv.getUint32(24, true),
    entryAddr: dv.getUint32(28, true),
  };
  return { image: asm.bytes, loadAddress: asm.base, entry: header.entryAddr, header, symbols: asm.symbols };
}

/** Multiboot kernel in one call: `body` appends 32-bit code at the entry point. */
export function buildMultibootKernel(body: (a: Assembler, b: MultibootBuilder) => void, opts: MultibootOptions = {}): MultibootKernel {
  const b = createMultiboot(opts);
  body(b.code, b);
  return buildMultiboot(b);
}

/**
 * Find and parse a Multiboot 1 header in the first 8 KiB of `file` (what a loader
 * does), checking the checksum. Returns undefined if there is none.
 */
export function parseMultibootHeader(file: Uint8Array): (MultibootHeaderFields & { offset: number }) | undefined {
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const limit = Math.min(8192, file.length) - 12;
  for (let off = 0; off <= limit; off += 4) {
    if (dv.getUint32(off, true) !== MULTIBOOT_HEADER_MAGIC) continue;
    const flags = dv.getUint32(off + 4, true);
    const checksum = dv.getUint32(off + 8, true);
    if (((MULTIBOOT_HEADER_MAGIC + flags + checksum) >>> 0) !== 0) continue;
    const kludge = (flags & MULTIBOOT_AOUT_KLUDGE) !== 0 && off + 32 <= file.length;
    return {
      offset: off,
      magic: MULTIBOOT_HEADER_MAGIC,
      flags,
      checksum,
      headerAddr: kludge ? dv.getUint32(off + 12, true) : 0,
      loadAddr: kludge ? dv.getUint32(off + 16, true) : 0,
      loadEndAddr: kludge ? dv.getUint32(off + 20, true) : 0,
      bssEndAddr: kludge ? dv.getUint32(off + 24, true) : 0,
      entryAddr: kludge ? dv.getUint32(off + 28, true) : 0,
    };
  }
  return undefined;
}
