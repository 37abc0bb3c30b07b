/**
 * The block-compilation tier: a hot translated block (executed more than JIT_THRESHOLD times
 * by the interpreter) is compiled into one JavaScript function with `new Function`.
 *
 * The compiled function runs the block's instructions as straight-line code:
 * - guest registers the block uses live in JavaScript locals (lo/hi int32 halves), loaded at
 *   entry and written back at every exit;
 * - status flags are computed lazily: each flag-producing instruction leaves its operands
 *   and result in locals, conditions (Jcc/SETcc/CMOVcc, the CF that INC/DEC keep) are
 *   evaluated from them inline, and the interpreter's lazy-flag fields are filled only at
 *   exits (V8 drops the dead locals);
 * - memory operands go through the processor's software TLB (X86Cpu.rd*, jw*: no allocation,
 *   no exception, faults reported through `pend`);
 * - instructions the compiler does not specialize call the interpreter's handler (the Op's
 *   `fn`) with registers and flags synchronized around the call;
 * - a block whose last instruction branches back to its own start (a loop) iterates inside
 *   the function while the instruction budget allows.
 *
 * Contract (same as the interpreter's, see op.ts): the function `(c, max)` runs at least the
 * whole block once (the run loop only calls it when `max >= n` and no single-stepping is in
 * force), returns the number of instructions retired and leaves in `c.jrc` what stopped it:
 * 0 (ran to the block end; RIP = next), 1 (a branch set RIP), 2 (an exception or exit is
 * pending; RIP = the instruction), 3 (a partial REP step; RIP = the instruction). Exits also
 * happen when a store dropped translated code (`c.brk`): the remaining instructions of the
 * block may be stale, so the run loop looks the next block up again.
 *
 * A compiled function belongs to its Block: dropping the page's translated code (a guest
 * write, notifyWrite, flushCode) drops the compiled code with it.
 */
import type { X86Cpu } from './x86-cpu';
import { F_ADD, F_DEC, F_INC, F_LOGIC, F_SUB } from './x86-cpu';
import type { Block } from './decode';
import { BASE_RIP, K_IMM, K_MEM, K_REG, Op } from './op';
import * as X from './ops';
import { CF, OF, PF, SF, ZF, SS } from './consts';

/** Executions by the interpreter before a block is compiled. */
export const JIT_THRESHOLD = 64;

export type JitFn = (c: X86Cpu, max: number) => number;

const PARITY = new Uint8Array(256);
for (let i = 0; i < 256; i++) {
  let p = 1;
  for (let b = i; b; b >>= 1) p ^= b & 1;
  PARITY[i] = p ? PF : 0;
}

/** Flags of a "result" producer (shifts, IMUL): CF and OF given, PF ZF SF from the result, AF 0. */
function resFlags(cf: number, of: number, r: number, rh: number, sz: number): number {
  let f = (cf ? CF : 0) | (of ? OF : 0) | PARITY[r & 0xff];
  if (sz === 8) { if ((r | rh) === 0) f |= ZF; if (rh < 0) f |= SF; }
  else {
    const m = sz === 4 ? r : sz === 2 ? r & 0xffff : r & 0xff;
    if (m === 0) f |= ZF;
    if ((r >>> (sz * 8 - 1)) & 1) f |= SF;
  }
  return f;
}

const ENV = { X, PARITY, resFlags };

// Static flag states ------------------------------------------------------------------

const FK_C = 0;       // flags are in the processor's fields (block entry / after a handler call)
const FK_ADD = 1;     // locals fa fah fb fbh fr frh
const FK_SUB = 2;
const FK_LOGIC = 3;   // fr frh
const FK_INC = 4;     // fa fah fr frh, fe = CF (0/1)
const FK_DEC = 5;
const FK_RES = 6;     // fr frh, fe = CF (0/1), fo = OF (0/1)
const FK_HEAD = 7;    // loop head: FK_C on the first iteration, the block's end state after (runtime fk)

interface FState { k: number; sz: number }

class Compiler {
  readonly out: string[] = [];
  /** GPRs read or written (loaded at entry), GPRs written (stored at exits). */
  used = new Set<number>();
  written = new Set<number>();
  fs: FState = { k: FK_C, sz: 4 };
  endFs: FState = { k: FK_C, sz: 4 };
  loop = false;
  hasFallback = false;
  /** The code emitted so far ends in a return on every path. */
  terminated = false;
  /** Byte offset of each op from the block start. */
  off: number[] = [];
  constructor(readonly blk: Block, readonly bits: number) {}

  emit(s: string): void { this.out.push(s); }

  // ---- registers ----
  r(code: number): string { this.used.add(code & 15); return `r${code & 15}`; }
  h(code: number): string { this.used.add(code & 15); return `h${code & 15}`; }
  /** Register read at size sz: low-half expression (zero-extended for 1/2 bytes). */
  rd(code: number, sz: number): string {
    if (sz === 1) return code < 16 ? `(${this.r(code)} & 0xff)` : `((${this.r(code - 16)} >>> 8) & 0xff)`;
    if (sz === 2) return `(${this.r(code)} & 0xffff)`;
    return this.r(code);
  }
  rdh(code: number, sz: number): string { return sz === 8 ? this.h(code) : '0'; }
  /** Register write with the architecture's merge rules. */
  wr(code: number, sz: number, lo: string, hi: string): void {
    if (sz === 1) {
      if (code < 16) { const r = this.r(code); this.written.add(code); this.emit(`${r} = (${r} & ~0xff) | ((${lo}) & 0xff);`); }
      else { const r = this.r(code - 16); this.written.add(code - 16); this.emit(`${r} = (${r} & ~0xff00) | (((${lo}) & 0xff) << 8);`); }
      return;
    }
    const r = this.r(code);
    this.written.add(code & 15);
    if (sz === 2) { this.emit(`${r} = (${r} & ~0xffff) | ((${lo}) & 0xffff);`); return; }
    const h = this.h(code);
    this.emit(`${r} = (${lo}) | 0; ${h} = ${sz === 8 ? `(${hi}) | 0` : '0'};`);
  }

  // ---- flags ----
  /** Code storing the static flag state `s` into the processor's lazy-flag fields. */
  mat(s: FState): string {
    const sz = s.sz;
    switch (s.k) {
      case FK_ADD: case FK_SUB:
        return `c.fOp = ${s.k === FK_ADD ? F_ADD : F_SUB}; c.fSz = ${sz}; c.fA = fa; c.fAh = fah; c.fB = fb; c.fBh = fbh; c.fR = fr; c.fRh = frh; c.fCin = 0;`;
      case FK_LOGIC:
        return `c.fOp = ${F_LOGIC}; c.fSz = ${sz}; c.fA = fa; c.fAh = fah; c.fB = fb; c.fBh = fbh; c.fR = fr; c.fRh = frh;`;
      case FK_INC: case FK_DEC:
        return `c.fOp = ${s.k === FK_INC ? F_INC : F_DEC}; c.fE = fe; c.fSz = ${sz}; c.fA = fa; c.fAh = fah; c.fB = 1; c.fBh = 0; c.fR = fr; c.fRh = frh;`;
      case FK_RES:
        return `c.fOp = 0; c.fE = E.resFlags(fe, fo, fr, frh, ${sz});`;
      case FK_HEAD:
        return this.endFs.k === FK_C ? '' : `if (fk !== 0) { ${this.mat(this.endFs)} }`;
      default: return '';
    }
  }
  /** Expression for CF (0/1) in state s. */
  cf(s: FState): string {
    const sz = s.sz;
    switch (s.k) {
      case FK_ADD: return sz === 8 ? `X_ult(fr, frh, fa, fah)` : sz === 4 ? `((fr >>> 0) < (fa >>> 0) ? 1 : 0)` : `(fr < fa ? 1 : 0)`;
      case FK_SUB: return sz === 8 ? `X_ult(fa, fah, fb, fbh)` : sz === 4 ? `((fa >>> 0) < (fb >>> 0) ? 1 : 0)` : `(fa < fb ? 1 : 0)`;
      case FK_LOGIC: return '0';
      case FK_INC: case FK_DEC: case FK_RES: return 'fe';
      case FK_HEAD: return this.endFs.k === FK_C ? 'c.getCF()' : `(fk !== 0 ? ${this.cf(this.endFs)} : c.getCF())`;
      default: return 'c.getCF()';
    }
  }
  /** ZF / SF tests of the result in state s (not FK_C/FK_HEAD). */
  private zf(s: FState): string { return s.sz === 8 ? `((fr | frh) === 0)` : s.sz === 4 ? `(fr === 0)` : `((fr & ${s.sz === 2 ? 0xffff : 0xff}) === 0)`; }
  private sf(s: FState): string { return s.sz === 8 ? `(frh < 0)` : s.sz === 4 ? `(fr < 0)` : `(((fr >>> ${s.sz * 8 - 1}) & 1) !== 0)`; }
  /** Boolean expression for condition code cc (0..15) in state s. */
  cond(s: FState, cc: number): string {
    const neg = (cc & 1) !== 0;
    const nb = (e: string): string => (neg ? `!${e}` : e);
    const sz = s.sz;
    switch (s.k) {
      case FK_SUB: {
        const sx = (v: string): string => (sz === 1 ? `((${v} << 24) >> 24)` : sz === 2 ? `((${v} << 16) >> 16)` : v);
        if (sz === 8) {
          switch (cc) {
            case 2: return `(X_ult(fa, fah, fb, fbh) === 1)`;
            case 3: return `(X_ult(fa, fah, fb, fbh) === 0)`;
            case 4: return `(fa === fb && fah === fbh)`;
            case 5: return `(fa !== fb || fah !== fbh)`;
            case 6: return `(X_ult(fb, fbh, fa, fah) === 0)`;
            case 7: return `(X_ult(fb, fbh, fa, fah) === 1)`;
            case 12: return `(fah < fbh || (fah === fbh && (fa >>> 0) < (fb >>> 0)))`;
            case 13: return `!(fah < fbh || (fah === fbh && (fa >>> 0) < (fb >>> 0)))`;
            case 14: return `!(fah > fbh || (fah === fbh && (fa >>> 0) > (fb >>> 0)))`;
            case 15: return `(fah > fbh || (fah === fbh && (fa >>> 0) > (fb >>> 0)))`;
            case 8: case 9: return nb(this.sf(s));
            default: break;
          }
        } else {
          const u = (v: string): string => (sz === 4 ? `(${v} >>> 0)` : v);
          switch (cc) {
            case 2: return `(${u('fa')} < ${u('fb')})`;
            case 3: return `(${u('fa')} >= ${u('fb')})`;
            case 4: return `(fa === fb)`;
            case 5: return `(fa !== fb)`;
            case 6: return `(${u('fa')} <= ${u('fb')})`;
            case 7: return `(${u('fa')} > ${u('fb')})`;
            case 12: return `(${sx('fa')} < ${sx('fb')})`;
            case 13: return `(${sx('fa')} >= ${sx('fb')})`;
            case 14: return `(${sx('fa')} <= ${sx('fb')})`;
            case 15: return `(${sx('fa')} > ${sx('fb')})`;
            case 8: case 9: return nb(this.sf(s));
            default: break;
          }
        }
        break;
      }
      case FK_LOGIC:
        switch (cc) {
          case 0: return 'false';
          case 1: return 'true';
          case 2: return 'false';
          case 3: return 'true';
          case 4: case 5: case 6: case 7: return nb(this.zf(s));
          case 8: case 9: case 12: case 13: return nb(this.sf(s));
          case 14: return `(${this.zf(s)} || ${this.sf(s)})`;
          case 15: return `!(${this.zf(s)} || ${this.sf(s)})`;
          default: break;
        }
        break;
      case FK_ADD: case FK_INC: case FK_DEC: case FK_RES:
        switch (cc) {
          case 2: case 3: return nb(`(${this.cf(s)} !== 0)`);
          case 4: case 5: return nb(this.zf(s));
          case 8: case 9: return nb(this.sf(s));
          case 6: case 7: return nb(`(${this.cf(s)} !== 0 || ${this.zf(s)})`);
          default: break;
        }
        break;
      case FK_HEAD:
        if (this.endFs.k === FK_C) return `c.cond(${cc})`;
        return `(fk !== 0 ? ${this.cond(this.endFs, cc)} : c.cond(${cc}))`;
      default:
        return `c.cond(${cc})`;
    }
    // Anything else (OF, PF, ...): materialize and ask the processor's own evaluation.
    const m = this.mat(s).split(';').map((x) => x.trim()).filter((x) => x.length > 0);
    return `(${[...m, `c.cond(${cc})`].join(', ')})`;
  }

  // ---- exits ----
  /** Statements leaving the function: write back, materialize flags, set RIP, rc, return retired. */
  exit(retired: string, rc: number, rip: string | null): string {
    const setRip = rip === null ? '' : `c.rip = ${rip};`;
    return `{ @@WB@@ ${this.mat(this.fs)} ${setRip} c.jrc = ${rc}; return done + ${retired}; }`;
  }
  ripAt(k: number): string { return this.off[k] === 0 ? 'rip0' : `rip0 + ${this.off[k]}`; }
  ripNext(k: number, o: Op): string { return `rip0 + ${this.off[k] + o.len}`; }
  /** Fault exit of op k (pend set by a helper): RIP at the instruction, k retired. */
  fault(k: number): string { return this.exit(`${k}`, 2, this.ripAt(k)); }

  // ---- memory operands ----
  /** Emit `L = <linear address>` for op k's memory operand (size sz, write wr); faults exit. */
  lin(k: number, o: Op, sz: number, wr: boolean): void {
    const ok = `O[${k}]`;
    if (this.bits === 64) {
      if (o.seg >= 4) {
        // FS/GS bases: the interpreter's address computation.
        this.emit(`L = X.linOf(c, ${ok}, ${sz}, ${wr}); if (c.pend !== 0) ${this.fault(k)}`);
        return;
      }
      if (o.asz === 8) {
        if (o.mb === BASE_RIP) {
          this.emit(`L = rip0 + ${this.off[k] + o.len + o.dl};`);
        } else {
          const lo: string[] = [`${o.dl >>> 0}`];
          const hi: string[] = [`${o.dh}`];
          if (o.mb >= 0) { lo.push(`(${this.r(o.mb)} >>> 0)`); hi.push(this.h(o.mb)); }
          if (o.mi >= 0) { const m = 1 << o.ms; lo.push(`(${this.r(o.mi)} >>> 0) * ${m}`); hi.push(`${this.h(o.mi)} * ${m}`); }
          this.emit(`{ const s = ${lo.join(' + ')}; const hh = (${hi.join(' + ')} + Math.floor(s / 4294967296)) | 0; L = hh * 4294967296 + (s >>> 0); }`);
        }
        // Canonical check (SDM 3.3.7.1): #GP(0), #SS(0) for stack references.
        this.emit(`if (L < -c.canonLimit || L >= c.canonLimit) { c.raise(${o.seg === SS ? 12 : 13}, 0, true); ${this.fault(k)} }`);
        return;
      }
      // 32-bit address size in 64-bit mode: zero-extended, always canonical.
      this.emit(`L = ${this.ea32(o)} >>> 0;`);
      return;
    }
    const e = o.asz === 4 ? `${this.ea32(o)} >>> 0` : `${this.ea32(o)} & 0xffff`;
    this.emit(`{ const e = ${e}; if ((c.segFast[${o.seg}] & ${wr ? 2 : 1}) !== 0) L = (c.segBase[${o.seg}] + e) >>> 0; else { L = X.segLin(c, ${o.seg}, e, ${sz}, ${wr}); if (c.pend !== 0) ${this.fault(k)} } }`);
  }
  private ea32(o: Op): string {
    const p: string[] = [`${o.dl}`];
    if (o.mb === BASE_RIP) p.push('0'); // not in legacy modes
    else if (o.mb >= 0) p.push(this.r(o.mb));
    if (o.mi >= 0) p.push(o.ms ? `(${this.r(o.mi)} << ${o.ms})` : this.r(o.mi));
    return `(${p.join(' + ')})`;
  }
  /** Emit a read of size sz at L into locals `v` (and `vh` for 8). */
  load(k: number, sz: number): void {
    const f = sz === 1 ? 'rd8' : sz === 2 ? 'rd16' : sz === 4 ? 'rd32' : 'rd64';
    this.emit(`c.curOp = O[${k}]; v = c.${f}(L); ${sz === 8 ? 'vh = c.vh; ' : ''}if (c.pend !== 0) ${this.fault(k)}`);
  }
  /** Emit a store of size sz at L; a fault exits with k retired, dropped code with k+1. */
  store(k: number, o: Op, sz: number, lo: string, hi: string): void {
    const call = sz === 1 ? `c.jw8(L, ${lo})` : sz === 2 ? `c.jw16(L, ${lo})` : sz === 4 ? `c.jw32(L, ${lo})` : `c.jw64(L, ${lo}, ${hi})`;
    this.emit(`c.curOp = O[${k}]; if (${call} !== 0) { if (c.pend !== 0) ${this.fault(k)} ${this.exit(`${k + 1}`, 0, this.ripNext(k, o))} }`);
  }

  /** Source operand of ALU/MOV-style ops into locals b, bh (returns false if unsupported). */
  src(k: number, o: Op, sz: number, kind: number, code: number): void {
    if (kind === K_REG) { this.emit(`b = ${this.rd(code, sz)}; bh = ${this.rdh(code, sz)};`); return; }
    if (kind === K_IMM) { this.emit(`b = ${o.il}; bh = ${sz === 8 ? o.ih : 0};`); return; }
    this.lin(k, o, sz, false);
    this.load(k, sz);
    this.emit(`b = v; bh = ${sz === 8 ? 'vh' : '0'};`);
  }

  // ---- instructions ----
  /** Compile op k; returns true when it was specialized (else the caller emits a handler call). */
  op(k: number, o: Op, last: boolean): boolean {
    const fn = o.fn;
    // FS/GS-relative operands in 64-bit mode: the handler (it reads the registers from the processor).
    if (this.bits === 64 && (o.dk === K_MEM || o.sk === K_MEM) && o.seg >= 4) return false;
    if (fn === X.opNop) return true;
    if (fn === X.opAlu || fn === X.opAlu32RR || fn === X.opAlu32RI || fn === X.opAlu64RR) return this.alu(k, o);
    if (fn === X.opMov || fn === X.opMov32RR || fn === X.opMov64RR || fn === X.opMov32RI) return this.mov(k, o);
    if (fn === X.opMovx) return this.movx(k, o);
    if (fn === X.opLea) return this.lea(o);
    if (fn === X.opIncDec) return this.incdec(o);
    if (fn === X.opShiftRI) return this.shiftRI(o);
    if (fn === X.opImul2) return this.imul(o);
    if (fn === X.opShxd) return this.shxd(o);
    if (fn === X.opSetcc && o.dk === K_REG) { this.wr(o.d, 1, `${this.cond(this.fs, o.cc)} ? 1 : 0`, '0'); return true; }
    if (fn === X.opCmov && o.sk === K_REG && (o.sz === 4 || o.sz === 8)) {
      this.emit(`if (${this.cond(this.fs, o.cc)}) {`);
      this.wr(o.d, o.sz, this.rd(o.s, o.sz), this.rdh(o.s, o.sz));
      this.emit(`}${o.sz === 4 ? ` else ${this.h(o.d)} = 0;` : ''}`);
      this.written.add(o.d);
      return true;
    }
    if (last && (fn === X.opJcc || fn === X.opJmpRel)) return this.branch(k, o, fn === X.opJcc);
    return false;
  }

  alu(k: number, o: Op): boolean {
    const op = o.cc;
    if (op === 2 || op === 3) return false; // ADC / SBB: the handler
    const sz = o.sz;
    const discard = o.x === 1;
    this.src(k, o, sz, o.sk, o.s);
    if (o.dk === K_REG) {
      this.emit(`a = ${this.rd(o.d, sz)}; ah = ${this.rdh(o.d, sz)};`);
    } else if (o.dk === K_MEM) {
      this.lin(k, o, sz, !discard);
      if (!discard) this.emit(`c.wprobe(L, ${sz}); if (c.pend !== 0) ${this.fault(k)}`);
      this.load(k, sz);
      this.emit(`a = v; ah = ${sz === 8 ? 'vh' : '0'};`);
    } else return false;
    const mask = sz === 1 ? 0xff : 0xffff;
    let kind: number;
    if (op === 0 || op === 5 || op === 7) {
      const add = op === 0;
      kind = add ? FK_ADD : FK_SUB;
      if (sz === 8) {
        this.emit(add
          ? `{ const s = (a >>> 0) + (b >>> 0); fr = s | 0; frh = (ah + bh + (s > 0xffffffff ? 1 : 0)) | 0; }`
          : `{ const s = (a >>> 0) - (b >>> 0); fr = s | 0; frh = (ah - bh - (s < 0 ? 1 : 0)) | 0; }`);
      } else if (sz === 4) this.emit(`fr = (a ${add ? '+' : '-'} b) | 0; frh = 0;`);
      else this.emit(`fr = (a ${add ? '+' : '-'} b) & ${mask}; frh = 0;`);
    } else {
      kind = FK_LOGIC;
      const sym = op === 1 ? '|' : op === 4 ? '&' : '^';
      this.emit(`fr = a ${sym} b; frh = ${sz === 8 ? `ah ${sym} bh` : '0'};`);
    }
    this.emit(`fa = a; fah = ah; fb = b; fbh = bh;`);
    this.fs = { k: kind, sz };
    if (!discard) {
      if (o.dk === K_REG) this.wr(o.d, sz, 'fr', 'frh');
      else this.store(k, o, sz, 'fr', 'frh');
    }
    return true;
  }

  mov(k: number, o: Op): boolean {
    const sz = o.sz;
    if (o.dk === K_REG) {
      if (o.sk === K_REG) { this.wr(o.d, sz, this.rd(o.s, sz), this.rdh(o.s, sz)); return true; }
      if (o.sk === K_IMM) { this.wr(o.d, sz, `${o.il}`, `${sz === 8 ? o.ih : 0}`); return true; }
      this.lin(k, o, sz, false);
      this.load(k, sz);
      this.wr(o.d, sz, 'v', sz === 8 ? 'vh' : '0');
      return true;
    }
    if (o.dk !== K_MEM) return false;
    let lo: string, hi: string;
    if (o.sk === K_REG) { this.emit(`b = ${this.rd(o.s, sz)}; bh = ${this.rdh(o.s, sz)};`); lo = 'b'; hi = 'bh'; }
    else if (o.sk === K_IMM) { lo = `${o.il}`; hi = `${sz === 8 ? o.ih : 0}`; }
    else return false;
    this.lin(k, o, sz, true);
    this.store(k, o, sz, lo, hi);
    return true;
  }

  movx(k: number, o: Op): boolean {
    const ssz = o.x, sz = o.sz;
    if (ssz !== 1 && ssz !== 2 && ssz !== 4) return false;
    let v: string;
    if (o.sk === K_REG) v = this.rd(o.s, ssz);
    else if (o.sk === K_MEM) { this.lin(k, o, ssz, false); this.load(k, ssz); v = 'v'; }
    else return false;
    if (o.cc === 1) {
      const sx = ssz === 1 ? `((${v} << 24) >> 24)` : ssz === 2 ? `((${v} << 16) >> 16)` : `(${v} | 0)`;
      this.emit(`a = ${sx};`);
      this.wr(o.d, sz, sz === 2 ? 'a & 0xffff' : 'a', 'a >> 31');
    } else {
      this.emit(`a = ${v};`);
      this.wr(o.d, sz, 'a', '0');
    }
    return true;
  }

  lea(o: Op): boolean {
    const sz = o.sz;
    if (o.asz === 8) {
      if (o.mb === BASE_RIP) return false;
      const lo: string[] = [`${o.dl >>> 0}`];
      const hi: string[] = [`${o.dh}`];
      if (o.mb >= 0) { lo.push(`(${this.r(o.mb)} >>> 0)`); hi.push(this.h(o.mb)); }
      if (o.mi >= 0) { const m = 1 << o.ms; lo.push(`(${this.r(o.mi)} >>> 0) * ${m}`); hi.push(`${this.h(o.mi)} * ${m}`); }
      this.emit(`{ const s = ${lo.join(' + ')}; a = s | 0; ah = (${hi.join(' + ')} + Math.floor(s / 4294967296)) | 0; }`);
    } else {
      if (o.mb === BASE_RIP) return false;
      this.emit(`a = ${o.asz === 4 ? `${this.ea32(o)} >>> 0` : `${this.ea32(o)} & 0xffff`}; ah = 0;`);
    }
    this.wr(o.d, sz, sz === 2 ? 'a & 0xffff' : 'a', 'ah');
    return true;
  }

  incdec(o: Op): boolean {
    if (o.dk !== K_REG) return false;
    const sz = o.sz;
    const dec = o.cc === 1;
    this.emit(`fe = ${this.cf(this.fs)};`);
    this.emit(`fa = ${this.rd(o.d, sz)}; fah = ${this.rdh(o.d, sz)};`);
    if (sz === 8) {
      this.emit(dec
        ? `{ const s = (fa >>> 0) - 1; fr = s | 0; frh = (fah - (s < 0 ? 1 : 0)) | 0; }`
        : `{ const s = (fa >>> 0) + 1; fr = s | 0; frh = (fah + (s > 0xffffffff ? 1 : 0)) | 0; }`);
    } else if (sz === 4) this.emit(`fr = (fa ${dec ? '-' : '+'} 1) | 0; frh = 0;`);
    else this.emit(`fr = (fa ${dec ? '-' : '+'} 1) & ${sz === 1 ? 0xff : 0xffff}; frh = 0;`);
    this.fs = { k: dec ? FK_DEC : FK_INC, sz };
    this.wr(o.d, sz, 'fr', 'frh');
    return true;
  }

  shiftRI(o: Op): boolean {
    const n = o.il, sz = o.sz, kind = o.cc; // 4 SHL, 5 SHR, 7 SAR; 1 <= n < width
    const r = this.r(o.d), h = this.h(o.d);
    if (sz === 4) {
      if (kind === 5) this.emit(`fe = (${r} >>> ${n - 1}) & 1; fo = ${r} >>> 31; fr = ${r} >>> ${n};`);
      else if (kind === 7) this.emit(`fe = (${r} >> ${n - 1}) & 1; fo = 0; fr = ${r} >> ${n};`);
      else this.emit(`fe = (${r} >>> ${32 - n}) & 1; fr = ${r} << ${n}; fo = (fr >>> 31) ^ fe;`);
      this.emit(`fr |= 0; frh = 0;`);
    } else {
      const bit = (i: number): string => (i < 32 ? `((${r} >>> ${i}) & 1)` : `((${h} >>> ${i - 32}) & 1)`);
      if (kind === 5) {
        this.emit(`fe = ${bit(n - 1)}; fo = ${h} >>> 31;`);
        if (n < 32) this.emit(`fr = (${r} >>> ${n}) | (${h} << ${32 - n}); frh = ${h} >>> ${n};`);
        else this.emit(`fr = ${h} >>> ${n - 32}; frh = 0;`);
      } else if (kind === 7) {
        this.emit(`fe = ${bit(n - 1)}; fo = 0;`);
        if (n < 32) this.emit(`fr = (${r} >>> ${n}) | (${h} << ${32 - n}); frh = ${h} >> ${n};`);
        else this.emit(`fr = ${h} >> ${n - 32}; frh = ${h} >> 31;`);
      } else {
        this.emit(`fe = ${bit(64 - n)};`);
        if (n < 32) this.emit(`frh = (${h} << ${n}) | (${r} >>> ${32 - n}); fr = ${r} << ${n};`);
        else this.emit(`frh = ${r} << ${n - 32}; fr = 0;`);
        this.emit(`fo = (frh >>> 31) ^ fe;`);
      }
      this.emit(`fr |= 0; frh |= 0;`);
    }
    this.fs = { k: FK_RES, sz };
    this.wr(o.d, sz, 'fr', 'frh');
    return true;
  }

  /** SHLD / SHRD r32, r32, imm8 (SDM SHLD/SHRD; the interpreter's opShxd for 32-bit). */
  shxd(o: Op): boolean {
    if (o.sz !== 4 || o.dk !== K_REG || o.tk !== K_IMM) return false;
    const n = o.i2 & 31;
    const d = this.r(o.d), h = this.h(o.d);
    if (n === 0) { this.written.add(o.d); this.emit(`${h} = 0;`); return true; }
    const b = this.rd(o.s, 4);
    if (o.cc === 0) this.emit(`fe = (${d} >>> ${32 - n}) & 1; fr = (${d} << ${n}) | (${b} >>> ${32 - n});`);
    else this.emit(`fe = (${d} >>> ${n - 1}) & 1; fr = (${d} >>> ${n}) | (${b} << ${32 - n});`);
    this.emit(`fo = ((fr ^ ${d}) >>> 31) & 1; frh = 0;`);
    this.fs = { k: FK_RES, sz: 4 };
    this.wr(o.d, 4, 'fr', '0');
    return true;
  }

  imul(o: Op): boolean {
    if (o.sz !== 4 || o.sk !== K_REG) return false;
    const b = this.rd(o.s, 4);
    const a = o.tk === K_IMM ? `${o.il}` : this.rd(o.d, 4);
    this.emit(`a = ${a}; b = ${b}; fr = Math.imul(a, b); frh = 0; fe = (a * b) !== fr ? 1 : 0; fo = fe;`);
    this.fs = { k: FK_RES, sz: 4 };
    this.wr(o.d, 4, 'fr', '0');
    return true;
  }

  /** Jcc / JMP rel as the block's last instruction. */
  branch(k: number, o: Op, conditional: boolean): boolean {
    if (this.bits === 64 ? o.sz !== 8 : o.sz !== 4) return false;
    const rel = this.off[k] + o.len + o.br;
    const cond = conditional ? this.cond(this.fs, o.cc) : 'true';
    const n = this.blk.n;
    if (this.loop) {
      // Back to the block start: iterate here while the budget allows.
      this.emit(`if (${cond}) { done += ${n}; ${this.endFs.k !== FK_C ? 'fk = 1; ' : ''}if (done + ${n} <= max) continue; ${this.exit('0', 1, 'rip0')} }`);
    } else {
      const t = this.bits === 64 ? `rip0 + ${rel}` : `(rip0 + ${rel}) >>> 0`;
      this.emit(`if (${cond}) { const t = ${t};`);
      if (this.bits === 64) this.emit(`if (t < -c.canonLimit || t >= c.canonLimit) { c.rip = ${this.ripAt(k)}; c.raise(13, 0, true); ${this.exit(`${k}`, 2, null)} }`);
      else this.emit(`if (t > c.state.segLimit[1]) { c.rip = ${this.ripAt(k)}; c.raise(13, 0, true); ${this.exit(`${k}`, 2, null)} }`);
      this.emit(`${this.exit(`${k + 1}`, 1, 't')} }`);
    }
    this.emit(this.exit(`${k + 1}`, 0, this.ripNext(k, o)));
    this.terminated = true;
    return true;
  }

  /** A call of the interpreter's handler for op k, with state synchronized around it. */
  fallback(k: number, o: Op, last: boolean): void {
    this.hasFallback = true;
    this.emit(`@@WB@@ ${this.mat(this.fs)} c.rip = ${this.ripAt(k)}; c.curOp = O[${k}];`);
    this.emit(`rc = F${k}(c, O[${k}]);`);
    // Registers and flags are in the processor now: exits must not store stale locals.
    this.emit(`if (rc !== 0) { c.jrc = rc; return done + ${k} + (rc === 1 ? 1 : 0); }`);
    if (last) { this.emit(`c.rip = ${this.ripNext(k, o)}; c.jrc = 0; return done + ${k + 1};`); this.terminated = true; return; }
    this.emit(`if (c.brk) { c.rip = ${this.ripNext(k, o)}; c.jrc = 0; return done + ${k + 1}; }`);
    this.emit(`@@RELOAD@@`);
    this.fs = { k: FK_C, sz: 4 };
  }
}

/** Would op `o` leave the flags in a known static kind? (for the loop's end state). */
function flagKind(o: Op): FState | null {
  const fn = o.fn;
  if (fn === X.opAlu || fn === X.opAlu32RR || fn === X.opAlu32RI || fn === X.opAlu64RR) {
    if (o.cc === 2 || o.cc === 3) return { k: FK_C, sz: 4 };
    if (o.dk !== K_REG && o.dk !== K_MEM) return { k: FK_C, sz: 4 };
    return { k: o.cc === 0 ? FK_ADD : o.cc === 5 || o.cc === 7 ? FK_SUB : FK_LOGIC, sz: o.sz };
  }
  if (fn === X.opIncDec) return o.dk === K_REG ? { k: o.cc === 1 ? FK_DEC : FK_INC, sz: o.sz } : { k: FK_C, sz: 4 };
  if (fn === X.opShiftRI) return { k: FK_RES, sz: o.sz };
  if (fn === X.opImul2) return o.sz === 4 && o.sk === K_REG ? { k: FK_RES, sz: 4 } : { k: FK_C, sz: 4 };
  if (fn === X.opShxd) return o.sz === 4 && o.dk === K_REG && o.tk === K_IMM && (o.i2 & 31) !== 0 ? { k: FK_RES, sz: 4 } : null;
  return null;
}

/** Compile `blk` (translated for a `bits`-bit code segment); null when nothing in it is worth compiling. */
export function compileBlock(blk: Block, bits: number): JitFn | null {
  const ops = blk.ops;
  const n = blk.n;
  if (n === 0) return null;
  const cm = new Compiler(blk, bits);
  let off = 0;
  for (let k = 0; k < n; k++) { cm.off.push(off); off += ops[k].len; }
  const lastOp = ops[n - 1];
  const lastIsBranch = lastOp.fn === X.opJcc || lastOp.fn === X.opJmpRel;
  // A loop: the last instruction branches to the block's own first byte.
  const selfLoop = lastIsBranch && (cm.off[n - 1] + lastOp.len + lastOp.br) === 0 && (bits === 64 ? lastOp.sz === 8 : lastOp.sz === 4);
  if (selfLoop) {
    let end: FState = { k: FK_C, sz: 4 };
    for (let k = 0; k < n; k++) { const f = flagKind(ops[k]); if (f !== null) end = f; }
    cm.endFs = end;
    cm.fs = { k: FK_HEAD, sz: 4 };
    cm.loop = true;
  }
  let specialized = 0;
  for (let k = 0; k < n; k++) {
    const o = ops[k];
    const last = k === n - 1;
    const mark = cm.out.length;
    const before = cm.fs;
    if (cm.op(k, o, last)) { specialized++; continue; }
    cm.out.length = mark;
    cm.fs = before;
    if (cm.loop) {
      // Loops only when every instruction is specialized: start over without looping.
      return compileNoLoop(blk, bits);
    }
    cm.fallback(k, o, last);
  }
  if (specialized === 0) return null;
  // Ran off the end (page end or MAX_BLOCK): RIP = the next instruction.
  if (!cm.terminated) cm.emit(cm.exit(`${n}`, 0, `rip0 + ${off}`));
  return assemble(cm, blk);
}

function compileNoLoop(blk: Block, bits: number): JitFn | null {
  const ops = blk.ops;
  const n = blk.n;
  const cm = new Compiler(blk, bits);
  let off = 0;
  for (let k = 0; k < n; k++) { cm.off.push(off); off += ops[k].len; }
  let specialized = 0;
  for (let k = 0; k < n; k++) {
    const o = ops[k];
    const last = k === n - 1;
    const mark = cm.out.length;
    const before = cm.fs;
    if (cm.op(k, o, last)) { specialized++; continue; }
    cm.out.length = mark;
    cm.fs = before;
    cm.fallback(k, o, last);
  }
  if (specialized === 0) return null;
  if (!cm.terminated) cm.emit(cm.exit(`${n}`, 0, `rip0 + ${off}`));
  return assemble(cm, blk);
}

function assemble(cm: Compiler, blk: Block): JitFn {
  const used = [...cm.used].sort((a, b) => a - b);
  const load = used.map((i) => `r${i} = R[${i}]; h${i} = H[${i}];`).join(' ');
  const decl = used.length ? `let ${used.map((i) => `r${i} = 0, h${i} = 0`).join(', ')};` : '';
  const fdecl = blk.ops.map((_o, k) => `F${k} = O[${k}].fn`).join(', ');
  const wb = [...cm.written].sort((a, b) => a - b).map((i) => `R[${i}] = r${i}; H[${i}] = h${i};`).join(' ');
  const body = cm.out.join('\n').split('@@RELOAD@@').join(load).split('@@WB@@').join(wb);
  const src = `
const X = E.X;
const F_ = 0, ${fdecl};
function X_ult(al, ah, bl, bh) { const a = ah >>> 0, b = bh >>> 0; return a < b || (a === b && (al >>> 0) < (bl >>> 0)) ? 1 : 0; }
return function jitBlock(c, max) {
  const R = c.r, H = c.rh;
  const rip0 = c.rip;
  ${decl}
  ${load}
  let a = 0, ah = 0, b = 0, bh = 0, v = 0, vh = 0, L = 0, rc = 0;
  let fa = 0, fah = 0, fb = 0, fbh = 0, fr = 0, frh = 0, fe = 0, fo = 0, fk = 0;
  let done = 0;
  for (;;) {
${body}
  }
};`;
  const make = new Function('E', 'O', src) as (e: typeof ENV, o: Op[]) => JitFn;
  return make(ENV, blk.ops);
}
