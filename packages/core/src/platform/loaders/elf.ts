/**
 * ELF32/ELF64 executables (System V gABI; x86 and x86-64 psABI): every PT_LOAD segment is
 * copied to its physical address (p_paddr, as QEMU's -kernel does) and zero-filled from
 * p_filesz to p_memsz. ELF32 (EM_386) kernels start in 32-bit protected mode, ELF64
 * (EM_X86_64) ones in long mode with the identity mapping of the first 4 GiB, unless told
 * otherwise. Everything is checked before a byte is written.
 */
import type { GuestRam } from '../memory';
import { StartMode } from './boot-state';
import { GuestLoadError, hex } from './errors';
import { checkOverlapsBoot, LoadedImage } from './flat';

export const ELF_MAGIC = 0x464c457f; // "\x7fELF" little-endian
export const ELFCLASS32 = 1;
export const ELFCLASS64 = 2;
export const EM_386 = 3;
export const EM_X86_64 = 62;
export const ET_EXEC = 2;
export const ET_DYN = 3;
export const PT_LOAD = 1;

export interface ElfSegment {
  index: number;
  offset: number;
  vaddr: number;
  paddr: number;
  filesz: number;
  memsz: number;
}

export interface ElfInfo {
  class: 32 | 64;
  machine: number;
  type: number;
  entry: number;
  segments: ElfSegment[];
}

export function isElf(image: Uint8Array): boolean {
  return image.length >= 4 && image[0] === 0x7f && image[1] === 0x45 && image[2] === 0x4c && image[3] === 0x46;
}

/** Parse and validate the headers; throws GuestLoadError naming the field at fault. */
export function parseElf(file: string, image: Uint8Array): ElfInfo {
  if (image.length < 16) throw new GuestLoadError(file, `truncated ELF file: ${image.length} bytes, shorter than the 16-byte e_ident`);
  if (!isElf(image)) throw new GuestLoadError(file, `not an ELF file: magic is ${[...image.subarray(0, 4)].map((b) => b.toString(16).padStart(2, '0')).join(' ')}, expected 7f 45 4c 46`);
  const cls = image[4];
  if (cls !== ELFCLASS32 && cls !== ELFCLASS64) throw new GuestLoadError(file, `ELF class ${cls} (e_ident[EI_CLASS]) is neither 1 (ELF32) nor 2 (ELF64)`);
  if (image[5] !== 1) throw new GuestLoadError(file, `ELF data encoding ${image[5]} (e_ident[EI_DATA]) is not 1 (little-endian), as x86 requires`);
  if (image[6] !== 1) throw new GuestLoadError(file, `ELF version ${image[6]} (e_ident[EI_VERSION]) is not 1`);
  const is64 = cls === ELFCLASS64;
  const ehsize = is64 ? 64 : 52;
  if (image.length < ehsize) throw new GuestLoadError(file, `truncated ELF header: ${image.length} bytes, an ELF${is64 ? 64 : 32} header needs ${ehsize}`);
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const type = dv.getUint16(16, true);
  const machine = dv.getUint16(18, true);
  if (type !== ET_EXEC && type !== ET_DYN) throw new GuestLoadError(file, `ELF type ${type} (e_type) is not an executable (ET_EXEC 2 or ET_DYN 3)`);
  const wantMachine = is64 ? EM_X86_64 : EM_386;
  if (machine !== wantMachine) {
    throw new GuestLoadError(file, `ELF machine ${machine} (e_machine) is not ${wantMachine} (${is64 ? 'EM_X86_64' : 'EM_386'}) for an ELF${is64 ? 64 : 32} file`);
  }
  const u = (off32: number, off64: number): number => (is64 ? Number(dv.getBigUint64(off64, true)) : dv.getUint32(off32, true));
  const entry = u(24, 24);
  const phoff = u(28, 32);
  const phentsize = dv.getUint16(is64 ? 54 : 42, true);
  const phnum = dv.getUint16(is64 ? 56 : 44, true);
  const wantPhent = is64 ? 56 : 32;
  if (phnum === 0) throw new GuestLoadError(file, 'the ELF file has no program headers (e_phnum is 0), so nothing to load');
  if (phentsize < wantPhent) throw new GuestLoadError(file, `ELF program header size ${phentsize} (e_phentsize) is smaller than ${wantPhent}`);
  if (phoff + phnum * phentsize > image.length) {
    throw new GuestLoadError(file, `truncated ELF file: ${phnum} program headers at offset ${hex(phoff)} need ${hex(phoff + phnum * phentsize)} bytes, the file has ${hex(image.length)}`);
  }
  const segments: ElfSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (dv.getUint32(at, true) !== PT_LOAD) continue;
    const s: ElfSegment = is64
      ? {
        index: i,
        offset: Number(dv.getBigUint64(at + 8, true)),
        vaddr: Number(dv.getBigUint64(at + 16, true)),
        paddr: Number(dv.getBigUint64(at + 24, true)),
        filesz: Number(dv.getBigUint64(at + 32, true)),
        memsz: Number(dv.getBigUint64(at + 40, true)),
      }
      : {
        index: i,
        offset: dv.getUint32(at + 4, true),
        vaddr: dv.getUint32(at + 8, true),
        paddr: dv.getUint32(at + 12, true),
        filesz: dv.getUint32(at + 16, true),
        memsz: dv.getUint32(at + 20, true),
      };
    if (s.filesz > s.memsz) throw new GuestLoadError(file, `ELF program header ${i}: p_filesz ${hex(s.filesz)} is larger than p_memsz ${hex(s.memsz)}`);
    if (s.offset + s.filesz > image.length) {
      throw new GuestLoadError(file, `truncated ELF file: program header ${i} wants bytes [${hex(s.offset)}, ${hex(s.offset + s.filesz)}) of a ${hex(image.length)}-byte file`);
    }
    segments.push(s);
  }
  if (!segments.length) throw new GuestLoadError(file, 'the ELF file has no PT_LOAD segment');
  return { class: is64 ? 64 : 32, machine, type, entry, segments };
}

/** Check that every segment lies in RAM and clear of the boot structures, then copy them. */
export function loadElfSegments(ram: GuestRam, file: string, image: Uint8Array, info: ElfInfo, mode: StartMode): [number, number][] {
  const ranges: [number, number][] = [];
  for (const s of info.segments) {
    if (s.memsz === 0) continue;
    const end = s.paddr + s.memsz;
    if (!ram.contains(s.paddr, s.memsz)) {
      throw new GuestLoadError(file, `ELF program header ${s.index}: segment [${hex(s.paddr)}, ${hex(end)}) lies outside guest RAM ${ram.describe()}`);
    }
    checkOverlapsBoot(file, mode, s.paddr, end);
    ranges.push([s.paddr, end]);
  }
  for (const s of info.segments) {
    if (s.memsz === 0) continue;
    ram.write(s.paddr, image.subarray(s.offset, s.offset + s.filesz));
    if (s.memsz > s.filesz) ram.fill(s.paddr + s.filesz, s.memsz - s.filesz, 0);
  }
  return ranges;
}

export function loadElf(ram: GuestRam, file: string, image: Uint8Array, opts: { mode?: StartMode; entry?: number } = {}): LoadedImage {
  const info = parseElf(file, image);
  const mode = opts.mode ?? (info.class === 64 ? 'long' : 'protected');
  const entry = opts.entry ?? info.entry;
  if (mode === 'real') throw new GuestLoadError(file, 'an ELF executable cannot start in real mode (use protected or long)');
  if (entry >= 0x1_0000_0000) throw new GuestLoadError(file, `ELF entry ${hex(entry)} (e_entry) is above 4 GiB, outside the identity mapping tsvisor sets up`);
  const ranges = loadElfSegments(ram, file, image, info, mode);
  const inSegment = info.segments.some((s) => entry >= s.paddr && entry < s.paddr + s.memsz) ||
    info.segments.some((s) => entry >= s.vaddr && entry < s.vaddr + s.memsz);
  if (!inSegment) throw new GuestLoadError(file, `ELF entry ${hex(entry)} (e_entry) is not inside any PT_LOAD segment`);
  return { kind: 'elf', boot: { mode, entry, rsp: 0 }, ranges };
}
