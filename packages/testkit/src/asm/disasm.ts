/**
 * Disassembly for tests and debugging: iced-x86's Decoder + NASM Formatter, with
 * `0x` hex and all wasm objects freed.
 */
import { Code, Decoder, DecoderOptions, Formatter, FormatterSyntax, Instruction, OpKind } from 'iced-x86';
import type { AssembledImage, Bitness } from './assembler';
import { Label } from './operands';

export interface DisasmLine {
  /** linear address (= IP + csBase) */
  address: number;
  /** IP the decoder used (address - csBase) */
  ip: number;
  length: number;
  bytes: Uint8Array;
  /** iced-x86 Code */
  code: Code;
  /** NASM syntax, e.g. `mov eax, cr0`, `jmp 0x8:0x1040`, `o32 lgdt [0x7c40]` */
  text: string;
}

export interface DisasmOptions {
  /** stop after this many instructions */
  count?: number;
  /** linear address of CS:0 (real-mode code); IPs shown are address - csBase */
  csBase?: number;
}

function makeFormatter(): Formatter {
  const f = new Formatter(FormatterSyntax.Nasm);
  f.hexPrefix = '0x';
  f.hexSuffix = '';
  f.uppercaseHex = false;
  f.spaceAfterOperandSeparator = true;
  // short/near is the encoder's choice, not something a test should pin down
  f.showBranchSize = false;
  f.branchLeadingZeros = false;
  return f;
}

/**
 * iced-x86 1.21's JS Formatter prints some 64-bit immediates wrongly (e.g.
 * `mov rax, 0x7e5700000000` comes out as `mov rax, 0`), so imm64 operands are formatted here.
 */
function format(f: Formatter, ins: Instruction): string {
  let hasImm64 = false;
  for (let i = 0; i < ins.opCount; i++) if (ins.opKind(i) === OpKind.Immediate64) hasImm64 = true;
  if (!hasImm64) return f.format(ins);
  const ops: string[] = [];
  for (let i = 0; i < ins.opCount; i++) {
    ops.push(ins.opKind(i) === OpKind.Immediate64 ? `0x${ins.immediate64.toString(16)}` : f.formatOperand(ins, i));
  }
  return `${f.formatMnemonic(ins)} ${ops.join(', ')}`;
}

/** Decode `bytes` (placed at linear `address`) as `bitness`-bit code. Stops at the end of the bytes. */
export function disassemble(bytes: Uint8Array, bitness: Bitness, address = 0, opts: DisasmOptions = {}): DisasmLine[] {
  const csBase = opts.csBase ?? 0;
  const decoder = new Decoder(bitness, bytes, DecoderOptions.None);
  const f = makeFormatter();
  const out: DisasmLine[] = [];
  try {
    decoder.ip = BigInt(address - csBase);
    let offset = 0;
    while (decoder.canDecode && (opts.count === undefined || out.length < opts.count)) {
      const ins = decoder.decode();
      try {
        const len = ins.length;
        out.push({
          address: address + offset,
          ip: address + offset - csBase,
          length: len,
          bytes: bytes.slice(offset, offset + len),
          code: ins.code,
          text: ins.code === Code.INVALID ? '(bad)' : format(f, ins),
        });
        offset += len;
      } finally {
        ins.free();
      }
    }
  } finally {
    decoder.free();
    f.free();
  }
  return out;
}

/**
 * Decode the part of an assembled image between two addresses or labels, with the
 * bitness and CS base of the section containing `from`.
 */
export function disassembleRange(
  img: AssembledImage,
  from: Label | number,
  to: Label | number,
  opts: { count?: number; bitness?: Bitness } = {},
): DisasmLine[] {
  const start = typeof from === 'number' ? from : img.addressOf(from);
  const end = typeof to === 'number' ? to : img.addressOf(to);
  const sec = img.sections.find((s) => start >= s.start && start < s.end);
  if (!sec && opts.bitness === undefined) throw new Error(`0x${start.toString(16)} is in no section`);
  const bytes = img.bytes.subarray(start - img.base, end - img.base);
  return disassemble(bytes, opts.bitness ?? sec!.bitness, start, { count: opts.count, csBase: sec?.csBase ?? 0 });
}

/** Just the texts: handy for `expect(texts(...)).toEqual([...])`. */
export function texts(lines: DisasmLine[]): string[] {
  return lines.map((l) => l.text);
}

/** A listing (`00007c00  fa              cli`) for debugging output. */
export function listing(lines: DisasmLine[]): string {
  return lines
    .map((l) => {
      const hex = Array.from(l.bytes, (b) => b.toString(16).padStart(2, '0')).join('');
      return `${l.address.toString(16).padStart(8, '0')}  ${hex.padEnd(22)}${l.text}`;
    })
    .join('\n');
}
