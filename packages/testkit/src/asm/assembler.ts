/**
 * A small x86 assembler on iced-x86's `BlockEncoder`.
 *
 * Tests describe guests in TypeScript (`a.mov(eax, cr0); a.or(eax, 1); ...`) instead of
 * committing opaque binaries. iced-x86 encodes one `Instruction` at a time and the
 * `BlockEncoder` picks short/near branch forms, but it only understands absolute targets
 * (`Instruction.createBranch(code, target)`), so labels are resolved here by iterative
 * layout:
 *
 *   1. Items (instructions, data, alignment, label bindings) are recorded per section.
 *   2. A pass walks every section, encoding each maximal run of instructions with one
 *      `BlockEncoder` at the run's address, using label addresses from the previous pass
 *      (or, for a label not seen yet, the run's own address as an optimistic guess, so
 *      forward branches start short). Label bindings split runs, so every label is at a
 *      run boundary and its address is known exactly once the runs before it are encoded.
 *   3. Passes repeat until no label moved and no guess was used. After a few passes runs
 *      are no longer allowed to shrink (padded with NOPs) so the layout cannot oscillate.
 *
 * An `Image` holds several sections, each with its own bitness and origin, sharing
 * labels: a 16-bit real-mode stub, 32-bit and 64-bit code in one flat binary.
 *
 * All wasm objects created here (Instruction, MemoryOperand, BlockEncoder) are freed;
 * iced-x86 1.21's JS bindings have no finalizers.
 */
import { BlockEncoder, Code, Instruction, MemoryOperand, Register } from 'iced-x86';
import { Reg, al, ax, eax, rax, cl, dx } from './registers';
import { Expr, Label, LabelRef, Mem, MemSize, Operand, isLabelExpr } from './operands';

export type Bitness = 16 | 32 | 64;

// ---------------------------------------------------------------------------------------
// Code lookup by name: iced-x86 names its codes systematically (`Add_rm32_imm8`,
// `Mov_r64_imm64`), which lets one builder cover a whole instruction family.

const codeCache = new Map<string, Code>();

/** iced-x86 `Code` by name, e.g. `codeOf('Add_rm32_imm8')`; throws if there is none. */
export function codeOf(name: string): Code {
  let c = codeCache.get(name);
  if (c === undefined) {
    c = (Code as unknown as Record<string, Code>)[name];
    if (typeof c !== 'number') throw new Error(`iced-x86 has no Code.${name}`);
    codeCache.set(name, c);
  }
  return c;
}

const BITS: Record<number, number> = { 1: 8, 2: 16, 4: 32, 8: 64 };

// ---------------------------------------------------------------------------------------
// Encoding context

/** What an instruction factory may ask while a pass encodes it. */
export interface EncodeContext {
  readonly bitness: Bitness;
  /** linear address of CS:0 for this section (0 except in real-mode sections) */
  readonly csBase: number;
  /** Value of an expression; labels give linear addresses. */
  value(e: Expr): bigint;
  /** IP-space branch target (linear address minus the section's CS base). */
  target(e: Expr): bigint;
  /** Memory operand for `m` (consumed by the `Instruction.create*` call that takes it). */
  memory(m: Mem): MemoryOperand;
}

type InsFactory = (ctx: EncodeContext) => Instruction | Instruction[];

type Item =
  | { kind: 'ins'; make: InsFactory; owned: boolean }
  | { kind: 'data'; size: number; bytes: (ctx: EncodeContext) => Uint8Array }
  | { kind: 'align'; align: number; fill: number }
  | { kind: 'bind'; label: Label };

export interface SectionOptions {
  /** Linear address of the section's first byte. Default: right after the previous section. */
  origin?: number;
  /** Alignment of the section start when it follows the previous one (default 1). */
  align?: number;
  /**
   * Linear address of CS:0 while this code runs (real mode: CS * 16). Branch targets
   * are encoded in IP space (label - csBase); immediates and displacements stay linear
   * unless written as `label.minus(base)`. Default 0.
   */
  csBase?: number;
  /** Name shown in `AssembledImage.sections`. */
  name?: string;
}

export interface SectionInfo {
  name: string;
  bitness: Bitness;
  /** linear address of the first byte */
  start: number;
  /** linear address one past the last byte */
  end: number;
  csBase: number;
}

export interface AssembledImage {
  /** linear address of bytes[0] */
  base: number;
  bytes: Uint8Array;
  /** linear address one past the last byte */
  end: number;
  sections: SectionInfo[];
  /** Linear address of a label bound in this image (+ addend). */
  addressOf(l: Label | LabelRef): number;
  /** name → address of every label bound in this image */
  symbols: Record<string, number>;
}

export type Condition =
  | 'o' | 'no' | 'b' | 'ae' | 'e' | 'ne' | 'be' | 'a' | 's' | 'ns' | 'p' | 'np' | 'l' | 'ge' | 'le' | 'g'
  | 'c' | 'nc' | 'z' | 'nz' | 'nae' | 'nb' | 'na' | 'nbe' | 'pe' | 'po' | 'nge' | 'nl' | 'ng' | 'nle';

const CC_ALIAS: Record<string, string> = {
  c: 'b', nae: 'b', nc: 'ae', nb: 'ae', z: 'e', nz: 'ne', na: 'be', nbe: 'a',
  pe: 'p', po: 'np', nge: 'l', nl: 'ge', ng: 'le', nle: 'g',
};

function ccName(cc: Condition): string {
  const c = CC_ALIAS[cc] ?? cc;
  return c[0].toUpperCase() + c.slice(1);
}

type Alu = 'Add' | 'Or' | 'Adc' | 'Sbb' | 'And' | 'Sub' | 'Xor' | 'Cmp';
type Shift = 'Rol' | 'Ror' | 'Rcl' | 'Rcr' | 'Shl' | 'Shr' | 'Sar';
type Unary = 'Inc' | 'Dec' | 'Not' | 'Neg' | 'Mul' | 'Div' | 'Imul' | 'Idiv';

function isReg(x: unknown): x is Reg {
  return x instanceof Reg;
}
function isMem(x: unknown): x is Mem {
  return x instanceof Mem;
}
function isImm(x: unknown): x is Expr {
  return typeof x === 'number' || typeof x === 'bigint' || isLabelExpr(x);
}

function textBytes(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/**
 * One section of code/data with a fixed bitness. Standalone (`new Assembler(64, 0x1000)`)
 * or part of an `Image` (`image.section(16, { origin: 0x7c00 })`).
 */
export class Assembler {
  /** @internal */ readonly items: Item[] = [];
  /** @internal */ readonly pool: Item[] = [];
  readonly image: Image;
  readonly options: SectionOptions;

  constructor(readonly bitness: Bitness, origin?: number, options: SectionOptions = {}, image?: Image) {
    if (bitness !== 16 && bitness !== 32 && bitness !== 64) throw new Error(`bad bitness ${bitness}`);
    this.options = { ...options, origin: origin ?? options.origin };
    if (!image && this.options.origin === undefined) this.options.origin = 0;
    this.image = image ?? new Image();
    this.image.add(this);
    if ((this.options.csBase ?? 0) !== 0 && bitness === 64) throw new Error('64-bit code has no CS base');
  }

  get csBase(): number {
    return this.options.csBase ?? 0;
  }

  /** Assemble the image this section belongs to and return its bytes. */
  assemble(): Uint8Array {
    return this.image.assemble().bytes;
  }

  /** Assemble the image this section belongs to, with addresses and section info. */
  link(): AssembledImage {
    return this.image.assemble();
  }

  // ---- labels ---------------------------------------------------------------------

  /** A new unbound label (usable in any section of the same image). */
  label(name?: string): Label {
    return new Label(name);
  }

  /** Bind `label` to the current position. */
  bind(label: Label): this {
    this.items.push({ kind: 'bind', label });
    return this;
  }

  /** A new label bound to the current position. */
  here(name?: string): Label {
    const l = new Label(name);
    this.bind(l);
    return l;
  }

  // ---- escape hatches ---------------------------------------------------------------

  /**
   * Emit an iced-x86 instruction. Either an `Instruction` the caller owns (it is added,
   * not freed; it cannot refer to labels) or a factory called on every layout pass,
   * whose instructions are freed after encoding (use `ctx.value/target/memory` for
   * labels).
   */
  emit(ins: Instruction | InsFactory): this {
    if (typeof ins === 'function') this.items.push({ kind: 'ins', make: ins, owned: true });
    else this.items.push({ kind: 'ins', make: () => ins, owned: false });
    return this;
  }

  /**
   * Any instruction by iced-x86 `Code`, operands mapped to the matching
   * `Instruction.create*`: `a.op(Code.Bt_rm32_imm8, eax, 3)`. Registers, memory
   * operands and immediates (numbers, bigints, labels) in Intel order.
   */
  op(code: Code | string, ...operands: Operand[]): this {
    const c = typeof code === 'string' ? codeOf(code) : code;
    return this.ins((ctx) => {
      let name = 'create';
      const args: unknown[] = [c];
      let mem: MemoryOperand | undefined;
      for (const o of operands) {
        if (isReg(o)) {
          name += 'Reg';
          args.push(o.id);
        } else if (isMem(o)) {
          name += 'Mem';
          mem = ctx.memory(o);
          args.push(mem);
        } else {
          const v = ctx.value(o);
          if (v >= -0x80000000n && v < 0x80000000n) {
            name += 'I32';
            args.push(Number(v));
          } else if (v >= 0n && v <= 0xffffffffn) {
            name += 'U32';
            args.push(Number(v));
          } else if (v < 0n) {
            name += 'I64';
            args.push(v);
          } else {
            name += 'U64';
            args.push(v);
          }
        }
      }
      const fn = (Instruction as unknown as Record<string, (...a: unknown[]) => Instruction>)[name];
      if (typeof fn !== 'function') {
        mem?.free();
        throw new Error(`iced-x86 has no Instruction.${name}`);
      }
      return fn.apply(Instruction, args);
    });
  }

  /** @internal */
  protected ins(make: InsFactory): this {
    this.items.push({ kind: 'ins', make, owned: true });
    return this;
  }

  // ---- data -------------------------------------------------------------------------

  /** Bytes: numbers (0..255 or -128..127), strings (UTF-8) or byte arrays. */
  db(...values: Array<number | string | Uint8Array | ArrayLike<number>>): this {
    const parts: number[] = [];
    for (const v of values) {
      if (typeof v === 'number') {
        if (!Number.isInteger(v) || v < -128 || v > 255) throw new Error(`db: ${v} is not a byte`);
        parts.push(v & 0xff);
      } else {
        const b = typeof v === 'string' ? textBytes(v) : v;
        for (let i = 0; i < b.length; i++) parts.push(b[i] & 0xff);
      }
    }
    const bytes = Uint8Array.from(parts);
    this.items.push({ kind: 'data', size: bytes.length, bytes: () => bytes });
    return this;
  }

  dw(...values: Expr[]): this {
    return this.dataN(2, values);
  }

  dd(...values: Expr[]): this {
    return this.dataN(4, values);
  }

  dq(...values: Expr[]): this {
    return this.dataN(8, values);
  }

  private dataN(size: 2 | 4 | 8, values: Expr[]): this {
    this.items.push({
      kind: 'data',
      size: size * values.length,
      bytes: (ctx) => {
        const out = new Uint8Array(size * values.length);
        const dv = new DataView(out.buffer);
        values.forEach((e, i) => {
          const v = fitUnsigned(ctx.value(e), size, 'data');
          if (size === 2) dv.setUint16(i * 2, Number(v), true);
          else if (size === 4) dv.setUint32(i * 4, Number(v), true);
          else dv.setBigUint64(i * 8, v, true);
        });
        return out;
      },
    });
    return this;
  }

  /** `n` bytes of `fill`. */
  space(n: number, fill = 0): this {
    const bytes = new Uint8Array(n).fill(fill);
    this.items.push({ kind: 'data', size: n, bytes: () => bytes });
    return this;
  }

  /** Pad to a multiple of `n` (linear address) with `fill` (default NOP, safe to fall through). */
  align(n: number, fill = 0x90): this {
    if (n <= 0 || (n & (n - 1)) !== 0) throw new Error(`align: ${n} is not a power of two`);
    this.items.push({ kind: 'align', align: n, fill });
    return this;
  }

  /**
   * A literal placed after all code of this section; returns its label. Strings are
   * UTF-8 and NUL-terminated unless `nul` is false.
   */
  literal(value: string | Uint8Array, opts: { nul?: boolean; align?: number } = {}): Label {
    let bytes = typeof value === 'string' ? textBytes(value) : value;
    if (typeof value === 'string' && opts.nul !== false) bytes = Uint8Array.from([...bytes, 0]);
    const l = new Label(typeof value === 'string' ? `str_${value.slice(0, 16).replace(/\W/g, '_')}` : undefined);
    if (opts.align) this.pool.push({ kind: 'align', align: opts.align, fill: 0 });
    this.pool.push({ kind: 'bind', label: l });
    const b = bytes;
    this.pool.push({ kind: 'data', size: b.length, bytes: () => b });
    return l;
  }

  // ---- data movement ----------------------------------------------------------------

  mov(dst: Reg | Mem, src: Operand): this {
    if (isReg(dst) && dst.kind === 'cr') return this.movCr(dst, src, true);
    if (isReg(src) && src.kind === 'cr') return this.movCr(src, dst, false);
    if (isReg(dst) && dst.kind === 'dr') return this.movDr(dst, src, true);
    if (isReg(src) && src.kind === 'dr') return this.movDr(src, dst, false);
    if (isReg(dst) && dst.kind === 'seg') {
      if (isImm(src)) throw new Error('mov sreg, imm does not exist');
      const form = isReg(src) && src.size === 4 ? 'r32m16' : isReg(src) && src.size === 8 ? 'r64m16' : 'rm16';
      const c = codeOf(`Mov_Sreg_${form}`);
      return isReg(src)
        ? this.ins(() => Instruction.createRegReg(c, dst.id, src.id))
        : this.ins((ctx) => Instruction.createRegMem(c, dst.id, ctx.memory(src as Mem)));
    }
    if (isReg(src) && src.kind === 'seg') {
      const form = isReg(dst) && dst.size === 4 ? 'r32m16' : isReg(dst) && dst.size === 8 ? 'r64m16' : 'rm16';
      const c = codeOf(`Mov_${form}_Sreg`);
      return isReg(dst)
        ? this.ins(() => Instruction.createRegReg(c, dst.id, src.id))
        : this.ins((ctx) => Instruction.createMemReg(c, ctx.memory(dst), src.id));
    }
    if (isImm(src)) {
      const n = this.sizeOf(dst, undefined);
      if (isReg(dst)) {
        if (n === 8) {
          // Sign-extended imm32 (7 bytes) when a constant fits; labels and wide values
          // take the full imm64 form so their size does not change between passes.
          if (!isLabelExpr(src) && fitsI32(BigInt(src))) {
            const c = Code.Mov_rm64_imm32;
            return this.ins((ctx) => Instruction.createRegI32(c, dst.id, Number(BigInt.asIntN(64, ctx.value(src)))));
          }
          return this.ins((ctx) =>
            Instruction.createRegU64(Code.Mov_r64_imm64, dst.id, fitUnsigned(ctx.value(src), 8, 'mov')),
          );
        }
        const c = codeOf(`Mov_r${BITS[n]}_imm${BITS[n]}`);
        return this.ins((ctx) => Instruction.createRegU32(c, dst.id, Number(fitUnsigned(ctx.value(src), n, 'mov'))));
      }
      if (n === 8) {
        return this.ins((ctx) => Instruction.createMemI32(Code.Mov_rm64_imm32, ctx.memory(dst), immI32(ctx.value(src), 'mov')));
      }
      const c = codeOf(`Mov_rm${BITS[n]}_imm${BITS[n]}`);
      return this.ins((ctx) => Instruction.createMemU32(c, ctx.memory(dst), Number(fitUnsigned(ctx.value(src), n, 'mov'))));
    }
    return this.rmForm('Mov', dst, src);
  }

  private movCr(cr: Reg, other: Operand, toCr: boolean): this {
    if (!isReg(other) || other.kind !== 'gpr') throw new Error('mov to/from CR needs a general register');
    const w = this.bitness === 64 ? 64 : 32;
    if (BITS[other.size] !== w) throw new Error(`mov ${cr}: use a ${w}-bit register in ${this.bitness}-bit code`);
    const c = codeOf(toCr ? `Mov_cr_r${w}` : `Mov_r${w}_cr`);
    return this.ins(() => (toCr ? Instruction.createRegReg(c, cr.id, other.id) : Instruction.createRegReg(c, other.id, cr.id)));
  }

  private movDr(dr: Reg, other: Operand, toDr: boolean): this {
    if (!isReg(other) || other.kind !== 'gpr') throw new Error('mov to/from DR needs a general register');
    const w = this.bitness === 64 ? 64 : 32;
    const c = codeOf(toDr ? `Mov_dr_r${w}` : `Mov_r${w}_dr`);
    return this.ins(() => (toDr ? Instruction.createRegReg(c, dr.id, other.id) : Instruction.createRegReg(c, other.id, dr.id)));
  }

  movzx(dst: Reg, src: Reg | Mem): this {
    const m = isReg(src) ? src.size : src.size;
    if (m !== 1 && m !== 2) throw new Error('movzx: source must be byte or word');
    const c = codeOf(`Movzx_r${BITS[dst.size]}_rm${BITS[m]}`);
    return this.regRm(c, dst, src);
  }

  movsx(dst: Reg, src: Reg | Mem): this {
    const m = isReg(src) ? src.size : src.size;
    if (m !== 1 && m !== 2) throw new Error('movsx: source must be byte or word');
    const c = codeOf(`Movsx_r${BITS[dst.size]}_rm${BITS[m]}`);
    return this.regRm(c, dst, src);
  }

  /** `movsxd r64, r/m32` */
  movsxd(dst: Reg, src: Reg | Mem): this {
    return this.regRm(Code.Movsxd_r64_rm32, dst, src);
  }

  lea(dst: Reg, src: Mem): this {
    const c = codeOf(`Lea_r${BITS[dst.size]}_m`);
    return this.ins((ctx) => Instruction.createRegMem(c, dst.id, ctx.memory(src)));
  }

  xchg(a: Reg | Mem, b: Reg): this {
    return this.rmForm('Xchg', a, b);
  }

  push(src: Operand): this {
    const w = BITS[this.stackWidth()];
    if (isReg(src) && src.kind === 'seg') {
      const s = src.name.toUpperCase();
      const p = this.bitness === 16 ? 'Pushw' : this.bitness === 32 ? 'Pushd' : 'Pushq';
      const c = codeOf(`${p}_${s}`);
      return this.ins(() => Instruction.createReg(c, src.id));
    }
    if (isReg(src)) {
      const c = codeOf(`Push_r${BITS[src.size]}`);
      return this.ins(() => Instruction.createReg(c, src.id));
    }
    if (isMem(src)) {
      const c = codeOf(`Push_rm${BITS[src.size || this.stackWidth()]}`);
      return this.ins((ctx) => Instruction.createMem(c, ctx.memory(src)));
    }
    const p = this.bitness === 16 ? 'Pushw' : this.bitness === 32 ? 'Pushd' : 'Pushq';
    if (!isLabelExpr(src) && fitsI8(BigInt(src))) {
      const c = codeOf(`${p}_imm8`);
      return this.ins((ctx) => Instruction.createI32(c, Number(ctx.value(src))));
    }
    if (w === 16) return this.ins((ctx) => Instruction.createU32(Code.Push_imm16, Number(fitUnsigned(ctx.value(src), 2, 'push'))));
    if (w === 32) return this.ins((ctx) => Instruction.createU32(Code.Pushd_imm32, Number(fitUnsigned(ctx.value(src), 4, 'push'))));
    return this.ins((ctx) => Instruction.createI32(Code.Pushq_imm32, immI32(ctx.value(src), 'push')));
  }

  pop(dst: Reg | Mem): this {
    if (isReg(dst) && dst.kind === 'seg') {
      if (dst.name === 'cs') throw new Error('pop cs does not exist');
      const s = dst.name.toUpperCase();
      const p = this.bitness === 16 ? 'Popw' : this.bitness === 32 ? 'Popd' : 'Popq';
      const c = codeOf(`${p}_${s}`);
      return this.ins(() => Instruction.createReg(c, dst.id));
    }
    if (isReg(dst)) {
      const c = codeOf(`Pop_r${BITS[dst.size]}`);
      return this.ins(() => Instruction.createReg(c, dst.id));
    }
    const c = codeOf(`Pop_rm${BITS[dst.size || this.stackWidth()]}`);
    return this.ins((ctx) => Instruction.createMem(c, ctx.memory(dst)));
  }

  pushf(): this {
    return this.simple(this.bitness === 16 ? 'Pushfw' : this.bitness === 32 ? 'Pushfd' : 'Pushfq');
  }
  popf(): this {
    return this.simple(this.bitness === 16 ? 'Popfw' : this.bitness === 32 ? 'Popfd' : 'Popfq');
  }

  // ---- arithmetic / logic -------------------------------------------------------------

  add(dst: Reg | Mem, src: Operand): this {
    return this.alu('Add', dst, src);
  }
  or(dst: Reg | Mem, src: Operand): this {
    return this.alu('Or', dst, src);
  }
  adc(dst: Reg | Mem, src: Operand): this {
    return this.alu('Adc', dst, src);
  }
  sbb(dst: Reg | Mem, src: Operand): this {
    return this.alu('Sbb', dst, src);
  }
  and(dst: Reg | Mem, src: Operand): this {
    return this.alu('And', dst, src);
  }
  sub(dst: Reg | Mem, src: Operand): this {
    return this.alu('Sub', dst, src);
  }
  xor(dst: Reg | Mem, src: Operand): this {
    return this.alu('Xor', dst, src);
  }
  cmp(dst: Reg | Mem, src: Operand): this {
    return this.alu('Cmp', dst, src);
  }

  test(dst: Reg | Mem, src: Reg | Expr): this {
    if (isImm(src)) {
      const n = this.sizeOf(dst, undefined);
      return this.withImm(codeOf(`Test_rm${BITS[n]}_imm${n === 8 ? 32 : BITS[n]}`), dst, src, n, n === 8 ? 'i32' : 'u');
    }
    return this.rmForm('Test', dst, src);
  }

  inc(dst: Reg | Mem): this {
    return this.unary('Inc', dst);
  }
  dec(dst: Reg | Mem): this {
    return this.unary('Dec', dst);
  }
  not(dst: Reg | Mem): this {
    return this.unary('Not', dst);
  }
  neg(dst: Reg | Mem): this {
    return this.unary('Neg', dst);
  }
  mul(src: Reg | Mem): this {
    return this.unary('Mul', src);
  }
  div(src: Reg | Mem): this {
    return this.unary('Div', src);
  }
  idiv(src: Reg | Mem): this {
    return this.unary('Idiv', src);
  }
  /** `imul r/m` (one operand) or `imul r, r/m`. */
  imul(a: Reg | Mem, b?: Reg | Mem): this {
    if (b === undefined) return this.unary('Imul', a);
    if (!isReg(a)) throw new Error('imul: destination must be a register');
    const w = BITS[a.size];
    return this.regRm(codeOf(`Imul_r${w}_rm${w}`), a, b);
  }

  shl(dst: Reg | Mem, count: Reg | number): this {
    return this.shift('Shl', dst, count);
  }
  shr(dst: Reg | Mem, count: Reg | number): this {
    return this.shift('Shr', dst, count);
  }
  sar(dst: Reg | Mem, count: Reg | number): this {
    return this.shift('Sar', dst, count);
  }
  rol(dst: Reg | Mem, count: Reg | number): this {
    return this.shift('Rol', dst, count);
  }
  ror(dst: Reg | Mem, count: Reg | number): this {
    return this.shift('Ror', dst, count);
  }
  rcl(dst: Reg | Mem, count: Reg | number): this {
    return this.shift('Rcl', dst, count);
  }
  rcr(dst: Reg | Mem, count: Reg | number): this {
    return this.shift('Rcr', dst, count);
  }

  /** `bt r/m, r` or `bt r/m, imm8`; likewise bts/btr/btc. */
  bt(dst: Reg | Mem, bit: Reg | number): this {
    return this.bitOp('Bt', dst, bit);
  }
  bts(dst: Reg | Mem, bit: Reg | number): this {
    return this.bitOp('Bts', dst, bit);
  }
  btr(dst: Reg | Mem, bit: Reg | number): this {
    return this.bitOp('Btr', dst, bit);
  }
  btc(dst: Reg | Mem, bit: Reg | number): this {
    return this.bitOp('Btc', dst, bit);
  }

  setcc(cc: Condition, dst: Reg | Mem): this {
    const c = codeOf(`Set${ccName(cc).toLowerCase()}_rm8`);
    return isReg(dst) ? this.ins(() => Instruction.createReg(c, dst.id)) : this.ins((ctx) => Instruction.createMem(c, ctx.memory(dst)));
  }

  cmov(cc: Condition, dst: Reg, src: Reg | Mem): this {
    const w = BITS[dst.size];
    return this.regRm(codeOf(`Cmov${ccName(cc).toLowerCase()}_r${w}_rm${w}`), dst, src);
  }

  // ---- control flow -----------------------------------------------------------------

  /** Near jump to a label/address (short or near chosen by the encoder), or indirect via r/m. */
  jmp(target: Expr | Reg | Mem): this {
    if (isReg(target) || isMem(target)) return this.indirect('Jmp', target);
    return this.branch(codeOf(`Jmp_rel8_${this.bitness}`), target);
  }

  call(target: Expr | Reg | Mem): this {
    if (isReg(target) || isMem(target)) return this.indirect('Call', target);
    const c = this.bitness === 16 ? Code.Call_rel16 : codeOf(`Call_rel32_${this.bitness}`);
    return this.branch(c, target);
  }

  /** Conditional jump: `a.jcc('ne', label)`. */
  jcc(cc: Condition, target: Expr): this {
    return this.branch(codeOf(`J${ccName(cc).toLowerCase()}_rel8_${this.bitness}`), target);
  }
  jo(t: Expr): this { return this.jcc('o', t); }
  jno(t: Expr): this { return this.jcc('no', t); }
  jb(t: Expr): this { return this.jcc('b', t); }
  jc(t: Expr): this { return this.jcc('b', t); }
  jnae(t: Expr): this { return this.jcc('b', t); }
  jae(t: Expr): this { return this.jcc('ae', t); }
  jnb(t: Expr): this { return this.jcc('ae', t); }
  jnc(t: Expr): this { return this.jcc('ae', t); }
  je(t: Expr): this { return this.jcc('e', t); }
  jz(t: Expr): this { return this.jcc('e', t); }
  jne(t: Expr): this { return this.jcc('ne', t); }
  jnz(t: Expr): this { return this.jcc('ne', t); }
  jbe(t: Expr): this { return this.jcc('be', t); }
  jna(t: Expr): this { return this.jcc('be', t); }
  ja(t: Expr): this { return this.jcc('a', t); }
  jnbe(t: Expr): this { return this.jcc('a', t); }
  js(t: Expr): this { return this.jcc('s', t); }
  jns(t: Expr): this { return this.jcc('ns', t); }
  jp(t: Expr): this { return this.jcc('p', t); }
  jpe(t: Expr): this { return this.jcc('p', t); }
  jnp(t: Expr): this { return this.jcc('np', t); }
  jpo(t: Expr): this { return this.jcc('np', t); }
  jl(t: Expr): this { return this.jcc('l', t); }
  jnge(t: Expr): this { return this.jcc('l', t); }
  jge(t: Expr): this { return this.jcc('ge', t); }
  jnl(t: Expr): this { return this.jcc('ge', t); }
  jle(t: Expr): this { return this.jcc('le', t); }
  jng(t: Expr): this { return this.jcc('le', t); }
  jg(t: Expr): this { return this.jcc('g', t); }
  jnle(t: Expr): this { return this.jcc('g', t); }

  /** LOOP with the mode's natural counter (CX / ECX / RCX). Out-of-range targets are rewritten by the encoder. */
  loop(target: Expr): this {
    return this.branch(codeOf(this.loopCode('Loop')), target);
  }
  loope(target: Expr): this {
    return this.branch(codeOf(this.loopCode('Loope')), target);
  }
  loopne(target: Expr): this {
    return this.branch(codeOf(this.loopCode('Loopne')), target);
  }

  private loopCode(op: string): string {
    return this.bitness === 16 ? `${op}_rel8_16_CX` : this.bitness === 32 ? `${op}_rel8_32_ECX` : `${op}_rel8_64_RCX`;
  }

  /** Near return (optionally popping `n` extra bytes). */
  ret(n?: number): this {
    const s = this.bitness === 16 ? 'w' : this.bitness === 32 ? 'd' : 'q';
    if (n === undefined) return this.simple(`Retn${s}`);
    return this.ins(() => Instruction.createU32(codeOf(`Retn${s}_imm16`), n));
  }

  /** Far return with the mode's operand size; `retf(undefined, 64)` for RETFQ (REX.W). */
  retf(n?: number, opSize: 16 | 32 | 64 = this.bitness): this {
    const s = opSize === 16 ? 'w' : opSize === 32 ? 'd' : 'q';
    if (n === undefined) return this.simple(`Retf${s}`);
    return this.ins(() => Instruction.createU32(codeOf(`Retf${s}_imm16`), n));
  }

  /**
   * Direct far jump `jmp selector:offset`. `opSize` 16 gives ptr16:16, 32 gives
   * ptr16:32 (`jmp dword` — needed from real mode to reach offsets above 64 KiB).
   * Default: the section's bitness. Not encodable in 64-bit code (use `jmpFarIndirect`
   * or `retf`).
   */
  jmpFar(selector: number, offset: Expr, opSize: 16 | 32 = this.bitness === 16 ? 16 : 32): this {
    if (this.bitness === 64) throw new Error('jmp ptr16:xx does not exist in 64-bit mode; use jmpFarIndirect or retf');
    const c = opSize === 16 ? Code.Jmp_ptr1616 : Code.Jmp_ptr1632;
    return this.ins((ctx) =>
      Instruction.createFarBranch(c, selector, Number(fitUnsigned(ctx.value(offset), opSize / 8, 'jmp far'))),
    );
  }

  callFar(selector: number, offset: Expr, opSize: 16 | 32 = this.bitness === 16 ? 16 : 32): this {
    if (this.bitness === 64) throw new Error('call ptr16:xx does not exist in 64-bit mode');
    const c = opSize === 16 ? Code.Call_ptr1616 : Code.Call_ptr1632;
    return this.ins((ctx) =>
      Instruction.createFarBranch(c, selector, Number(fitUnsigned(ctx.value(offset), opSize / 8, 'call far'))),
    );
  }

  /** `jmp far [m]` through an m16:16 / m16:32 / m16:64 pointer (opSize defaults to 32 outside 16-bit code: m16:64 is Intel-only). */
  jmpFarIndirect(m: Mem, opSize: 16 | 32 | 64 = this.bitness === 16 ? 16 : 32): this {
    const c = codeOf(`Jmp_m16${opSize}`);
    return this.ins((ctx) => Instruction.createMem(c, ctx.memory(m)));
  }

  int(vector: number): this {
    if (vector === 3) return this.simple('Int3');
    return this.ins(() => Instruction.createU32(Code.Int_imm8, vector & 0xff));
  }
  int3(): this {
    return this.simple('Int3');
  }
  /** IRET with the mode's operand size (`iretq` in 64-bit code). */
  iret(opSize: 16 | 32 | 64 = this.bitness): this {
    return this.simple(opSize === 16 ? 'Iretw' : opSize === 32 ? 'Iretd' : 'Iretq');
  }
  iretd(): this {
    return this.iret(32);
  }
  iretq(): this {
    return this.iret(64);
  }

  // ---- port I/O ----------------------------------------------------------------------

  /** `in al|ax|eax, imm8|dx` */
  in(dst: Reg, port: number | Reg): this {
    const w = accName(dst);
    if (isReg(port)) {
      if (port !== dx) throw new Error('in: port register must be dx');
      const c = codeOf(`In_${w}_DX`);
      return this.ins(() => Instruction.createRegReg(c, dst.id, Register.DX));
    }
    if (!Number.isInteger(port) || port < 0 || port > 0xff) throw new Error(`in: immediate port 0x${port.toString(16)} is not 0..0xff (use dx)`);
    const c = codeOf(`In_${w}_imm8`);
    return this.ins(() => Instruction.createRegU32(c, dst.id, port));
  }

  /** `out imm8|dx, al|ax|eax` */
  out(port: number | Reg, src: Reg): this {
    const w = accName(src);
    if (isReg(port)) {
      if (port !== dx) throw new Error('out: port register must be dx');
      const c = codeOf(`Out_DX_${w}`);
      return this.ins(() => Instruction.createRegReg(c, Register.DX, src.id));
    }
    if (!Number.isInteger(port) || port < 0 || port > 0xff) throw new Error(`out: immediate port 0x${port.toString(16)} is not 0..0xff (use dx)`);
    const c = codeOf(`Out_imm8_${w}`);
    return this.ins(() => Instruction.createU32Reg(c, port, src.id));
  }

  // ---- string instructions --------------------------------------------------------------

  movsb(rep = false): this { return this.str('Movsb', rep); }
  movsw(rep = false): this { return this.str('Movsw', rep); }
  movsd(rep = false): this { return this.str('Movsd', rep); }
  movsq(rep = false): this { return this.str('Movsq', rep); }
  stosb(rep = false): this { return this.str('Stosb', rep); }
  stosw(rep = false): this { return this.str('Stosw', rep); }
  stosd(rep = false): this { return this.str('Stosd', rep); }
  stosq(rep = false): this { return this.str('Stosq', rep); }
  lodsb(): this { return this.str('Lodsb', false); }
  lodsw(): this { return this.str('Lodsw', false); }
  lodsd(): this { return this.str('Lodsd', false); }
  lodsq(): this { return this.str('Lodsq', false); }
  outsb(rep = false): this { return this.str('Outsb', rep); }
  insb(rep = false): this { return this.str('Insb', rep); }
  repMovsb(): this { return this.movsb(true); }
  repMovsd(): this { return this.movsd(true); }
  repMovsq(): this { return this.movsq(true); }
  repStosb(): this { return this.stosb(true); }
  repStosd(): this { return this.stosd(true); }
  repStosq(): this { return this.stosq(true); }

  private str(op: string, rep: boolean): this {
    // The address size is the mode's default (SI/DI, ESI/EDI, RSI/RDI).
    const bits = this.bitness;
    const table = Instruction as unknown as Record<string, (...a: number[]) => Instruction>;
    if (rep) {
      const fn = table[`createRep${op}`];
      if (!fn) throw new Error(`rep ${op.toLowerCase()} is not supported`);
      return this.ins(() => fn.call(Instruction, bits));
    }
    // The plain forms take (addressSize, [segmentPrefix,] repPrefix = RepPrefixKind.None).
    const plain = table[`create${op}`];
    const withSeg = /^(Movs|Lods|Outs|Cmps)/.test(op);
    return this.ins(() => (withSeg ? plain.call(Instruction, bits, Register.None, 0) : plain.call(Instruction, bits, 0)));
  }

  // ---- system ------------------------------------------------------------------------

  /** `lgdt [m]`: in 16-bit code the o32 form, which loads all 32 base bits (the o16 form keeps only 24). */
  lgdt(m: Mem): this {
    return this.descTable('Lgdt', m);
  }
  lidt(m: Mem): this {
    return this.descTable('Lidt', m);
  }
  /** The o16 `lgdt` of 16-bit code (24-bit base), for tests of that corner. */
  lgdt16(m: Mem): this {
    return this.ins((ctx) => Instruction.createMem(Code.Lgdt_m1632_16, ctx.memory(m)));
  }

  private descTable(op: 'Lgdt' | 'Lidt', m: Mem): this {
    const c = codeOf(this.bitness === 64 ? `${op}_m1664` : `${op}_m1632`);
    return this.ins((ctx) => Instruction.createMem(c, ctx.memory(m)));
  }

  ltr(src: Reg | Mem): this {
    return this.sysSel('Ltr', src);
  }
  lldt(src: Reg | Mem): this {
    return this.sysSel('Lldt', src);
  }
  lmsw(src: Reg | Mem): this {
    return this.sysSel('Lmsw', src);
  }
  smsw(dst: Reg | Mem): this {
    return this.sysSel('Smsw', dst);
  }
  private sysSel(op: string, o: Reg | Mem): this {
    if (isMem(o)) return this.ins((ctx) => Instruction.createMem(codeOf(`${op}_rm16`), ctx.memory(o)));
    const form = o.size === 2 ? 'rm16' : `r${BITS[o.size]}m16`;
    return this.ins(() => Instruction.createReg(codeOf(`${op}_${form}`), o.id));
  }

  invlpg(m: Mem): this {
    return this.ins((ctx) => Instruction.createMem(Code.Invlpg_m, ctx.memory(m)));
  }

  hlt(): this { return this.simple('Hlt'); }
  cli(): this { return this.simple('Cli'); }
  sti(): this { return this.simple('Sti'); }
  cld(): this { return this.simple('Cld'); }
  std(): this { return this.simple('Std'); }
  clc(): this { return this.simple('Clc'); }
  stc(): this { return this.simple('Stc'); }
  cmc(): this { return this.simple('Cmc'); }
  cpuid(): this { return this.simple('Cpuid'); }
  rdmsr(): this { return this.simple('Rdmsr'); }
  wrmsr(): this { return this.simple('Wrmsr'); }
  rdtsc(): this { return this.simple('Rdtsc'); }
  rdtscp(): this { return this.simple('Rdtscp'); }
  rdpmc(): this { return this.simple('Rdpmc'); }
  /** One-byte NOP (0x90). */
  nop(): this { return this.simple(this.bitness === 16 ? 'Nopw' : 'Nopd'); } // Nopq would be REX.W 90
  pause(): this { return this.simple('Pause'); }
  ud2(): this { return this.simple('Ud2'); }
  clts(): this { return this.simple('Clts'); }
  wbinvd(): this { return this.simple('Wbinvd'); }
  invd(): this { return this.simple('Invd'); }
  xsetbv(): this { return this.simple('Xsetbv'); }
  xgetbv(): this { return this.simple('Xgetbv'); }
  swapgs(): this { return this.simple('Swapgs'); }
  syscall(): this { return this.simple('Syscall'); }
  sysret(): this { return this.simple('Sysretq'); }
  mfence(): this { return this.simple('Mfence'); }
  leave(): this { return this.simple(this.bitness === 16 ? 'Leavew' : this.bitness === 32 ? 'Leaved' : 'Leaveq'); }
  cbw(): this { return this.simple('Cbw'); }
  cwde(): this { return this.simple('Cwde'); }
  cdqe(): this { return this.simple('Cdqe'); }
  cwd(): this { return this.simple('Cwd'); }
  cdq(): this { return this.simple('Cdq'); }
  cqo(): this { return this.simple('Cqo'); }
  /** Intel hypercall (0F 01 C1). */
  vmcall(): this { return this.simple('Vmcall'); }
  /** AMD hypercall (0F 01 D9). */
  vmmcall(): this { return this.simple('Vmmcall'); }
  vmlaunch(): this { return this.simple('Vmlaunch'); }
  vmresume(): this { return this.simple('Vmresume'); }
  vmxoff(): this { return this.simple('Vmxoff'); }
  /** VMRUN with the mode's address size (rAX holds the VMCB address). */
  vmrun(): this { return this.simple(this.bitness === 16 ? 'Vmrunw' : this.bitness === 32 ? 'Vmrund' : 'Vmrunq'); }
  stgi(): this { return this.simple('Stgi'); }
  clgi(): this { return this.simple('Clgi'); }

  // ---- helpers -----------------------------------------------------------------------

  private simple(name: string): this {
    const c = codeOf(name);
    return this.ins(() => Instruction.create(c));
  }

  private stackWidth(): 2 | 4 | 8 {
    return this.bitness === 16 ? 2 : this.bitness === 32 ? 4 : 8;
  }

  /** Operand size of `dst` (register width or sized memory), else from `src`. */
  private sizeOf(dst: Reg | Mem, src: Operand | undefined): 1 | 2 | 4 | 8 {
    if (isReg(dst)) return dst.size;
    if (dst.size === 1 || dst.size === 2 || dst.size === 4 || dst.size === 8) return dst.size;
    if (src !== undefined && isReg(src)) return src.size;
    throw new Error('operand size unknown: use byte()/word()/dword()/qword() for the memory operand');
  }

  private branch(c: Code, target: Expr): this {
    return this.ins((ctx) => Instruction.createBranch(c, ctx.target(target)));
  }

  private indirect(op: 'Jmp' | 'Call', t: Reg | Mem): this {
    const w = BITS[isReg(t) ? t.size : t.size || this.stackWidth()];
    const c = codeOf(`${op}_rm${w}`);
    return isReg(t) ? this.ins(() => Instruction.createReg(c, t.id)) : this.ins((ctx) => Instruction.createMem(c, ctx.memory(t)));
  }

  /** `op r/m, r` / `op r, r/m` family (mov, add, test, xchg ...). */
  private rmForm(op: string, dst: Reg | Mem, src: Operand): this {
    if (isReg(dst) && isReg(src)) {
      if (dst.size !== src.size) throw new Error(`${op.toLowerCase()} ${dst}, ${src}: size mismatch`);
      const w = BITS[dst.size];
      const c = codeOf(`${op}_rm${w}_r${w}`);
      return this.ins(() => Instruction.createRegReg(c, dst.id, src.id));
    }
    if (isMem(dst) && isReg(src)) {
      if (dst.size && dst.size !== src.size) throw new Error(`${op.toLowerCase()}: memory size mismatch`);
      const w = BITS[src.size];
      const c = codeOf(`${op}_rm${w}_r${w}`);
      return this.ins((ctx) => Instruction.createMemReg(c, ctx.memory(dst), src.id));
    }
    if (isReg(dst) && isMem(src)) {
      if (src.size && src.size !== dst.size) throw new Error(`${op.toLowerCase()}: memory size mismatch`);
      const w = BITS[dst.size];
      const c = codeOf(`${op}_r${w}_rm${w}`);
      return this.ins((ctx) => Instruction.createRegMem(c, dst.id, ctx.memory(src)));
    }
    throw new Error(`${op.toLowerCase()}: unsupported operands`);
  }

  private regRm(c: Code, dst: Reg, src: Reg | Mem): this {
    return isReg(src)
      ? this.ins(() => Instruction.createRegReg(c, dst.id, src.id))
      : this.ins((ctx) => Instruction.createRegMem(c, dst.id, ctx.memory(src)));
  }

  private alu(op: Alu, dst: Reg | Mem, src: Operand): this {
    if (!isImm(src)) return this.rmForm(op, dst, src);
    const n = this.sizeOf(dst, undefined);
    const w = BITS[n];
    if (n === 1) return this.withImm(codeOf(`${op}_rm8_imm8`), dst, src, 1, 'u');
    // Constants that fit a sign-extended imm8 take the short form (what NASM emits);
    // labels always take the full form so their size is stable across passes.
    if (!isLabelExpr(src) && fitsI8(BigInt.asIntN(w, BigInt(src)))) {
      return this.withImm(codeOf(`${op}_rm${w}_imm8`), dst, src, n, 'i8');
    }
    if (n === 8) return this.withImm(codeOf(`${op}_rm64_imm32`), dst, src, 8, 'i32');
    return this.withImm(codeOf(`${op}_rm${w}_imm${w}`), dst, src, n, 'u');
  }

  private unary(op: Unary, dst: Reg | Mem): this {
    const w = BITS[this.sizeOf(dst, undefined)];
    if ((op === 'Inc' || op === 'Dec') && isReg(dst) && this.bitness !== 64 && (w === 16 || w === 32)) {
      // the one-byte 40+r / 48+r forms (REX prefixes in 64-bit mode), as NASM emits them
      const c = codeOf(`${op}_r${w}`);
      return this.ins(() => Instruction.createReg(c, dst.id));
    }
    const c = codeOf(`${op}_rm${w}`);
    return isReg(dst) ? this.ins(() => Instruction.createReg(c, dst.id)) : this.ins((ctx) => Instruction.createMem(c, ctx.memory(dst)));
  }

  private shift(op: Shift, dst: Reg | Mem, count: Reg | number): this {
    const w = BITS[this.sizeOf(dst, undefined)];
    if (isReg(count)) {
      if (count !== cl) throw new Error(`${op.toLowerCase()}: count register must be cl`);
      const c = codeOf(`${op}_rm${w}_CL`);
      return isReg(dst)
        ? this.ins(() => Instruction.createRegReg(c, dst.id, Register.CL))
        : this.ins((ctx) => Instruction.createMemReg(c, ctx.memory(dst), Register.CL));
    }
    if (count === 1) {
      const c = codeOf(`${op}_rm${w}_1`);
      return isReg(dst)
        ? this.ins(() => Instruction.createRegU32(c, dst.id, 1))
        : this.ins((ctx) => Instruction.createMemU32(c, ctx.memory(dst), 1));
    }
    const c = codeOf(`${op}_rm${w}_imm8`);
    return isReg(dst)
      ? this.ins(() => Instruction.createRegU32(c, dst.id, count & 0xff))
      : this.ins((ctx) => Instruction.createMemU32(c, ctx.memory(dst), count & 0xff));
  }

  private bitOp(op: string, dst: Reg | Mem, bit: Reg | number): this {
    const w = BITS[this.sizeOf(dst, isReg(bit) ? bit : undefined)];
    if (isReg(bit)) return this.rmForm(op, dst, bit);
    const c = codeOf(`${op}_rm${w}_imm8`);
    return isReg(dst)
      ? this.ins(() => Instruction.createRegU32(c, dst.id, bit & 0xff))
      : this.ins((ctx) => Instruction.createMemU32(c, ctx.memory(dst), bit & 0xff));
  }

  /**
   * r/m, imm with the immediate checked against the operand size:
   * 'u' = full-width (imm8/16/32, any value representable in n bytes),
   * 'i8' = sign-extended imm8, 'i32' = sign-extended imm32 (64-bit operations).
   */
  private withImm(c: Code, dst: Reg | Mem, src: Expr, n: 1 | 2 | 4 | 8, kind: 'u' | 'i8' | 'i32'): this {
    const immOf = (ctx: EncodeContext): number => {
      const v = ctx.value(src);
      if (kind === 'u') return Number(fitUnsigned(v, n, 'immediate'));
      if (kind === 'i32') return immI32(v, 'immediate');
      return Number(BigInt.asIntN(8 * n, v));
    };
    if (isReg(dst)) {
      return kind === 'u'
        ? this.ins((ctx) => Instruction.createRegU32(c, dst.id, immOf(ctx)))
        : this.ins((ctx) => Instruction.createRegI32(c, dst.id, immOf(ctx)));
    }
    return kind === 'u'
      ? this.ins((ctx) => Instruction.createMemU32(c, ctx.memory(dst), immOf(ctx)))
      : this.ins((ctx) => Instruction.createMemI32(c, ctx.memory(dst), immOf(ctx)));
  }
}

function accName(r: Reg): 'AL' | 'AX' | 'EAX' {
  if (r === al) return 'AL';
  if (r === ax) return 'AX';
  if (r === eax) return 'EAX';
  if (r === rax) throw new Error('in/out move at most 32 bits (use eax)');
  throw new Error(`in/out: accumulator must be al, ax or eax, not ${r}`);
}

function fitsI8(v: bigint): boolean {
  return v >= -128n && v <= 127n;
}

/** Does `v`, taken as a 64-bit value, survive sign extension from 32 bits? */
function fitsI32(v: bigint): boolean {
  if (v < -(1n << 63n) || v >= 1n << 64n) return false;
  const s = BigInt.asIntN(64, v);
  return s >= -0x80000000n && s <= 0x7fffffffn;
}

/** `v` as an unsigned n-byte value; accepts -2^(8n-1) .. 2^(8n)-1. */
function fitUnsigned(v: bigint, n: number, what: string): bigint {
  const bits = BigInt(8 * n);
  if (v < -(1n << (bits - 1n)) || v >= 1n << bits) {
    throw new Error(`${what}: 0x${v.toString(16)} does not fit in ${8 * n} bits`);
  }
  return BigInt.asUintN(8 * n, v);
}

/** A sign-extended imm32 of a 64-bit operation. */
function immI32(v: bigint, what: string): number {
  const s = BigInt.asIntN(64, v);
  if (s < -0x80000000n || s > 0x7fffffffn || v > 0xffffffffffffffffn || v < -(1n << 63n)) {
    throw new Error(`${what}: 0x${v.toString(16)} is not a sign-extended 32-bit immediate (use mov r64, imm64)`);
  }
  return Number(s);
}

// ---------------------------------------------------------------------------------------
// Image and layout

export interface ImageOptions {
  /** Linear address of the first output byte (default: lowest section origin). */
  base?: number;
  /** Byte for gaps between sections (default 0). */
  fill?: number;
}

/** Several sections (each with its own bitness and origin) assembled into one flat binary, labels shared. */
export class Image {
  readonly sections: Assembler[] = [];

  constructor(readonly options: ImageOptions = {}) {}

  /** A new section; without `origin` it follows the previous section. */
  section(bitness: Bitness, options: SectionOptions = {}): Assembler {
    return new Assembler(bitness, options.origin, options, this);
  }

  /** @internal */
  add(a: Assembler): void {
    this.sections.push(a);
  }

  label(name?: string): Label {
    return new Label(name);
  }

  assemble(): AssembledImage {
    return layout(this);
  }
}

/** Instruction IPs handed to the BlockEncoder: it maps a branch target equal to an
 * instruction's own IP to that instruction (a feature for moving code). Our targets are
 * real addresses, so give instructions IPs no target can have (non-canonical, above any
 * 16/32-bit IP). */
const FAKE_IP_BASE = 0x8000_0000_0000_0000n;

const MAX_PASSES = 32;
/** From this pass on runs may only grow, which guarantees termination. */
const MONOTONIC_PASS = 6;

interface PassResult {
  labels: Map<Label, number>;
  guessed: boolean;
  chunks: Array<{ section: number; start: number; bytes: Uint8Array }>;
  infos: SectionInfo[];
}

function layout(image: Image): AssembledImage {
  if (image.sections.length === 0) throw new Error('image has no sections');
  let known = new Map<Label, number>();
  const runLens = new Map<string, number>();
  let result: PassResult | undefined;
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    result = runPass(image, known, runLens, pass >= MONOTONIC_PASS);
    const stable =
      !result.guessed &&
      result.labels.size === known.size &&
      [...result.labels].every(([l, a]) => known.get(l) === a);
    known = result.labels;
    if (stable) return finish(image, result);
  }
  throw new Error(`layout did not converge in ${MAX_PASSES} passes`);
}

function runPass(image: Image, known: Map<Label, number>, runLens: Map<string, number>, monotonic: boolean): PassResult {
  const labels = new Map<Label, number>();
  const chunks: PassResult['chunks'] = [];
  const infos: SectionInfo[] = [];
  let guessed = false;
  const guessedLabels = new Set<Label>();
  let prevEnd: number | undefined;

  image.sections.forEach((sec, si) => {
    let start: number;
    if (sec.options.origin !== undefined) start = sec.options.origin;
    else if (prevEnd === undefined) throw new Error('the first section of an image needs an origin');
    else start = alignUp(prevEnd, sec.options.align ?? 1);
    let addr = start;
    const csBase = sec.csBase;
    const bitness = sec.bitness;
    let guessAddr = start;

    const labelAddr = (l: Label): number => {
      const now = labels.get(l);
      if (now !== undefined) return now;
      const before = known.get(l);
      if (before !== undefined) return before;
      guessed = true;
      guessedLabels.add(l);
      return guessAddr;
    };
    const value = (e: Expr): bigint => {
      if (typeof e === 'number') {
        if (!Number.isSafeInteger(e)) throw new Error(`${e} is not a safe integer; use a bigint`);
        return BigInt(e);
      }
      if (typeof e === 'bigint') return e;
      if (e instanceof Label) return BigInt(labelAddr(e));
      return BigInt(labelAddr(e.label) + e.addend);
    };
    const ctx: EncodeContext = {
      bitness,
      csBase,
      value,
      target(e: Expr): bigint {
        const t = value(e) - BigInt(isLabelExpr(e) ? csBase : 0);
        if (bitness !== 64 && (t < 0n || t >= 1n << BigInt(bitness))) {
          throw new Error(`branch target 0x${t.toString(16)} outside the ${bitness}-bit IP space of section ${sec.options.name ?? si}`);
        }
        return BigInt.asUintN(64, t);
      },
      memory(m: Mem): MemoryOperand {
        return memoryOperand(m, bitness, value);
      },
    };

    const items = [...sec.items, ...sec.pool];
    let i = 0;
    while (i < items.length) {
      const it = items[i];
      if (it.kind === 'bind') {
        if (labels.has(it.label)) throw new Error(`label ${it.label.name} bound twice`);
        labels.set(it.label, addr);
        i++;
      } else if (it.kind === 'data') {
        guessAddr = addr;
        const b = it.bytes(ctx);
        if (b.length !== it.size) throw new Error('internal: data size changed');
        chunks.push({ section: si, start: addr, bytes: b });
        addr += b.length;
        i++;
      } else if (it.kind === 'align') {
        const pad = alignUp(addr, it.align) - addr;
        if (pad) chunks.push({ section: si, start: addr, bytes: new Uint8Array(pad).fill(it.fill) });
        addr += pad;
        i++;
      } else {
        // A maximal run of instructions, encoded by one BlockEncoder so that it can
        // choose short/near branch forms.
        const runKey = `${si}:${i}`;
        guessAddr = addr;
        const enc = new BlockEncoder(bitness, 0);
        let bytes: Uint8Array;
        try {
          let k = 0;
          while (i < items.length && items[i].kind === 'ins') {
            const item = items[i] as Extract<Item, { kind: 'ins' }>;
            const made = item.make(ctx);
            const list = Array.isArray(made) ? made : [made];
            for (const ins of list) {
              try {
                ins.ip = FAKE_IP_BASE + BigInt(k++) * 16n;
                enc.add(ins);
              } finally {
                if (item.owned) ins.free();
              }
            }
            i++;
          }
          bytes = enc.encode(BigInt(addr - csBase));
        } finally {
          enc.free();
        }
        const prev = runLens.get(runKey);
        if (monotonic && prev !== undefined && bytes.length < prev) {
          const padded = new Uint8Array(prev).fill(0x90);
          padded.set(bytes);
          bytes = padded;
        }
        runLens.set(runKey, bytes.length);
        chunks.push({ section: si, start: addr, bytes });
        addr += bytes.length;
      }
    }
    infos.push({ name: sec.options.name ?? `section${si}`, bitness, start, end: addr, csBase });
    prevEnd = addr;
  });

  // A label still unknown after a whole pass is bound nowhere in this image.
  const unbound = [...guessedLabels].filter((l) => !labels.has(l));
  if (unbound.length) throw new Error(`label(s) used but never bound: ${unbound.map((l) => l.name).join(', ')}`);
  return { labels, guessed, chunks, infos };
}

function memoryOperand(m: Mem, bitness: Bitness, value: (e: Expr) => bigint): MemoryOperand {
  let base = m.base?.id ?? Register.None;
  const index = m.index?.id ?? Register.None;
  const seg = m.seg?.id ?? Register.None;
  const disp = value(m.disp);
  let displSize: number;
  const label = isLabelExpr(m.disp);
  if (base === Register.RIP) {
    if (bitness !== 64) throw new Error('RIP-relative addressing exists only in 64-bit code');
    displSize = 8; // iced: the displacement of a RIP-relative operand is the absolute target
  } else if (bitness === 64 && label && !m.base && !m.index && !m.absolute) {
    base = Register.RIP;
    displSize = 8;
  } else if (!m.base && !m.index) {
    // [disp] alone: 16-bit code uses a 16-bit address unless the value needs 32 bits (67h).
    displSize = bitness === 16 && disp >= -0x8000n && disp <= 0xffffn ? 2 : 4;
  } else if (label) {
    // Full-width displacement for labels, so the size is the same in every pass.
    const addrSize = (m.base ?? m.index)!.size;
    displSize = addrSize === 2 ? 2 : 4;
  } else {
    displSize = disp === 0n ? 0 : 1; // 1 = let the encoder pick disp8 or the full size
  }
  return new MemoryOperand(base, index, m.scale, disp, displSize, false, seg);
}

function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

function finish(image: Image, r: PassResult): AssembledImage {
  const infos = r.infos;
  const lo = Math.min(...infos.map((s) => s.start));
  const hi = Math.max(...infos.map((s) => s.end));
  const base = image.options.base ?? lo;
  if (lo < base) throw new Error(`a section starts at 0x${lo.toString(16)}, below the image base 0x${base.toString(16)}`);
  // Overlapping sections would silently overwrite each other.
  const sorted = [...infos].sort((a, b) => a.start - b.start);
  for (let k = 1; k < sorted.length; k++) {
    if (sorted[k].start < sorted[k - 1].end) {
      throw new Error(`sections ${sorted[k - 1].name} and ${sorted[k].name} overlap`);
    }
  }
  const bytes = new Uint8Array(hi - base).fill(image.options.fill ?? 0);
  for (const c of r.chunks) bytes.set(c.bytes, c.start - base);
  const symbols: Record<string, number> = {};
  for (const [l, a] of r.labels) {
    l.address = a;
    symbols[l.name] = a;
  }
  return {
    base,
    bytes,
    end: hi,
    sections: infos,
    symbols,
    addressOf(l: Label | LabelRef): number {
      const label = l instanceof Label ? l : l.label;
      const a = r.labels.get(label);
      if (a === undefined) throw new Error(`label ${label.name} is not bound in this image`);
      return a + (l instanceof Label ? 0 : l.addend);
    },
  };
}
