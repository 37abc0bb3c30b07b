/**
 * Case generation: for a form, N seeded cases, each with its own register choice, operand
 * values (random plus edge cases), immediates, initial flags and memory window, encoded by
 * iced-x86's Encoder. Also works out, per case, which flags (and whether the destination)
 * the manuals leave undefined, starting from iced-x86's `rflagsUndefined` and refining the
 * count-dependent rules of shifts and rotates that a static table cannot know.
 */
import { Code, Decoder, DecoderOptions, Encoder, Formatter, FormatterSyntax, Instruction, MemoryOperand, Register } from 'iced-x86';
import { Form, OperandSpec, hostCpuVendor } from './forms';
import { DATA_ADDR, CODE_ADDR, DiffInput } from './native';
import { Prng } from './prng';

// Module-level aliases of globals: under jest, code runs in a vm context where each global
// lookup goes through interceptors and costs far more than a closure variable.
const big = BigInt;
const asUintN = BigInt.asUintN;
const asIntN = BigInt.asIntN;
const num = Number;
const U64Array = BigUint64Array;
const U8Array = Uint8Array;
const M = Math;

/** RFLAGS bits. */
export const CF = 0x1, PF = 0x4, AF = 0x10, ZF = 0x40, SF = 0x80, DF = 0x400, OF = 0x800;
/** The flags the harness sets and compares: CF PF AF ZF SF OF and DF. */
export const COMPARED_FLAGS = CF | PF | AF | ZF | SF | OF | DF;

/** Offset of the memory operand in the data page. */
export const MEM_OPERAND_OFF = 0x800;
/** Default window around it: guard bytes on both sides catch writes of the wrong width. */
const WINDOW_OFF = MEM_OPERAND_OFF - 16;
const WINDOW_LEN = 48;
/** Bit-test instructions with a register bit offset and a memory operand reach ±1 KiB. */
const BT_WINDOW_OFF = 0x400;
const BT_WINDOW_LEN = 0x800;
const BT_MAX_BYTE_REACH = 0x3f0;

export const GPR_NAMES = ['rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'];

/** iced RflagsBits -> RFLAGS bit positions. */
export function icedFlagsToRflags(bits: number): number {
  let r = 0;
  if (bits & 1) r |= OF;
  if (bits & 2) r |= SF;
  if (bits & 4) r |= ZF;
  if (bits & 8) r |= AF;
  if (bits & 16) r |= CF;
  if (bits & 32) r |= PF;
  if (bits & 64) r |= DF;
  return r;
}

export function flagsToString(f: number): string {
  const names: [number, string][] = [[OF, 'OF'], [DF, 'DF'], [SF, 'SF'], [ZF, 'ZF'], [AF, 'AF'], [PF, 'PF'], [CF, 'CF']];
  return names.filter(([b]) => f & b).map(([, n]) => n).join(' ') || '-';
}

/** Where an operand lives in one case. */
export type Location =
  | { type: 'reg'; gpr: number; shift: number; size: number; register: Register }
  | { type: 'mem'; offset: number; size: number }
  | { type: 'imm'; value: bigint; size: number };

export interface DiffCase extends DiffInput {
  form: Form;
  /** Index within its form (reproduce with the seed and the form id). */
  index: number;
  locations: Location[];
  /** Input value of each operand (truncated to its size), after aliasing. */
  opVals: bigint[];
  /** RFLAGS bits the manuals leave undefined for this case (not compared). */
  undefinedFlags: number;
  /** The destination (operand 0) is undefined for this case (not compared). */
  destUndefined: boolean;
  /** Why, for reports. */
  undefinedWhy?: string;
}

const mask = (bits: number): bigint => (1n << big(bits)) - 1n;

export function toSigned(v: bigint, bits: number): bigint {
  return asIntN(bits, v);
}

/** A register operand of `size` bits: 8-bit choices 0..19 = AL..BL, AH..BH, SPL..DIL, R8L..R15L. */
function pickRegister(prng: Prng, size: number, taken: Location[]): Location & { type: 'reg' } {
  // Some aliasing on purpose: reuse an operand register 15% of the time.
  const prev = taken.filter((l): l is Location & { type: 'reg' } => l.type === 'reg' && l.size === size);
  if (prev.length && prng.chance(0.15)) return prng.pick(prev);
  if (size === 8) {
    const c = prng.below(20);
    const gpr = c < 4 ? c : c - 4;
    const shift = c >= 4 && c < 8 ? 8 : 0;
    return { type: 'reg', gpr, shift, size, register: (Register.AL + c) as Register };
  }
  const gpr = prng.below(16);
  const base = size === 16 ? Register.AX : size === 32 ? Register.EAX : Register.RAX;
  return { type: 'reg', gpr, shift: 0, size, register: (base + gpr) as Register };
}

function fixedRegister(spec: OperandSpec): Location & { type: 'reg' } {
  const gpr = spec.fixed!;
  const base = spec.size === 8 ? Register.AL : spec.size === 16 ? Register.AX : spec.size === 32 ? Register.EAX : Register.RAX;
  return { type: 'reg', gpr, shift: 0, size: spec.size, register: (base + gpr) as Register };
}

/** Edge-biased operand value of `bits` bits. */
export function dataValue(prng: Prng, bits: number): bigint {
  const m = mask(bits);
  const r = prng.u32() / 4294967296;
  if (r < 0.35) {
    const sMax = m >> 1n;
    const edges = [0n, 1n, 2n, m, m - 1n, sMax, sMax + 1n, sMax - 1n, sMax + 2n, 0x55n * (m / 0xffn), 0xaan * (m / 0xffn)];
    return prng.pick(edges) & m;
  }
  if (r < 0.45) return big(prng.below(17)) & m;
  if (r < 0.5) return (m - big(prng.below(17))) & m;
  if (r < 0.6) {
    const bit = 1n << big(prng.below(bits));
    return prng.chance(0.5) ? bit : (bit - 1n) & m;
  }
  return prng.bits(bits);
}

/** Shift/rotate count: edge counts around the width, then any byte. */
function countValue(prng: Prng, bits: number, width: number): bigint {
  const v = prng.chance(0.6)
    ? big(prng.pick([0, 1, 2, width - 1, width, width + 1, 2 * width, 2 * width + 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 255]))
    : big(prng.below(256));
  return v & mask(bits);
}

function sparseMask(prng: Prng, bits: number): bigint {
  const r = prng.below(5);
  if (r === 0) return prng.pick([0n, mask(bits), 1n, 1n << big(bits - 1)]);
  if (r === 1) return prng.bits(bits) & prng.bits(bits) & prng.bits(bits);
  return prng.bits(bits);
}

type Role = 'data' | 'count' | 'bitoffset' | 'bitoffset-mem' | 'index' | 'bextr' | 'mask';

function roleOf(form: Form, i: number): Role {
  const m = form.mnemonic;
  switch (form.family) {
    case 'shift': case 'rotate': return i === 1 ? 'count' : 'data';
    case 'double-shift': return i === 2 ? 'count' : 'data';
    case 'bit-test': return i === 1 ? (form.memory && form.ops[1].kind === 'reg' ? 'bitoffset-mem' : 'bitoffset') : 'data';
  }
  if (i === 2 && (m === 'Sarx' || m === 'Shlx' || m === 'Shrx' || m === 'Rorx')) return 'count';
  if (i === 2 && m === 'Bzhi') return 'index';
  if (i === 2 && m === 'Bextr') return 'bextr';
  if (i === 2 && (m === 'Pdep' || m === 'Pext')) return 'mask';
  return 'data';
}

function valueFor(prng: Prng, role: Role, bits: number, form: Form): bigint {
  const width = form.size;
  switch (role) {
    case 'data': return dataValue(prng, bits);
    case 'count': return countValue(prng, bits, width);
    case 'index': return prng.chance(0.7) ? (countValue(prng, 8, width) | (prng.chance(0.3) ? prng.bits(bits) & ~0xffn & mask(bits) : 0n)) : prng.bits(bits);
    case 'bextr': {
      if (!prng.chance(0.7)) return prng.bits(bits);
      const start = countValue(prng, 8, width);
      const len = countValue(prng, 8, width);
      return (start | (len << 8n) | (prng.chance(0.3) ? prng.bits(bits) & ~0xffffn : 0n)) & mask(bits);
    }
    case 'mask': return sparseMask(prng, bits);
    case 'bitoffset': {
      if (prng.chance(0.5)) return prng.bits(bits);
      const e = big(prng.pick([0, 1, width - 1, width, width + 1, 2 * width - 1, -1, -width, -width - 1]));
      return asUintN(bits, e + big(prng.below(4)) * big(width));
    }
    case 'bitoffset-mem': {
      // A signed bit offset whose byte reach stays inside the window.
      const reach = BT_MAX_BYTE_REACH * 8;
      const e = prng.chance(0.5)
        ? big(prng.pick([0, 1, width - 1, width, -1, -width, -width - 1, 8 * width - 1, reach - 64, -reach]))
        : big(prng.below(2 * reach) - reach);
      return asUintN(bits, e);
    }
  }
}

function readLoc(c: { regs: BigUint64Array; mem: Uint8Array; memOff: number }, l: Location): bigint {
  if (l.type === 'reg') return (c.regs[l.gpr] >> big(l.shift)) & mask(l.size);
  if (l.type === 'imm') return l.value & mask(l.size);
  let v = 0n;
  const o = l.offset - c.memOff;
  for (let i = l.size / 8 - 1; i >= 0; i--) v = (v << 8n) | big(c.mem[o + i]);
  return v;
}

function writeLoc(c: { regs: BigUint64Array; mem: Uint8Array; memOff: number }, l: Location, v: bigint): void {
  if (l.type === 'reg') {
    const m = mask(l.size) << big(l.shift);
    c.regs[l.gpr] = (c.regs[l.gpr] & ~m) | ((v << big(l.shift)) & m);
  } else if (l.type === 'mem') {
    const o = l.offset - c.memOff;
    for (let i = 0; i < l.size / 8; i++) c.mem[o + i] = num((v >> big(8 * i)) & 0xffn);
  }
}

/** Write the low `bits` of a GPR, keeping the rest. */
function setGprBits(regs: BigUint64Array, gpr: number, bits: number, v: bigint, shift = 0): void {
  const m = mask(bits) << big(shift);
  regs[gpr] = (regs[gpr] & ~m) | ((v << big(shift)) & m);
}

/** Family tweaks on implicit operands, so interesting paths are well represented. */
function tweak(prng: Prng, c: DiffCase): void {
  const f = c.form;
  const w = f.size;
  if (f.family === 'div') {
    const dLoc = c.locations[0];
    if (dLoc.type === 'reg' && (dLoc.gpr === 0 || (w > 8 && dLoc.gpr === 2))) return; // divisor aliases the dividend
    if (!prng.chance(0.75)) return; // otherwise: whatever the random dividend gives (mostly #DE)
    const d = readLoc(c, dLoc);
    if (d === 0n) return;
    let lo: bigint, hi: bigint;
    if (f.mnemonic === 'Div') {
      const q = dataValue(prng, w);
      const r = prng.bits(64) % d;
      const n = q * d + r;
      lo = n & mask(w);
      hi = (n >> big(w)) & mask(w);
    } else {
      const ds = toSigned(d, w);
      const q = toSigned(dataValue(prng, w), w);
      const ad = ds < 0n ? -ds : ds;
      let r = prng.bits(64) % ad;
      const prod = q * ds;
      if (prod < 0n || (prod === 0n && prng.chance(0.5))) r = -r;
      const n = asUintN(2 * w, prod + r);
      lo = n & mask(w);
      hi = (n >> big(w)) & mask(w);
    }
    if (w === 8) { setGprBits(c.regs, 0, 8, lo); setGprBits(c.regs, 0, 8, hi, 8); }
    else { setGprBits(c.regs, 0, w, lo); setGprBits(c.regs, 2, w, hi); }
  } else if (f.family === 'mul' && f.ops.length === 1) {
    setGprBits(c.regs, 0, w, dataValue(prng, w));
  } else if (f.mnemonic === 'Mulx') {
    setGprBits(c.regs, 2, w, dataValue(prng, w));
  } else if (f.mnemonic === 'Cmpxchg') {
    if (prng.chance(0.5)) setGprBits(c.regs, 0, w, readLoc(c, c.locations[0]));
    else setGprBits(c.regs, 0, w, dataValue(prng, w));
  } else if (f.family === 'flags-convert') {
    setGprBits(c.regs, 0, 64, prng.chance(0.5) ? dataValue(prng, 64) : prng.u64());
    if (f.mnemonic === 'Cwd' || f.mnemonic === 'Cdq' || f.mnemonic === 'Cqo') setGprBits(c.regs, 0, w, dataValue(prng, w));
  }
}

/** Per-case undefined flags/destination where the rule depends on the count or the source. */
function refineUndefined(c: DiffCase, icedUndefined: number): void {
  const f = c.form;
  const w = f.size;
  const countMask = w === 64 ? 0x3fn : 0x1fn;
  c.undefinedFlags = icedUndefined;
  switch (f.family) {
    case 'shift': {
      const n = num(c.opVals[1] & countMask);
      if (n === 0) { c.undefinedFlags = 0; c.undefinedWhy = 'count 0: flags unchanged'; return; }
      let u = AF;
      if (n !== 1) u |= OF;
      if ((f.mnemonic === 'Shl' || f.mnemonic === 'Sal' || f.mnemonic === 'Shr') && n >= w) u |= CF;
      c.undefinedFlags = u;
      return;
    }
    case 'rotate': {
      const n = num(c.opVals[1] & countMask);
      c.undefinedFlags = n === 0 ? 0 : n === 1 ? 0 : OF;
      return;
    }
    case 'double-shift': {
      const n = num(c.opVals[2] & countMask);
      if (n === 0) { c.undefinedFlags = 0; return; }
      if (n > w) {
        c.undefinedFlags = CF | PF | AF | ZF | SF | OF;
        c.destUndefined = true;
        c.undefinedWhy = `count ${n} > operand size ${w}: result and flags undefined`;
        return;
      }
      c.undefinedFlags = AF | (n === 1 ? 0 : OF);
      return;
    }
    case 'bit-scan': {
      if ((f.mnemonic === 'Bsf' || f.mnemonic === 'Bsr') && c.opVals[1] === 0n && hostCpuVendor() === 'intel') {
        // Intel: destination undefined for a zero source (AMD documents it unchanged).
        c.destUndefined = true;
        c.undefinedWhy = 'zero source: destination undefined (Intel)';
      }
      return;
    }
  }
}

const SEG_NONE = Register.None;

/** Shared encoder/formatter (wasm objects live for the whole test file). */
let encoder: Encoder | null = null;

function getEncoder(): Encoder {
  return (encoder ??= new Encoder(64));
}

/**
 * The memory operand: absolute [disp32] with no base or index (SIB form), so every register
 * stays free; displSize 4 makes iced use a 0x67 address-size prefix (32-bit addressing).
 * A fresh object each time: iced's create* functions take ownership of it.
 */
function memOperand(addr32: boolean): MemoryOperand {
  return new MemoryOperand(Register.None, Register.None, 1, big(DATA_ADDR + MEM_OPERAND_OFF), addr32 ? 4 : 8, false, SEG_NONE);
}

type Arg = { r: Register } | { m: MemoryOperand } | { i: number; signed: boolean };

function createInstruction(code: Code, args: Arg[]): Instruction {
  const shape = args.map((a) => ('r' in a ? 'R' : 'm' in a ? 'M' : 'I')).join('');
  const imm = args.find((a): a is { i: number; signed: boolean } => 'i' in a);
  const regs = args.filter((a): a is { r: Register } => 'r' in a).map((a) => a.r);
  const m = args.find((a): a is { m: MemoryOperand } => 'm' in a)?.m as MemoryOperand;
  const I = Instruction;
  const s = imm?.signed;
  const iv = imm?.i as number;
  switch (shape) {
    case '': return I.create(code);
    case 'R': return I.createReg(code, regs[0]);
    case 'M': return I.createMem(code, m);
    case 'RR': return I.createRegReg(code, regs[0], regs[1]);
    case 'RM': return I.createRegMem(code, regs[0], m);
    case 'MR': return I.createMemReg(code, m, regs[0]);
    case 'RI': return s ? I.createRegI32(code, regs[0], iv) : I.createRegU32(code, regs[0], iv);
    case 'MI': return s ? I.createMemI32(code, m, iv) : I.createMemU32(code, m, iv);
    case 'RRR': return I.createRegRegReg(code, regs[0], regs[1], regs[2]);
    case 'RRM': return I.createRegRegMem(code, regs[0], regs[1], m);
    case 'RMR': return I.createRegMemReg(code, regs[0], m, regs[1]);
    case 'RRI': return s ? I.createRegRegI32(code, regs[0], regs[1], iv) : I.createRegRegU32(code, regs[0], regs[1], iv);
    case 'RMI': return s ? I.createRegMemI32(code, regs[0], m, iv) : I.createRegMemU32(code, regs[0], m, iv);
    case 'MRR': return I.createMemRegReg(code, m, regs[0], regs[1]);
    case 'MRI': return s ? I.createMemRegI32(code, m, regs[0], iv) : I.createMemRegU32(code, m, regs[0], iv);
  }
  throw new Error(`no iced constructor for operand shape ${shape}`);
}

/** Generate `count` cases of `form` from `seed` (reproducible: same seed, same cases). */
export function generateCases(form: Form, count: number, seed: number, firstIndex = 0): DiffCase[] {
  const prng = new Prng(seed, `${form.id}#${firstIndex}`);
  const enc = getEncoder();
  const out: DiffCase[] = [];
  const btMem = form.family === 'bit-test' && form.memory && form.ops[1].kind === 'reg';
  for (let n = 0; n < count; n++) {
    let made: DiffCase | null = null;
    for (let attempt = 0; attempt < 50 && !made; attempt++) {
      const locations: Location[] = [];
      const args: Arg[] = [];
      const addr32 = form.memory && prng.chance(0.1);
      for (let i = 0; i < form.ops.length; i++) {
        const spec = form.ops[i];
        if (spec.kind === 'imm') {
          const role = roleOf(form, i);
          let v: bigint;
          if (spec.const1) v = 1n;
          else if (role === 'count') v = countValue(prng, spec.size, form.size);
          else v = dataValue(prng, spec.size);
          const value = spec.signed ? num(toSigned(v, spec.size)) : num(v);
          locations.push({ type: 'imm', value: v, size: spec.size });
          args.push({ i: value, signed: !!spec.signed });
        } else if (spec.kind === 'mem' || (spec.kind === 'rm' && form.memory)) {
          locations.push({ type: 'mem', offset: MEM_OPERAND_OFF, size: spec.size });
          args.push({ m: memOperand(addr32) });
        } else {
          const loc = spec.fixed !== undefined ? fixedRegister(spec) : pickRegister(prng, spec.size, locations);
          locations.push(loc);
          args.push({ r: loc.register });
        }
      }
      let bytes: Uint8Array;
      let icedUndefined: number;
      const ins = createInstruction(form.code, args);
      try {
        enc.encode(ins, big(CODE_ADDR));
        bytes = enc.takeBuffer();
        icedUndefined = icedFlagsToRflags(ins.rflagsUndefined);
      } catch {
        enc.takeBuffer(); // drop any partial output of the failed encoding
        continue; // e.g. AH with a REX prefix: choose registers again
      } finally {
        ins.free();
      }
      const memOff = btMem ? BT_WINDOW_OFF : WINDOW_OFF;
      const memLen = form.memory ? (btMem ? BT_WINDOW_LEN : WINDOW_LEN) : 0;
      const regs = new U64Array(16);
      for (let i = 0; i < 16; i++) regs[i] = prng.u64();
      let rflags = 0x2;
      for (const b of [CF, PF, AF, ZF, SF, OF]) if (prng.chance(0.5)) rflags |= b;
      if (prng.chance(0.2)) rflags |= DF;
      const c: DiffCase = {
        form, index: firstIndex + n, bytes, regs, rflags, memOff, mem: prng.bytes(memLen), locations,
        opVals: [], undefinedFlags: 0, destUndefined: false,
      };
      for (let i = 0; i < locations.length; i++) {
        const l = locations[i];
        if (l.type === 'imm') continue;
        writeLoc(c, l, valueFor(prng, roleOf(form, i), l.size, form));
      }
      tweak(prng, c);
      c.opVals = locations.map((l) => readLoc(c, l));
      refineUndefined(c, icedUndefined);
      made = c;
    }
    if (!made) throw new Error(`${form.id}: could not encode a case after 50 attempts`);
    out.push(made);
  }
  return out;
}

let formatter: Formatter | null = null;

/** Disassemble a case's bytes (Intel syntax) for reports. */
export function disassemble(bytes: Uint8Array): string {
  const dec = new Decoder(64, bytes, DecoderOptions.None);
  dec.ip = big(CODE_ADDR);
  const ins = dec.decode();
  formatter ??= new Formatter(FormatterSyntax.Intel);
  const text = formatter.format(ins);
  ins.free();
  dec.free();
  return text;
}

export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
}
