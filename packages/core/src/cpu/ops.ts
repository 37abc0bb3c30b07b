/**
 * General-purpose instruction semantics (Intel SDM Vol. 2; AMD APM Vol. 3). Each function
 * is an OpFn (see op.ts for the return-code contract). Values travel as 32-bit halves:
 * the low half is returned and the high half (64-bit operands) goes through `c.vh`.
 */
import type { X86Cpu } from './x86-cpu';
import { F_ADC, F_ADD, F_DEC, F_INC, F_LOGIC, F_SBB, F_SUB } from './x86-cpu';
import { BASE_RIP, K_IMM, K_MEM, K_REG, Op } from './op';
import { AF, ARITH, CF, CS, DE, DF, ES, GP, IF, OF, PF, SF, SS, SS_VEC, ZF, AC, ID, NT, RF, TF, VM, VIF, VIP, IOPL } from './consts';

const TWO32 = 4294967296;

// =====================================================================================
// Registers and addressing
// =====================================================================================

/** Register read: codes 0..15 are GPRs, 16..19 are AH CH DH BH (8-bit only). */
export function getReg(c: X86Cpu, code: number, sz: number): number {
  const r = c.r;
  switch (sz) {
    case 1: c.vh = 0; return code < 16 ? r[code] & 0xff : (r[code - 16] >>> 8) & 0xff;
    case 2: c.vh = 0; return r[code] & 0xffff;
    case 4: c.vh = 0; return r[code];
    default: c.vh = c.rh[code]; return r[code];
  }
}
/** Register write with the architecture's merge rules (32-bit writes zero the upper half). */
export function setReg(c: X86Cpu, code: number, sz: number, v: number, vh: number): void {
  const r = c.r;
  switch (sz) {
    case 1:
      if (code < 16) r[code] = (r[code] & ~0xff) | (v & 0xff);
      else r[code - 16] = (r[code - 16] & ~0xff00) | ((v & 0xff) << 8);
      return;
    case 2: r[code] = (r[code] & ~0xffff) | (v & 0xffff); return;
    case 4: r[code] = v; c.rh[code] = 0; return;
    default: r[code] = v; c.rh[code] = vh;
  }
}
/** Truncate to the operand size (sz < 8). */
export function trunc(v: number, sz: number): number {
  return sz === 1 ? v & 0xff : sz === 2 ? v & 0xffff : v | 0;
}

/** Effective address (offset within the segment), truncated to the address size; high half in vh. */
export function eaRaw(c: X86Cpu, o: Op): number {
  const r = c.r;
  if (o.asz === 8) {
    let s = o.dl >>> 0;
    let h = o.dh;
    const b = o.mb;
    if (b >= 0) {
      if (b === BASE_RIP) { const nr = c.rip + o.len; s += nr >>> 0; h += Math.floor(nr / TWO32); }
      else { s += r[b] >>> 0; h += c.rh[b]; }
    }
    if (o.mi >= 0) { const m = 1 << o.ms; s += (r[o.mi] >>> 0) * m; h += c.rh[o.mi] * m; }
    c.vh = (h + Math.floor(s / TWO32)) | 0;
    return s >>> 0;
  }
  let e = o.dl;
  const b = o.mb;
  if (b >= 0) e += b === BASE_RIP ? c.rip + o.len : r[b];
  if (o.mi >= 0) e += r[o.mi] << o.ms;
  c.vh = 0;
  return o.asz === 4 ? e >>> 0 : e & 0xffff;
}

/** Canonical check of a linear address' high half (48- or 57-bit). */
export function canonHi(c: X86Cpu, hi: number): boolean {
  return (c.la57 ? (hi << 7) >> 7 : (hi << 16) >> 16) === hi;
}

/**
 * Linear address of the memory operand for an access of `sz` bytes (write: `wr`), with
 * the segment checks of SDM Vol. 3A 5.3 (legacy) or the canonical check (64-bit).
 * On a fault sets `c.pend` and returns 0.
 */
export function linOf(c: X86Cpu, o: Op, sz: number, wr: boolean): number {
  const lo = eaRaw(c, o);
  if (c.bits === 64) {
    let hi = c.vh;
    let l = lo;
    const seg = o.seg;
    if (seg >= 4) {
      const s2 = l + (c.state.segBaseLo[seg] >>> 0);
      l = s2 >>> 0;
      hi = (hi + c.state.segBaseHi[seg] + (s2 > 0xffffffff ? 1 : 0)) | 0;
    }
    if (!canonHi(c, hi)) { c.raise(seg === SS ? SS_VEC : GP, 0, true); return 0; }
    return hi * TWO32 + l;
  }
  return segLin(c, o.seg, lo, sz, wr);
}

/** Legacy-mode segment check and base addition (SDM 5.3, 5.4). */
export function segLin(c: X86Cpu, seg: number, e: number, sz: number, wr: boolean): number {
  if ((c.segFast[seg] & (wr ? 2 : 1)) !== 0) return (c.segBase[seg] + e) >>> 0;
  const s = c.state;
  const a = s.segAttr[seg];
  const vec = seg === SS ? SS_VEC : GP;
  if (c.pe) {
    if (a & 0x10000) { c.raise(vec, 0, true); return 0; }
    const type = a & 0xf;
    if (type & 8) { if (wr || !(type & 2)) { c.raise(vec, 0, true); return 0; } }
    else if (wr && !(type & 2)) { c.raise(vec, 0, true); return 0; }
  }
  const lim = s.segLimit[seg];
  const last = e + sz - 1;
  if ((a & 0x1c) === 0x14) {
    // Expand-down data segment: valid offsets are limit+1 .. 0xffff / 0xffffffff.
    const top = (a & 0x4000) ? 0xffffffff : 0xffff;
    if (e <= lim || last > top) { c.raise(vec, 0, true); return 0; }
  } else if (last > lim) { c.raise(vec, 0, true); return 0; }
  return (c.segBase[seg] + e) >>> 0;
}

/** Read the source operand (kind sk/s) at size sz; high half in vh. */
function readSrc(c: X86Cpu, o: Op, sz: number): number {
  switch (o.sk) {
    case K_REG: return getReg(c, o.s, sz);
    case K_IMM: c.vh = o.ih; return o.il;
    default: {
      const lin = linOf(c, o, sz, false);
      if (c.pend) return 0;
      return c.rdN(lin, sz);
    }
  }
}

// =====================================================================================
// Stack
// =====================================================================================

/** Push `sz` bytes; commits RSP only when the write succeeded. */
export function push(c: X86Cpu, sz: number, v: number, vh: number): boolean {
  const r = c.r;
  if (c.bits === 64) {
    let lo = (r[4] >>> 0) - sz;
    let hi = c.rh[4];
    if (lo < 0) { lo += TWO32; hi = (hi - 1) | 0; }
    if (!canonHi(c, hi)) { c.raise(SS_VEC, 0, true); return false; }
    c.wrN(hi * TWO32 + lo, sz, v, vh);
    if (c.pend) return false;
    r[4] = lo | 0; c.rh[4] = hi;
    return true;
  }
  if (c.ssz === 4) {
    const sp = ((r[4] >>> 0) - sz) >>> 0;
    const lin = segLin(c, SS, sp, sz, true);
    if (c.pend) return false;
    c.wrN(lin, sz, v, vh);
    if (c.pend) return false;
    r[4] = sp | 0;
  } else {
    const sp = (r[4] - sz) & 0xffff;
    const lin = segLin(c, SS, sp, sz, true);
    if (c.pend) return false;
    c.wrN(lin, sz, v, vh);
    if (c.pend) return false;
    r[4] = (r[4] & ~0xffff) | sp;
  }
  return true;
}

/** Read `sz` bytes at stack offset SP+off without changing SP. */
export function stackPeek(c: X86Cpu, off: number, sz: number): number {
  const r = c.r;
  if (c.bits === 64) {
    let lo = (r[4] >>> 0) + off;
    let hi = c.rh[4];
    if (lo >= TWO32) { lo -= TWO32; hi = (hi + 1) | 0; }
    if (!canonHi(c, hi)) { c.raise(SS_VEC, 0, true); return 0; }
    return c.rdN(hi * TWO32 + lo, sz);
  }
  const sp = c.ssz === 4 ? ((r[4] >>> 0) + off) >>> 0 : (r[4] + off) & 0xffff;
  const lin = segLin(c, SS, sp, sz, false);
  if (c.pend) return 0;
  return c.rdN(lin, sz);
}

/** SP += n at the stack address size. */
export function spAdd(c: X86Cpu, n: number): void {
  const r = c.r;
  if (c.bits === 64) {
    const lo = (r[4] >>> 0) + n;
    r[4] = lo | 0;
    c.rh[4] = (c.rh[4] + Math.floor(lo / TWO32)) | 0;
  } else if (c.ssz === 4) r[4] = (r[4] + n) | 0;
  else r[4] = (r[4] & ~0xffff) | ((r[4] + n) & 0xffff);
}

/** Pop `sz` bytes (commits SP). */
export function pop(c: X86Cpu, sz: number): number {
  const v = stackPeek(c, 0, sz);
  if (c.pend) return 0;
  const vh = c.vh;
  spAdd(c, sz);
  c.vh = vh;
  return v;
}

// =====================================================================================
// ALU
// =====================================================================================

/**
 * The eight classic ALU operations in opcode order (ADD OR ADC SBB AND SUB XOR CMP), with
 * lazy flags. Inputs are truncated to `sz`; returns the low half, high half in vh.
 */
export function alu(c: X86Cpu, k: number, sz: number, a: number, ah: number, b: number, bh: number): number {
  let r: number, rh = 0;
  if (sz !== 8) { ah = 0; bh = 0; }
  switch (k) {
    case 0: case 2: {
      const cin = k === 2 ? c.getCF() : 0;
      const s = (a >>> 0) + (b >>> 0) + cin;
      if (sz === 8) { r = s | 0; rh = (ah + bh + (s > 0xffffffff ? 1 : 0)) | 0; } else r = trunc(s, sz);
      c.fOp = k === 2 ? F_ADC : F_ADD; c.fCin = cin;
      break;
    }
    case 3: case 5: case 7: {
      const cin = k === 3 ? c.getCF() : 0;
      const s = (a >>> 0) - (b >>> 0) - cin;
      if (sz === 8) { r = s | 0; rh = (ah - bh - (s < 0 ? 1 : 0)) | 0; } else r = trunc(s, sz);
      c.fOp = k === 3 ? F_SBB : F_SUB; c.fCin = cin;
      break;
    }
    case 1: r = a | b; rh = ah | bh; c.fOp = F_LOGIC; break;
    case 4: r = a & b; rh = ah & bh; c.fOp = F_LOGIC; break;
    default: r = a ^ b; rh = ah ^ bh; c.fOp = F_LOGIC; break;
  }
  c.fSz = sz; c.fA = a; c.fAh = ah; c.fB = b; c.fBh = bh; c.fR = r; c.fRh = rh;
  c.vh = rh;
  return r;
}

/** ADD/OR/ADC/SBB/AND/SUB/XOR/CMP/TEST: cc = operation, x = 1 when the result is discarded. */
export function opAlu(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const b = readSrc(c, o, sz);
  if (c.pend) return 2;
  const bh = c.vh;
  if (o.dk === K_REG) {
    const a = getReg(c, o.d, sz);
    const r = alu(c, o.cc, sz, a, c.vh, b, bh);
    if (o.x === 0) setReg(c, o.d, sz, r, c.vh);
    return 0;
  }
  const wr = o.x === 0;
  const lin = linOf(c, o, sz, wr);
  if (c.pend) return 2;
  if (wr) { c.wprobe(lin, sz); if (c.pend) return 2; }
  const a = c.rdN(lin, sz);
  if (c.pend) return 2;
  const r = alu(c, o.cc, sz, a, c.vh, b, bh);
  if (wr) c.wrN(lin, sz, r, c.vh);
  return c.pend ? 2 : 0;
}

/** Fast path: 32-bit ALU register, register (cc = op, x = discard). */
export function opAlu32RR(c: X86Cpu, o: Op): number {
  const r = c.r;
  const a = r[o.d], b = r[o.s];
  let res: number;
  switch (o.cc) {
    case 0: res = (a + b) | 0; c.fOp = F_ADD; break;
    case 5: case 7: res = (a - b) | 0; c.fOp = F_SUB; break;
    case 4: res = a & b; c.fOp = F_LOGIC; break;
    case 6: res = a ^ b; c.fOp = F_LOGIC; break;
    case 1: res = a | b; c.fOp = F_LOGIC; break;
    default: return opAlu(c, o);
  }
  c.fSz = 4; c.fA = a; c.fB = b; c.fR = res; c.fAh = 0; c.fBh = 0; c.fRh = 0;
  if (o.x === 0) { r[o.d] = res; c.rh[o.d] = 0; }
  return 0;
}
/** Fast path: 32-bit ALU register, immediate. */
export function opAlu32RI(c: X86Cpu, o: Op): number {
  const r = c.r;
  const a = r[o.d], b = o.il;
  let res: number;
  switch (o.cc) {
    case 0: res = (a + b) | 0; c.fOp = F_ADD; break;
    case 5: case 7: res = (a - b) | 0; c.fOp = F_SUB; break;
    case 4: res = a & b; c.fOp = F_LOGIC; break;
    case 6: res = a ^ b; c.fOp = F_LOGIC; break;
    case 1: res = a | b; c.fOp = F_LOGIC; break;
    default: return opAlu(c, o);
  }
  c.fSz = 4; c.fA = a; c.fB = b; c.fR = res; c.fAh = 0; c.fBh = 0; c.fRh = 0;
  if (o.x === 0) { r[o.d] = res; c.rh[o.d] = 0; }
  return 0;
}

/** Fast path: 64-bit ALU register, register. */
export function opAlu64RR(c: X86Cpu, o: Op): number {
  const r = c.r, rh = c.rh;
  const d = o.d, k = o.cc;
  if (k === 1 || k === 4 || k === 6) {
    const a = r[d], ah = rh[d], b = r[o.s], bh = rh[o.s];
    let lo: number, hi: number;
    if (k === 6) { lo = a ^ b; hi = ah ^ bh; } else if (k === 4) { lo = a & b; hi = ah & bh; } else { lo = a | b; hi = ah | bh; }
    c.fOp = F_LOGIC; c.fSz = 8; c.fR = lo; c.fRh = hi; c.fA = a; c.fAh = ah; c.fB = b; c.fBh = bh;
    if (o.x === 0) { r[d] = lo; rh[d] = hi; }
    return 0;
  }
  return opAlu(c, o);
}
/** Fast path: SHL/SHR/SAR register by immediate, 32- and 64-bit (count already masked, non-zero). */
export function opShiftRI(c: X86Cpu, o: Op): number {
  const r = c.r, rh = c.rh, d = o.d, n = o.il;
  if (o.sz === 4) {
    const a = r[d];
    let res: number, cf: number;
    if (o.cc === 5) { res = a >>> n; cf = (a >>> (n - 1)) & 1; }
    else if (o.cc === 7) { res = a >> n; cf = (a >> (n - 1)) & 1; }
    else { res = a << n; cf = (a >>> (32 - n)) & 1; }
    res |= 0;
    const of = o.cc === 5 ? a >>> 31 : o.cc === 7 ? 0 : (res >>> 31) ^ cf;
    c.fOp = 0;
    c.fE = cf | parity(res) | (res === 0 ? ZF : 0) | (res < 0 ? SF : 0) | (of ? OF : 0);
    r[d] = res; rh[d] = 0;
    return 0;
  }
  const a = r[d], ah = rh[d];
  let lo: number, hi: number, cf: number;
  if (o.cc === 5) { lo = shr64(c, a, ah, n); hi = c.vh; cf = bit(a, ah, n - 1); }
  else if (o.cc === 7) { lo = sar64(c, a, ah, n); hi = c.vh; cf = bit(a, ah, n - 1); }
  else { lo = shl64(c, a, ah, n); hi = c.vh; cf = bit(a, ah, 64 - n); }
  const of = o.cc === 5 ? ah >>> 31 : o.cc === 7 ? 0 : (hi >>> 31) ^ cf;
  c.fOp = 0;
  c.fE = cf | parity(lo) | ((lo | hi) === 0 ? ZF : 0) | (hi < 0 ? SF : 0) | (of ? OF : 0);
  r[d] = lo; rh[d] = hi;
  return 0;
}

/** INC / DEC (cc 0 inc, 1 dec): CF preserved (SDM INC/DEC). */
export function opIncDec(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const cf = c.getCF();
  const dec = o.cc === 1;
  if (o.dk === K_REG) {
    const a = getReg(c, o.d, sz);
    const r = incdec(c, sz, a, c.vh, dec, cf);
    setReg(c, o.d, sz, r, c.vh);
    return 0;
  }
  const lin = linOf(c, o, sz, true);
  if (c.pend) return 2;
  c.wprobe(lin, sz); if (c.pend) return 2;
  const a = c.rdN(lin, sz);
  if (c.pend) return 2;
  const r = incdec(c, sz, a, c.vh, dec, cf);
  c.wrN(lin, sz, r, c.vh);
  return c.pend ? 2 : 0;
}
function incdec(c: X86Cpu, sz: number, a: number, ah: number, dec: boolean, cf: number): number {
  let r: number, rh = 0;
  if (sz !== 8) ah = 0;
  if (dec) {
    const s = (a >>> 0) - 1;
    if (sz === 8) { r = s | 0; rh = (ah - (s < 0 ? 1 : 0)) | 0; } else r = trunc(s, sz);
  } else {
    const s = (a >>> 0) + 1;
    if (sz === 8) { r = s | 0; rh = (ah + (s > 0xffffffff ? 1 : 0)) | 0; } else r = trunc(s, sz);
  }
  c.fOp = dec ? F_DEC : F_INC; c.fE = cf;
  c.fSz = sz; c.fA = a; c.fAh = ah; c.fB = 1; c.fBh = 0; c.fR = r; c.fRh = rh;
  c.vh = rh;
  return r;
}

/** NEG (cc 0) and NOT (cc 1). */
export function opNegNot(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  let lin = 0;
  let a: number;
  if (o.dk === K_REG) a = getReg(c, o.d, sz);
  else {
    lin = linOf(c, o, sz, true);
    if (c.pend) return 2;
    c.wprobe(lin, sz); if (c.pend) return 2;
    a = c.rdN(lin, sz);
    if (c.pend) return 2;
  }
  const ah = c.vh;
  let r: number, rh: number;
  if (o.cc === 1) { r = trunc(~a, sz === 8 ? 4 : sz); rh = ~ah; }
  else { r = alu(c, 5, sz, 0, 0, a, ah); rh = c.vh; }
  if (o.dk === K_REG) setReg(c, o.d, sz, r, rh);
  else c.wrN(lin, sz, r, rh);
  return c.pend ? 2 : 0;
}

// =====================================================================================
// Data movement
// =====================================================================================

/** MOV r/m, r/imm and MOV r, r/m. */
export function opMov(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const v = readSrc(c, o, sz);
  if (c.pend) return 2;
  const vh = c.vh;
  if (o.dk === K_REG) { setReg(c, o.d, sz, v, vh); return 0; }
  const lin = linOf(c, o, sz, true);
  if (c.pend) return 2;
  c.wrN(lin, sz, v, vh);
  return c.pend ? 2 : 0;
}
/** Fast path: MOV r32, r32. */
export function opMov32RR(c: X86Cpu, o: Op): number {
  c.r[o.d] = c.r[o.s]; c.rh[o.d] = 0;
  return 0;
}
/** Fast path: MOV r64, r64. */
export function opMov64RR(c: X86Cpu, o: Op): number {
  c.r[o.d] = c.r[o.s]; c.rh[o.d] = c.rh[o.s];
  return 0;
}
/** Fast path: MOV r32, imm. */
export function opMov32RI(c: X86Cpu, o: Op): number {
  c.r[o.d] = o.il; c.rh[o.d] = 0;
  return 0;
}

/** MOVZX / MOVSX / MOVSXD: x = source size, cc = 1 for sign extension. */
export function opMovx(c: X86Cpu, o: Op): number {
  const v = readSrc(c, o, o.x);
  if (c.pend) return 2;
  let lo: number, hi: number;
  if (o.cc === 1) {
    lo = o.x === 1 ? (v << 24) >> 24 : o.x === 2 ? (v << 16) >> 16 : v | 0;
    hi = lo >> 31;
  } else { lo = v; hi = 0; }
  setReg(c, o.d, o.sz, trunc(lo, o.sz === 8 ? 4 : o.sz), hi);
  return 0;
}

/** LEA: the effective address truncated to the operand size. */
export function opLea(c: X86Cpu, o: Op): number {
  const lo = eaRaw(c, o);
  setReg(c, o.d, o.sz, trunc(lo, o.sz === 8 ? 4 : o.sz), c.vh);
  return 0;
}

/** XCHG (memory forms are implicitly locked; no difference here). */
export function opXchg(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const b = getReg(c, o.s, sz);
  const bh = c.vh;
  if (o.dk === K_REG) {
    const a = getReg(c, o.d, sz);
    const ah = c.vh;
    setReg(c, o.d, sz, b, bh);
    setReg(c, o.s, sz, a, ah);
    return 0;
  }
  const lin = linOf(c, o, sz, true);
  if (c.pend) return 2;
  c.wprobe(lin, sz); if (c.pend) return 2;
  const a = c.rdN(lin, sz);
  if (c.pend) return 2;
  const ah = c.vh;
  c.wrN(lin, sz, b, bh);
  if (c.pend) return 2;
  setReg(c, o.s, sz, a, ah);
  return 0;
}

/** CMOVcc r, r/m (the source is read even when the condition is false; 32-bit dest is zero-extended). */
export function opCmov(c: X86Cpu, o: Op): number {
  const v = readSrc(c, o, o.sz);
  if (c.pend) return 2;
  if (c.cond(o.cc)) setReg(c, o.d, o.sz, v, c.vh);
  else if (o.sz === 4) c.rh[o.d] = 0;
  return 0;
}

/** SETcc r/m8. */
export function opSetcc(c: X86Cpu, o: Op): number {
  const v = c.cond(o.cc) ? 1 : 0;
  if (o.dk === K_REG) { setReg(c, o.d, 1, v, 0); return 0; }
  const lin = linOf(c, o, 1, true);
  if (c.pend) return 2;
  c.wr8(lin, v);
  return c.pend ? 2 : 0;
}

/** BSWAP r32/r64 (16-bit operand: undefined; we zero the low word as most hardware does). */
export function opBswap(c: X86Cpu, o: Op): number {
  const r = c.r;
  const sw = (x: number): number => ((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24);
  if (o.sz === 8) { const lo = r[o.d], hi = c.rh[o.d]; r[o.d] = sw(hi); c.rh[o.d] = sw(lo); }
  else if (o.sz === 4) { r[o.d] = sw(r[o.d]); c.rh[o.d] = 0; }
  else r[o.d] = r[o.d] & ~0xffff;
  return 0;
}

/** PUSH r/m/imm. */
export function opPush(c: X86Cpu, o: Op): number {
  let v: number, vh: number;
  if (o.sk === K_REG && o.s === 4) { v = getReg(c, 4, o.sz); vh = c.vh; }
  else { v = readSrc(c, o, o.sz); if (c.pend) return 2; vh = c.vh; }
  return push(c, o.sz, v, vh) ? 0 : 2;
}
/** POP r/m (POP [rsp+x] uses RSP after the increment: SDM POP). */
export function opPop(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const v = stackPeek(c, 0, sz);
  if (c.pend) return 2;
  const vh = c.vh;
  if (o.dk === K_REG) { spAdd(c, sz); setReg(c, o.d, sz, v, vh); return 0; }
  const sLo = c.r[4], sHi = c.rh[4];
  spAdd(c, sz);
  const lin = linOf(c, o, sz, true);
  if (!c.pend) c.wrN(lin, sz, v, vh);
  if (c.pend) { c.r[4] = sLo; c.rh[4] = sHi; return 2; }
  return 0;
}

/** PUSHA/PUSHAD (sz 2/4). */
export function opPusha(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const sp0 = c.r[4], sph = c.rh[4];
  for (let i = 0; i < 8; i++) {
    const v = i === 4 ? trunc(sp0, sz) : getReg(c, i, sz);
    if (!push(c, sz, v, 0)) { c.r[4] = sp0; c.rh[4] = sph; return 2; }
  }
  return 0;
}
/** POPA/POPAD. */
export function opPopa(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const vals = c.scratch;
  for (let i = 0; i < 8; i++) {
    vals[i] = stackPeek(c, i * sz, sz);
    if (c.pend) return 2;
  }
  for (let i = 0; i < 8; i++) if (i !== 4) setReg(c, 7 - i, sz, vals[i], 0);
  spAdd(c, 8 * sz);
  return 0;
}

/** ENTER imm16, imm8 (SDM ENTER). */
export function opEnter(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const size = o.il & 0xffff;
  const level = o.i2 & 31;
  const sp0 = c.r[4], sph = c.rh[4], bp0 = c.r[5], bph = c.rh[5];
  const fail = (): number => { c.r[4] = sp0; c.rh[4] = sph; c.r[5] = bp0; c.rh[5] = bph; return 2; };
  if (!push(c, sz, getReg(c, 5, sz), c.vh)) return fail();
  const frame = getReg(c, 4, c.ssz);
  const frameH = c.vh;
  if (level > 0) {
    let bp = getReg(c, 5, c.ssz);
    let bph2 = c.vh;
    for (let i = 1; i < level; i++) {
      // Copy the enclosing frame pointers from [BP - i*sz].
      if (c.ssz === 8) {
        let lo = (bp >>> 0) - sz; if (lo < 0) { lo += TWO32; bph2 = (bph2 - 1) | 0; }
        bp = lo | 0;
        const v = c.rdN(bph2 * TWO32 + (lo >>> 0), sz);
        if (c.pend) return fail();
        if (!push(c, sz, v, c.vh)) return fail();
      } else {
        bp = c.ssz === 4 ? (bp - sz) | 0 : (bp - sz) & 0xffff;
        const lin = segLin(c, SS, c.ssz === 4 ? bp >>> 0 : bp, sz, false);
        if (c.pend) return fail();
        const v = c.rdN(lin, sz);
        if (c.pend) return fail();
        if (!push(c, sz, v, c.vh)) return fail();
      }
    }
    if (!push(c, sz, frame, frameH)) return fail();
  }
  // The frame's lowest byte must be writable (SDM: ENTER checks the final SP).
  setReg(c, 5, sz, trunc(frame, sz === 8 ? 4 : sz), frameH);
  spAdd(c, -size);
  return 0;
}
/** LEAVE. */
export function opLeave(c: X86Cpu, o: Op): number {
  const sp0 = c.r[4], sph = c.rh[4];
  setReg(c, 4, c.ssz, getReg(c, 5, c.ssz), c.vh);
  const v = pop(c, o.sz);
  if (c.pend) { c.r[4] = sp0; c.rh[4] = sph; return 2; }
  setReg(c, 5, o.sz, v, c.vh);
  return 0;
}

/** CBW/CWDE/CDQE (cc 0) and CWD/CDQ/CQO (cc 1). */
export function opConv(c: X86Cpu, o: Op): number {
  const r = c.r;
  const sz = o.sz;
  if (o.cc === 0) {
    if (sz === 2) r[0] = (r[0] & ~0xffff) | (((r[0] << 24) >> 24) & 0xffff);
    else if (sz === 4) { r[0] = (r[0] << 16) >> 16; c.rh[0] = 0; }
    else c.rh[0] = r[0] >> 31;
  } else {
    if (sz === 2) r[2] = (r[2] & ~0xffff) | ((r[0] << 16) >> 31 & 0xffff);
    else if (sz === 4) { r[2] = r[0] >> 31; c.rh[2] = 0; }
    else { const s = c.rh[0] >> 31; r[2] = s; c.rh[2] = s; }
  }
  return 0;
}

/** XLAT: AL = [seg:(E/R)BX + AL]. */
export function opXlat(c: X86Cpu, o: Op): number {
  const al = c.r[0] & 0xff;
  let lin: number;
  if (c.bits === 64 && o.asz === 8) {
    const s = (c.r[3] >>> 0) + al;
    let hi = (c.rh[3] + (s > 0xffffffff ? 1 : 0)) | 0;
    let lo = s >>> 0;
    if (o.seg >= 4) { const s2 = lo + (c.state.segBaseLo[o.seg] >>> 0); lo = s2 >>> 0; hi = (hi + c.state.segBaseHi[o.seg] + (s2 > 0xffffffff ? 1 : 0)) | 0; }
    if (!canonHi(c, hi)) return c.gp(0);
    lin = hi * TWO32 + lo;
  } else {
    const e = o.asz === 2 ? (c.r[3] + al) & 0xffff : ((c.r[3] >>> 0) + al) >>> 0;
    lin = c.bits === 64 ? e + (o.seg >= 4 ? (c.state.segBaseLo[o.seg] >>> 0) + c.state.segBaseHi[o.seg] * TWO32 : 0) : segLin(c, o.seg, e, 1, false);
    if (c.pend) return 2;
  }
  const v = c.rd8(lin);
  if (c.pend) return 2;
  c.r[0] = (c.r[0] & ~0xff) | v;
  return 0;
}

// =====================================================================================
// Flags instructions
// =====================================================================================

/** CLC STC CMC CLD STD (cc 0..4). */
export function opFlagOp(c: X86Cpu, o: Op): number {
  switch (o.cc) {
    case 0: c.setArith(c.getArith() & ~CF); break;
    case 1: c.setArith(c.getArith() | CF); break;
    case 2: c.setArith(c.getArith() ^ CF); break;
    case 3: c.fl &= ~DF; break;
    default: c.fl |= DF; break;
  }
  return 0;
}
/** LAHF. */
export function opLahf(c: X86Cpu, _o: Op): number {
  const f = (c.getArith() & (SF | ZF | AF | PF | CF)) | 2;
  c.r[0] = (c.r[0] & ~0xff00) | (f << 8);
  return 0;
}
/** SAHF. */
export function opSahf(c: X86Cpu, _o: Op): number {
  const ah = (c.r[0] >>> 8) & 0xff;
  c.setArith((c.getArith() & OF) | (ah & (SF | ZF | AF | PF | CF)));
  return 0;
}

/** CLI (cc 0) / STI (cc 1): IOPL-sensitive in protected mode (SDM CLI/STI; no VME/PVI). */
export function opCliSti(c: X86Cpu, o: Op): number {
  if (c.pe && c.cpl > ((c.fl >>> 12) & 3)) return c.gp(0);
  if (o.cc === 0) { c.fl &= ~IF; return 0; }
  if (!(c.fl & IF)) {
    c.fl |= IF;
    // One-instruction interrupt shadow (SDM STI).
    c.state.stiShadow = true;
    c.shadowSet = true;
    c.brk = true;
  }
  return 0;
}

/** PUSHF/PUSHFD/PUSHFQ: VM and RF are pushed clear. */
export function opPushf(c: X86Cpu, o: Op): number {
  // IOPL-sensitive in virtual-8086 mode (SDM 20.2.7, no VME).
  if (c.vm86 && (c.fl & IOPL) !== IOPL) return c.gp(0);
  if (c.intercepted(19 /* PUSHF */, o)) return 2;
  const f = c.getFlags() & ~(VM | RF);
  return push(c, o.sz, o.sz === 2 ? f & 0xffff : f, 0) ? 0 : 2;
}
/** POPF/POPFD/POPFQ with the privilege rules of SDM POPF (in virtual-8086 mode: IOPL 3 only, IOPL and VM kept). */
export function opPopf(c: X86Cpu, o: Op): number {
  if (c.vm86 && (c.fl & IOPL) !== IOPL) return c.gp(0);
  if (c.intercepted(20 /* POPF */, o)) return 2;
  const v = stackPeek(c, 0, o.sz);
  if (c.pend) return 2;
  spAdd(c, o.sz);
  const old = c.getFlags();
  let mask = CF | PF | AF | ZF | SF | TF | DF | OF | NT | AC | ID;
  const cpl = c.cpl;
  const iopl = (old >>> 12) & 3;
  if (cpl === 0) mask |= IOPL | IF;
  else if (cpl <= iopl) mask |= IF;
  if (o.sz === 2) mask &= 0xffff;
  const nf = (old & ~mask) | (v & mask);
  c.setFlags(nf & ~(RF) | (old & (VM | VIF | VIP)));
  c.brk = true; // TF/IF may have changed: re-evaluate at the boundary
  return 0;
}

// =====================================================================================
// Multiply / divide
// =====================================================================================

/** Unsigned 32x32 → 64: low returned, high in c.vh. */
export function umul32(c: X86Cpu, a: number, b: number): number {
  a >>>= 0; b >>>= 0;
  const lo = Math.imul(a, b) >>> 0;
  const t = (a & 0xffff) * b;
  const u = (a >>> 16) * b + Math.floor(t / 65536);
  c.vh = Math.floor(u / 65536) >>> 0;
  return lo;
}
/** Unsigned 64x64 → 128 into c.m128 (four 32-bit words, little-endian). */
function umul64(c: X86Cpu, al: number, ah: number, bl: number, bh: number): void {
  const w = c.m128;
  const p0l = umul32(c, al, bl), p0h = c.vh;
  const p1l = umul32(c, al, bh), p1h = c.vh;
  const p2l = umul32(c, ah, bl), p2h = c.vh;
  const p3l = umul32(c, ah, bh), p3h = c.vh;
  w[0] = p0l;
  let s = p0h + p1l + p2l;
  w[1] = s >>> 0;
  let carry = Math.floor(s / TWO32);
  s = p1h + p2h + p3l + carry;
  w[2] = s >>> 0;
  carry = Math.floor(s / TWO32);
  w[3] = (p3h + carry) >>> 0;
}

/** MUL / IMUL (one operand): cc 0 unsigned, 1 signed. */
export function opMul1(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const b = readSrc(c, o, sz);
  if (c.pend) return 2;
  const bh = c.vh;
  const r = c.r;
  const signed = o.cc === 1;
  let ovf: boolean;
  let lowForFlags: number;
  if (sz === 1) {
    const a = r[0] & 0xff;
    const p = signed ? ((a << 24) >> 24) * ((b << 24) >> 24) : a * b;
    r[0] = (r[0] & ~0xffff) | (p & 0xffff);
    ovf = signed ? ((p << 24) >> 24) !== p : (p & 0xff00) !== 0;
    lowForFlags = p & 0xff;
  } else if (sz === 2) {
    const a = r[0] & 0xffff;
    const p = signed ? ((a << 16) >> 16) * ((b << 16) >> 16) : a * b;
    r[0] = (r[0] & ~0xffff) | (p & 0xffff);
    r[2] = (r[2] & ~0xffff) | ((p >>> 16) & 0xffff);
    ovf = signed ? ((p << 16) >> 16) !== p : (p >>> 16) !== 0;
    lowForFlags = p & 0xffff;
  } else if (sz === 4) {
    const a = r[0];
    let lo = umul32(c, a, b), hi = c.vh;
    if (signed) {
      if (a < 0) hi = (hi - (b >>> 0)) >>> 0;
      if ((b | 0) < 0) hi = (hi - (a >>> 0)) >>> 0;
      ovf = (hi | 0) !== ((lo | 0) >> 31);
    } else ovf = hi !== 0;
    r[0] = lo | 0; c.rh[0] = 0; r[2] = hi | 0; c.rh[2] = 0;
    lowForFlags = lo;
  } else {
    const al = r[0], ah = c.rh[0];
    umul64(c, al, ah, b, bh);
    const w = c.m128;
    if (signed) {
      // Signed product = unsigned product - (a<0 ? b<<64 : 0) - (b<0 ? a<<64 : 0).
      if (ah < 0) sub64hi(w, b, bh);
      if (bh < 0) sub64hi(w, al, ah);
      const sgn = (w[1] | 0) >> 31;
      ovf = (w[2] | 0) !== sgn || (w[3] | 0) !== sgn;
    } else ovf = (w[2] | w[3]) !== 0;
    r[0] = w[0] | 0; c.rh[0] = w[1] | 0; r[2] = w[2] | 0; c.rh[2] = w[3] | 0;
    lowForFlags = w[0] | w[1];
  }
  mulFlags(c, ovf, lowForFlags, sz);
  return 0;
}
function sub64hi(w: Float64Array, l: number, h: number): void {
  let s = w[2] - (l >>> 0);
  let borrow = s < 0 ? 1 : 0;
  w[2] = s >>> 0;
  s = w[3] - (h >>> 0) - borrow;
  w[3] = s >>> 0;
  void borrow;
}
/** MUL/IMUL flags: CF=OF=overflow; SF/ZF/PF from the low result (undefined per SDM), AF=0. */
function mulFlags(c: X86Cpu, ovf: boolean, low: number, sz: number): void {
  let f = ovf ? CF | OF : 0;
  if (sz !== 8) { if (trunc(low, sz) === 0) f |= ZF; if ((low >>> (sz * 8 - 1)) & 1) f |= SF; }
  f |= parity(low);
  c.setArith(f);
}
function parity(v: number): number {
  let p = v & 0xff;
  p ^= p >> 4; p ^= p >> 2; p ^= p >> 1;
  return (p & 1) ? 0 : PF;
}

/** IMUL r, r/m (tk none) and IMUL r, r/m, imm (tk imm). */
export function opImul2(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const b = readSrc(c, o, sz);
  if (c.pend) return 2;
  const bh = c.vh;
  let a: number, ah: number;
  if (o.tk === K_IMM) { a = o.il; ah = o.ih; } else { a = getReg(c, o.d, sz); ah = c.vh; }
  let lo: number, hi = 0, ovf: boolean;
  if (sz === 2) {
    const p = ((a << 16) >> 16) * ((b << 16) >> 16);
    lo = p & 0xffff; ovf = ((p << 16) >> 16) !== p;
  } else if (sz === 4) {
    lo = Math.imul(a, b);
    let h = umul32(c, a, b) === 0 ? c.vh : c.vh;
    if ((a | 0) < 0) h = (h - (b >>> 0)) >>> 0;
    if ((b | 0) < 0) h = (h - (a >>> 0)) >>> 0;
    ovf = (h | 0) !== (lo >> 31);
  } else {
    umul64(c, a, ah, b, bh);
    const w = c.m128;
    if (ah < 0) sub64hi(w, b, bh);
    if (bh < 0) sub64hi(w, a, ah);
    lo = w[0] | 0; hi = w[1] | 0;
    const sgn = hi >> 31;
    ovf = (w[2] | 0) !== sgn || (w[3] | 0) !== sgn;
  }
  setReg(c, o.d, sz, lo, hi);
  mulFlags(c, ovf, sz === 8 ? lo | hi : lo, sz);
  if (sz === 8) {
    let f = c.fE & ~(ZF | SF);
    if ((lo | hi) === 0) f |= ZF;
    if (hi < 0) f |= SF;
    c.fE = f;
  }
  return 0;
}

/** DIV / IDIV (cc 0 unsigned, 1 signed): #DE on zero divisor or quotient overflow. */
export function opDiv(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const b = readSrc(c, o, sz);
  if (c.pend) return 2;
  const bh = c.vh;
  const r = c.r;
  const signed = o.cc === 1;
  if (sz === 1) {
    if (b === 0) return c.raise(DE, 0, false);
    const a = r[0] & 0xffff;
    let q: number, m: number;
    if (signed) {
      const x = (a << 16) >> 16, y = (b << 24) >> 24;
      q = Math.trunc(x / y); m = x - q * y;
      if (q > 127 || q < -128) return c.raise(DE, 0, false);
    } else {
      q = Math.floor(a / b); m = a - q * b;
      if (q > 255) return c.raise(DE, 0, false);
    }
    r[0] = (r[0] & ~0xffff) | (q & 0xff) | ((m & 0xff) << 8);
    return 0;
  }
  if (sz === 2) {
    if (b === 0) return c.raise(DE, 0, false);
    const a = ((r[2] & 0xffff) << 16 | (r[0] & 0xffff)) >>> 0;
    let q: number, m: number;
    if (signed) {
      const x = a | 0, y = (b << 16) >> 16;
      q = Math.trunc(x / y); m = x - q * y;
      if (q > 32767 || q < -32768) return c.raise(DE, 0, false);
    } else {
      q = Math.floor(a / b); m = a - q * b;
      if (q > 0xffff) return c.raise(DE, 0, false);
    }
    r[0] = (r[0] & ~0xffff) | (q & 0xffff);
    r[2] = (r[2] & ~0xffff) | (m & 0xffff);
    return 0;
  }
  if (sz === 4) {
    if (b === 0) return c.raise(DE, 0, false);
    if (!signed && r[2] === 0) {
      const a = r[0] >>> 0, d = b >>> 0;
      const q = Math.floor(a / d);
      r[0] = q | 0; r[2] = (a - q * d) | 0; c.rh[0] = 0; c.rh[2] = 0;
      return 0;
    }
    // 64/32 division in 32-bit limbs (no BigInt): |EDX:EAX| / |src|, then the signs.
    let n0 = r[0] >>> 0, n1 = r[2] >>> 0;
    let d = b >>> 0;
    const negN = signed && (n1 >>> 31) !== 0, negD = signed && (b | 0) < 0;
    if (negN) { n0 = (-n0) >>> 0; n1 = (~n1 + (n0 === 0 ? 1 : 0)) >>> 0; }
    if (negD) d = (-d) >>> 0;
    const w = c.m128;
    if (!udiv128(w, n0, n1, 0, 0, d, 0) || w[1] !== 0) return c.raise(DE, 0, false);
    let q = w[0], m = w[2];
    if (signed) {
      if (negN !== negD ? q > 0x80000000 : q > 0x7fffffff) return c.raise(DE, 0, false);
      if (negN !== negD) q = -q;
      if (negN) m = -m;
    }
    r[0] = q | 0; r[2] = m | 0; c.rh[0] = 0; c.rh[2] = 0;
    return 0;
  }
  if ((b | bh) === 0) return c.raise(DE, 0, false);
  // 128/64 division in 32-bit limbs (no BigInt): |RDX:RAX| / |src|, then the signs.
  let n0 = r[0] >>> 0, n1 = c.rh[0] >>> 0, n2 = r[2] >>> 0, n3 = c.rh[2] >>> 0;
  let d0 = b >>> 0, d1 = bh >>> 0;
  const negN = signed && (n3 >>> 31) !== 0, negD = signed && bh < 0;
  if (negN) {
    // two's complement of the 128-bit dividend
    n0 = (~n0) >>> 0; n1 = (~n1) >>> 0; n2 = (~n2) >>> 0; n3 = (~n3) >>> 0;
    n0 = (n0 + 1) >>> 0;
    if (n0 === 0) { n1 = (n1 + 1) >>> 0; if (n1 === 0) { n2 = (n2 + 1) >>> 0; if (n2 === 0) n3 = (n3 + 1) >>> 0; } }
  }
  if (negD) { d0 = (~d0 + 1) >>> 0; d1 = (~d1 + (d0 === 0 ? 1 : 0)) >>> 0; }
  const w = c.m128;
  if (!udiv128(w, n0, n1, n2, n3, d0, d1)) return c.raise(DE, 0, false);
  let ql = w[0], qh = w[1], ml = w[2], mh = w[3];
  if (signed) {
    // |q| <= 2^63 when the signs differ, < 2^63 otherwise.
    const neg = negN !== negD;
    if (qh > 0x80000000 || (qh === 0x80000000 && (!neg || ql !== 0))) return c.raise(DE, 0, false);
    if (neg) { ql = (~ql + 1) >>> 0; qh = (~qh + (ql === 0 ? 1 : 0)) >>> 0; }
    if (negN) { ml = (~ml + 1) >>> 0; mh = (~mh + (ml === 0 ? 1 : 0)) >>> 0; }
  }
  r[0] = ql | 0; c.rh[0] = qh | 0;
  r[2] = ml | 0; c.rh[2] = mh | 0;
  return 0;
}

/**
 * Unsigned 128 / 64 division in 32-bit limbs: n3:n2:n1:n0 / d1:d0 (all uint32, divisor non-zero).
 * Writes quotient lo/hi and remainder lo/hi into w[0..3]; false when the quotient exceeds 64 bits.
 */
export function udiv128(w: Float64Array, n0: number, n1: number, n2: number, n3: number, d0: number, d1: number): boolean {
  if (n3 > d1 || (n3 === d1 && n2 >= d0)) return false;
  if (d1 === 0) {
    // Divisor below 2^32: schoolbook division with 16-bit digits (every partial fits a double exactly).
    let rem = n2, cur: number;
    cur = rem * 65536 + (n1 >>> 16); const q3 = Math.floor(cur / d0); rem = cur - q3 * d0;
    cur = rem * 65536 + (n1 & 0xffff); const q2 = Math.floor(cur / d0); rem = cur - q2 * d0;
    cur = rem * 65536 + (n0 >>> 16); const q1 = Math.floor(cur / d0); rem = cur - q1 * d0;
    cur = rem * 65536 + (n0 & 0xffff); const q0 = Math.floor(cur / d0); rem = cur - q0 * d0;
    w[0] = q1 * 65536 + q0; w[1] = q3 * 65536 + q2; w[2] = rem; w[3] = 0;
    return true;
  }
  // Binary long division over the low 64 bits; the running remainder (< 2 * divisor) has 65 bits.
  let rh = n3, rl = n2, qh = 0, ql = 0;
  for (let i = 63; i >= 0; i--) {
    const bitIn = i >= 32 ? (n1 >>> (i - 32)) & 1 : (n0 >>> i) & 1;
    const top = rh >>> 31;
    rh = ((rh << 1) | (rl >>> 31)) >>> 0;
    rl = ((rl << 1) | bitIn) >>> 0;
    if (top !== 0 || rh > d1 || (rh === d1 && rl >= d0)) {
      const sl = rl - d0;
      rl = sl >>> 0;
      rh = (rh - d1 - (sl < 0 ? 1 : 0)) >>> 0;
      if (i >= 32) qh |= 1 << (i - 32); else ql |= 1 << i;
    }
  }
  w[0] = ql >>> 0; w[1] = qh >>> 0; w[2] = rl; w[3] = rh;
  return true;
}

// =====================================================================================
// Shifts and rotates
// =====================================================================================

/** Group-2 shifts/rotates: cc = ROL ROR RCL RCR SHL SHR SAL SAR; count from tk/t (imm or CL). */
export function opShift(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const cntRaw = o.tk === K_IMM ? o.il : c.r[1] & 0xff;
  const cnt = cntRaw & (sz === 8 ? 0x3f : 0x1f);
  let lin = 0;
  let a: number;
  if (o.dk === K_REG) a = getReg(c, o.d, sz);
  else {
    lin = linOf(c, o, sz, true);
    if (c.pend) return 2;
    c.wprobe(lin, sz); if (c.pend) return 2;
    a = c.rdN(lin, sz);
    if (c.pend) return 2;
  }
  const ah = c.vh;
  // A masked count of 0 changes nothing, but a 32-bit register destination is still written (zero-extended).
  if (cnt === 0) { if (o.dk === K_REG && sz === 4) c.rh[o.d] = 0; return 0; }
  const r = shiftOp(c, o.cc, sz, a, ah, cnt);
  const rh = c.vh;
  if (o.dk === K_REG) setReg(c, o.d, sz, r, rh);
  else { c.wrN(lin, sz, r, rh); if (c.pend) return 2; }
  return 0;
}

/** Most significant bit of a value of size sz. */
function msbOf(lo: number, hi: number, sz: number): number {
  return sz === 8 ? hi >>> 31 : (lo >>> (sz * 8 - 1)) & 1;
}
/** Bit `i` of the value (lo, hi). */
function bit(lo: number, hi: number, i: number): number {
  return i < 32 ? (lo >>> i) & 1 : (hi >>> (i - 32)) & 1;
}
/** 64-bit left shift by n (0..63): low returned, high in vh. */
export function shl64(c: X86Cpu, lo: number, hi: number, n: number): number {
  if (n === 0) { c.vh = hi; return lo; }
  if (n < 32) { c.vh = (hi << n) | (lo >>> (32 - n)); return lo << n; }
  c.vh = lo << (n - 32); return 0;
}
export function shr64(c: X86Cpu, lo: number, hi: number, n: number): number {
  if (n === 0) { c.vh = hi; return lo; }
  if (n < 32) { c.vh = hi >>> n; return (lo >>> n) | (hi << (32 - n)); }
  c.vh = 0; return hi >>> (n - 32);
}
export function sar64(c: X86Cpu, lo: number, hi: number, n: number): number {
  if (n === 0) { c.vh = hi; return lo; }
  if (n < 32) { c.vh = hi >> n; return (lo >>> n) | (hi << (32 - n)); }
  c.vh = hi >> 31; return hi >> (n - 32);
}

/** The shift/rotate itself with flags (SDM SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR). */
function shiftOp(c: X86Cpu, k: number, sz: number, a: number, ah: number, cnt: number): number {
  const bits = sz * 8;
  let r: number, rh = 0, cf: number, of: number;
  if (sz !== 8) { a = trunc(a, sz) >>> 0; ah = 0; }
  switch (k) {
    case 0: { // ROL
      const n = cnt % bits;
      if (sz === 8) {
        const l1 = shl64(c, a, ah, n), h1 = c.vh;
        const l2 = shr64(c, a, ah, (bits - n) % bits), h2 = c.vh;
        r = n === 0 ? a : l1 | l2; rh = n === 0 ? ah : h1 | h2;
      } else r = n === 0 ? a : trunc((a << n) | (a >>> (bits - n)), sz);
      cf = r & 1;
      of = msbOf(r, rh, sz) ^ cf;
      c.setArith((c.getArith() & ~(CF | OF)) | (cf ? CF : 0) | (of ? OF : 0));
      c.vh = rh;
      return r;
    }
    case 1: { // ROR
      const n = cnt % bits;
      if (sz === 8) {
        const l1 = shr64(c, a, ah, n), h1 = c.vh;
        const l2 = shl64(c, a, ah, (bits - n) % bits), h2 = c.vh;
        r = n === 0 ? a : l1 | l2; rh = n === 0 ? ah : h1 | h2;
      } else r = n === 0 ? a : trunc((a >>> n) | (a << (bits - n)), sz);
      cf = msbOf(r, rh, sz);
      of = cf ^ (sz === 8 ? (rh >>> 30) & 1 : (r >>> (bits - 2)) & 1);
      c.setArith((c.getArith() & ~(CF | OF)) | (cf ? CF : 0) | (of ? OF : 0));
      c.vh = rh;
      return r;
    }
    case 2: case 3: { // RCL / RCR: rotate through CF, bits+1 positions
      const n = sz === 8 ? cnt : sz === 4 ? cnt : cnt % (bits + 1);
      let lo = a, hi = ah;
      let carry = c.getCF();
      for (let i = 0; i < n; i++) {
        if (k === 2) {
          const out = msbOf(lo, hi, sz);
          if (sz === 8) { hi = (hi << 1) | (lo >>> 31); lo = (lo << 1) | carry; }
          else lo = trunc((lo << 1) | carry, sz) >>> 0;
          carry = out;
        } else {
          const out = lo & 1;
          if (sz === 8) { lo = (lo >>> 1) | (hi << 31); hi = (hi >>> 1) | (carry << 31); }
          else lo = (lo >>> 1) | (carry << (bits - 1));
          carry = out;
        }
      }
      r = sz === 8 ? lo : trunc(lo, sz); rh = hi;
      cf = carry;
      of = k === 2 ? msbOf(r, rh, sz) ^ cf : msbOf(r, rh, sz) ^ (sz === 8 ? (rh >>> 30) & 1 : (r >>> (bits - 2)) & 1);
      if (n !== 0) c.setArith((c.getArith() & ~(CF | OF)) | (cf ? CF : 0) | (of ? OF : 0));
      c.vh = rh;
      return r;
    }
    case 4: case 6: { // SHL/SAL
      if (sz === 8) { r = shl64(c, a, ah, cnt); rh = c.vh; cf = bit(a, ah, 64 - cnt); }
      else { r = cnt < 32 ? trunc(a << cnt, sz) : 0; cf = cnt <= bits ? (a >>> (bits - cnt)) & 1 : 0; if (cnt === 32) cf = a & 1; }
      of = msbOf(r, rh, sz) ^ cf;
      break;
    }
    case 5: { // SHR
      if (sz === 8) { r = shr64(c, a, ah, cnt); rh = c.vh; cf = bit(a, ah, cnt - 1); }
      else { r = cnt < 32 ? a >>> cnt : 0; cf = cnt <= bits ? (a >>> (cnt - 1)) & 1 : 0; r = trunc(r, sz); }
      of = msbOf(a, ah, sz);
      break;
    }
    default: { // SAR
      if (sz === 8) { r = sar64(c, a, ah, cnt); rh = c.vh; cf = bit(a, ah, cnt - 1); }
      else {
        const s = sz === 4 ? a | 0 : sz === 2 ? (a << 16) >> 16 : (a << 24) >> 24;
        const n = cnt > bits - 1 ? bits - 1 : cnt;
        r = trunc(s >> n, sz);
        cf = cnt >= bits ? (s >>> 31) & 1 : (s >> (cnt - 1)) & 1;
      }
      of = 0;
      break;
    }
  }
  let f = (cf ? CF : 0) | (of ? OF : 0) | parity(r);
  if ((sz === 8 ? r | rh : r) === 0) f |= ZF;
  if (msbOf(r, rh, sz)) f |= SF;
  c.setArith(f);
  c.vh = rh;
  return r;
}

/** SHLD / SHRD (cc 0 / 1): dest, src register, count imm or CL (tk). */
export function opShxd(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const cntRaw = o.tk === K_IMM ? o.i2 : c.r[1] & 0xff;
  const cnt = cntRaw & (sz === 8 ? 0x3f : 0x1f);
  let lin = 0;
  let a: number;
  if (o.dk === K_REG) a = getReg(c, o.d, sz);
  else {
    lin = linOf(c, o, sz, true);
    if (c.pend) return 2;
    c.wprobe(lin, sz); if (c.pend) return 2;
    a = c.rdN(lin, sz);
    if (c.pend) return 2;
  }
  const ah = c.vh;
  // A masked count of 0 changes nothing, but a 32-bit register destination is still written (zero-extended).
  if (cnt === 0) { if (o.dk === K_REG && sz === 4) c.rh[o.d] = 0; return 0; }
  const b = getReg(c, o.s, sz), bh = c.vh;
  let r: number, rh = 0, cf: number;
  const bits = sz * 8;
  if (sz === 8) {
    if (o.cc === 0) {
      const l1 = shl64(c, a, ah, cnt), h1 = c.vh;
      const l2 = shr64(c, b, bh, 64 - cnt), h2 = c.vh;
      r = l1 | l2; rh = h1 | h2; cf = bit(a, ah, 64 - cnt);
    } else {
      const l1 = shr64(c, a, ah, cnt), h1 = c.vh;
      const l2 = shl64(c, b, bh, 64 - cnt), h2 = c.vh;
      r = l1 | l2; rh = h1 | h2; cf = bit(a, ah, cnt - 1);
    }
  } else if (sz === 4) {
    if (o.cc === 0) { r = (a << cnt) | (b >>> (32 - cnt)); cf = (a >>> (32 - cnt)) & 1; }
    else { r = (a >>> cnt) | (b << (32 - cnt)); cf = (a >>> (cnt - 1)) & 1; }
  } else {
    // 16-bit: counts above 16 give undefined results; compute on the 32-bit concatenation as Intel does.
    const A = a & 0xffff, B = b & 0xffff;
    if (o.cc === 0) {
      const w = ((A << 16) | B) >>> 0;
      const n = cnt;
      const x = n < 32 ? (w << n) | (n > 16 ? (A << (n - 16)) : 0) : 0;
      r = (x >>> 16) & 0xffff; cf = n <= 16 ? (A >>> (16 - n)) & 1 : (B >>> (32 - n)) & 1;
    } else {
      const w = ((B << 16) | A) >>> 0;
      r = (w >>> cnt) & 0xffff; cf = (w >>> (cnt - 1)) & 1;
    }
  }
  let f = (cf ? CF : 0) | ((msbOf(r, rh, sz) ^ msbOf(a, ah, sz)) ? OF : 0) | parity(r);
  if ((sz === 8 ? r | rh : trunc(r, sz)) === 0) f |= ZF;
  if (msbOf(r, rh, sz)) f |= SF;
  c.setArith(f);
  if (o.dk === K_REG) setReg(c, o.d, sz, r, rh);
  else { c.wrN(lin, sz, r, rh); if (c.pend) return 2; }
  return 0;
}

// =====================================================================================
// Bit operations
// =====================================================================================

/** BT/BTS/BTR/BTC (cc 0..3) with register or immediate bit offset (memory: bit string). */
export function opBt(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  let off: number, offH = 0;
  if (o.sk === K_IMM) off = o.il & (sz * 8 - 1);
  else { off = getReg(c, o.s, sz); offH = c.vh; }
  if (o.dk === K_REG) {
    const n = off & (sz * 8 - 1);
    const a = getReg(c, o.d, sz), ah = c.vh;
    const b = bit(a, ah, n);
    if (o.cc !== 0) {
      let lo = a, hi = ah;
      const m = n < 32 ? 1 << n : 0, mh = n >= 32 ? 1 << (n - 32) : 0;
      if (o.cc === 1) { lo |= m; hi |= mh; } else if (o.cc === 2) { lo &= ~m; hi &= ~mh; } else { lo ^= m; hi ^= mh; }
      setReg(c, o.d, sz, lo, hi);
    }
    c.setArith((c.getArith() & ~CF) | b);
    return 0;
  }
  // Memory bit string: a register offset is signed and may address outside the operand.
  let lin: number;
  let bitIdx: number;
  if (o.sk === K_IMM) {
    lin = linOf(c, o, 1, o.cc !== 0);
    if (c.pend) return 2;
    lin = c.linAdd(lin, off >>> 3);
    bitIdx = off & 7;
  } else {
    // byte displacement = off >> 3 (signed, operand-size wide)
    let disp: number;
    if (sz === 8) disp = offH * 536870912 + Math.floor((off >>> 0) / 8);
    else if (sz === 4) disp = (off | 0) >> 3;
    else disp = ((off << 16) >> 16) >> 3;
    bitIdx = off & 7;
    const base = linOf(c, o, 1, o.cc !== 0);
    if (c.pend) return 2;
    lin = c.bits === 64 ? base + disp : (base + disp) >>> 0;
  }
  if (o.cc !== 0) { c.wprobe(lin, 1); if (c.pend) return 2; }
  const v = c.rd8(lin);
  if (c.pend) return 2;
  const b = (v >>> bitIdx) & 1;
  if (o.cc !== 0) {
    const m = 1 << bitIdx;
    const nv = o.cc === 1 ? v | m : o.cc === 2 ? v & ~m : v ^ m;
    c.wr8(lin, nv);
    if (c.pend) return 2;
  }
  c.setArith((c.getArith() & ~CF) | b);
  return 0;
}

/** BSF (cc 0) / BSR (cc 1): ZF=1 and destination unchanged when the source is zero. */
export function opBsx(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const v = readSrc(c, o, sz);
  if (c.pend) return 2;
  const vh = sz === 8 ? c.vh : 0;
  const lo = trunc(v, sz === 8 ? 4 : sz) >>> 0;
  const f = c.getArith() & ~(ZF);
  if ((lo | vh) === 0) { c.setArith(f | ZF); if (sz === 4) c.rh[o.d] = c.rh[o.d]; return 0; }
  let idx: number;
  if (o.cc === 0) idx = lo !== 0 ? 31 - Math.clz32(lo & -lo) : 32 + 31 - Math.clz32(vh & -vh);
  else idx = vh !== 0 ? 63 - Math.clz32(vh) : 31 - Math.clz32(lo);
  setReg(c, o.d, sz, idx, 0);
  c.setArith(f);
  return 0;
}

// =====================================================================================
// Exchange-and-compare
// =====================================================================================

/** XADD r/m, r. */
export function opXadd(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const b = getReg(c, o.s, sz), bh = c.vh;
  if (o.dk === K_REG) {
    const a = getReg(c, o.d, sz), ah = c.vh;
    const r = alu(c, 0, sz, a, ah, b, bh);
    const rh = c.vh;
    setReg(c, o.s, sz, a, ah);
    setReg(c, o.d, sz, r, rh);
    return 0;
  }
  const lin = linOf(c, o, sz, true);
  if (c.pend) return 2;
  c.wprobe(lin, sz); if (c.pend) return 2;
  const a = c.rdN(lin, sz), ah = c.vh;
  if (c.pend) return 2;
  const r = alu(c, 0, sz, a, ah, b, bh);
  c.wrN(lin, sz, r, c.vh);
  if (c.pend) return 2;
  setReg(c, o.s, sz, a, ah);
  return 0;
}
/** CMPXCHG r/m, r (the destination is always written: SDM CMPXCHG). */
export function opCmpxchg(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  let lin = 0;
  let a: number;
  if (o.dk === K_REG) a = getReg(c, o.d, sz);
  else {
    lin = linOf(c, o, sz, true);
    if (c.pend) return 2;
    c.wprobe(lin, sz); if (c.pend) return 2;
    a = c.rdN(lin, sz);
    if (c.pend) return 2;
  }
  const ah = c.vh;
  const acc = getReg(c, 0, sz), acch = c.vh;
  alu(c, 7, sz, acc, acch, a, ah);
  const eq = trunc(acc, sz === 8 ? 4 : sz) === trunc(a, sz === 8 ? 4 : sz) && (sz !== 8 || acch === ah);
  if (eq) {
    const s = getReg(c, o.s, sz), sh = c.vh;
    if (o.dk === K_REG) setReg(c, o.d, sz, s, sh); else c.wrN(lin, sz, s, sh);
  } else {
    if (o.dk !== K_REG) c.wrN(lin, sz, a, ah);
    else if (sz === 4 && o.d !== 0) { /* destination unchanged */ }
    setReg(c, 0, sz, a, ah);
  }
  return c.pend ? 2 : 0;
}
/** CMPXCHG8B / CMPXCHG16B m (sz 8 / 16). */
export function opCmpxchgNb(c: X86Cpu, o: Op): number {
  const r = c.r, rh = c.rh;
  if (o.sz === 16) {
    const lin = linOf(c, o, 16, true);
    if (c.pend) return 2;
    if ((lin & 15) !== 0) return c.gp(0);
    c.wprobe(lin, 8); if (c.pend) return 2;
    c.wprobe(c.linAdd(lin, 8), 8); if (c.pend) return 2;
    const l0 = c.rd64(lin), h0 = c.vh;
    const l1 = c.rd64(c.linAdd(lin, 8)), h1 = c.vh;
    if (c.pend) return 2;
    const f = c.getArith() & ~ZF;
    if (l0 === r[0] && h0 === rh[0] && l1 === r[2] && h1 === rh[2]) {
      c.wr64(lin, r[3], rh[3]); c.wr64(c.linAdd(lin, 8), r[1], rh[1]);
      c.setArith(f | ZF);
    } else {
      c.wr64(lin, l0, h0); c.wr64(c.linAdd(lin, 8), l1, h1);
      r[0] = l0; rh[0] = h0; r[2] = l1; rh[2] = h1;
      c.setArith(f);
    }
    return c.pend ? 2 : 0;
  }
  const lin = linOf(c, o, 8, true);
  if (c.pend) return 2;
  c.wprobe(lin, 8); if (c.pend) return 2;
  const lo = c.rd64(lin), hi = c.vh;
  if (c.pend) return 2;
  const f = c.getArith() & ~ZF;
  if (lo === r[0] && hi === r[2]) {
    c.wr64(lin, r[3], r[1]);
    c.setArith(f | ZF);
  } else {
    c.wr64(lin, lo, hi);
    r[0] = lo; r[2] = hi;
    if (c.bits === 64) { rh[0] = 0; rh[2] = 0; }
    c.setArith(f);
  }
  return c.pend ? 2 : 0;
}

// =====================================================================================
// Control flow
// =====================================================================================

/**
 * Set RIP to `target` for a near transfer of operand size `sz` (SDM JMP: 16-bit operand
 * truncates to IP; legacy modes check CS.limit; 64-bit checks canonical). Returns 1 or 2.
 */
export function jumpTo(c: X86Cpu, target: number, targetHi: number, sz: number): number {
  if (c.bits === 64) {
    if (sz === 2) target &= 0xffff;
    else if (sz === 4) target >>>= 0;
    else {
      const hi = targetHi;
      if (!canonHi(c, hi)) return c.gp(0);
      target = hi * TWO32 + (target >>> 0);
    }
    c.rip = target;
    return 1;
  }
  target = sz === 2 ? target & 0xffff : target >>> 0;
  if (target > c.state.segLimit[CS]) return c.gp(0);
  c.rip = target;
  return 1;
}
/** Relative target as lo/hi (64-bit: the double RIP is split). */
function relTarget(c: X86Cpu, o: Op): number {
  const t = c.rip + o.len + o.br;
  if (c.bits === 64 && o.sz === 8) { c.vh = Math.floor(t / TWO32) | 0; return t >>> 0; }
  c.vh = 0;
  return t;
}

/** JMP rel. */
export function opJmpRel(c: X86Cpu, o: Op): number {
  const t = relTarget(c, o);
  return jumpTo(c, t, c.vh, o.sz);
}
/** Jcc rel (not taken: falls through, retires). */
export function opJcc(c: X86Cpu, o: Op): number {
  if (!c.cond(o.cc)) return 0;
  const t = relTarget(c, o);
  return jumpTo(c, t, c.vh, o.sz);
}
/** JMP r/m (near indirect). */
export function opJmpInd(c: X86Cpu, o: Op): number {
  const v = readSrc(c, o, o.sz);
  if (c.pend) return 2;
  return jumpTo(c, v, c.vh, o.sz);
}
/** CALL rel. */
export function opCallRel(c: X86Cpu, o: Op): number {
  const ret = c.nextRip(o);
  const t = relTarget(c, o);
  const th = c.vh;
  if (c.bits !== 64) {
    const tt = o.sz === 2 ? t & 0xffff : t >>> 0;
    if (tt > c.state.segLimit[CS]) return c.gp(0);
  }
  if (!push(c, o.sz, ret | 0, c.bits === 64 ? Math.floor(ret / TWO32) | 0 : 0)) return 2;
  return jumpTo(c, t, th, o.sz);
}
/** CALL r/m. */
export function opCallInd(c: X86Cpu, o: Op): number {
  const v = readSrc(c, o, o.sz);
  if (c.pend) return 2;
  const vh = c.vh;
  const ret = c.nextRip(o);
  if (c.bits === 64 && o.sz === 8 && !canonHi(c, vh)) return c.gp(0);
  if (c.bits !== 64 && (o.sz === 2 ? v & 0xffff : v >>> 0) > c.state.segLimit[CS]) return c.gp(0);
  if (!push(c, o.sz, ret | 0, c.bits === 64 ? Math.floor(ret / TWO32) | 0 : 0)) return 2;
  return jumpTo(c, v, vh, o.sz);
}
/** RET / RET imm16. */
export function opRet(c: X86Cpu, o: Op): number {
  const v = stackPeek(c, 0, o.sz);
  if (c.pend) return 2;
  const vh = c.vh;
  const sLo = c.r[4], sHi = c.rh[4];
  spAdd(c, o.sz + (o.il & 0xffff));
  const rc = jumpTo(c, v, vh, o.sz);
  if (rc === 2) { c.r[4] = sLo; c.rh[4] = sHi; }
  return rc;
}
/** LOOP/LOOPE/LOOPNE (cc 0/1/2) and JCXZ (cc 3): counter size = address size. */
export function opLoop(c: X86Cpu, o: Op): number {
  const r = c.r;
  let nz: boolean;
  if (o.cc === 3) {
    nz = o.asz === 2 ? (r[1] & 0xffff) !== 0 : o.asz === 4 ? r[1] !== 0 : (r[1] | c.rh[1]) !== 0;
    if (nz) return 0;
  } else {
    if (o.asz === 2) { r[1] = (r[1] & ~0xffff) | ((r[1] - 1) & 0xffff); nz = (r[1] & 0xffff) !== 0; }
    else if (o.asz === 4) { r[1] = (r[1] - 1) | 0; if (c.bits === 64) c.rh[1] = 0; nz = r[1] !== 0; }
    else { if (r[1] === 0) c.rh[1] = (c.rh[1] - 1) | 0; r[1] = (r[1] - 1) | 0; nz = (r[1] | c.rh[1]) !== 0; }
    if (!nz) return 0;
    if (o.cc === 1 && !c.getZF()) return 0;
    if (o.cc === 2 && c.getZF()) return 0;
  }
  const t = relTarget(c, o);
  return jumpTo(c, t, c.vh, o.sz);
}

/** NOP and hint instructions (PAUSE handled separately for its intercept). */
export function opNop(_c: X86Cpu, _o: Op): number {
  return 0;
}

// =====================================================================================
// String instructions (SDM Vol. 1 7.3.9; REP forms are interruptible between iterations)
// =====================================================================================

/** Iterations per slice of a REP string instruction before returning to the run loop. */
const REP_SLICE = 4096;

function idxGet(c: X86Cpu, reg: number, asz: number): number {
  if (asz === 2) return c.r[reg] & 0xffff;
  if (asz === 4) return c.r[reg] >>> 0;
  c.vh = c.rh[reg];
  return c.r[reg] >>> 0;
}
function idxAdd(c: X86Cpu, reg: number, asz: number, d: number): void {
  const r = c.r;
  if (asz === 2) r[reg] = (r[reg] & ~0xffff) | ((r[reg] + d) & 0xffff);
  else if (asz === 4) { r[reg] = (r[reg] + d) | 0; if (c.bits === 64) c.rh[reg] = 0; }
  else { const s = (r[reg] >>> 0) + d; r[reg] = s | 0; c.rh[reg] = (c.rh[reg] + Math.floor(s / TWO32)) | 0; }
}
/** Linear address of seg:(E/R)SI or ES:(E/R)DI for an element of size sz. */
function strLin(c: X86Cpu, seg: number, reg: number, asz: number, sz: number, wr: boolean): number {
  if (c.bits === 64) {
    let lo: number, hi: number;
    if (asz === 8) { lo = c.r[reg] >>> 0; hi = c.rh[reg]; } else { lo = c.r[reg] >>> 0; hi = 0; }
    if (seg >= 4) { const s2 = lo + (c.state.segBaseLo[seg] >>> 0); lo = s2 >>> 0; hi = (hi + c.state.segBaseHi[seg] + (s2 > 0xffffffff ? 1 : 0)) | 0; }
    if (!canonHi(c, hi)) { c.raise(seg === SS ? SS_VEC : GP, 0, true); return 0; }
    return hi * TWO32 + lo;
  }
  const e = asz === 2 ? c.r[reg] & 0xffff : c.r[reg] >>> 0;
  return segLin(c, seg, e, sz, wr);
}
function cntZero(c: X86Cpu, asz: number): boolean {
  return asz === 2 ? (c.r[1] & 0xffff) === 0 : asz === 4 ? c.r[1] === 0 : (c.r[1] | c.rh[1]) === 0;
}
function cntDec(c: X86Cpu, asz: number): void {
  idxAdd(c, 1, asz, -1);
}

/** Pages a REP MOVS/STOS fast-path call may cover before returning a partial step (3). */
const REP_FAST_PAGES = 64;

/** Remaining count of a REP instruction (RCX/ECX/CX at the address size). */
function repCount(c: X86Cpu, asz: number): number {
  if (asz === 2) return c.r[1] & 0xffff;
  if (asz === 4) return c.r[1] >>> 0;
  return (c.rh[1] >>> 0) * TWO32 + (c.r[1] >>> 0);
}

/**
 * Elements of size sz from offset e (address size asz, direction dn) that stay inside one
 * page of the linear address `lin`, inside the segment's limit and without the offset
 * register wrapping; 0 when the fast path must not be used for this element.
 */
function runLen(c: X86Cpu, seg: number, e: number, lin: number, sz: number, asz: number, down: boolean, wr: boolean): number {
  const po = lin & 0xfff;
  if (po + sz > 0x1000) return 0;
  let n = down ? Math.floor(po / sz) + 1 : Math.floor((0x1000 - po) / sz);
  if (asz !== 8) {
    const top = asz === 2 ? 0x10000 : TWO32;
    n = Math.min(n, down ? Math.floor(e / sz) + 1 : Math.floor((top - e) / sz));
  }
  if (c.bits !== 64 && (c.segFast[seg] & (wr ? 2 : 1)) === 0) {
    const a = c.state.segAttr[seg];
    if ((a & 0x1c) === 0x14) return 0; // expand-down data: the element-wise path
    if (!down) n = Math.min(n, Math.floor((c.state.segLimit[seg] - e - sz + 1) / sz) + 1);
  }
  return n > 0 ? n : 0;
}

/** The TLB index for an access of kind (0 read, 1 write) at lin usable on the fast path, or -1 (miss/code/MMIO), -2 (fault: pend set). */
function fastIdx(c: X86Cpu, lin: number, kind: number): number {
  const i = (lin >>> 12) & (c.tPage.length - 1);
  const acc = kind === 1 ? c.accW : c.accR;
  if (c.tPage[i] === lin - (lin & 0xfff) && c.tCtx[i] === c.ctx && (c.tPerm[i] & acc) !== 0) return i;
  const j = c.xlate(lin, kind);
  if (j === -1) return -2;
  if (j < 0) return -1;
  return (c.tPerm[j] & acc) !== 0 ? j : -1;
}

/**
 * REP MOVS / REP STOS in page-sized runs through the TLB (no per-element segment check,
 * translation or index update). Exact: elements are copied in architectural order, faults
 * happen at the element that faults with the registers of the elements before it, pages with
 * translated code, MMIO and armed data breakpoints take the element-wise path. Returns -1 to
 * continue element-wise, else an op return code.
 */
function repFast(c: X86Cpu, o: Op): number {
  const sz = o.sz, asz = o.asz, movs = o.cc === 0;
  const down = (c.fl & DF) !== 0;
  const r = c.r;
  for (let pages = 0; pages < REP_FAST_PAGES; pages++) {
    const cnt = repCount(c, asz);
    if (cnt === 0) return 0;
    const dE = asz === 2 ? r[7] & 0xffff : r[7] >>> 0;
    const dLin = strLin(c, ES, 7, asz, sz, true);
    if (c.pend) return 2;
    let n = runLen(c, ES, dE, dLin, sz, asz, down, true);
    let sLin = 0;
    if (movs) {
      const sE = asz === 2 ? r[6] & 0xffff : r[6] >>> 0;
      sLin = strLin(c, o.seg, 6, asz, sz, false);
      if (c.pend) return 2;
      n = Math.min(n, runLen(c, o.seg, sE, sLin, sz, asz, down, false));
    }
    if (n > cnt) n = cnt;
    if (n <= 0) return -1;
    // Translate the source (read first, as the element-wise order does), then the destination.
    let si = 0;
    if (movs) { si = fastIdx(c, sLin, 0); if (si === -2) return 2; if (si < 0) return -1; }
    const di = fastIdx(c, dLin, 1);
    if (di === -2) return 2;
    if (di < 0) return -1;
    const db = c.tBuf[di];
    // Byte position of the lowest element of the run.
    const step = down ? -sz : sz;
    const dp = c.tOff[di] + (dLin & 0xfff);
    if (movs) {
      const sb = c.tBuf[si];
      const sp = c.tOff[si] + (sLin & 0xfff);
      const lowD = down ? dp - (n - 1) * sz : dp, lowS = down ? sp - (n - 1) * sz : sp;
      const bytes = n * sz;
      const overlap = sb.buffer === db.buffer && sb.byteOffset + lowS < db.byteOffset + lowD + bytes && db.byteOffset + lowD < sb.byteOffset + lowS + bytes;
      if (!overlap) db.set(sb.subarray(lowS, lowS + bytes), lowD);
      else {
        // Overlapping: element by element in architectural order.
        for (let i = 0, ps = sp, pd = dp; i < n; i++, ps += step, pd += step) {
          if (sz === 1) db[pd] = sb[ps];
          else {
            const t0 = sb[ps], t1 = sb[ps + 1];
            if (sz === 2) { db[pd] = t0; db[pd + 1] = t1; }
            else {
              const t2 = sb[ps + 2], t3 = sb[ps + 3];
              if (sz === 4) { db[pd] = t0; db[pd + 1] = t1; db[pd + 2] = t2; db[pd + 3] = t3; }
              else {
                const t4 = sb[ps + 4], t5 = sb[ps + 5], t6 = sb[ps + 6], t7 = sb[ps + 7];
                db[pd] = t0; db[pd + 1] = t1; db[pd + 2] = t2; db[pd + 3] = t3;
                db[pd + 4] = t4; db[pd + 5] = t5; db[pd + 6] = t6; db[pd + 7] = t7;
              }
            }
          }
        }
      }
      idxAdd(c, 6, asz, step * n);
    } else {
      const v = r[0], vh = c.rh[0];
      if (sz === 1) db.fill(v & 0xff, down ? dp - n + 1 : dp, (down ? dp - n + 1 : dp) + n);
      else {
        for (let i = 0, pd = dp; i < n; i++, pd += step) {
          db[pd] = v; db[pd + 1] = v >> 8;
          if (sz >= 4) { db[pd + 2] = v >> 16; db[pd + 3] = v >> 24; }
          if (sz === 8) { db[pd + 4] = vh; db[pd + 5] = vh >> 8; db[pd + 6] = vh >> 16; db[pd + 7] = vh >> 24; }
        }
      }
    }
    idxAdd(c, 7, asz, step * n);
    idxAdd(c, 1, asz, -n);
  }
  return repCount(c, asz) === 0 ? 0 : 3;
}

/** MOVS/STOS/LODS/CMPS/SCAS: cc = 0 MOVS, 1 STOS, 2 LODS, 3 CMPS, 4 SCAS. */
export function opString(c: X86Cpu, o: Op): number {
  const sz = o.sz, asz = o.asz, rep = o.rep;
  const d = (c.fl & DF) ? -sz : sz;
  const k = o.cc;
  if (rep !== 0 && k <= 1 && !c.dbgData && !c.emu) {
    const rc = repFast(c, o);
    if (rc >= 0) return rc;
  }
  for (let n = 0; ; n++) {
    if (rep !== 0) {
      if (cntZero(c, asz)) return 0;
      // With data breakpoints armed, one iteration per step so a hit traps after its iteration.
      if (n >= (c.dbgData ? 1 : REP_SLICE)) return 3;
    }
    switch (k) {
      case 0: {
        const src = strLin(c, o.seg, 6, asz, sz, false); if (c.pend) return 2;
        const dst = strLin(c, ES, 7, asz, sz, true); if (c.pend) return 2;
        const v = c.rdN(src, sz); if (c.pend) return 2;
        c.wrN(dst, sz, v, c.vh); if (c.pend) return 2;
        idxAdd(c, 6, asz, d); idxAdd(c, 7, asz, d);
        break;
      }
      case 1: {
        const dst = strLin(c, ES, 7, asz, sz, true); if (c.pend) return 2;
        c.wrN(dst, sz, getReg(c, 0, sz), c.vh); if (c.pend) return 2;
        idxAdd(c, 7, asz, d);
        break;
      }
      case 2: {
        const src = strLin(c, o.seg, 6, asz, sz, false); if (c.pend) return 2;
        const v = c.rdN(src, sz); if (c.pend) return 2;
        setReg(c, 0, sz, v, c.vh);
        idxAdd(c, 6, asz, d);
        break;
      }
      case 3: {
        const src = strLin(c, o.seg, 6, asz, sz, false); if (c.pend) return 2;
        const dst = strLin(c, ES, 7, asz, sz, false); if (c.pend) return 2;
        const a = c.rdN(src, sz), ah = c.vh; if (c.pend) return 2;
        const b = c.rdN(dst, sz), bh = c.vh; if (c.pend) return 2;
        alu(c, 7, sz, a, ah, b, bh);
        idxAdd(c, 6, asz, d); idxAdd(c, 7, asz, d);
        break;
      }
      default: {
        const dst = strLin(c, ES, 7, asz, sz, false); if (c.pend) return 2;
        const b = c.rdN(dst, sz), bh = c.vh; if (c.pend) return 2;
        const a = getReg(c, 0, sz);
        alu(c, 7, sz, a, c.vh, b, bh);
        idxAdd(c, 7, asz, d);
        break;
      }
    }
    if (rep === 0) return 0;
    cntDec(c, asz);
    if (k >= 3) {
      const zf = c.getZF() !== 0;
      if (rep === 1 && !zf) return 0;
      if (rep === 2 && zf) return 0;
    }
  }
}

/** internal scratch for sys.ts users (exported for the flag constants). */
export const FLAGS_ALL = ARITH;
export { idxAdd, strLin, cntZero, cntDec };
