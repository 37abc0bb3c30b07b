/**
 * Translation: iced-x86 decodes each guest instruction ONCE; its fields are read here, at
 * translation time, into a plain `Op` record bound to a pre-selected handler, so execution
 * never crosses into WebAssembly (DESIGN.md "The processor": a wasm property read costs ~11 ns).
 */
import { Decoder, DecoderError, DecoderOptions, Instruction, MemorySizeExt, Mnemonic, OpKind, Register, Code, FlowControl } from 'iced-x86';
import type { X86Cpu } from './x86-cpu';
import { BASE_RIP, K_IMM, K_MEM, K_NONE, K_REG, Op, OpFn } from './op';
import * as X from './ops';
import * as S from './sys';
import * as E from './ext';
import { CrAccessType, InterceptInsn } from './guest-mode';

/** Translated straight-line code: ends at a control transfer, page end or MAX_BLOCK ops. */
export class Block {
  valid = true;
  /** Chaining: the two most recent successors (by RIP), valid while `chainGen` equals cpu.tlbGen. */
  chainGen = -1;
  c1Rip = NaN;
  c1: Block | null = null;
  c2Rip = NaN;
  c2: Block | null = null;
  /**
   * Resumption: the block at `rRip`, the RIP after an instruction of this block that exited
   * (CPUID, …) and that the VMM skipped — where the next VM entry starts. Valid while `rGen`
   * equals cpu.tlbGen, like the chain.
   */
  rGen = -1;
  rRip = NaN;
  rNext: Block | null = null;
  /** Bytes of the page the block covers (from its first byte). */
  bytes = 0;
  /** Whole-block executions by the interpreter (the JIT tier compiles at JIT_THRESHOLD). */
  heat = 0;
  /** The compiled form (jit.ts), null until compiled or when not compilable. */
  jit: ((c: X86Cpu, max: number) => number) | null = null;
  constructor(readonly ops: Op[], readonly n: number, readonly cacheable: boolean) {}
}

const MAX_BLOCK = 64;

let insn: Instruction | null = null;
function theInsn(): Instruction {
  if (insn === null) insn = new Instruction();
  return insn;
}

/** #UD for anything not implemented or invalid. */
function opUd(c: X86Cpu, _o: Op): number {
  return c.ud();
}

/**
 * Translate a block starting at `bytes[0]` (the rest of the page) in a `bits`-bit code
 * segment. An instruction that crosses the page end is fetched across the boundary and
 * translated alone, uncached. Returns null if that fetch faulted (c.pend set).
 */
export function decodeBlock(c: X86Cpu, bytes: Uint8Array, bits: number, lin: number): Block | null {
  const ins = theInsn();
  const opts = c.options.vendor === 'amd' ? DecoderOptions.AMD : DecoderOptions.None;
  const dec = new Decoder(bits, bytes, opts);
  const ops: Op[] = [];
  let pos = 0;
  try {
    dec.ip = 0n;
    while (ops.length < MAX_BLOCK && pos < bytes.length) {
      dec.position = pos;
      dec.ip = BigInt(pos);
      dec.decodeOut(ins);
      if (ins.code === Code.INVALID && dec.lastError === DecoderError.NoMoreBytes) {
        if (ops.length > 0) break;
        // `finally` frees `dec`: freeing it here too would hand iced-x86's allocator a null
        // pointer on the second free and corrupt its heap.
        return crossing(c, bytes, bits, lin);
      }
      // An instruction that reads the TSC starts its own block, so the retired-instruction
      // count it reads (X86Cpu.guestTsc) is exact in both tiers without per-instruction cost.
      if (ops.length > 0 && readsTsc(ins)) break;
      const len = ins.length;
      const op = build(c, ins, bits, bytes.slice(pos, pos + len), pos);
      ops.push(op);
      pos += len;
      if (ends(ins)) break;
    }
  } finally {
    try { dec.free(); } catch { /* already freed */ }
  }
  const b = new Block(ops, ops.length, true);
  b.bytes = pos;
  return b;
}

/** Translate the instruction at `rip` alone (emulateInstruction). Null when its fetch faulted. */
export function decodeOne(c: X86Cpu, rip: number): Op | null {
  const s = c.state;
  let lin: number;
  if (c.bits === 64) lin = rip;
  else {
    if (rip > s.segLimit[1]) { c.gp(0); return null; }
    lin = (c.segBase[1] + rip) >>> 0;
  }
  const buf = new Uint8Array(15);
  let n = 0;
  while (n < 15) {
    const a = c.linAdd(lin, n);
    const i = c.xlate(a, 2);
    if (i < 0) { if (n === 0) { if (c.pend === 0) c.pend = 4; return null; } c.pend = 0; break; }
    const pageLeft = 0x1000 - (a & 0xfff);
    const take = Math.min(pageLeft, 15 - n);
    const src = c.tBuf[i];
    const off = c.tOff[i] + (a & 0xfff);
    for (let k = 0; k < take; k++) buf[n + k] = src[off + k];
    n += take;
  }
  const ins = theInsn();
  const dec = new Decoder(c.bits, buf.subarray(0, n), c.options.vendor === 'amd' ? DecoderOptions.AMD : DecoderOptions.None);
  try {
    dec.ip = 0n;
    dec.decodeOut(ins);
    return build(c, ins, c.bits, buf.slice(0, ins.length), 0);
  } finally {
    dec.free();
  }
}

function crossing(c: X86Cpu, first: Uint8Array, bits: number, lin: number): Block | null {
  const n1 = first.length;
  const next = c.linAdd(lin, n1);
  const i = c.xlate(next, 2);
  if (i < 0) return null;
  const buf = new Uint8Array(n1 + 15);
  buf.set(first);
  const src = c.tBuf[i];
  const off = c.tOff[i];
  for (let k = 0; k < 15; k++) buf[n1 + k] = src[off + k];
  const ins = theInsn();
  const dec = new Decoder(bits, buf, c.options.vendor === 'amd' ? DecoderOptions.AMD : DecoderOptions.None);
  try {
    dec.ip = 0n;
    dec.decodeOut(ins);
    const op = build(c, ins, bits, buf.slice(0, ins.length), 0);
    const b = new Block([op], 1, false);
    b.bytes = n1;
    return b;
  } finally {
    dec.free();
  }
}

/** RDTSC, RDTSCP and RDMSR (which may read IA32_TSC). */
function readsTsc(ins: Instruction): boolean {
  const m = ins.mnemonic;
  return m === Mnemonic.Rdtsc || m === Mnemonic.Rdtscp || m === Mnemonic.Rdmsr;
}

/** Does the block end after this instruction? (control transfers; everything else continues.) */
function ends(ins: Instruction): boolean {
  return ins.flowControl !== FlowControl.Next || ins.code === Code.INVALID;
}

// ---------------------------------------------------------------------------------------
// Operand helpers
// ---------------------------------------------------------------------------------------

/** GPR register → code (0..15; 16..19 for AH CH DH BH) and size; -1 if not a GPR. */
function gpr(reg: number): number {
  if (reg >= Register.AL && reg <= Register.BL) return reg - Register.AL;
  if (reg >= Register.AH && reg <= Register.BH) return 16 + reg - Register.AH;
  if (reg >= Register.SPL && reg <= Register.R15L) return 4 + reg - Register.SPL;
  if (reg >= Register.AX && reg <= Register.R15W) return reg - Register.AX;
  if (reg >= Register.EAX && reg <= Register.R15D) return reg - Register.EAX;
  if (reg >= Register.RAX && reg <= Register.R15) return reg - Register.RAX;
  return -1;
}
function gprSize(reg: number): number {
  if (reg >= Register.AL && reg <= Register.R15L) return 1;
  if (reg >= Register.AX && reg <= Register.R15W) return 2;
  if (reg >= Register.EAX && reg <= Register.R15D) return 4;
  if (reg >= Register.RAX && reg <= Register.R15) return 8;
  return 0;
}
function sreg(reg: number): number {
  return reg >= Register.ES && reg <= Register.GS ? reg - Register.ES : -1;
}

/** Prefix scan: operand-size (66) and address-size (67) overrides. */
function prefixes(bytes: Uint8Array, bits: number): { o16: boolean; a67: boolean; rexW: boolean } {
  let o16 = false, a67 = false, rexW = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0x66) o16 = true;
    else if (b === 0x67) a67 = true;
    else if (b === 0x26 || b === 0x2e || b === 0x36 || b === 0x3e || b === 0x64 || b === 0x65 || b === 0xf0 || b === 0xf2 || b === 0xf3) continue;
    else if (bits === 64 && (b & 0xf0) === 0x40) { rexW = (b & 8) !== 0; continue; }
    else break;
  }
  return { o16, a67, rexW };
}

function immOf(o: Op, ins: Instruction, k: number, sz: number): void {
  const v = ins.immediate(k);
  const lo = Number(BigInt.asUintN(32, v));
  o.il = sz === 1 ? lo & 0xff : sz === 2 ? lo & 0xffff : lo | 0;
  o.ih = sz === 8 ? Number(BigInt.asIntN(32, v >> 32n)) : 0;
}

function isImm(kind: number): boolean {
  return kind >= OpKind.Immediate8 && kind <= OpKind.Immediate32to64;
}

/** Fill the memory-operand fields. */
function memOf(o: Op, ins: Instruction, bits: number, asz: number): void {
  o.seg = Math.max(0, sreg(ins.memorySegment));
  const base = ins.memoryBase;
  const index = ins.memoryIndex;
  const disp = ins.memoryDisplacement;
  if (base === Register.RIP || base === Register.EIP) {
    o.mb = BASE_RIP;
    // iced reports the absolute target for IP-relative operands (decoded at ip = offset).
    const rel = BigInt.asIntN(64, disp - ins.nextIP);
    o.dl = Number(BigInt.asIntN(32, rel));
    o.dh = o.dl < 0 ? -1 : 0;
  } else {
    o.mb = base === Register.None ? -1 : gpr(base) & 15;
    if (asz === 8) {
      o.dl = Number(BigInt.asUintN(32, disp)) | 0;
      o.dh = Number(BigInt.asIntN(32, BigInt.asIntN(64, disp) >> 32n));
    } else {
      o.dl = asz === 4 ? Number(BigInt.asUintN(32, disp)) | 0 : Number(BigInt.asUintN(16, disp));
      o.dh = 0;
    }
  }
  o.mi = index === Register.None ? -1 : gpr(index) & 15;
  o.ms = [0, 0, 1, 0, 2, 0, 0, 0, 3][ins.memoryIndexScale] ?? 0;
  void bits;
}

/** Generic operand into (kind, value) for slot d (0) or s (1). */
function operand(o: Op, ins: Instruction, k: number, slot: 'd' | 's' | 't', sz: number): boolean {
  const kind = ins.opKind(k);
  let ok = 0, ov = 0;
  if (kind === OpKind.Register) {
    const g = gpr(ins.opRegister(k));
    if (g < 0) return false;
    ok = K_REG; ov = g;
  } else if (kind === OpKind.Memory) {
    ok = K_MEM;
  } else if (isImm(kind)) {
    ok = K_IMM;
    immOf(o, ins, k, sz);
  } else return false;
  if (slot === 'd') { o.dk = ok; o.d = ov; } else if (slot === 's') { o.sk = ok; o.s = ov; } else { o.tk = ok; o.t = ov; }
  return true;
}

function sizeOf(ins: Instruction, k: number): number {
  const kind = ins.opKind(k);
  if (kind === OpKind.Register) return gprSize(ins.opRegister(k));
  if (kind === OpKind.Memory) return MemorySizeExt.size(ins.memorySize);
  return 0;
}

const ALU: Partial<Record<number, number>> = {
  [Mnemonic.Add]: 0, [Mnemonic.Or]: 1, [Mnemonic.Adc]: 2, [Mnemonic.Sbb]: 3,
  [Mnemonic.And]: 4, [Mnemonic.Sub]: 5, [Mnemonic.Xor]: 6, [Mnemonic.Cmp]: 7, [Mnemonic.Test]: 4,
};
const SHIFT: Partial<Record<number, number>> = {
  [Mnemonic.Rol]: 0, [Mnemonic.Ror]: 1, [Mnemonic.Rcl]: 2, [Mnemonic.Rcr]: 3,
  [Mnemonic.Shl]: 4, [Mnemonic.Shr]: 5, [Mnemonic.Sal]: 6, [Mnemonic.Sar]: 7,
};

/** Build the Op for one decoded instruction. */
function build(c: X86Cpu, ins: Instruction, bits: number, bytes: Uint8Array, _pos: number): Op {
  const o = new Op(opUd, bytes);
  o.len = ins.length;
  if (ins.code === Code.INVALID) return o;
  const pf = prefixes(bytes, bits);
  const asz = bits === 64 ? (pf.a67 ? 4 : 8) : bits === 32 ? (pf.a67 ? 2 : 4) : (pf.a67 ? 4 : 2);
  const osz = bits === 64 ? (pf.rexW ? 8 : pf.o16 ? 2 : 4) : bits === 32 ? (pf.o16 ? 2 : 4) : (pf.o16 ? 4 : 2);
  o.asz = asz;
  o.sz = osz;
  const n = ins.opCount;
  let hasMem = false;
  for (let k = 0; k < n; k++) if (ins.opKind(k) === OpKind.Memory) hasMem = true;
  if (hasMem) memOf(o, ins, bits, asz);
  const m = ins.mnemonic;
  const fn = select(c, ins, o, m, bits, osz, asz, n);
  o.fn = fn;
  return o;
}

function select(c: X86Cpu, ins: Instruction, o: Op, m: number, bits: number, osz: number, asz: number, n: number): OpFn {
  void c;
  const alu = ALU[m];
  if (alu !== undefined) {
    const sz = sizeOf(ins, 0) || sizeOf(ins, 1);
    o.sz = sz;
    o.cc = alu;
    o.x = m === Mnemonic.Test || m === Mnemonic.Cmp ? 1 : 0;
    if (!operand(o, ins, 0, 'd', sz) || !operand(o, ins, 1, 's', sz)) return opUd;
    if (sz === 4 && o.dk === K_REG && o.sk === K_REG) return X.opAlu32RR;
    if (sz === 4 && o.dk === K_REG && o.sk === K_IMM) return X.opAlu32RI;
    if (sz === 8 && o.dk === K_REG && o.sk === K_REG) return X.opAlu64RR;
    return X.opAlu;
  }
  const sh = SHIFT[m];
  if (sh !== undefined) {
    const sz = sizeOf(ins, 0);
    o.sz = sz; o.cc = sh;
    if (!operand(o, ins, 0, 'd', sz)) return opUd;
    if (isImm(ins.opKind(1))) { o.tk = K_IMM; o.il = Number(ins.immediate(1)) & 0xff; }
    else o.tk = K_REG;
    if (o.tk === K_IMM && o.dk === K_REG && (sz === 4 || sz === 8) && (sh === 4 || sh === 5 || sh === 6 || sh === 7)) {
      o.il &= sz === 8 ? 63 : 31;
      if (o.il !== 0) { o.cc = sh === 6 ? 4 : sh; return X.opShiftRI; }
    }
    return X.opShift;
  }
  const cc = ins.conditionCode - 1;
  if (ins.isJccShortOrNear) {
    const k0 = ins.opKind(0);
    o.sz = k0 === OpKind.NearBranch16 ? 2 : k0 === OpKind.NearBranch32 ? 4 : 8;
    o.br = Number(BigInt.asIntN(o.sz * 8, ins.nearBranchTarget - ins.nextIP));
    o.cc = cc;
    return X.opJcc;
  }
  switch (m) {
    case Mnemonic.Mov: {
      const k0 = ins.opKind(0), k1 = ins.opKind(1);
      if (k0 === OpKind.Register) {
        const r0 = ins.opRegister(0);
        if (sreg(r0) >= 0) { o.x = sreg(r0); o.sz = 2; if (!operand(o, ins, 1, 's', 2)) { if (k1 === OpKind.Register) { o.sk = K_REG; o.s = gpr(ins.opRegister(1)) & 15; } else return opUd; } return S.opMovSreg; }
        if (r0 >= Register.CR0 && r0 <= Register.CR0 + 15) { o.x = r0 - Register.CR0; o.s = gpr(ins.opRegister(1)) & 15; o.cc = CrAccessType.MOV_TO_CR; return S.opMovToCr; }
        if (r0 >= Register.DR0 && r0 <= Register.DR0 + 15) { o.x = r0 - Register.DR0; o.s = gpr(ins.opRegister(1)) & 15; o.cc = 1; return S.opMovDr; }
      }
      if (k1 === OpKind.Register) {
        const r1 = ins.opRegister(1);
        if (sreg(r1) >= 0) { o.x = sreg(r1); o.sz = k0 === OpKind.Register ? gprSize(ins.opRegister(0)) : 2; if (k0 === OpKind.Register) { o.dk = K_REG; o.d = gpr(ins.opRegister(0)) & 15; } else o.dk = K_MEM; return S.opMovFromSreg; }
        if (r1 >= Register.CR0 && r1 <= Register.CR0 + 15) { o.x = r1 - Register.CR0; o.d = gpr(ins.opRegister(0)) & 15; return S.opMovFromCr; }
        if (r1 >= Register.DR0 && r1 <= Register.DR0 + 15) { o.x = r1 - Register.DR0; o.d = gpr(ins.opRegister(0)) & 15; o.cc = 0; return S.opMovDr; }
      }
      const sz = sizeOf(ins, 0) || sizeOf(ins, 1);
      o.sz = sz;
      if (!operand(o, ins, 0, 'd', sz) || !operand(o, ins, 1, 's', sz)) return opUd;
      if (o.dk === K_REG && o.sk === K_REG) return sz === 4 ? X.opMov32RR : sz === 8 ? X.opMov64RR : X.opMov;
      if (o.dk === K_REG && o.sk === K_IMM && sz === 4) return X.opMov32RI;
      return X.opMov;
    }
    case Mnemonic.Movzx: case Mnemonic.Movsx: case Mnemonic.Movsxd: {
      o.sz = sizeOf(ins, 0); o.x = sizeOf(ins, 1); o.cc = m === Mnemonic.Movzx ? 0 : 1;
      if (!operand(o, ins, 0, 'd', o.sz) || !operand(o, ins, 1, 's', o.x)) return opUd;
      return X.opMovx;
    }
    case Mnemonic.Lea: o.sz = sizeOf(ins, 0); operand(o, ins, 0, 'd', o.sz); return X.opLea;
    case Mnemonic.Xchg: {
      const sz = sizeOf(ins, 0) || sizeOf(ins, 1);
      o.sz = sz;
      if (ins.opKind(1) === OpKind.Memory) { if (!operand(o, ins, 1, 'd', sz) || !operand(o, ins, 0, 's', sz)) return opUd; }
      else if (!operand(o, ins, 0, 'd', sz) || !operand(o, ins, 1, 's', sz)) return opUd;
      return X.opXchg;
    }
    case Mnemonic.Inc: case Mnemonic.Dec:
      o.sz = sizeOf(ins, 0); o.cc = m === Mnemonic.Dec ? 1 : 0;
      return operand(o, ins, 0, 'd', o.sz) ? X.opIncDec : opUd;
    case Mnemonic.Neg: case Mnemonic.Not:
      o.sz = sizeOf(ins, 0); o.cc = m === Mnemonic.Not ? 1 : 0;
      return operand(o, ins, 0, 'd', o.sz) ? X.opNegNot : opUd;
    case Mnemonic.Mul: case Mnemonic.Div: case Mnemonic.Idiv:
      o.sz = sizeOf(ins, 0); o.cc = m === Mnemonic.Mul ? 0 : m === Mnemonic.Div ? 0 : 1;
      if (!operand(o, ins, 0, 's', o.sz)) return opUd;
      return m === Mnemonic.Mul ? X.opMul1 : X.opDiv;
    case Mnemonic.Imul:
      if (n === 1) { o.sz = sizeOf(ins, 0); o.cc = 1; return operand(o, ins, 0, 's', o.sz) ? X.opMul1 : opUd; }
      o.sz = sizeOf(ins, 0);
      if (!operand(o, ins, 0, 'd', o.sz) || !operand(o, ins, 1, 's', o.sz)) return opUd;
      if (n === 3) { o.tk = K_IMM; immOf(o, ins, 2, o.sz); }
      return X.opImul2;
    case Mnemonic.Shld: case Mnemonic.Shrd:
      o.sz = sizeOf(ins, 0); o.cc = m === Mnemonic.Shld ? 0 : 1;
      if (!operand(o, ins, 0, 'd', o.sz) || !operand(o, ins, 1, 's', o.sz)) return opUd;
      if (isImm(ins.opKind(2))) { o.tk = K_IMM; o.i2 = Number(ins.immediate(2)) & 0xff; } else o.tk = K_REG;
      return X.opShxd;
    case Mnemonic.Bt: case Mnemonic.Bts: case Mnemonic.Btr: case Mnemonic.Btc:
      o.sz = sizeOf(ins, 0) || sizeOf(ins, 1);
      o.cc = m === Mnemonic.Bt ? 0 : m === Mnemonic.Bts ? 1 : m === Mnemonic.Btr ? 2 : 3;
      if (!operand(o, ins, 0, 'd', o.sz) || !operand(o, ins, 1, 's', o.sz)) return opUd;
      if (o.sk === K_IMM) o.il = Number(ins.immediate(1)) & 0xff;
      return X.opBt;
    case Mnemonic.Bsf: case Mnemonic.Bsr:
      o.sz = sizeOf(ins, 0); o.cc = m === Mnemonic.Bsf ? 0 : 1;
      return operand(o, ins, 0, 'd', o.sz) && operand(o, ins, 1, 's', o.sz) ? X.opBsx : opUd;
    case Mnemonic.Xadd: case Mnemonic.Cmpxchg:
      o.sz = sizeOf(ins, 0) || sizeOf(ins, 1);
      if (!operand(o, ins, 0, 'd', o.sz) || !operand(o, ins, 1, 's', o.sz)) return opUd;
      return m === Mnemonic.Xadd ? X.opXadd : X.opCmpxchg;
    case Mnemonic.Cmpxchg8b: o.sz = 8; return X.opCmpxchgNb;
    case Mnemonic.Cmpxchg16b: o.sz = 16; return X.opCmpxchgNb;
    case Mnemonic.Bswap: o.sz = sizeOf(ins, 0); operand(o, ins, 0, 'd', o.sz); return X.opBswap;
    case Mnemonic.Cmova: case Mnemonic.Cmovae: case Mnemonic.Cmovb: case Mnemonic.Cmovbe: case Mnemonic.Cmove:
    case Mnemonic.Cmovg: case Mnemonic.Cmovge: case Mnemonic.Cmovl: case Mnemonic.Cmovle: case Mnemonic.Cmovne:
    case Mnemonic.Cmovno: case Mnemonic.Cmovnp: case Mnemonic.Cmovns: case Mnemonic.Cmovo: case Mnemonic.Cmovp: case Mnemonic.Cmovs:
      o.sz = sizeOf(ins, 0); o.cc = cc;
      return operand(o, ins, 0, 'd', o.sz) && operand(o, ins, 1, 's', o.sz) ? X.opCmov : opUd;
    case Mnemonic.Seta: case Mnemonic.Setae: case Mnemonic.Setb: case Mnemonic.Setbe: case Mnemonic.Sete:
    case Mnemonic.Setg: case Mnemonic.Setge: case Mnemonic.Setl: case Mnemonic.Setle: case Mnemonic.Setne:
    case Mnemonic.Setno: case Mnemonic.Setnp: case Mnemonic.Setns: case Mnemonic.Seto: case Mnemonic.Setp: case Mnemonic.Sets:
      o.sz = 1; o.cc = cc;
      return operand(o, ins, 0, 'd', 1) ? X.opSetcc : opUd;
    case Mnemonic.Push: {
      const sz = Math.abs(ins.stackPointerIncrement);
      o.sz = sz;
      if (ins.opKind(0) === OpKind.Register && sreg(ins.opRegister(0)) >= 0) { o.x = sreg(ins.opRegister(0)); return S.opPushSreg; }
      return operand(o, ins, 0, 's', sz) ? X.opPush : opUd;
    }
    case Mnemonic.Pop: {
      const sz = ins.stackPointerIncrement;
      o.sz = sz;
      if (ins.opKind(0) === OpKind.Register && sreg(ins.opRegister(0)) >= 0) { o.x = sreg(ins.opRegister(0)); return S.opPopSreg; }
      return operand(o, ins, 0, 'd', sz) ? X.opPop : opUd;
    }
    case Mnemonic.Pushad: case Mnemonic.Pusha: o.sz = Math.abs(ins.stackPointerIncrement) / 8; return X.opPusha;
    case Mnemonic.Popad: case Mnemonic.Popa: o.sz = ins.stackPointerIncrement / 8; return X.opPopa;
    case Mnemonic.Pushfd: case Mnemonic.Pushfq: case Mnemonic.Pushf: o.sz = Math.abs(ins.stackPointerIncrement); return X.opPushf;
    case Mnemonic.Popfd: case Mnemonic.Popfq: case Mnemonic.Popf: o.sz = ins.stackPointerIncrement; return X.opPopf;
    case Mnemonic.Enter:
      o.sz = bits === 64 ? (pfO16(o) ? 2 : 8) : osz;
      o.il = Number(ins.immediate(0)) & 0xffff; o.i2 = Number(ins.immediate(1)) & 0xff;
      return X.opEnter;
    case Mnemonic.Leave: o.sz = ins.stackPointerIncrement; return X.opLeave;
    case Mnemonic.Cbw: o.sz = 2; o.cc = 0; return X.opConv;
    case Mnemonic.Cwde: o.sz = 4; o.cc = 0; return X.opConv;
    case Mnemonic.Cdqe: o.sz = 8; o.cc = 0; return X.opConv;
    case Mnemonic.Cwd: o.sz = 2; o.cc = 1; return X.opConv;
    case Mnemonic.Cdq: o.sz = 4; o.cc = 1; return X.opConv;
    case Mnemonic.Cqo: o.sz = 8; o.cc = 1; return X.opConv;
    case Mnemonic.Xlatb: return X.opXlat;
    case Mnemonic.Clc: o.cc = 0; return X.opFlagOp;
    case Mnemonic.Stc: o.cc = 1; return X.opFlagOp;
    case Mnemonic.Cmc: o.cc = 2; return X.opFlagOp;
    case Mnemonic.Cld: o.cc = 3; return X.opFlagOp;
    case Mnemonic.Std: o.cc = 4; return X.opFlagOp;
    case Mnemonic.Cli: o.cc = 0; return X.opCliSti;
    case Mnemonic.Sti: o.cc = 1; return X.opCliSti;
    case Mnemonic.Lahf: return X.opLahf;
    case Mnemonic.Sahf: return X.opSahf;
    case Mnemonic.Jmp: case Mnemonic.Call: {
      const isCall = m === Mnemonic.Call;
      const k0 = ins.opKind(0);
      if (k0 === OpKind.NearBranch16 || k0 === OpKind.NearBranch32 || k0 === OpKind.NearBranch64) {
        o.sz = k0 === OpKind.NearBranch16 ? 2 : k0 === OpKind.NearBranch32 ? 4 : 8;
        const bitsOp = o.sz * 8;
        o.br = Number(BigInt.asIntN(bitsOp, ins.nearBranchTarget - ins.nextIP));
        return isCall ? X.opCallRel : X.opJmpRel;
      }
      if (k0 === OpKind.FarBranch16 || k0 === OpKind.FarBranch32) {
        o.sz = k0 === OpKind.FarBranch16 ? 2 : 4;
        o.sk = K_IMM; o.il = k0 === OpKind.FarBranch16 ? ins.farBranch16 : ins.farBranch32; o.i2 = ins.farBranchSelector;
        o.cc = isCall ? 1 : 0;
        return S.opFar;
      }
      if (ins.isJmpFarIndirect || ins.isCallFarIndirect) {
        o.sz = MemorySizeExt.size(ins.memorySize) - 2;
        o.sk = K_MEM; o.cc = isCall ? 1 : 0;
        return S.opFar;
      }
      const sz = sizeOf(ins, 0);
      o.sz = sz;
      if (!operand(o, ins, 0, 's', sz)) return opUd;
      return isCall ? X.opCallInd : X.opJmpInd;
    }
    case Mnemonic.Ret: {
      const imm = n > 0 ? Number(ins.immediate(0)) & 0xffff : 0;
      o.il = imm;
      o.sz = ins.stackPointerIncrement - imm;
      return X.opRet;
    }
    case Mnemonic.Retf: {
      const imm = n > 0 ? Number(ins.immediate(0)) & 0xffff : 0;
      o.il = imm;
      o.sz = (ins.stackPointerIncrement - imm) / 2;
      return S.opRetf;
    }
    case Mnemonic.Jcxz: case Mnemonic.Jecxz: case Mnemonic.Jrcxz: case Mnemonic.Loop: case Mnemonic.Loope: case Mnemonic.Loopne: {
      const k0 = ins.opKind(0);
      o.sz = k0 === OpKind.NearBranch16 ? 2 : k0 === OpKind.NearBranch32 ? 4 : 8;
      o.br = Number(BigInt.asIntN(o.sz * 8, ins.nearBranchTarget - ins.nextIP));
      o.cc = m === Mnemonic.Loop ? 0 : m === Mnemonic.Loope ? 1 : m === Mnemonic.Loopne ? 2 : 3;
      o.asz = m === Mnemonic.Jcxz ? 2 : m === Mnemonic.Jecxz ? 4 : m === Mnemonic.Jrcxz ? 8 : asz;
      return X.opLoop;
    }
    case Mnemonic.Iret: o.sz = 2; return S.opIret;
    case Mnemonic.Iretd: o.sz = 4; return S.opIret;
    case Mnemonic.Iretq: o.sz = 8; return S.opIret;
    case Mnemonic.Int: o.x = 0; o.cc = Number(ins.immediate(0)) & 0xff; return S.opInt;
    case Mnemonic.Int3: o.x = 1; return S.opInt;
    case Mnemonic.Into: o.x = 2; return S.opInt;
    case Mnemonic.Int1: o.x = 3; return S.opInt;
    case Mnemonic.Hlt: return S.opHlt;
    case Mnemonic.Nop: case Mnemonic.Lfence: case Mnemonic.Sfence: case Mnemonic.Mfence: case Mnemonic.Clflush:
    case Mnemonic.Clflushopt: case Mnemonic.Prefetchnta: case Mnemonic.Prefetcht0: case Mnemonic.Prefetchw:
    case Mnemonic.Endbr32: case Mnemonic.Endbr64:
      return X.opNop;
    case Mnemonic.Pause: o.x = InterceptInsn.PAUSE; o.cc = 0; return S.opInterceptNop;
    case Mnemonic.Wbinvd: o.x = InterceptInsn.WBINVD; o.cc = 1; return S.opInterceptNop;
    case Mnemonic.Invd: o.x = InterceptInsn.INVD; o.cc = 1; return S.opInterceptNop;
    case Mnemonic.Cpuid: return S.opCpuid;
    case Mnemonic.Rdmsr: o.cc = 0; return S.opMsr;
    case Mnemonic.Wrmsr: o.cc = 1; return S.opMsr;
    case Mnemonic.Rdtsc: o.cc = 0; return S.opRdtsc;
    case Mnemonic.Rdtscp: o.cc = 1; return S.opRdtsc;
    case Mnemonic.Rdpmc: o.x = InterceptInsn.RDPMC; return S.opInterceptUd;
    case Mnemonic.Vmcall: o.x = InterceptInsn.VMCALL; return S.opInterceptUd;
    case Mnemonic.Vmmcall: o.x = InterceptInsn.VMMCALL; return S.opInterceptUd;
    case Mnemonic.Monitor: o.x = InterceptInsn.MONITOR; return S.opInterceptUd;
    case Mnemonic.Mwait: o.x = InterceptInsn.MWAIT; return S.opInterceptUd;
    case Mnemonic.Xsetbv: o.x = InterceptInsn.XSETBV; return S.opInterceptUd;
    case Mnemonic.Rsm: o.x = InterceptInsn.RSM; return S.opInterceptUd;
    case Mnemonic.Vmrun: o.x = InterceptInsn.VMRUN; o.cc = 1; return S.opInterceptUd;
    case Mnemonic.Vmload: o.x = InterceptInsn.VMLOAD; o.cc = 1; return S.opInterceptUd;
    case Mnemonic.Vmsave: o.x = InterceptInsn.VMSAVE; o.cc = 1; return S.opInterceptUd;
    case Mnemonic.Stgi: o.x = InterceptInsn.STGI; o.cc = 1; return S.opInterceptUd;
    case Mnemonic.Clgi: o.x = InterceptInsn.CLGI; o.cc = 1; return S.opInterceptUd;
    case Mnemonic.Skinit: o.x = InterceptInsn.SKINIT; o.cc = 1; return S.opInterceptUd;
    case Mnemonic.Invlpga: o.x = InterceptInsn.INVLPGA; o.cc = 1; return S.opInterceptUd;
    case Mnemonic.Vmlaunch: case Mnemonic.Vmresume: case Mnemonic.Vmptrld: case Mnemonic.Vmptrst: case Mnemonic.Vmread:
    case Mnemonic.Vmwrite: case Mnemonic.Vmxon: case Mnemonic.Vmxoff: case Mnemonic.Vmclear: case Mnemonic.Invept:
    case Mnemonic.Invvpid: case Mnemonic.Vmfunc:
      o.x = InterceptInsn.VMX_INSN; return S.opInterceptUd;
    case Mnemonic.Lgdt: o.cc = 0; o.sz = osz; return S.opLdt;
    case Mnemonic.Lidt: o.cc = 1; o.sz = osz; return S.opLdt;
    case Mnemonic.Sgdt: o.cc = 0; return S.opSdt;
    case Mnemonic.Sidt: o.cc = 1; return S.opSdt;
    case Mnemonic.Lldt: case Mnemonic.Ltr:
      o.cc = m === Mnemonic.Lldt ? 0 : 1;
      return operand(o, ins, 0, 's', 2) ? S.opLldtLtr : opUd;
    case Mnemonic.Sldt: case Mnemonic.Str:
      o.cc = m === Mnemonic.Sldt ? 0 : 1; o.sz = sizeOf(ins, 0) || 2;
      return operand(o, ins, 0, 'd', o.sz) ? S.opSldtStr : opUd;
    case Mnemonic.Lmsw: o.cc = CrAccessType.LMSW; o.x = 0; return operand(o, ins, 0, 's', 2) ? S.opMovToCr : opUd;
    case Mnemonic.Clts: o.cc = CrAccessType.CLTS; o.x = 0; return S.opMovToCr;
    case Mnemonic.Smsw: o.sz = sizeOf(ins, 0) || 2; return operand(o, ins, 0, 'd', o.sz) ? S.opSmsw : opUd;
    case Mnemonic.Invlpg: return S.opInvlpg;
    case Mnemonic.Invpcid: o.d = gpr(ins.opRegister(0)) & 15; return S.opInvpcid;
    case Mnemonic.Swapgs: return S.opSwapgs;
    case Mnemonic.Syscall: return S.opSyscall;
    case Mnemonic.Sysret: o.sz = 4; return S.opSysret;
    case Mnemonic.Sysretq: o.sz = 8; return S.opSysret;
    case Mnemonic.Sysenter: return S.opSysenter;
    case Mnemonic.Sysexit: o.sz = 4; return S.opSysexit;
    case Mnemonic.Sysexitq: o.sz = 8; return S.opSysexit;
    case Mnemonic.In: {
      o.sz = gprSize(ins.opRegister(0));
      if (isImm(ins.opKind(1))) { o.sk = K_IMM; o.il = Number(ins.immediate(1)) & 0xff; } else o.sk = K_REG;
      return S.opIn;
    }
    case Mnemonic.Out: {
      o.sz = gprSize(ins.opRegister(1));
      if (isImm(ins.opKind(0))) { o.dk = K_IMM; o.il = Number(ins.immediate(0)) & 0xff; } else o.dk = K_REG;
      return S.opOut;
    }
    case Mnemonic.Insb: case Mnemonic.Insw: case Mnemonic.Insd: case Mnemonic.Outsb: case Mnemonic.Outsw: case Mnemonic.Outsd: {
      o.sz = m === Mnemonic.Insb || m === Mnemonic.Outsb ? 1 : m === Mnemonic.Insw || m === Mnemonic.Outsw ? 2 : 4;
      o.cc = m === Mnemonic.Insb || m === Mnemonic.Insw || m === Mnemonic.Insd ? 0 : 1;
      o.rep = ins.hasRepPrefix || ins.hasRepePrefix || ins.hasRepnePrefix ? 1 : 0;
      o.seg = Math.max(0, sreg(ins.memorySegment));
      return S.opInsOuts;
    }
    case Mnemonic.Movsb: case Mnemonic.Movsw: case Mnemonic.Movsd: case Mnemonic.Movsq:
    case Mnemonic.Stosb: case Mnemonic.Stosw: case Mnemonic.Stosd: case Mnemonic.Stosq:
    case Mnemonic.Lodsb: case Mnemonic.Lodsw: case Mnemonic.Lodsd: case Mnemonic.Lodsq:
    case Mnemonic.Cmpsb: case Mnemonic.Cmpsw: case Mnemonic.Cmpsd: case Mnemonic.Cmpsq:
    case Mnemonic.Scasb: case Mnemonic.Scasw: case Mnemonic.Scasd: case Mnemonic.Scasq: {
      if (!ins.isStringInstruction) return opUd; // SSE MOVSD/CMPSD
      const name = Mnemonic[m];
      const last = name[name.length - 1];
      o.sz = last === 'b' ? 1 : last === 'w' ? 2 : last === 'd' ? 4 : 8;
      const head = name.slice(0, 4);
      o.cc = head === 'Movs' ? 0 : head === 'Stos' ? 1 : head === 'Lods' ? 2 : head === 'Cmps' ? 3 : 4;
      o.rep = ins.hasRepnePrefix ? 2 : ins.hasRepPrefix || ins.hasRepePrefix ? 1 : 0;
      if (o.cc < 3 && o.rep === 2) o.rep = 1;
      o.seg = Math.max(0, sreg(ins.memorySegment));
      return X.opString;
    }
    case Mnemonic.Lds: o.x = 3; break;
    case Mnemonic.Les: o.x = 0; break;
    case Mnemonic.Lfs: o.x = 4; break;
    case Mnemonic.Lgs: o.x = 5; break;
    case Mnemonic.Lss: o.x = 2; break;
    case Mnemonic.Lar: case Mnemonic.Lsl: case Mnemonic.Verr: case Mnemonic.Verw: {
      o.cc = m === Mnemonic.Lar ? 0 : m === Mnemonic.Lsl ? 1 : m === Mnemonic.Verr ? 2 : 3;
      if (o.cc <= 1) {
        o.sz = sizeOf(ins, 0);
        if (!operand(o, ins, 0, 'd', o.sz) || !operand(o, ins, 1, 's', 2)) return opUd;
      } else if (!operand(o, ins, 0, 's', 2)) return opUd;
      return S.opDescQuery;
    }
    case Mnemonic.Stac: o.cc = 1; return S.opStacClac;
    case Mnemonic.Clac: o.cc = 0; return S.opStacClac;
    case Mnemonic.Rdfsbase: case Mnemonic.Rdgsbase: case Mnemonic.Wrfsbase: case Mnemonic.Wrgsbase: {
      const wr = m === Mnemonic.Wrfsbase || m === Mnemonic.Wrgsbase;
      o.cc = wr ? 1 : 0;
      o.x = m === Mnemonic.Rdfsbase || m === Mnemonic.Wrfsbase ? 4 : 5;
      o.sz = sizeOf(ins, 0);
      if (wr) { o.s = gpr(ins.opRegister(0)) & 15; } else o.d = gpr(ins.opRegister(0)) & 15;
      return S.opFsgsbase;
    }
    case Mnemonic.Rdrand: case Mnemonic.Rdseed:
      o.cc = m === Mnemonic.Rdrand ? 0 : 1; o.sz = sizeOf(ins, 0); o.d = gpr(ins.opRegister(0)) & 15;
      return S.opRdrand;
    case Mnemonic.Rdpid: o.d = gpr(ins.opRegister(0)) & 15; return S.opRdpid;
    case Mnemonic.Xgetbv: return S.opXgetbv;
    default: {
      const ext = E.selectExt(ins, o, m, bits, osz, asz, n, sizeOf, operand);
      return ext ?? opUd;
    }
  }
  // LDS/LES/LFS/LGS/LSS fall through here.
  o.sz = sizeOf(ins, 0);
  if (!operand(o, ins, 0, 'd', o.sz)) return opUd;
  return S.opLxs;
}

function pfO16(o: Op): boolean {
  return prefixes(o.bytes, 64).o16;
}

export { K_NONE };
