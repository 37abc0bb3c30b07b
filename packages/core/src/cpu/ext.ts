/**
 * Instruction-set extensions beyond the base general-purpose set: BCD adjusts (AAA AAS AAM
 * AAD DAA DAS), SALC, LZCNT/TZCNT/POPCNT, MOVBE, CRC32, BMI1/BMI2 (ANDN BEXTR BLSI BLSMSK
 * BLSR BZHI MULX PDEP PEXT RORX SARX SHLX SHRX), ADCX/ADOX. Selected by decode.ts when the
 * base switch does not know the mnemonic. Semantics and flags: Intel SDM Vol. 2 (each
 * instruction's "Operation" and "Flags Affected"); flags the manuals leave undefined are
 * computed as noted per instruction (the differential harness masks them).
 */
import { Mnemonic, OpKind } from 'iced-x86';
import type { Instruction } from 'iced-x86';
import type { X86Cpu } from './x86-cpu';
import { K_IMM, K_MEM, K_REG, Op, OpFn } from './op';
import { getReg, setReg, linOf, trunc, umul32 } from './ops';
import { addFeatures } from './cpuid';
import { AF, CF, DE, OF, PF, SF, ZF } from './consts';

export type SizeOf = (ins: Instruction, k: number) => number;
export type OperandOf = (o: Op, ins: Instruction, k: number, slot: 'd' | 's' | 't', sz: number) => boolean;

// CPUID bits of what this file implements (SDM Vol. 2A CPUID, APM Vol. 3 E.4.2).
// CRC32 is part of SSE4.2 (leaf 1 ECX bit 20), which also means SSE registers this
// processor does not have: it is executed but not advertised.
addFeatures({
  ecx1: (1 << 22) /* MOVBE */ | (1 << 23) /* POPCNT */,
  ebx7: (1 << 3) /* BMI1 */ | (1 << 8) /* BMI2 */ | (1 << 19) /* ADX */,
  ecx81: (1 << 5) /* ABM: LZCNT (and POPCNT on AMD) */,
});

const TWO32 = 4294967296;

function parity(v: number): number {
  let p = v & 0xff;
  p ^= p >> 4; p ^= p >> 2; p ^= p >> 1;
  return (p & 1) ? 0 : PF;
}
/** SF and ZF (and PF) of a result of size sz (lo/hi halves). */
function szp(lo: number, hi: number, sz: number): number {
  let f = parity(lo);
  if (sz === 8) { if ((lo | hi) === 0) f |= ZF; if (hi < 0) f |= SF; }
  else { if (trunc(lo, sz) === 0) f |= ZF; if ((lo >>> (sz * 8 - 1)) & 1) f |= SF; }
  return f;
}

/** Read an operand of kind k / register code r at size sz (memory: the op's memory operand). High half in c.vh. */
function rdOp(c: X86Cpu, o: Op, k: number, r: number, sz: number): number {
  if (k === K_REG) return getReg(c, r, sz);
  if (k === K_IMM) { c.vh = o.ih; return o.il; }
  const lin = linOf(c, o, sz, false);
  if (c.pend) return 0;
  return c.rdN(lin, sz);
}

// =====================================================================================
// BCD adjusts and SALC (16/32-bit modes only: #UD in 64-bit mode, rejected by the decoder)
// =====================================================================================

/**
 * AAA (cc 0) / AAS (cc 1) (SDM AAA/AAS): OF SF ZF PF undefined; set here from the final AL,
 * OF cleared.
 */
function opAaaAas(c: X86Cpu, o: Op): number {
  const r = c.r;
  const f0 = c.getArith();
  let ax = r[0] & 0xffff;
  let f = 0;
  if ((ax & 0xf) > 9 || (f0 & AF)) {
    if (o.cc === 0) ax = (ax + 0x106) & 0xffff;
    else { ax = (ax - 6) & 0xffff; ax = (ax - 0x100) & 0xffff; }
    f = AF | CF;
  }
  ax &= 0xff0f;
  r[0] = (r[0] & ~0xffff) | ax;
  c.setArith(f | szp(ax & 0xff, 0, 1));
  return 0;
}

/** AAM imm8 (SDM AAM): #DE when imm8 = 0; SF ZF PF from AL; OF AF CF undefined (cleared here). */
function opAam(c: X86Cpu, o: Op): number {
  const base = o.il & 0xff;
  if (base === 0) return c.raise(DE, 0, false);
  const al = c.r[0] & 0xff;
  const ah = Math.floor(al / base), nal = al % base;
  c.r[0] = (c.r[0] & ~0xffff) | (ah << 8) | nal;
  c.setArith(szp(nal, 0, 1));
  return 0;
}

/** AAD imm8 (SDM AAD): AL = AL + AH * imm8, AH = 0; SF ZF PF from AL; OF AF CF undefined (cleared here). */
function opAad(c: X86Cpu, o: Op): number {
  const base = o.il & 0xff;
  const al = c.r[0] & 0xff, ah = (c.r[0] >>> 8) & 0xff;
  const nal = (al + ah * base) & 0xff;
  c.r[0] = (c.r[0] & ~0xffff) | nal;
  c.setArith(szp(nal, 0, 1));
  return 0;
}

/** DAA (cc 0) / DAS (cc 1) (SDM DAA/DAS): SF ZF PF from AL; OF undefined (cleared here). */
function opDaaDas(c: X86Cpu, o: Op): number {
  const f0 = c.getArith();
  const oldAl = c.r[0] & 0xff;
  const oldCf = f0 & CF;
  let al = oldAl;
  let cf = 0, af = 0;
  const das = o.cc === 1;
  if ((al & 0xf) > 9 || (f0 & AF)) {
    const t = das ? al - 6 : al + 6;
    cf = oldCf | (das ? (t < 0 ? CF : 0) : (t > 0xff ? CF : 0));
    al = t & 0xff;
    af = AF;
  }
  if (oldAl > 0x99 || oldCf) {
    al = (das ? al - 0x60 : al + 0x60) & 0xff;
    cf = CF;
  }
  c.r[0] = (c.r[0] & ~0xff) | al;
  c.setArith(cf | af | szp(al, 0, 1));
  return 0;
}

/** SALC (undocumented D6, 16/32-bit modes): AL = CF ? 0xFF : 0; flags unchanged. */
function opSalc(c: X86Cpu, _o: Op): number {
  c.r[0] = (c.r[0] & ~0xff) | (c.getCF() ? 0xff : 0);
  return 0;
}

// =====================================================================================
// Bit counts
// =====================================================================================

function popcnt32(v: number): number {
  v = v - ((v >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}
function tz32(v: number): number {
  return v === 0 ? 32 : 31 - Math.clz32(v & -v);
}

/**
 * POPCNT (cc 0), LZCNT (cc 1), TZCNT (cc 2) r, r/m.
 * POPCNT: OF SF ZF AF CF PF cleared, ZF = (source = 0). LZCNT/TZCNT: CF = (source = 0),
 * ZF = (result = 0); OF SF PF AF undefined (cleared here).
 */
function opBitCount(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const v0 = rdOp(c, o, o.sk, o.s, sz);
  if (c.pend) return 2;
  const lo = sz === 8 ? v0 >>> 0 : trunc(v0, sz) >>> 0;
  const hi = sz === 8 ? c.vh >>> 0 : 0;
  const bits = sz * 8;
  let n: number;
  let f: number;
  if (o.cc === 0) {
    n = popcnt32(lo) + popcnt32(hi);
    f = (lo | hi) === 0 ? ZF : 0;
  } else {
    if (o.cc === 1) {
      if (sz === 8) n = hi !== 0 ? Math.clz32(hi) : 32 + Math.clz32(lo);
      else n = Math.clz32(lo) - (32 - bits);
    } else {
      if (sz === 8) n = lo !== 0 ? tz32(lo) : 32 + tz32(hi);
      else n = lo !== 0 ? tz32(lo) : bits;
    }
    f = ((lo | hi) === 0 ? CF : 0) | (n === 0 ? ZF : 0);
  }
  setReg(c, o.d, sz, n, 0);
  c.setArith(f);
  return 0;
}

// =====================================================================================
// MOVBE, CRC32
// =====================================================================================

function bswap32(x: number): number {
  return ((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24);
}

/** MOVBE r, m (cc 0) / MOVBE m, r (cc 1): a move with the bytes reversed; flags unchanged. */
function opMovbe(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  if (o.cc === 0) {
    const lin = linOf(c, o, sz, false);
    if (c.pend) return 2;
    const v = c.rdN(lin, sz), vh = c.vh;
    if (c.pend) return 2;
    if (sz === 2) setReg(c, o.d, 2, ((v & 0xff) << 8) | ((v >>> 8) & 0xff), 0);
    else if (sz === 4) setReg(c, o.d, 4, bswap32(v), 0);
    else setReg(c, o.d, 8, bswap32(vh), bswap32(v));
    return 0;
  }
  const v = getReg(c, o.s, sz), vh = c.vh;
  const lin = linOf(c, o, sz, true);
  if (c.pend) return 2;
  if (sz === 2) c.wr16(lin, ((v & 0xff) << 8) | ((v >>> 8) & 0xff));
  else if (sz === 4) c.wr32(lin, bswap32(v));
  else c.wr64(lin, bswap32(vh), bswap32(v));
  return c.pend ? 2 : 0;
}

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), byte table. */
const CRC32C = new Int32Array(256);
for (let i = 0; i < 256; i++) {
  let x = i;
  for (let k = 0; k < 8; k++) x = (x & 1) ? (x >>> 1) ^ 0x82f63b78 : x >>> 1;
  CRC32C[i] = x;
}
function crcBytes(crc: number, v: number, n: number): number {
  for (let k = 0; k < n; k++) {
    crc = CRC32C[(crc ^ v) & 0xff] ^ (crc >>> 8);
    v >>>= 8;
  }
  return crc;
}

/**
 * CRC32 r32/r64, r/m8/16/32/64 (SDM CRC32): accumulate the CRC-32C of the source into the
 * low 32 bits of the destination (no pre/post inversion); a 64-bit destination's upper half
 * is zeroed. x = source size. Flags unchanged.
 */
function opCrc32(c: X86Cpu, o: Op): number {
  const ssz = o.x;
  const v = rdOp(c, o, o.sk, o.s, ssz);
  if (c.pend) return 2;
  const vh = c.vh;
  let crc = c.r[o.d];
  if (ssz === 8) { crc = crcBytes(crc, v, 4); crc = crcBytes(crc, vh, 4); }
  else crc = crcBytes(crc, v, ssz);
  c.r[o.d] = crc | 0; c.rh[o.d] = 0;
  return 0;
}

// =====================================================================================
// ADCX / ADOX
// =====================================================================================

/** ADCX (cc 0: carry in/out CF) / ADOX (cc 1: carry in/out OF) r, r/m; no other flag changes. */
function opAdx(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const b = rdOp(c, o, o.sk, o.s, sz);
  if (c.pend) return 2;
  const bh = c.vh;
  const f = c.getArith();
  const flag = o.cc === 0 ? CF : OF;
  const cin = (f & flag) ? 1 : 0;
  const a = c.r[o.d], ah = c.rh[o.d];
  const s = (a >>> 0) + (b >>> 0) + cin;
  let cout: number, lo: number, hi = 0;
  if (sz === 8) {
    const sh = (ah >>> 0) + (bh >>> 0) + (s > 0xffffffff ? 1 : 0);
    lo = s | 0; hi = sh | 0; cout = sh > 0xffffffff ? 1 : 0;
  } else { lo = s | 0; cout = s > 0xffffffff ? 1 : 0; }
  setReg(c, o.d, sz, lo, hi);
  c.setArith((f & ~flag) | (cout ? flag : 0));
  return 0;
}

// =====================================================================================
// BMI1 / BMI2 (VEX-encoded; #UD in real mode per SDM 2.5 "VEX in real/virtual-8086 mode")
// Operands: d = destination, s = first source, t = second source (kind tk, register t).
// =====================================================================================

/** 64-bit mask of the low n bits (n 0..64): lo returned, hi in c.vh. */
function lowMask(c: X86Cpu, n: number): number {
  if (n >= 64) { c.vh = -1; return -1; }
  if (n >= 32) { c.vh = n === 32 ? 0 : (-1 >>> (64 - n)) | 0; return -1; }
  c.vh = 0;
  return n === 0 ? 0 : (-1 >>> (32 - n)) | 0;
}
function shr64(c: X86Cpu, lo: number, hi: number, n: number): number {
  if (n === 0) { c.vh = hi; return lo; }
  if (n < 32) { c.vh = hi >>> n; return (lo >>> n) | (hi << (32 - n)); }
  c.vh = 0; return hi >>> (n - 32);
}
function shl64(c: X86Cpu, lo: number, hi: number, n: number): number {
  if (n === 0) { c.vh = hi; return lo; }
  if (n < 32) { c.vh = (hi << n) | (lo >>> (32 - n)); return lo << n; }
  c.vh = lo << (n - 32); return 0;
}
function sar64(c: X86Cpu, lo: number, hi: number, n: number): number {
  if (n === 0) { c.vh = hi; return lo; }
  if (n < 32) { c.vh = hi >> n; return (lo >>> n) | (hi << (32 - n)); }
  c.vh = hi >> 31; return hi >> (n - 32);
}

const B_ANDN = 0, B_BEXTR = 1, B_BLSI = 2, B_BLSMSK = 3, B_BLSR = 4, B_BZHI = 5, B_SARX = 6, B_SHLX = 7, B_SHRX = 8,
  B_RORX = 9, B_PDEP = 10, B_PEXT = 11;

/** BEXTR BLSI BLSMSK BLSR BZHI SARX SHLX SHRX RORX: s = value (r/m), t = control/count (register or imm); cc = B_*. */
function opBmi(c: X86Cpu, o: Op): number {
  if (!c.pe || c.vm86) return c.ud(); // VEX: #UD in real and virtual-8086 mode
  const sz = o.sz;
  const a = rdOp(c, o, o.sk, o.s, sz);
  if (c.pend) return 2;
  const ah = sz === 8 ? c.vh : 0;
  const al = sz === 8 ? a : a | 0;
  let b = 0, bh = 0;
  if (o.tk === K_REG) { b = getReg(c, o.t, sz); bh = sz === 8 ? c.vh : 0; }
  else if (o.tk === K_IMM) b = o.il;
  const w = sz * 8;
  let lo = 0, hi = 0;
  let flags = -1; // -1: flags unchanged
  switch (o.cc) {
    case B_BEXTR: {
      const start = b & 0xff, len = (b >>> 8) & 0xff;
      if (start >= w) { lo = 0; hi = 0; }
      else {
        lo = sz === 8 ? shr64(c, al, ah, start) : (al >>> start) | 0;
        hi = sz === 8 ? c.vh : 0;
        const ml = lowMask(c, len < w ? len : w), mh = c.vh;
        lo &= ml; hi &= sz === 8 ? mh : 0;
      }
      // ZF from the result; CF OF cleared; AF SF PF undefined (PF SF from the result).
      flags = szp(lo, hi, sz);
      break;
    }
    case B_BLSI: case B_BLSMSK: case B_BLSR: {
      // m1 = src - 1
      let m1l: number, m1h: number;
      if (sz === 8) { m1l = (al - 1) | 0; m1h = al === 0 ? (ah - 1) | 0 : ah; }
      else { m1l = (al - 1) | 0; m1h = 0; }
      const zero = sz === 8 ? (al | ah) === 0 : al === 0;
      if (o.cc === B_BLSI) {
        // -src & src
        const nl = (-al) | 0, nh = sz === 8 ? (al === 0 ? -ah | 0 : ~ah) : 0;
        lo = nl & al; hi = nh & ah;
      } else if (o.cc === B_BLSMSK) { lo = m1l ^ al; hi = sz === 8 ? m1h ^ ah : 0; }
      else { lo = m1l & al; hi = sz === 8 ? m1h & ah : 0; }
      if (sz === 4) { lo |= 0; hi = 0; }
      // BLSI/BLSR: ZF SF from the result, CF = (src != 0) for BLSI, (src = 0) for BLSR; OF cleared.
      // BLSMSK: SF from the result, CF = (src = 0), ZF OF cleared. AF PF undefined (PF from the result).
      const f = szp(lo, hi, sz);
      if (o.cc === B_BLSI) flags = f | (zero ? 0 : CF);
      else if (o.cc === B_BLSMSK) flags = (f & ~ZF) | (zero ? CF : 0);
      else flags = f | (zero ? CF : 0);
      break;
    }
    case B_BZHI: {
      const n = b & 0xff;
      if (n < w) {
        const ml = lowMask(c, n), mh = c.vh;
        lo = al & ml; hi = sz === 8 ? ah & mh : 0;
      } else { lo = al; hi = ah; }
      // ZF SF from the result; CF = (index > operand size - 1); OF cleared; AF PF undefined.
      flags = szp(lo, hi, sz) | (n > w - 1 ? CF : 0);
      break;
    }
    case B_SARX: case B_SHLX: case B_SHRX: {
      const n = b & (w - 1);
      if (sz === 8) {
        lo = o.cc === B_SARX ? sar64(c, al, ah, n) : o.cc === B_SHLX ? shl64(c, al, ah, n) : shr64(c, al, ah, n);
        hi = c.vh;
      } else lo = o.cc === B_SARX ? al >> n : o.cc === B_SHLX ? al << n : al >>> n;
      break;
    }
    case B_RORX: {
      const n = b & (w - 1);
      if (sz === 8) {
        if (n === 0) { lo = al; hi = ah; }
        else {
          const l1 = shr64(c, al, ah, n), h1 = c.vh;
          const l2 = shl64(c, al, ah, 64 - n), h2 = c.vh;
          lo = l1 | l2; hi = h1 | h2;
        }
      } else lo = n === 0 ? al : (al >>> n) | (al << (32 - n));
      break;
    }
    default: break;
  }
  setReg(c, o.d, sz, lo | 0, hi | 0);
  if (flags >= 0) c.setArith(flags);
  return 0;
}

/**
 * MULX r_hi, r_lo, r/m (BMI2): unsigned EDX/RDX * r/m; d = high destination, t = low
 * destination (when both name the same register the high half is written). Flags unchanged.
 */
function opMulx(c: X86Cpu, o: Op): number {
  if (!c.pe || c.vm86) return c.ud(); // VEX: #UD in real and virtual-8086 mode
  const sz = o.sz;
  const b = rdOp(c, o, o.sk, o.s, sz);
  if (c.pend) return 2;
  const bh = c.vh;
  const r = c.r;
  let lo: number, loH = 0, hi: number, hiH = 0;
  if (sz === 4) {
    lo = umul32(c, r[2], b) | 0; hi = c.vh | 0;
  } else {
    const al = r[2], ah = c.rh[2];
    const p0l = umul32(c, al, b), p0h = c.vh;
    const p1l = umul32(c, al, bh), p1h = c.vh;
    const p2l = umul32(c, ah, b), p2h = c.vh;
    const p3l = umul32(c, ah, bh), p3h = c.vh;
    let s = p0h + p1l + p2l;
    const w1 = s >>> 0;
    let carry = Math.floor(s / TWO32);
    s = p1h + p2h + p3l + carry;
    const w2 = s >>> 0;
    carry = Math.floor(s / TWO32);
    const w3 = (p3h + carry) >>> 0;
    lo = p0l | 0; loH = w1 | 0; hi = w2 | 0; hiH = w3 | 0;
  }
  setReg(c, o.t, sz, lo, loH);
  setReg(c, o.d, sz, hi, hiH);
  return 0;
}

// =====================================================================================
// Selection
// =====================================================================================

const BMI: Partial<Record<number, number>> = {
  [Mnemonic.Andn]: B_ANDN, [Mnemonic.Bextr]: B_BEXTR, [Mnemonic.Blsi]: B_BLSI, [Mnemonic.Blsmsk]: B_BLSMSK,
  [Mnemonic.Blsr]: B_BLSR, [Mnemonic.Bzhi]: B_BZHI, [Mnemonic.Sarx]: B_SARX, [Mnemonic.Shlx]: B_SHLX,
  [Mnemonic.Shrx]: B_SHRX, [Mnemonic.Rorx]: B_RORX, [Mnemonic.Pdep]: B_PDEP, [Mnemonic.Pext]: B_PEXT,
};

/** Register operand k as a GPR code into slot t (for three-operand VEX forms). */
function regT(o: Op, ins: Instruction, k: number, operand: OperandOf, sz: number): boolean {
  if (ins.opKind(k) !== OpKind.Register) return false;
  return operand(o, ins, k, 't', sz);
}

export function selectExt(
  ins: Instruction, o: Op, m: number, _bits: number, _osz: number, _asz: number, _n: number,
  sizeOf: SizeOf, operand: OperandOf,
): OpFn | null {
  switch (m) {
    case Mnemonic.Aaa: o.cc = 0; return opAaaAas;
    case Mnemonic.Aas: o.cc = 1; return opAaaAas;
    case Mnemonic.Daa: o.cc = 0; return opDaaDas;
    case Mnemonic.Das: o.cc = 1; return opDaaDas;
    case Mnemonic.Aam: o.il = Number(ins.immediate(0)) & 0xff; return opAam;
    case Mnemonic.Aad: o.il = Number(ins.immediate(0)) & 0xff; return opAad;
    case Mnemonic.Salc: return opSalc;
    case Mnemonic.Popcnt: case Mnemonic.Lzcnt: case Mnemonic.Tzcnt:
      o.sz = sizeOf(ins, 0);
      o.cc = m === Mnemonic.Popcnt ? 0 : m === Mnemonic.Lzcnt ? 1 : 2;
      return operand(o, ins, 0, 'd', o.sz) && operand(o, ins, 1, 's', o.sz) ? opBitCount : null;
    case Mnemonic.Movbe:
      if (ins.opKind(0) === OpKind.Memory) {
        o.sz = sizeOf(ins, 1); o.cc = 1; o.dk = K_MEM;
        return operand(o, ins, 1, 's', o.sz) ? opMovbe : null;
      }
      o.sz = sizeOf(ins, 0); o.cc = 0; o.sk = K_MEM;
      return operand(o, ins, 0, 'd', o.sz) ? opMovbe : null;
    case Mnemonic.Crc32:
      o.sz = sizeOf(ins, 0); o.x = sizeOf(ins, 1);
      return operand(o, ins, 0, 'd', o.sz) && operand(o, ins, 1, 's', o.x) ? opCrc32 : null;
    case Mnemonic.Adcx: case Mnemonic.Adox:
      o.sz = sizeOf(ins, 0); o.cc = m === Mnemonic.Adcx ? 0 : 1;
      return operand(o, ins, 0, 'd', o.sz) && operand(o, ins, 1, 's', o.sz) ? opAdx : null;
    case Mnemonic.Mulx:
      // MULX hi, lo, r/m: op0 = high (ModRM.reg), op1 = low (VEX.vvvv), op2 = source.
      o.sz = sizeOf(ins, 0);
      if (!operand(o, ins, 0, 'd', o.sz) || !regT(o, ins, 1, operand, o.sz) || !operand(o, ins, 2, 's', o.sz)) return null;
      return opMulx;
    default: break;
  }
  const bmi = BMI[m];
  if (bmi === undefined) return null;
  o.sz = sizeOf(ins, 0);
  o.cc = bmi;
  const sz = o.sz;
  if (!operand(o, ins, 0, 'd', sz)) return null;
  switch (bmi) {
    case B_ANDN: case B_PDEP: case B_PEXT:
      // op1 = first source (VEX.vvvv), op2 = r/m (ANDN: second source; PDEP/PEXT: mask).
      if (!operand(o, ins, 2, 's', sz) || !regT(o, ins, 1, operand, sz)) return null;
      return bmi === B_ANDN ? opAndn : opPdepPext;
    case B_BEXTR: case B_BZHI: case B_SARX: case B_SHLX: case B_SHRX:
      // op1 = r/m (value), op2 = VEX.vvvv (control / count).
      return operand(o, ins, 1, 's', sz) && regT(o, ins, 2, operand, sz) ? opBmi : null;
    case B_RORX:
      if (!operand(o, ins, 1, 's', sz)) return null;
      o.tk = K_IMM; o.il = Number(ins.immediate(2)) & 0xff; o.ih = 0;
      return opBmi;
    default:
      // BLSI/BLSMSK/BLSR: op0 = VEX.vvvv destination, op1 = r/m source.
      return operand(o, ins, 1, 's', sz) ? opBmi : null;
  }
}

/** ANDN d, vvvv, r/m: d = ~vvvv & r/m (s = r/m, t = vvvv). */
function opAndn(c: X86Cpu, o: Op): number {
  if (!c.pe || c.vm86) return c.ud(); // VEX: #UD in real and virtual-8086 mode
  const sz = o.sz;
  const b = rdOp(c, o, o.sk, o.s, sz);
  if (c.pend) return 2;
  const bh = sz === 8 ? c.vh : 0;
  const a = getReg(c, o.t, sz), ah = sz === 8 ? c.vh : 0;
  const lo = ~a & b, hi = sz === 8 ? ~ah & bh : 0;
  setReg(c, o.d, sz, lo | 0, hi | 0);
  // SF ZF from the result; OF CF cleared; AF PF undefined (PF from the result, AF cleared).
  c.setArith(szp(lo, hi, sz));
  return 0;
}

/** PDEP (cc B_PDEP) / PEXT d, vvvv (source), r/m (mask): s = r/m mask, t = vvvv source. */
function opPdepPext(c: X86Cpu, o: Op): number {
  if (!c.pe || c.vm86) return c.ud(); // VEX: #UD in real and virtual-8086 mode
  const sz = o.sz;
  const mk = rdOp(c, o, o.sk, o.s, sz);
  if (c.pend) return 2;
  const mkh = sz === 8 ? c.vh : 0;
  const src = getReg(c, o.t, sz), srch = sz === 8 ? c.vh : 0;
  const w = sz * 8;
  let lo = 0, hi = 0, k = 0;
  const dep = o.cc === B_PDEP;
  for (let i = 0; i < w; i++) {
    const mbit = i < 32 ? (mk >>> i) & 1 : (mkh >>> (i - 32)) & 1;
    if (!mbit) continue;
    if (dep) {
      const sbit = k < 32 ? (src >>> k) & 1 : (srch >>> (k - 32)) & 1;
      if (sbit) { if (i < 32) lo |= 1 << i; else hi |= 1 << (i - 32); }
    } else {
      const sbit = i < 32 ? (src >>> i) & 1 : (srch >>> (i - 32)) & 1;
      if (sbit) { if (k < 32) lo |= 1 << k; else hi |= 1 << (k - 32); }
    }
    k++;
  }
  setReg(c, o.d, sz, lo | 0, hi | 0);
  return 0;
}
