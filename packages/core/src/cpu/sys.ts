/**
 * System architecture: segment loads and descriptor checks (SDM Vol. 3A ch. 3, 5),
 * interrupt and exception delivery (ch. 6), far transfers, IRET, control registers,
 * MSRs and the system instructions, with the guest-mode intercept points of seam 3.
 */
import type { X86Cpu } from './x86-cpu';
import { PEND_EXIT } from './x86-cpu';
import { Op, K_REG, K_MEM, K_IMM, BASE_RIP } from './op';
import { APIC_ACCESS_DONE_TRAP, CrAccessType, GuestExitKind, InterceptInsn, EventType } from './guest-mode';
import {
  A_DB, A_L, A_P, A_S, A_UNUSABLE, AC, CF, CR0_CD, CR0_NW, CR0_PE, CR0_PG, CR0_TS, CR4_DE, CR4_LA57, CR4_PAE,
  CR4_PCIDE, CR4_PGE, CR4_SMAP, CR4_SMEP, CR4_TSD, CR4_UMIP, CS, DF, DS, EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE, EFER_SVME, ES, FS, GP, GS,
  ID, IF, IOPL, LDTR, MSR_CSTAR, MSR_DEBUGCTL, MSR_EFER, MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_LSTAR,
  MSR_PAT, MSR_SFMASK, MSR_STAR, MSR_SYSENTER_CS, MSR_SYSENTER_EIP, MSR_SYSENTER_ESP, MSR_TSC, MSR_TSC_AUX, NP, NT,
  RF, SS, SS_VEC, TF, TR, TS, UD, VIF, VIP, VM, DB, BP, OF_VEC, OF, CR4_FSGSBASE,
} from './consts';
import { isPaePaging, loadPdptrs, paePagingActive } from './pdptr';
import { farTaskSwitch, gateTaskSwitch, iretTaskSwitch } from './task-switch';
import { canonHi, getReg, linOf, pop, push, segLin, setReg, spAdd, stackPeek, strLin, idxAdd, cntZero, cntDec, eaRaw } from './ops';

const TWO32 = 4294967296;

// =====================================================================================
// Descriptors
// =====================================================================================

/** Read the 8-byte descriptor for `sel` into c.dLo/c.dHi; returns false if outside the table (no fault raised). */
export function readDesc(c: X86Cpu, sel: number): boolean {
  const s = c.state;
  let base: number, limit: number;
  if (sel & 4) {
    if (s.segAttr[LDTR] & A_UNUSABLE) return false;
    base = (s.segBaseHi[LDTR] | 0) * TWO32 + (s.segBaseLo[LDTR] >>> 0);
    limit = s.segLimit[LDTR];
  } else {
    base = Number(BigInt.asIntN(64, s.gdtrBase));
    limit = s.gdtrLimit;
  }
  const idx = sel & 0xfff8;
  if (idx + 7 > limit) return false;
  const lin = c.bits === 64 || c.lma ? base + idx : (base + idx) >>> 0;
  const saveR = c.accR;
  c.accR = 1; c.implicitSup = true;
  const lo = c.rd32(lin);
  const hi = c.pend ? 0 : c.rd32(c.linAdd(lin, 4));
  c.accR = saveR; c.implicitSup = false;
  if (c.pend) return false;
  c.dLo = lo; c.dHi = hi; c.dLin = lin;
  return true;
}
/** High 8 bytes of a 16-byte system descriptor (long mode), into c.dHi2 (base 63:32). */
function readDescHigh(c: X86Cpu, sel: number): boolean {
  const s = c.state;
  const idx = (sel & 0xfff8) + 8;
  const limit = sel & 4 ? s.segLimit[LDTR] : s.gdtrLimit;
  if (idx + 7 > limit) return false;
  const saveR = c.accR;
  c.accR = 1; c.implicitSup = true;
  c.dHi2 = c.rd32(c.linAdd(c.dLin, 8));
  const t = c.pend ? 0 : c.rd32(c.linAdd(c.dLin, 12));
  c.accR = saveR; c.implicitSup = false;
  if (c.pend) return false;
  return ((t >>> 8) & 0x1f) === 0;
}
function descAttr(hi: number): number {
  return (hi >>> 8) & 0xf0ff;
}
function descBase(lo: number, hi: number): number {
  return ((lo >>> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000)) >>> 0;
}
function descLimit(lo: number, hi: number): number {
  const l = (lo & 0xffff) | (hi & 0xf0000);
  return (hi & 0x800000) ? ((l << 12) | 0xfff) >>> 0 : l;
}
/** Set the accessed bit of the descriptor just read (SDM 3.4.5.1). */
function setAccessed(c: X86Cpu): void {
  if (c.dHi & 0x100) return;
  const saveW = c.accW;
  c.accW = 2; c.implicitSup = true;
  c.wr32(c.linAdd(c.dLin, 4), c.dHi | 0x100);
  c.accW = saveW; c.implicitSup = false;
}
/** Load the segment register cache from the descriptor in c.dLo/c.dHi. */
export function loadFromDesc(c: X86Cpu, seg: number, sel: number, baseHi = 0): void {
  const s = c.state;
  s.segSel[seg] = sel;
  s.segBaseLo[seg] = descBase(c.dLo, c.dHi) | 0;
  s.segBaseHi[seg] = baseHi;
  s.segLimit[seg] = descLimit(c.dLo, c.dHi);
  s.segAttr[seg] = descAttr(c.dHi);
  c.segUpdate(seg);
}
/** Load a null selector: the register becomes unusable (SDM 3.4.3; VMX's "unusable"). */
export function loadNull(c: X86Cpu, seg: number, sel: number): void {
  const s = c.state;
  s.segSel[seg] = sel;
  s.segAttr[seg] = A_UNUSABLE | (s.segAttr[seg] & 0x60);
  if (c.bits !== 64 || seg < FS) { s.segBaseLo[seg] = 0; s.segBaseHi[seg] = 0; }
  s.segLimit[seg] = 0;
  c.segUpdate(seg);
}
/** Real-mode (and virtual-8086) segment load: base = selector * 16, limit and attributes kept. */
export function loadReal(c: X86Cpu, seg: number, sel: number): void {
  const s = c.state;
  s.segSel[seg] = sel;
  s.segBaseLo[seg] = sel << 4;
  s.segBaseHi[seg] = 0;
  if (seg === CS) s.segAttr[seg] = (s.segAttr[seg] & ~A_UNUSABLE) | A_P | A_S;
  c.segUpdate(seg);
}

/**
 * MOV/POP/LxS to a data segment register or SS with the protected-mode checks of SDM
 * MOV (Sreg) and 5.6/5.7. Returns false with an exception pending.
 */
export function loadSeg(c: X86Cpu, seg: number, sel: number): boolean {
  sel &= 0xffff;
  if (!c.pe || c.vm86) { loadReal(c, seg, sel); if (seg === SS) c.updateMode(); return true; }
  const cpl = c.cpl;
  const rpl = sel & 3;
  if ((sel & 0xfffc) === 0) {
    if (seg === SS) {
      // 64-bit mode allows a null SS at CPL < 3 with RPL = CPL.
      if (!(c.bits === 64 && cpl !== 3 && rpl === cpl)) { c.gp(0); return false; }
    }
    loadNull(c, seg, sel);
    if (seg === SS) c.updateMode();
    return true;
  }
  if (!readDesc(c, sel)) { if (!c.pend) c.gp(sel & 0xfffc); return false; }
  const a = descAttr(c.dHi);
  const dpl = (a >>> 5) & 3;
  const type = a & 0xf;
  if (seg === SS) {
    if (rpl !== cpl || dpl !== cpl || !(a & A_S) || (type & 8) || !(type & 2)) { c.gp(sel & 0xfffc); return false; }
    if (!(a & A_P)) { c.raise(SS_VEC, sel & 0xfffc, true); return false; }
  } else {
    if (!(a & A_S) || ((type & 8) && !(type & 2))) { c.gp(sel & 0xfffc); return false; }
    // Data or non-conforming code: DPL >= max(CPL, RPL).
    if (!((type & 8) && (type & 4)) && (dpl < cpl || dpl < rpl)) { c.gp(sel & 0xfffc); return false; }
    if (!(a & A_P)) { c.raise(NP, sel & 0xfffc, true); return false; }
  }
  setAccessed(c);
  if (c.pend) return false;
  const baseHi = c.bits === 64 && seg >= FS ? c.state.segBaseHi[seg] : 0;
  loadFromDesc(c, seg, sel, seg >= FS && c.bits === 64 ? 0 : baseHi);
  if (seg === SS) c.updateMode();
  return true;
}

/**
 * Check and load a code segment for a far JMP/CALL/RET/IRET (SDM JMP "far jump to a
 * conforming or non-conforming code segment"). `newCpl` is the CPL after the transfer.
 */
function checkCode(c: X86Cpu, sel: number, newCpl: number, isRet: boolean): boolean {
  if ((sel & 0xfffc) === 0) { c.gp(0); return false; }
  if (!readDesc(c, sel)) { if (!c.pend) c.gp(sel & 0xfffc); return false; }
  const a = descAttr(c.dHi);
  const dpl = (a >>> 5) & 3;
  if (!(a & A_S) || !(a & 8)) { c.gp(sel & 0xfffc); return false; }
  const conforming = (a & 4) !== 0;
  const rpl = sel & 3;
  if (isRet) {
    if (rpl < c.cpl) { c.gp(sel & 0xfffc); return false; }
    if (conforming ? dpl > rpl : dpl !== rpl) { c.gp(sel & 0xfffc); return false; }
  } else if (conforming ? dpl > c.cpl : (rpl > c.cpl || dpl !== c.cpl)) { c.gp(sel & 0xfffc); return false; }
  if (!(a & A_P)) { c.raise(NP, sel & 0xfffc, true); return false; }
  if (c.lma && (a & A_L) && (a & A_DB)) { c.gp(sel & 0xfffc); return false; }
  void newCpl;
  return true;
}
function commitCs(c: X86Cpu, sel: number, cpl: number): void {
  setAccessed(c);
  loadFromDesc(c, CS, (sel & 0xfffc) | cpl);
  c.state.cpl = cpl;
  c.updateMode();
}

// =====================================================================================
// Far transfers
// =====================================================================================

/** JMP ptr16:16/32 (il = offset, i2 = selector) and JMP m16:16/32/64 (memory). cc=1: CALL. */
export function opFar(c: X86Cpu, o: Op): number {
  let off: number, sel: number;
  const isCall = o.cc === 1;
  if (o.sk === K_IMM) { off = o.il; sel = o.i2; }
  else {
    const lin = linOf(c, o, o.sz + 2, false);
    if (c.pend) return 2;
    off = o.sz === 2 ? c.rd16(lin) : c.rd32(lin);
    if (c.pend) return 2;
    if (o.sz === 8) { c.rd32(c.linAdd(lin, 4)); /* high half of a 64-bit offset */ off = off >>> 0; }
    const offHi = o.sz === 8 ? c.rd32(c.linAdd(lin, 4)) : 0;
    sel = c.rd16(c.linAdd(lin, o.sz));
    if (c.pend) return 2;
    if (o.sz === 8) c.farHi = offHi; else c.farHi = 0;
  }
  const retIp = c.nextRip(o);
  const oldCs = c.state.segSel[CS];
  // Real and virtual-8086 mode: CS = selector * 16 (SDM JMP/CALL "real-address or virtual-8086 mode").
  if (!c.pe || c.vm86) {
    if (isCall) {
      if (!push(c, o.sz, oldCs, 0)) return 2;
      if (!push(c, o.sz, retIp, 0)) return 2;
    }
    loadReal(c, CS, sel);
    c.updateMode();
    c.rip = o.sz === 2 ? off & 0xffff : off >>> 0;
    return 1;
  }
  if ((sel & 0xfffc) === 0) return c.gp(0);
  if (!readDesc(c, sel)) return c.pend ? 2 : c.gp(sel & 0xfffc);
  const a = descAttr(c.dHi);
  if (!(a & A_S)) {
    const type = a & 0x1f;
    if (type === 0x0c) return callGate(c, o, sel, isCall, retIp, oldCs);
    // Task gate or TSS (types 1/3/9/B; IA-32e mode has neither: #GP below).
    if (!c.lma && (type === 0x05 || (type & 0x15) === 0x01)) return farTaskSwitch(c, o, sel, isCall);
    return c.gp(sel & 0xfffc);
  }
  if (!checkCode(c, sel, c.cpl, false)) return 2;
  const tgtLong = c.lma && (a & A_L);
  const newSz = tgtLong ? 8 : (a & A_DB) ? 4 : 2;
  const lim = descLimit(c.dLo, c.dHi);
  const tgt = o.sz === 2 ? off & 0xffff : off >>> 0;
  if (!tgtLong && tgt > lim) return c.gp(0);
  if (isCall) {
    const saved = [c.r[4], c.rh[4]];
    if (!push(c, o.sz, oldCs, 0) || !push(c, o.sz, retIp | 0, c.bits === 64 ? Math.floor(retIp / TWO32) | 0 : 0)) {
      c.r[4] = saved[0]; c.rh[4] = saved[1];
      return 2;
    }
  }
  commitCs(c, sel, c.cpl);
  void newSz;
  c.rip = o.sz === 8 && o.sk !== K_IMM ? ((c.farHi | 0) * TWO32 + (off >>> 0)) : tgt;
  return 1;
}

/** Far CALL/JMP through a call gate (SDM 5.8.3-5.8.6), same privilege or to an inner one. */
function callGate(c: X86Cpu, o: Op, gsel: number, isCall: boolean, retIp: number, oldCs: number): number {
  const gLo = c.dLo, gHi = c.dHi;
  const gdpl = (gHi >>> 13) & 3;
  if (gdpl < c.cpl || gdpl < (gsel & 3)) return c.gp(gsel & 0xfffc);
  if (!(gHi & 0x8000)) return c.raise(NP, gsel & 0xfffc, true);
  let off = ((gLo & 0xffff) | (gHi & 0xffff0000)) >>> 0;
  let offHi = 0;
  if (c.lma) { if (!readDescHigh(c, gsel)) return c.pend ? 2 : c.gp(gsel & 0xfffc); offHi = c.dHi2; }
  const gate16 = !c.lma && !(gHi & 0x800);
  if (gate16) off &= 0xffff;
  const csel = gLo >>> 16;
  if ((csel & 0xfffc) === 0) return c.gp(0);
  if (!readDesc(c, csel)) return c.pend ? 2 : c.gp(csel & 0xfffc);
  const a = descAttr(c.dHi);
  const dpl = (a >>> 5) & 3;
  if (!(a & A_S) || !(a & 8) || dpl > c.cpl) return c.gp(csel & 0xfffc);
  if (!(a & A_P)) return c.raise(NP, csel & 0xfffc, true);
  if (c.lma && (!(a & A_L) || (a & A_DB))) return c.gp(csel & 0xfffc);
  const conforming = (a & 4) !== 0;
  const gsz = c.lma ? 8 : gate16 ? 2 : 4;
  if (!isCall) {
    if (!conforming && dpl !== c.cpl) return c.gp(csel & 0xfffc);
    commitCs(c, csel, c.cpl);
    c.rip = offHi * TWO32 + off;
    return 1;
  }
  if (!conforming && dpl < c.cpl) {
    // Inner privilege: new stack from the TSS; a legacy gate's parameter count (0-31) says how
    // many operands to copy from the caller's stack (SDM 5.8.5, Figure 5-13).
    const oldSs = c.state.segSel[SS], oldSp = c.r[4], oldSph = c.rh[4];
    const cdLo = c.dLo, cdHi = c.dHi;
    const count = c.lma ? 0 : gHi & 0x1f;
    let params: number[] | null = null;
    if (count > 0) {
      params = [];
      for (let i = 0; i < count; i++) {
        const offs = c.ssz === 4 ? ((oldSp >>> 0) + i * gsz) >>> 0 : (oldSp + i * gsz) & 0xffff;
        const lin = segLin(c, SS, offs, gsz, false);
        if (c.pend) return 2;
        params.push(c.rdN(lin, gsz));
        if (c.pend) return 2;
      }
    }
    if (!tssStack(c, dpl, 0)) return 2;
    const nsLo = c.tssSpLo, nsHi = c.tssSpHi, nss = c.tssSs;
    const saveCtx = saveSegState(c, SS);
    if (c.lma) {
      loadNull(c, SS, dpl);
    } else if (!loadStackSeg(c, nss, dpl)) return 2;
    c.state.cpl = dpl; c.updateMode();
    setReg(c, 4, 8, c.lma ? nsLo & ~7 : nsLo, c.lma ? nsHi : 0);
    if (!c.lma && c.ssz === 2) c.r[4] = nsLo & 0xffff;
    let ok = push(c, gsz, oldSs, 0) && push(c, gsz, oldSp, oldSph);
    if (params !== null) for (let i = params.length - 1; ok && i >= 0; i--) ok = push(c, gsz, params[i], 0);
    ok = ok && push(c, gsz, oldCs, 0) &&
      push(c, gsz, retIp | 0, c.bits === 64 ? Math.floor(retIp / TWO32) | 0 : 0);
    if (!ok) { restoreSegState(c, SS, saveCtx); c.state.cpl = saveCtx.cpl; c.r[4] = oldSp; c.rh[4] = oldSph; c.updateMode(); return 2; }
    c.dLo = cdLo; c.dHi = cdHi;
    commitCs(c, csel, dpl);
    c.rip = offHi * TWO32 + off;
    return 1;
  }
  if (!push(c, gsz, oldCs, 0) || !push(c, gsz, retIp | 0, c.bits === 64 ? Math.floor(retIp / TWO32) | 0 : 0)) return 2;
  commitCs(c, csel, c.cpl);
  c.rip = offHi * TWO32 + off;
  void o;
  return 1;
}

function saveSegState(c: X86Cpu, seg: number): { sel: number; lo: number; hi: number; lim: number; attr: number; cpl: number } {
  const s = c.state;
  return { sel: s.segSel[seg], lo: s.segBaseLo[seg], hi: s.segBaseHi[seg], lim: s.segLimit[seg], attr: s.segAttr[seg], cpl: s.cpl };
}
function restoreSegState(c: X86Cpu, seg: number, v: { sel: number; lo: number; hi: number; lim: number; attr: number }): void {
  const s = c.state;
  s.segSel[seg] = v.sel; s.segBaseLo[seg] = v.lo; s.segBaseHi[seg] = v.hi; s.segLimit[seg] = v.lim; s.segAttr[seg] = v.attr;
  c.segUpdate(seg);
}

/** RETF / RETF imm16 (SDM RET "far return"), same or outer privilege. */
export function opRetf(c: X86Cpu, o: Op): number {
  const sz = o.sz;
  const ipv = stackPeek(c, 0, sz);
  if (c.pend) return 2;
  const iph = c.vh;
  const csv = stackPeek(c, sz, sz) & 0xffff;
  if (c.pend) return 2;
  const imm = o.il & 0xffff;
  if (!c.pe || c.vm86) {
    spAdd(c, 2 * sz + imm);
    loadReal(c, CS, csv);
    c.updateMode();
    c.rip = sz === 2 ? ipv & 0xffff : ipv >>> 0;
    return 1;
  }
  const rpl = csv & 3;
  if (!checkCode(c, csv, rpl, true)) return 2;
  const a = descAttr(c.dHi);
  const cdLo = c.dLo, cdHi = c.dHi;
  if (rpl === c.cpl) {
    spAdd(c, 2 * sz + imm);
    commitCs(c, csv, rpl);
    c.rip = c.bits === 64 && sz === 8 ? (iph | 0) * TWO32 + (ipv >>> 0) : sz === 2 ? ipv & 0xffff : ipv >>> 0;
    return 1;
  }
  // Outer privilege: pop SS:SP after the parameters.
  const spv = stackPeek(c, 2 * sz + imm, sz);
  if (c.pend) return 2;
  const sph = c.vh;
  const ssv = stackPeek(c, 3 * sz + imm, sz) & 0xffff;
  if (c.pend) return 2;
  const savedCpl = c.state.cpl;
  c.state.cpl = rpl;
  const longTarget = c.lma && (a & A_L);
  if ((ssv & 0xfffc) === 0 && c.lma && rpl !== 3) loadNull(c, SS, ssv);
  else if (!loadSeg(c, SS, ssv)) { c.state.cpl = savedCpl; return 2; }
  c.dLo = cdLo; c.dHi = cdHi;
  commitCs(c, csv, rpl);
  setReg(c, 4, longTarget ? 8 : 4, spv, longTarget ? sph : 0);
  if (!longTarget && !(c.state.segAttr[SS] & A_DB)) c.r[4] = (c.r[4] & ~0xffff) | (spv & 0xffff);
  spAdd(c, imm);
  nullifyDataSegs(c, rpl);
  c.rip = longTarget && sz === 8 ? (iph | 0) * TWO32 + (ipv >>> 0) : sz === 2 ? ipv & 0xffff : ipv >>> 0;
  return 1;
}

/** After a return to an outer level: data segments the new CPL may not use become null (SDM RET/IRET). */
function nullifyDataSegs(c: X86Cpu, cpl: number): void {
  const s = c.state;
  for (const seg of [ES, DS, FS, GS]) {
    const a = s.segAttr[seg];
    if (a & A_UNUSABLE) continue;
    const dpl = (a >>> 5) & 3;
    const conformingCode = (a & 0xc) === 0xc;
    if (dpl < cpl && !conformingCode) loadNull(c, seg, 0);
  }
}

/** MOV Sreg, r/m16 and POP Sreg and LDS/LES/LFS/LGS/LSS (x = segment). */
export function opMovSreg(c: X86Cpu, o: Op): number {
  let sel: number;
  if (o.sk === K_REG) sel = c.r[o.s] & 0xffff;
  else { const lin = linOf(c, o, 2, false); if (c.pend) return 2; sel = c.rd16(lin); if (c.pend) return 2; }
  const seg = o.x;
  if (seg === CS) return c.ud();
  if (!loadSeg(c, seg, sel)) return 2;
  if (seg === SS) { c.state.movSsShadow = true; c.shadowSet = true; c.brk = true; }
  return 0;
}
/** MOV r/m, Sreg. */
export function opMovFromSreg(c: X86Cpu, o: Op): number {
  const v = c.state.segSel[o.x];
  if (o.dk === K_REG) { setReg(c, o.d, o.sz === 1 ? 2 : o.sz, v, 0); return 0; }
  const lin = linOf(c, o, 2, true);
  if (c.pend) return 2;
  c.wr16(lin, v);
  return c.pend ? 2 : 0;
}
/** PUSH Sreg. */
export function opPushSreg(c: X86Cpu, o: Op): number {
  return push(c, o.sz, c.state.segSel[o.x], 0) ? 0 : 2;
}
/** POP Sreg. */
export function opPopSreg(c: X86Cpu, o: Op): number {
  const v = stackPeek(c, 0, o.sz) & 0xffff;
  if (c.pend) return 2;
  if (!loadSeg(c, o.x, v)) return 2;
  spAdd(c, o.sz);
  if (o.x === SS) { c.state.movSsShadow = true; c.shadowSet = true; c.brk = true; }
  return 0;
}
/** LDS/LES/LFS/LGS/LSS r, m16:16/32/64 (x = segment). */
export function opLxs(c: X86Cpu, o: Op): number {
  const lin = linOf(c, o, o.sz + 2, false);
  if (c.pend) return 2;
  const off = c.rdN(lin, o.sz), offh = c.vh;
  if (c.pend) return 2;
  const sel = c.rd16(c.linAdd(lin, o.sz));
  if (c.pend) return 2;
  if (!loadSeg(c, o.x, sel)) return 2;
  setReg(c, o.d, o.sz, off, offh);
  return 0;
}

// =====================================================================================
// Interrupt and exception delivery
// =====================================================================================

/** Read the stack for privilege level `dpl` (or IST `ist`) from the TSS into c.tssSs/tssSpLo/tssSpHi. */
function tssStack(c: X86Cpu, dpl: number, ist: number): boolean {
  const s = c.state;
  const trA = s.segAttr[TR];
  const base = (s.segBaseHi[TR] | 0) * TWO32 + (s.segBaseLo[TR] >>> 0);
  const lim = s.segLimit[TR];
  const saveR = c.accR;
  c.accR = 1; c.implicitSup = true;
  let ok = true;
  if (c.lma) {
    const off = ist ? 0x24 + (ist - 1) * 8 : 4 + dpl * 8;
    if (off + 7 > lim) ok = false;
    else { c.tssSpLo = c.rd32(base + off); c.tssSpHi = c.rd32(base + off + 4); c.tssSs = 0; }
  } else if ((trA & 0xf) === 9 || (trA & 0xf) === 0xb) {
    const off = 4 + dpl * 8;
    if (off + 5 > lim) ok = false;
    else { c.tssSpLo = c.rd32((base + off) >>> 0); c.tssSs = c.rd16((base + off + 4) >>> 0); c.tssSpHi = 0; }
  } else {
    const off = 2 + dpl * 4;
    if (off + 3 > lim) ok = false;
    else { c.tssSpLo = c.rd16((base + off) >>> 0); c.tssSs = c.rd16((base + off + 2) >>> 0); c.tssSpHi = 0; }
  }
  c.accR = saveR; c.implicitSup = false;
  if (c.pend) return false;
  if (!ok) { c.raise(TS, s.segSel[TR] & 0xfffc, true); return false; }
  return true;
}

/** Load SS for an inner-privilege transfer with the #TS checks (SDM 6.12.1). */
function loadStackSeg(c: X86Cpu, sel: number, dpl: number): boolean {
  if ((sel & 0xfffc) === 0) { c.raise(TS, 0, true); return false; }
  if (!readDesc(c, sel)) { if (!c.pend) c.raise(TS, sel & 0xfffc, true); return false; }
  const a = descAttr(c.dHi);
  if ((sel & 3) !== dpl || ((a >>> 5) & 3) !== dpl || !(a & A_S) || (a & 8) || !(a & 2)) { c.raise(TS, sel & 0xfffc, true); return false; }
  if (!(a & A_P)) { c.raise(SS_VEC, sel & 0xfffc, true); return false; }
  setAccessed(c);
  loadFromDesc(c, SS, sel);
  return true;
}

/**
 * Deliver vector `vec` through the IDT/IVT. `soft`: INT n / INT3 / INTO (gate DPL checked).
 * `ext`: the EXT bit of error codes. Returns false with `pend` set on a nested fault/exit.
 */
export function idtDeliver(c: X86Cpu, vec: number, err: number, hasErr: boolean, soft: boolean, ext: number): boolean {
  const s = c.state;
  const idtBase = Number(BigInt.asIntN(64, s.idtrBase));
  const saveR = c.accR, saveW = c.accW;
  // IDT and TSS reads are implicit supervisor accesses.
  const rdSys = (lin: number): number => {
    c.accR = 1; c.implicitSup = true;
    const v = c.rd32(lin);
    c.accR = saveR; c.implicitSup = false;
    return v;
  };
  if (!c.pe) {
    // Real mode (SDM 20.1.4): 4-byte IVT entries, push FLAGS, CS, IP.
    if (vec * 4 + 3 > s.idtrLimit) { c.gp(vec * 8 + 2 + ext); return false; }
    const ent = rdSys((idtBase + vec * 4) >>> 0);
    if (c.pend) return false;
    const sp0 = c.r[4];
    if (!push(c, 2, c.getFlags() & 0xffff, 0) || !push(c, 2, s.segSel[CS], 0) || !push(c, 2, c.rip & 0xffff, 0)) {
      c.r[4] = sp0; return false;
    }
    c.fl &= ~(IF | TF | AC | RF);
    loadReal(c, CS, ent >>> 16);
    c.rip = ent & 0xffff;
    c.updateMode();
    return true;
  }
  const gsz = c.lma ? 16 : 8;
  if (vec * gsz + gsz - 1 > s.idtrLimit) { c.gp(vec * 8 + 2 + ext); return false; }
  const gLin = c.lma ? idtBase + vec * 16 : (idtBase + vec * 8) >>> 0;
  const gLo = rdSys(gLin);
  const gHi = c.pend ? 0 : rdSys(c.linAdd(gLin, 4));
  const gOffHi = c.pend || !c.lma ? 0 : rdSys(c.linAdd(gLin, 8));
  if (c.pend) return false;
  const gType = (gHi >>> 8) & 0x1f;
  const gDpl = (gHi >>> 13) & 3;
  const idtErr = vec * 8 + 2 + ext;
  if (gType === 0x05 && !c.lma) return gateTaskSwitch(c, gLo, gHi, idtErr, err, hasErr, soft, ext);
  const is32 = gType === 0x0e || gType === 0x0f;
  const is16 = gType === 0x06 || gType === 0x07;
  if (c.lma ? !is32 : !(is32 || is16)) { c.gp(idtErr); return false; }
  if (soft && gDpl < c.cpl) { c.gp(idtErr); return false; }
  if (!(gHi & 0x8000)) { c.raise(NP, idtErr, true); return false; }
  const trapGate = (gType & 1) !== 0;
  const csel = gLo >>> 16;
  let off = is16 ? gLo & 0xffff : ((gLo & 0xffff) | (gHi & 0xffff0000)) >>> 0;
  if ((csel & 0xfffc) === 0) { c.gp(ext); return false; }
  if (!readDesc(c, csel)) { if (!c.pend) c.gp((csel & 0xfffc) + ext); return false; }
  const cLo = c.dLo, cHi = c.dHi;
  const a = descAttr(cHi);
  const dpl = (a >>> 5) & 3;
  if (!(a & A_S) || !(a & 8) || dpl > c.cpl) { c.gp((csel & 0xfffc) + ext); return false; }
  if (!(a & A_P)) { c.raise(NP, (csel & 0xfffc) + ext, true); return false; }
  if (c.lma && (!(a & A_L) || (a & A_DB))) { c.gp((csel & 0xfffc) + ext); return false; }
  const conforming = (a & 4) !== 0;
  const oldCpl = c.cpl;
  const newCpl = conforming ? oldCpl : dpl;
  // From virtual-8086 mode the handler must run at CPL 0 (SDM 20.3.1.1; #GP(selector) otherwise).
  const fromV86 = c.vm86;
  if (fromV86 && newCpl !== 0) { c.gp((csel & 0xfffc) + ext); return false; }
  const flags = c.getFlags();
  const oldSs = s.segSel[SS], oldSp = c.r[4], oldSph = c.rh[4];
  const oldCs = s.segSel[CS];
  const oldRip = c.rip;
  const ripLo = oldRip >>> 0, ripHi = c.bits === 64 ? Math.floor(oldRip / TWO32) | 0 : 0;
  const savedSs = saveSegState(c, SS);
  const savedCs = saveSegState(c, CS);
  const ist = c.lma ? gHi & 7 : 0;
  const fail = (): boolean => {
    restoreSegState(c, CS, savedCs);
    restoreSegState(c, SS, savedSs);
    s.cpl = savedSs.cpl;
    c.r[4] = oldSp; c.rh[4] = oldSph;
    c.accW = saveW;
    c.updateMode();
    return false;
  };
  if (c.lma) {
    // 64-bit IDT gate (SDM 6.14): new RSP from IST or TSS.RSPn, aligned to 16, always push SS:RSP.
    let nLo: number, nHi: number;
    if (ist !== 0 || newCpl < oldCpl) {
      if (!tssStack(c, newCpl, ist)) return false;
      nLo = c.tssSpLo; nHi = c.tssSpHi;
      if (!canonHi(c, nHi)) { c.raise(SS_VEC, 0, true); return false; }
    } else { nLo = c.r[4]; nHi = c.rh[4]; }
    if (newCpl < oldCpl) loadNull(c, SS, newCpl);
    s.cpl = newCpl;
    c.dLo = cLo; c.dHi = cHi;
    loadFromDesc(c, CS, (csel & 0xfffc) | newCpl);
    c.updateMode();
    c.accW = 2; c.implicitSup = true;
    c.r[4] = nLo & ~15; c.rh[4] = nHi;
    const ok = push(c, 8, oldSs, 0) && push(c, 8, oldSp, oldSph) && push(c, 8, flags, 0) && push(c, 8, oldCs, 0) &&
      push(c, 8, ripLo, ripHi) && (!hasErr || push(c, 8, err, 0));
    c.implicitSup = false;
    if (!ok) return fail();
    c.accW = saveW;
    off = (gOffHi | 0) * TWO32 + off;
    if (!canonHi(c, gOffHi | 0)) { fail(); c.gp(0); return false; }
  } else {
    const psz = is32 ? 4 : 2;
    if (newCpl < oldCpl) {
      if (!tssStack(c, newCpl, 0)) return false;
      const nss = c.tssSs, nsp = c.tssSpLo;
      if (!loadStackSeg(c, nss, newCpl)) return false;
      s.cpl = newCpl;
      c.updateMode();
      if (c.ssz === 4) c.r[4] = nsp; else c.r[4] = (c.r[4] & ~0xffff) | (nsp & 0xffff);
      c.accW = 2; c.implicitSup = true;
      // From virtual-8086 mode GS, FS, DS and ES are saved first (SDM 20.3.1.1, Figure 20-5).
      const ok = (!fromV86 || (push(c, psz, s.segSel[GS], 0) && push(c, psz, s.segSel[FS], 0) &&
        push(c, psz, s.segSel[DS], 0) && push(c, psz, s.segSel[ES], 0))) &&
        push(c, psz, oldSs, 0) && push(c, psz, oldSp, 0);
      c.implicitSup = false;
      if (!ok) return fail();
    }
    c.accW = newCpl === 3 ? 8 : 2;
    const ok = push(c, psz, flags, 0) && push(c, psz, oldCs, 0) && push(c, psz, ripLo, 0) && (!hasErr || push(c, psz, err, 0));
    if (!ok) return fail();
    c.accW = saveW;
    if (off > descLimit(cLo, cHi)) { fail(); c.gp(ext); return false; }
    c.dLo = cLo; c.dHi = cHi;
    s.cpl = newCpl;
    loadFromDesc(c, CS, (csel & 0xfffc) | newCpl);
    if (newCpl < oldCpl) nullifyDataSegsOnInner(c);
  }
  // Accessed bit of the handler's code descriptor.
  c.dLo = cLo; c.dHi = cHi;
  c.fl &= ~(TF | NT | RF | VM);
  if (!trapGate) c.fl &= ~IF;
  c.rip = off;
  c.updateMode();
  return true;
}
/** An interrupt from virtual-8086 mode loads null selectors into DS, ES, FS and GS (SDM 20.3.1.1). */
function nullifyDataSegsOnInner(c: X86Cpu): void {
  if (!c.vm86) return;
  for (const seg of [ES, DS, FS, GS]) loadNull(c, seg, 0);
}

/** IRET / IRETD / IRETQ (SDM IRET; no virtual-8086, NT=1 in legacy mode is a task switch). */
export function opIret(c: X86Cpu, o: Op): number {
  if (c.intercepted(InterceptInsn.IRET, o)) return 2;
  // In virtual-8086 mode IRET is IOPL-sensitive and returns within the mode (NT is not consulted).
  if (c.vm86) return iretInV86(c, o);
  // NT = 1: return to the previous task, before any stack access (SDM IRET "TASK-RETURN";
  // #GP(0) in IA-32e mode).
  if (c.pe && (c.fl & NT)) return iretTaskSwitch(c, o);
  const sz = o.sz;
  const s = c.state;
  const ipv = stackPeek(c, 0, sz); if (c.pend) return 2;
  const iph = c.vh;
  const csv = stackPeek(c, sz, sz) & 0xffff; if (c.pend) return 2;
  const fv = stackPeek(c, 2 * sz, sz); if (c.pend) return 2;
  if (!c.pe) {
    spAdd(c, 3 * sz);
    loadReal(c, CS, csv);
    const mask = sz === 2 ? 0xffff : 0x257fd5;
    c.setFlags((c.getFlags() & ~mask) | (fv & mask));
    c.rip = sz === 2 ? ipv & 0xffff : ipv >>> 0;
    s.nmiBlocked = false;
    c.updateMode();
    return 1;
  }
  if ((fv & VM) && c.cpl === 0 && !c.lma && sz === 4) return iretToV86(c, ipv, csv, fv);
  const rpl = csv & 3;
  const cpl = c.cpl;
  if (!checkCode(c, csv, rpl, true)) return 2;
  const a = descAttr(c.dHi);
  const cdLo = c.dLo, cdHi = c.dHi;
  const toLong = c.lma && (a & A_L) !== 0;
  const popSs = rpl !== cpl || c.bits === 64;
  let spv = 0, sph = 0, ssv = 0;
  if (popSs) {
    spv = stackPeek(c, 3 * sz, sz); if (c.pend) return 2;
    sph = c.vh;
    ssv = stackPeek(c, 4 * sz, sz) & 0xffff; if (c.pend) return 2;
  }
  // New flags (SDM IRET "RETURN-TO-SAME/OUTER-PRIVILEGE-LEVEL"): IOPL only at CPL 0, IF if CPL <= IOPL.
  const old = c.getFlags();
  let mask = CF | 0x4 | 0x10 | 0x40 | 0x80 | TF | DF | OF | NT | RF | AC | ID;
  if (cpl === 0) mask |= IOPL | IF | VIF | VIP;
  else if (cpl <= ((old >>> 12) & 3)) mask |= IF;
  if (sz === 2) mask &= 0xffff;
  const nf = (old & ~mask) | (fv & mask);
  const savedSs = saveSegState(c, SS);
  if (popSs) {
    s.cpl = rpl;
    if ((ssv & 0xfffc) === 0 && c.lma && rpl !== 3 && toLong) loadNull(c, SS, ssv);
    else if (!loadSeg(c, SS, ssv)) { s.cpl = cpl; restoreSegState(c, SS, savedSs); c.updateMode(); return 2; }
  }
  c.dLo = cdLo; c.dHi = cdHi;
  commitCs(c, csv, rpl);
  c.setFlags(nf);
  s.nmiBlocked = false;
  if (popSs) {
    if (toLong || (c.lma && sz === 8)) { c.r[4] = spv; c.rh[4] = toLong ? sph : 0; }
    else if (s.segAttr[SS] & A_DB) { c.r[4] = spv; c.rh[4] = 0; }
    else c.r[4] = (c.r[4] & ~0xffff) | (spv & 0xffff);
  } else spAdd(c, 3 * sz);
  if (rpl > cpl) nullifyDataSegs(c, rpl);
  c.rip = toLong && sz === 8 ? (iph | 0) * TWO32 + (ipv >>> 0) : sz === 2 ? ipv & 0xffff : ipv >>> 0;
  c.updateMode();
  return 1;
}

/**
 * IRET in virtual-8086 mode (SDM IRET "RETURN-FROM-VIRTUAL-8086-MODE"): with IOPL = 3 pops
 * (E)IP, CS, (E)FLAGS as in real mode, leaving VM, IOPL, VIP and VIF unchanged; IOPL < 3 is
 * #GP(0) (no VME).
 */
function iretInV86(c: X86Cpu, o: Op): number {
  if (((c.fl >>> 12) & 3) !== 3) return c.gp(0);
  const sz = o.sz;
  const ipv = stackPeek(c, 0, sz); if (c.pend) return 2;
  const csv = stackPeek(c, sz, sz) & 0xffff; if (c.pend) return 2;
  const fv = stackPeek(c, 2 * sz, sz); if (c.pend) return 2;
  if (ipv >>> 0 > 0xffff) return c.gp(0);
  spAdd(c, 3 * sz);
  loadReal(c, CS, csv);
  const mask = (sz === 2 ? 0x7fd5 : 0x257fd5) & ~(IOPL | VM | VIF | VIP);
  c.setFlags((c.getFlags() & ~mask) | (fv & mask));
  c.rip = ipv & 0xffff;
  c.state.nmiBlocked = false;
  c.updateMode();
  return 1;
}

/** A segment register as virtual-8086 mode has it: base = selector * 16, limit 0xFFFF, data RW, DPL 3 (SDM 20.1.1; VMX 26.3.1.2). */
export function loadV86Seg(c: X86Cpu, seg: number, sel: number): void {
  const s = c.state;
  s.segSel[seg] = sel & 0xffff;
  s.segBaseLo[seg] = (sel & 0xffff) << 4;
  s.segBaseHi[seg] = 0;
  s.segLimit[seg] = 0xffff;
  s.segAttr[seg] = 0xf3;
  c.segUpdate(seg);
}

/**
 * IRETD at CPL 0 whose EFLAGS image has VM = 1 (SDM IRET "RETURN-TO-VIRTUAL-8086-MODE"): pops
 * ESP, SS, ES, DS, FS, GS after EIP, CS, EFLAGS, loads every segment register the v86 way and
 * continues at CPL 3.
 */
function iretToV86(c: X86Cpu, ipv: number, csv: number, fv: number): number {
  const sels = c.scratch;
  const spv = stackPeek(c, 12, 4); if (c.pend) return 2;
  for (let k = 0; k < 5; k++) { sels[k] = stackPeek(c, 16 + 4 * k, 4) & 0xffff; if (c.pend) return 2; } // SS ES DS FS GS
  if ((ipv >>> 0) > 0xffff) return c.gp(0);
  const s = c.state;
  c.setFlags(fv);
  loadV86Seg(c, CS, csv);
  loadV86Seg(c, SS, sels[0]);
  loadV86Seg(c, ES, sels[1]);
  loadV86Seg(c, DS, sels[2]);
  loadV86Seg(c, FS, sels[3]);
  loadV86Seg(c, GS, sels[4]);
  c.r[4] = spv; c.rh[4] = 0;
  s.cpl = 3;
  s.nmiBlocked = false;
  c.rip = ipv & 0xffff;
  c.updateMode();
  return 1;
}

/** INT n (cc = vector), INT3 (x=1), INTO (x=2), INT1/ICEBP (x=3). */
export function opInt(c: X86Cpu, o: Op): number {
  const kind = o.x;
  // INT n in virtual-8086 mode is IOPL-sensitive (SDM 20.3.3, no VME): #GP(0) when IOPL < 3.
  if (kind === 0 && c.vm86 && ((c.fl >>> 12) & 3) !== 3) return c.gp(0);
  if (kind === 0 && c.intercepted(InterceptInsn.INTN, o)) return 2;
  if (kind === 1 && c.intercepted(InterceptInsn.INT3, o)) return 2;
  if (kind === 2) {
    if (c.bits === 64) return c.ud();
    if (!c.getOF()) return 0;
    if (c.intercepted(InterceptInsn.INTO, o)) return 2;
  }
  if (kind === 3 && c.intercepted(InterceptInsn.ICEBP, o)) return 2;
  const vec = kind === 0 ? o.cc & 0xff : kind === 1 ? BP : kind === 2 ? OF_VEC : DB;
  const type = kind === 0 ? EventType.SOFTWARE_INTERRUPT : kind === 3 ? EventType.PRIVILEGED_SOFTWARE_EXCEPTION : EventType.SOFTWARE_EXCEPTION;
  if (kind !== 0 && !c.emu && c.rules.exceptionExits(vec, 0)) {
    // A software exception the exception bitmap intercepts exits with RIP at the instruction.
    c.exitInsn(GuestExitKind.EXCEPTION, o);
    const ex = c.exit;
    ex.vector = vec; ex.errorCode = 0; ex.hasErrorCode = false; ex.faultAddress = 0n;
    return 2;
  }
  const start = c.rip;
  c.rip = c.nextRip(o);
  // INT n, INT3 and INTO check the gate's DPL against CPL (#GP(vector*8+2), task gates too);
  // INT1/ICEBP does not (SDM Vol. 3A 6.12.1.1).
  c.deliverEvent(type, vec, 0, false, o.len, kind !== 3);
  if (c.pend === PEND_EXIT) return 2;
  if (c.pend !== 0) { c.rip = start; return 2; }
  return 1;
}

// =====================================================================================
// Control registers, debug registers, MSRs
// =====================================================================================

/** MOV to CRn (x = n, s = source GPR) and LMSW/CLTS (cc = CrAccessType). */
export function opMovToCr(c: X86Cpu, o: Op): number {
  if (c.cpl !== 0) return c.gp(0);
  const cr = o.x;
  let v: bigint;
  if (o.cc === CrAccessType.CLTS) v = c.state.cr0 & ~BigInt(CR0_TS);
  else if (o.cc === CrAccessType.LMSW) {
    let src: number;
    if (o.sk === K_REG) src = c.r[o.s] & 0xffff;
    else { const lin = linOf(c, o, 2, false); if (c.pend) return 2; src = c.rd16(lin); if (c.pend) return 2; }
    // LMSW loads PE MP EM TS; it can set PE but not clear it.
    const old = c.state.cr0;
    v = (old & ~0xen) | BigInt(src & 0xe) | (old & 1n) | BigInt(src & 1);
    if (!c.emu && c.rules.crWriteExits(0, v)) {
      c.exitInsn(GuestExitKind.CR_ACCESS, o);
      const ex = c.exit; ex.crNumber = 0; ex.crAccessType = CrAccessType.LMSW; ex.value = BigInt(src); ex.gpr = o.sk === K_REG ? o.s : 0;
      ex.memOperandAddress = o.sk === K_MEM ? 0n : 0n;
      return 2;
    }
  } else {
    const lo = c.r[o.s] >>> 0, hi = c.bits === 64 ? c.rh[o.s] >>> 0 : 0;
    v = (BigInt(hi) << 32n) | BigInt(lo);
  }
  if (o.cc !== CrAccessType.LMSW && !c.emu && c.rules.crWriteExits(cr, v)) {
    c.exitInsn(GuestExitKind.CR_ACCESS, o);
    const ex = c.exit; ex.crNumber = cr; ex.crAccessType = o.cc; ex.gpr = o.s; ex.value = v;
    return 2;
  }
  if (cr === 8 && !c.emu && c.rules.cr8) {
    // CR8 virtualized by the vendor (VMX TPR shadow, SDM 29.3; SVM V_TPR): #GP(0) for bits 63:4 first.
    if (v >> 4n) return c.gp(0);
    if (c.rules.cr8.write(Number(v), c.exit) === APIC_ACCESS_DONE_TRAP) {
      // TPR virtualization asked for a trap-like exit (TPR below threshold, SDM 29.1.2): after the instruction.
      c.exitInsn(c.exit.kind, o);
      const ex = c.exit;
      ex.insnLength = 0; ex.noInsnBytes();
      c.rip = c.nextRip(o);
      ex.nextRip = c.ripBig(c.rip);
      c.retired++;
      c.state.stiShadow = false;
      c.state.movSsShadow = false;
      return 2;
    }
    c.rip = c.nextRip(o);
    return 1;
  }
  if (!writeCr(c, cr, v)) return 2;
  if (!c.emu && c.rules.crWriteTraps !== undefined && c.rules.crWriteTraps(cr)) {
    const s = c.state;
    return trapAfterWrite(c, o, GuestExitKind.CR_WRITE_TRAP, cr === 0 ? s.cr0 : cr === 3 ? s.cr3 : cr === 4 ? s.cr4 : cr === 8 ? s.cr8 : s.cr2);
  }
  c.rip = c.nextRip(o);
  return 1;
}

/**
 * A trap-like intercept after a completed write (AMD APM Vol. 2 15.35, SEV-ES CR/EFER write
 * traps): the instruction has retired and RIP points past it when the guest stops; `value` is
 * the register's new value (EXITINFO1). Returns 2 with the exit pending, having counted the
 * retirement itself (the run loop counts only instructions that return 0 or 1).
 */
function trapAfterWrite(c: X86Cpu, o: Op, kind: GuestExitKind, value: bigint): number {
  c.exitInsn(kind, o);
  c.exit.crNumber = o.x;
  c.exit.value = value;
  c.rip = c.nextRip(o);
  c.retired++;
  // The instruction completed: an STI / MOV SS shadow it sat in is over.
  c.state.stiShadow = false;
  c.state.movSsShadow = false;
  return 2;
}

/** Architectural CR write with its checks (SDM MOV CR; 2.5; 4.1.1). */
export function writeCr(c: X86Cpu, cr: number, v: bigint): boolean {
  c.state.sysWrites++;
  const s = c.state;
  switch (cr) {
    case 0: {
      if (v >> 32n) { c.gp(0); return false; }
      const n = Number(v);
      if ((n & CR0_PG) && !(n & CR0_PE)) { c.gp(0); return false; }
      if ((n & CR0_NW) && !(n & CR0_CD)) { c.gp(0); return false; }
      const old = Number(s.cr0 & 0xffffffffn);
      const efer = Number(s.efer & 0xffffn);
      if ((n & CR0_PG) && !(old & CR0_PG) && (efer & EFER_LME)) {
        // Activating long mode (SDM 10.8.5): needs PAE, and CS.L must be 0.
        if (!c.pae) { c.gp(0); return false; }
        if (s.segAttr[CS] & A_L) { c.gp(0); return false; }
      }
      if (!(n & CR0_PG) && (old & CR0_PG) && c.lma) {
        if (c.bits === 64) { c.gp(0); return false; }
      }
      // PAE paging after the write, and CD/NW/PG change: load the PDPTE registers first; a
      // reserved bit in a present PDPTE is #GP(0) with CR0 unchanged (SDM 4.4.1).
      if (isPaePaging(n, Number(s.cr4 & 0xffffffffn), (efer & EFER_LME) !== 0) &&
          ((old ^ n) & (CR0_PG | CR0_CD | CR0_NW)) !== 0 && !loadPdptrs(c, s.cr3)) return false;
      if ((n & CR0_PG) && !(old & CR0_PG) && (efer & EFER_LME)) s.efer |= BigInt(EFER_LMA);
      if (!(n & CR0_PG) && (old & CR0_PG) && c.lma) s.efer &= ~BigInt(EFER_LMA);
      s.cr0 = BigInt(n | 0x10) & 0xffffffffn;
      if (((old ^ n) & (CR0_PG | CR0_PE | 0x10000)) !== 0) c.flushCurrentCtx(false);
      c.updateMode();
      return true;
    }
    case 2: s.cr2 = v; return true;
    case 3: {
      let noFlush = false;
      if (c.pcide) { noFlush = (v >> 63n) !== 0n; v &= ~(1n << 63n); }
      if (c.lma && (v >> 52n) !== 0n) { c.gp(0); return false; }
      // With PAE paging, MOV to CR3 loads the PDPTE registers from the new table; a reserved
      // bit in a present PDPTE is #GP(0) and CR3 keeps its value (SDM 4.4.1).
      if (paePagingActive(c) && !loadPdptrs(c, v)) return false;
      s.cr3 = c.lma ? v : v & 0xffffffffn;
      c.updateMode();
      if (!noFlush) c.flushCurrentCtx(c.pge);
      return true;
    }
    case 4: {
      // VME and PVI (bits 0, 1) are reserved: CPUID does not advertise VME (virtual-8086 mode
      // runs without its extensions).
      const allowed = 0x4 | CR4_DE | 0x10 | CR4_PAE | 0x40 | CR4_PGE | 0x100 | 0x200 | 0x400 | CR4_UMIP |
        CR4_LA57 | CR4_FSGSBASE | CR4_PCIDE | 0x40000 | CR4_SMEP | CR4_SMAP | (c.options.vendor === 'intel' ? 0x2000 : 0);
      if (v >> 32n) { c.gp(0); return false; }
      const n = Number(v);
      if (n & ~allowed) { c.gp(0); return false; }
      const old = Number(s.cr4);
      if (c.lma && !(n & CR4_PAE)) { c.gp(0); return false; }
      if (c.lma && ((old ^ n) & CR4_LA57)) { c.gp(0); return false; }
      if ((n & CR4_PCIDE) && !(old & CR4_PCIDE) && (!c.lma || (s.cr3 & 0xfffn) !== 0n)) { c.gp(0); return false; }
      // PAE paging after the write, and PAE/PGE/PSE/SMEP change: load the PDPTE registers
      // first; #GP(0) with CR4 unchanged on a reserved bit (SDM 4.4.1).
      if (isPaePaging(Number(s.cr0 & 0xffffffffn), n, c.lma) &&
          ((old ^ n) & (CR4_PAE | CR4_PGE | 0x10 /* PSE */ | CR4_SMEP)) !== 0 && !loadPdptrs(c, s.cr3)) return false;
      s.cr4 = BigInt(n);
      if ((old ^ n) & (CR4_PAE | 0x10 | CR4_PGE | CR4_PCIDE | CR4_SMEP | CR4_SMAP | CR4_LA57)) c.flushTlbAll();
      c.updateMode();
      return true;
    }
    case 8: {
      if (v >> 4n) { c.gp(0); return false; }
      s.cr8 = v;
      return true;
    }
    default:
      c.ud();
      return false;
  }
}

/** MOV from CRn (x = n, d = destination GPR). */
export function opMovFromCr(c: X86Cpu, o: Op): number {
  if (c.cpl !== 0) return c.gp(0);
  const cr = o.x;
  if (!c.emu && c.rules.crReadExits(cr)) {
    c.exitInsn(GuestExitKind.CR_ACCESS, o);
    const ex = c.exit; ex.crNumber = cr; ex.crAccessType = CrAccessType.MOV_FROM_CR; ex.gpr = o.d;
    return 2;
  }
  const s = c.state;
  let v: bigint;
  switch (cr) {
    case 0: v = c.rules.crReadValue(0, s.cr0); break;
    case 2: v = s.cr2; break;
    case 3: v = s.cr3; break;
    case 4: v = c.rules.crReadValue(4, s.cr4); break;
    case 8: v = !c.emu && c.rules.cr8 ? BigInt(c.rules.cr8.read() & 0xf) : s.cr8; break;
    default: return c.ud();
  }
  setReg(c, o.d, c.bits === 64 ? 8 : 4, Number(v & 0xffffffffn) | 0, Number((v >> 32n) & 0xffffffffn) | 0);
  return 0;
}

/** SMSW r/m (reads CR0 through the read shadow; UMIP-checked). */
export function opSmsw(c: X86Cpu, o: Op): number {
  if (c.pe && c.cpl > 0 && (Number(c.state.cr4) & CR4_UMIP)) return c.gp(0);
  const v = Number(c.rules.crReadValue(0, c.state.cr0) & 0xffffffffn);
  if (o.dk === K_REG) { setReg(c, o.d, o.sz, o.sz === 2 ? v & 0xffff : v, 0); return 0; }
  const lin = linOf(c, o, 2, true);
  if (c.pend) return 2;
  c.wr16(lin, v);
  return c.pend ? 2 : 0;
}

/** MOV to/from DRn (x = n, cc = 1 for a write; d/s = GPR). */
export function opMovDr(c: X86Cpu, o: Op): number {
  c.state.sysWrites++; // DR7 (a write, or GD cleared by general detect)
  const s = c.state;
  let n = o.x;
  const de = (Number(s.cr4) & CR4_DE) !== 0;
  if ((n === 4 || n === 5) && de) return c.ud();
  if (c.cpl !== 0) return c.gp(0);
  if (n === 4) n = 6; else if (n === 5) n = 7;
  const isWrite = o.cc === 1;
  if (!c.emu && c.rules.drExits(n, isWrite)) {
    c.exitInsn(GuestExitKind.DR_ACCESS, o);
    const ex = c.exit; ex.drNumber = n; ex.isWrite = isWrite; ex.gpr = isWrite ? o.s : o.d;
    return 2;
  }
  if (s.dr7 & 0x2000n) {
    // General detect (SDM 19.2.4): a fault with DR6.BD set; GD is cleared so the handler can use the registers.
    s.dr6 |= 0x2000n;
    s.dr7 &= ~0x2000n;
    c.dbgFault = true;
    return c.raise(DB, 0, false);
  }
  if (isWrite) {
    const lo = c.r[o.s] >>> 0, hi = c.bits === 64 ? c.rh[o.s] >>> 0 : 0;
    const v = (BigInt(hi) << 32n) | BigInt(lo);
    if (n >= 6 && hi !== 0) return c.gp(0);
    if (n < 4) s.dr[n] = c.bits === 64 ? v : v & 0xffffffffn;
    else if (n === 6) s.dr6 = (v & 0x1e00fn) | 0xfffe0ff0n;
    else s.dr7 = (v & 0xffff2bffn) | 0x400n;
    c.dbgUpdate();
    c.brk = true; // the run loop re-evaluates single-stepping at the boundary
  } else {
    const v = n < 4 ? s.dr[n] : n === 6 ? s.dr6 : s.dr7;
    setReg(c, o.d, c.bits === 64 ? 8 : 4, Number(v & 0xffffffffn) | 0, Number(v >> 32n) | 0);
  }
  return 0;
}

/** RDMSR (cc 0) / WRMSR (cc 1). */
export function opMsr(c: X86Cpu, o: Op): number {
  if (c.cpl !== 0) return c.gp(0);
  const idx = c.r[1] >>> 0;
  const isWrite = o.cc === 1;
  const val = (BigInt(c.r[2] >>> 0) << 32n) | BigInt(c.r[0] >>> 0);
  if (!c.emu && c.rules.msrExits(idx, isWrite)) {
    c.exitInsn(isWrite ? GuestExitKind.MSR_WRITE : GuestExitKind.MSR_READ, o);
    c.exit.msrIndex = idx;
    c.exit.value = isWrite ? val : 0n;
    return 2;
  }
  if (isWrite) {
    if (!wrmsr(c, idx, val)) return 2;
    if (idx === MSR_EFER && !c.emu && c.rules.eferWriteTraps === true) {
      const rc = trapAfterWrite(c, o, GuestExitKind.MSR_WRITE_TRAP, c.state.efer);
      c.exit.msrIndex = idx;
      return rc;
    }
    c.rip = c.nextRip(o);
    return 1;
  }
  const v = rdmsr(c, idx);
  if (v === null) return c.gp(0);
  c.r[0] = Number(v & 0xffffffffn) | 0; c.rh[0] = 0;
  c.r[2] = Number((v >> 32n) & 0xffffffffn) | 0; c.rh[2] = 0;
  return 0;
}

/** The processor's own MSRs (not intercepted); null = #GP. */
export function rdmsr(c: X86Cpu, idx: number): bigint | null {
  const s = c.state;
  switch (idx) {
    case MSR_EFER: return s.efer;
    case MSR_STAR: return s.star;
    case MSR_LSTAR: return s.lstar;
    case MSR_CSTAR: return s.cstar;
    case MSR_SFMASK: return s.sfmask;
    case MSR_FS_BASE: return (BigInt(s.segBaseHi[FS] >>> 0) << 32n) | BigInt(s.segBaseLo[FS] >>> 0);
    case MSR_GS_BASE: return (BigInt(s.segBaseHi[GS] >>> 0) << 32n) | BigInt(s.segBaseLo[GS] >>> 0);
    case MSR_KERNEL_GS_BASE: return s.kernelGsBase;
    case MSR_SYSENTER_CS: return s.sysenterCs;
    case MSR_SYSENTER_ESP: return s.sysenterEsp;
    case MSR_SYSENTER_EIP: return s.sysenterEip;
    case MSR_TSC: return c.guestTsc();
    case MSR_TSC_AUX: return s.tscAux;
    case MSR_PAT: return s.pat;
    case MSR_DEBUGCTL: return s.debugctl;
    default: return null;
  }
}
function isCanonical64(c: X86Cpu, v: bigint): boolean {
  const bits = c.la57 ? 57 : 48;
  return BigInt.asIntN(bits, v) === BigInt.asIntN(64, v);
}
/** WRMSR of the processor's own MSRs with their reserved-bit checks. */
export function wrmsr(c: X86Cpu, idx: number, v: bigint): boolean {
  const s = c.state;
  s.sysWrites++;
  switch (idx) {
    case MSR_EFER: {
      const allowed = BigInt(EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE | (c.options.vendor === 'amd' ? EFER_SVME : 0));
      if (v & ~allowed) { c.gp(0); return false; }
      const old = s.efer;
      // LME cannot change while paging is enabled (SDM 10.8.5); LMA is read-only.
      if (c.pg && ((old ^ v) & BigInt(EFER_LME))) { c.gp(0); return false; }
      s.efer = (v & ~BigInt(EFER_LMA)) | (old & BigInt(EFER_LMA));
      if ((old ^ v) & BigInt(EFER_NXE)) c.flushTlbAll();
      c.updateMode();
      return true;
    }
    case MSR_STAR: s.star = v; return true;
    case MSR_LSTAR: if (!isCanonical64(c, v)) { c.gp(0); return false; } s.lstar = v; return true;
    case MSR_CSTAR: if (!isCanonical64(c, v)) { c.gp(0); return false; } s.cstar = v; return true;
    case MSR_SFMASK: s.sfmask = v & 0xffffffffn; return true;
    case MSR_FS_BASE: case MSR_GS_BASE: {
      if (!isCanonical64(c, v)) { c.gp(0); return false; }
      const seg = idx === MSR_FS_BASE ? FS : GS;
      s.segBaseLo[seg] = Number(v & 0xffffffffn) | 0;
      s.segBaseHi[seg] = Number((v >> 32n) & 0xffffffffn) | 0;
      c.segUpdate(seg);
      return true;
    }
    case MSR_KERNEL_GS_BASE: if (!isCanonical64(c, v)) { c.gp(0); return false; } s.kernelGsBase = v; return true;
    case MSR_SYSENTER_CS: s.sysenterCs = v & 0xffffn; return true;
    case MSR_SYSENTER_ESP: if (!isCanonical64(c, v)) { c.gp(0); return false; } s.sysenterEsp = v; return true;
    case MSR_SYSENTER_EIP: if (!isCanonical64(c, v)) { c.gp(0); return false; } s.sysenterEip = v; return true;
    case MSR_TSC: {
      // Writing the TSC sets the guest-visible value: adjust the counter (tsc + offset = v).
      const counter = BigInt.asUintN(64, v - s.tscOffset);
      if (c.tscSource !== null) { c.tscSource.set(Number(counter)); s.tsc = counter; c.tscBase = Number(counter) - c.retired; return true; }
      s.tsc = counter - BigInt(c.retired);
      c.tscBase = Number(s.tsc);
      return true;
    }
    case MSR_TSC_AUX: if (v >> 32n) { c.gp(0); return false; } s.tscAux = v; return true;
    case MSR_PAT: {
      for (let i = 0n; i < 8n; i++) {
        const t = (v >> (i * 8n)) & 0xffn;
        if (t === 2n || t === 3n || t > 7n) { c.gp(0); return false; }
      }
      s.pat = v;
      return true;
    }
    case MSR_DEBUGCTL: if (v & ~0x3n) { c.gp(0); return false; } s.debugctl = v; return true;
    default: c.gp(0); return false;
  }
}

// =====================================================================================
// Descriptor-table instructions
// =====================================================================================

/** LGDT (cc 0) / LIDT (cc 1). */
export function opLdt(c: X86Cpu, o: Op): number {
  if (c.cpl !== 0) return c.gp(0);
  const lin = linOf(c, o, c.bits === 64 ? 10 : 6, false);
  if (c.pend) return 2;
  if (c.intercepted(o.cc === 0 ? InterceptInsn.LGDT : InterceptInsn.LIDT, o)) {
    c.exit.memOperandAddress = BigInt.asUintN(64, BigInt(lin));
    return 2;
  }
  const limit = c.rd16(lin);
  if (c.pend) return 2;
  let base: bigint;
  if (c.bits === 64) {
    const lo = c.rd32(c.linAdd(lin, 2)), hi = c.rd32(c.linAdd(lin, 6));
    if (c.pend) return 2;
    base = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
    if (!isCanonical64(c, base)) return c.gp(0);
  } else {
    const lo = c.rd32(c.linAdd(lin, 2));
    if (c.pend) return 2;
    base = BigInt(o.sz === 2 ? lo & 0xffffff : lo >>> 0);
  }
  c.state.sysWrites++;
  if (o.cc === 0) { c.state.gdtrBase = base; c.state.gdtrLimit = limit; }
  else { c.state.idtrBase = base; c.state.idtrLimit = limit; }
  return 0;
}
/** SGDT (cc 0) / SIDT (cc 1). */
export function opSdt(c: X86Cpu, o: Op): number {
  if (c.pe && c.cpl > 0 && (Number(c.state.cr4) & CR4_UMIP)) return c.gp(0);
  const lin = linOf(c, o, c.bits === 64 ? 10 : 6, true);
  if (c.pend) return 2;
  if (c.intercepted(o.cc === 0 ? InterceptInsn.SGDT : InterceptInsn.SIDT, o)) {
    c.exit.memOperandAddress = BigInt.asUintN(64, BigInt(lin));
    return 2;
  }
  const s = c.state;
  const base = o.cc === 0 ? s.gdtrBase : s.idtrBase;
  const limit = o.cc === 0 ? s.gdtrLimit : s.idtrLimit;
  c.wprobe(lin, c.bits === 64 ? 10 : 6); if (c.pend) return 2;
  c.wr16(lin, limit);
  c.wr32(c.linAdd(lin, 2), Number(base & 0xffffffffn) | 0);
  if (c.bits === 64) c.wr32(c.linAdd(lin, 6), Number((base >> 32n) & 0xffffffffn) | 0);
  return c.pend ? 2 : 0;
}
/** LLDT (cc 0) / LTR (cc 1). */
export function opLldtLtr(c: X86Cpu, o: Op): number {
  if (!c.pe || c.vm86) return c.ud(); // not recognized in real or virtual-8086 mode
  if (c.cpl !== 0) return c.gp(0);
  let sel: number;
  if (o.sk === K_REG) sel = c.r[o.s] & 0xffff;
  else { const lin = linOf(c, o, 2, false); if (c.pend) return 2; sel = c.rd16(lin); if (c.pend) return 2; }
  if (c.intercepted(o.cc === 0 ? InterceptInsn.LLDT : InterceptInsn.LTR, o)) return 2;
  const seg = o.cc === 0 ? LDTR : TR;
  if ((sel & 0xfffc) === 0) {
    if (seg === TR) return c.gp(0);
    loadNull(c, LDTR, sel);
    return 0;
  }
  if (sel & 4) return c.gp(sel & 0xfffc);
  if (!readDesc(c, sel)) return c.pend ? 2 : c.gp(sel & 0xfffc);
  const a = descAttr(c.dHi);
  const type = a & 0x1f;
  if (seg === LDTR ? type !== 0x02 : (type !== 0x09 && type !== 0x01)) return c.gp(sel & 0xfffc);
  if (c.lma && seg === TR && type !== 0x09) return c.gp(sel & 0xfffc);
  if (!(a & A_P)) return c.raise(NP, sel & 0xfffc, true);
  let baseHi = 0;
  const dLo = c.dLo, dHi = c.dHi, dLin = c.dLin;
  if (c.lma) { if (!readDescHigh(c, sel)) return c.pend ? 2 : c.gp(sel & 0xfffc); baseHi = c.dHi2 | 0; }
  c.dLo = dLo; c.dHi = dHi; c.dLin = dLin;
  if (seg === TR) {
    // Mark the TSS busy (type 9 → 11) in the GDT.
    const saveW = c.accW;
    c.accW = 2; c.implicitSup = true;
    c.wr32(c.linAdd(dLin, 4), dHi | 0x200);
    c.accW = saveW; c.implicitSup = false;
    if (c.pend) return 2;
    c.dHi = dHi | 0x200;
  }
  loadFromDesc(c, seg, sel, baseHi);
  return 0;
}
/** SLDT (cc 0) / STR (cc 1). */
export function opSldtStr(c: X86Cpu, o: Op): number {
  if (!c.pe || c.vm86) return c.ud(); // not recognized in real or virtual-8086 mode
  if (c.cpl > 0 && (Number(c.state.cr4) & CR4_UMIP)) return c.gp(0);
  if (c.intercepted(o.cc === 0 ? InterceptInsn.SLDT : InterceptInsn.STR, o)) return 2;
  const v = c.state.segSel[o.cc === 0 ? LDTR : TR];
  if (o.dk === K_REG) { setReg(c, o.d, o.sz === 1 ? 2 : o.sz, v, 0); if (o.sz === 2) return 0; return 0; }
  const lin = linOf(c, o, 2, true);
  if (c.pend) return 2;
  c.wr16(lin, v);
  return c.pend ? 2 : 0;
}

// =====================================================================================
// Other system instructions
// =====================================================================================

/** HLT. */
export function opHlt(c: X86Cpu, o: Op): number {
  if (c.cpl !== 0) return c.gp(0);
  if (c.intercepted(InterceptInsn.HLT, o)) return 2;
  c.rip = c.nextRip(o);
  c.state.activity = 1;
  return 1;
}
/** CPUID. */
export function opCpuid(c: X86Cpu, o: Op): number {
  if (c.intercepted(InterceptInsn.CPUID, o)) return 2;
  const out = c.scratch;
  c.cpuid(c.r[0] >>> 0, c.r[1] >>> 0, out);
  c.r[0] = out[0]; c.r[3] = out[1]; c.r[1] = out[2]; c.r[2] = out[3];
  c.rh[0] = 0; c.rh[1] = 0; c.rh[2] = 0; c.rh[3] = 0;
  return 0;
}
/** RDTSC (cc 0) / RDTSCP (cc 1). */
export function opRdtsc(c: X86Cpu, o: Op): number {
  if (c.pe && c.cpl > 0 && (Number(c.state.cr4) & CR4_TSD)) return c.gp(0);
  if (c.intercepted(o.cc === 0 ? InterceptInsn.RDTSC : InterceptInsn.RDTSCP, o)) return 2;
  const t = c.guestTsc();
  c.r[0] = Number(t & 0xffffffffn) | 0; c.rh[0] = 0;
  c.r[2] = Number(t >> 32n) | 0; c.rh[2] = 0;
  if (o.cc === 1) { c.r[1] = Number(c.state.tscAux & 0xffffffffn) | 0; c.rh[1] = 0; }
  return 0;
}
/** Instructions that are a NOP here unless intercepted (x = InterceptInsn): PAUSE, WBINVD, INVD (privileged when cc = 1). */
export function opInterceptNop(c: X86Cpu, o: Op): number {
  if (o.cc === 1 && c.cpl !== 0) return c.gp(0);
  if (c.intercepted(o.x, o)) return 2;
  return 0;
}
/** Instructions this processor does not implement itself: exit if intercepted, else #UD (x = InterceptInsn or -1). cc=1: SVM instruction (#UD unless EFER.SVME; CPL 0). */
export function opInterceptUd(c: X86Cpu, o: Op): number {
  if (o.cc === 1) {
    if (!(Number(c.state.efer) & EFER_SVME) || !c.pe) return c.ud();
    if (c.cpl !== 0) return c.gp(0);
  }
  if (o.x >= 0 && c.intercepted(o.x, o)) return 2;
  return c.ud();
}
/** INVLPG m. */
export function opInvlpg(c: X86Cpu, o: Op): number {
  if (c.cpl !== 0) return c.gp(0);
  const saveSz = o.sz;
  void saveSz;
  const lo = eaRaw(c, o);
  let lin: number;
  if (c.bits === 64) {
    let hi = c.vh, l = lo;
    if (o.seg >= 4) { const s2 = l + (c.state.segBaseLo[o.seg] >>> 0); l = s2 >>> 0; hi = (hi + c.state.segBaseHi[o.seg] + (s2 > 0xffffffff ? 1 : 0)) | 0; }
    lin = hi * TWO32 + l;
  } else lin = (c.segBase[o.seg] + lo) >>> 0;
  if (c.intercepted(InterceptInsn.INVLPG, o)) {
    c.exit.faultAddress = BigInt.asUintN(64, BigInt(lin));
    return 2;
  }
  c.invlpgLin(lin, c.rules.tlbTag & 0xfffff, c.pcide ? Number(c.state.cr3 & 0xfffn) : -1);
  if (!c.pcide) c.invlpgLin(lin, c.rules.tlbTag & 0xfffff, -1);
  return 0;
}
/** SWAPGS (64-bit mode, CPL 0). */
export function opSwapgs(c: X86Cpu, _o: Op): number {
  if (c.bits !== 64) return c.ud();
  if (c.cpl !== 0) return c.gp(0);
  const s = c.state;
  const cur = (BigInt(s.segBaseHi[GS] >>> 0) << 32n) | BigInt(s.segBaseLo[GS] >>> 0);
  const k = s.kernelGsBase;
  s.segBaseLo[GS] = Number(k & 0xffffffffn) | 0;
  s.segBaseHi[GS] = Number((k >> 32n) & 0xffffffffn) | 0;
  s.kernelGsBase = cur;
  s.sysWrites++;
  c.segUpdate(GS);
  return 0;
}

function setFlatSeg(c: X86Cpu, seg: number, sel: number, attr: number): void {
  const s = c.state;
  s.segSel[seg] = sel; s.segBaseLo[seg] = 0; s.segBaseHi[seg] = 0; s.segLimit[seg] = 0xffffffff; s.segAttr[seg] = attr;
  c.segUpdate(seg);
}

/** SYSCALL (SDM SYSCALL; APM: legacy-mode SYSCALL on AMD). */
export function opSyscall(c: X86Cpu, o: Op): number {
  const s = c.state;
  if (!(Number(s.efer) & EFER_SCE)) return c.ud();
  if (!c.lma && (c.options.vendor === 'intel' || !c.pe)) return c.ud();
  if (c.bits !== 64 && c.options.vendor === 'intel') return c.ud();
  const next = c.nextRip(o);
  const csSel = Number((s.star >> 32n) & 0xfffcn);
  if (c.lma) {
    c.r[1] = next | 0; c.rh[1] = c.bits === 64 ? Math.floor(next / TWO32) | 0 : 0;
    const f = c.getFlags() & ~RF;
    c.r[11] = f; c.rh[11] = 0;
    const target = c.bits === 64 ? s.lstar : s.cstar;
    c.setFlags(f & ~Number(s.sfmask & 0xffffffffn) & ~RF);
    setFlatSeg(c, CS, csSel, 0xa09b);
    setFlatSeg(c, SS, csSel + 8, 0xc093);
    s.cpl = 0;
    c.updateMode();
    c.rip = Number(BigInt.asIntN(64, target));
    return 1;
  }
  // Legacy-mode SYSCALL (AMD): ECX = EIP, target STAR[31:0], clear IF/VM/RF.
  c.r[1] = next | 0;
  c.fl &= ~(IF | VM | RF);
  setFlatSeg(c, CS, csSel, 0xc09b);
  setFlatSeg(c, SS, csSel + 8, 0xc093);
  s.cpl = 0;
  c.updateMode();
  c.rip = Number(s.star & 0xffffffffn);
  return 1;
}
/** SYSRET (sz 4: to compatibility mode; 8: SYSRETQ to 64-bit). */
export function opSysret(c: X86Cpu, o: Op): number {
  const s = c.state;
  if (!(Number(s.efer) & EFER_SCE)) return c.ud();
  if (!c.pe || c.cpl !== 0) return c.gp(0);
  if (c.lma && c.bits !== 64 && c.options.vendor === 'intel') return c.ud();
  const base = Number((s.star >> 48n) & 0xffffn);
  if (c.lma) {
    let target: number;
    if (o.sz === 8) {
      if (!canonHi(c, c.rh[1])) return c.gp(0);
      target = (c.rh[1] | 0) * TWO32 + (c.r[1] >>> 0);
      setFlatSeg(c, CS, (base + 16) | 3, 0xa0fb);
    } else {
      target = c.r[1] >>> 0;
      setFlatSeg(c, CS, base | 3, 0xc0fb);
    }
    c.setFlags((c.r[11] & 0x3c7fd7) | 2);
    s.segSel[SS] = (base + 8) | 3;
    if (c.options.vendor === 'intel') setFlatSeg(c, SS, (base + 8) | 3, 0xc0f3);
    else s.segAttr[SS] = (s.segAttr[SS] & ~0x60) | 0x60;
    s.cpl = 3;
    c.updateMode();
    c.rip = target;
    return 1;
  }
  setFlatSeg(c, CS, base | 3, 0xc0fb);
  setFlatSeg(c, SS, (base + 8) | 3, 0xc0f3);
  c.fl |= IF;
  s.cpl = 3;
  c.updateMode();
  c.rip = c.r[1] >>> 0;
  return 1;
}
/** SYSENTER (SDM SYSENTER; #UD in long mode on AMD). */
export function opSysenter(c: X86Cpu, _o: Op): number {
  const s = c.state;
  if (!c.pe) return c.gp(0);
  if (c.lma && c.options.vendor === 'amd') return c.ud();
  const cs = Number(s.sysenterCs & 0xfffcn);
  if (cs === 0) return c.gp(0);
  c.fl &= ~(VM | IF | RF);
  const long = c.lma;
  setFlatSeg(c, CS, cs, long ? 0xa09b : 0xc09b);
  setFlatSeg(c, SS, cs + 8, 0xc093);
  s.cpl = 0;
  c.updateMode();
  const eip = s.sysenterEip, esp = s.sysenterEsp;
  if (long) {
    c.rip = Number(BigInt.asIntN(64, eip));
    c.r[4] = Number(esp & 0xffffffffn) | 0; c.rh[4] = Number((esp >> 32n) & 0xffffffffn) | 0;
  } else {
    c.rip = Number(eip & 0xffffffffn);
    c.r[4] = Number(esp & 0xffffffffn) | 0;
  }
  return 1;
}
/** SYSEXIT (sz 8: to 64-bit mode). */
export function opSysexit(c: X86Cpu, o: Op): number {
  const s = c.state;
  if (!c.pe) return c.gp(0);
  if (c.lma && c.options.vendor === 'amd') return c.ud();
  if (c.cpl !== 0) return c.gp(0);
  const cs = Number(s.sysenterCs & 0xfffcn);
  if (cs === 0) return c.gp(0);
  if (o.sz === 8) {
    if (!canonHi(c, c.rh[2]) || !canonHi(c, c.rh[1])) return c.gp(0);
    setFlatSeg(c, CS, (cs + 32) | 3, 0xa0fb);
    setFlatSeg(c, SS, (cs + 40) | 3, 0xc0f3);
    s.cpl = 3; c.updateMode();
    c.rip = (c.rh[2] | 0) * TWO32 + (c.r[2] >>> 0);
    c.r[4] = c.r[1]; c.rh[4] = c.rh[1];
  } else {
    setFlatSeg(c, CS, (cs + 16) | 3, 0xc0fb);
    setFlatSeg(c, SS, (cs + 24) | 3, 0xc0f3);
    s.cpl = 3; c.updateMode();
    c.rip = c.r[2] >>> 0;
    c.r[4] = c.r[1]; c.rh[4] = 0;
  }
  return 1;
}

// =====================================================================================
// Port I/O
// =====================================================================================

/** IOPL / TSS I/O-permission-bitmap check (SDM 19.5). Returns false with #GP pending. */
function ioAllowed(c: X86Cpu, port: number, size: number): boolean {
  // Virtual-8086 mode always consults the bitmap (SDM 20.2.8.1); protected mode when CPL > IOPL.
  if (!c.pe || (!c.vm86 && c.cpl <= ((c.fl >>> 12) & 3))) return true;
  const s = c.state;
  const trType = s.segAttr[TR] & 0xf;
  if (trType !== 0xb && trType !== 0x9) { c.gp(0); return false; }
  const base = (s.segBaseHi[TR] | 0) * TWO32 + (s.segBaseLo[TR] >>> 0);
  const lim = s.segLimit[TR];
  if (lim < 0x67) { c.gp(0); return false; }
  const saveR = c.accR;
  c.accR = 1; c.implicitSup = true;
  const ioBase = c.rd16(c.linAdd(base, 0x66));
  let ok = !c.pend;
  let bits = 0;
  const byteOff = ioBase + (port >>> 3);
  if (ok && byteOff + 1 > lim) ok = false;
  if (ok) bits = c.rd16(c.linAdd(base, byteOff));
  c.accR = saveR; c.implicitSup = false;
  if (c.pend) return false;
  const mask = ((1 << size) - 1) << (port & 7);
  if (!ok || (bits & mask) !== 0) { c.gp(0); return false; }
  return true;
}

function fillIoExit(c: X86Cpu, o: Op, port: number, size: number, isIn: boolean, isString: boolean): void {
  c.exitInsn(GuestExitKind.IO, o);
  const ex = c.exit;
  ex.port = port; ex.size = size; ex.isIn = isIn; ex.isString = isString; ex.isRep = o.rep !== 0;
  ex.immediate = o.sk === K_IMM || o.dk === K_IMM;
  ex.addrSize = o.asz; ex.segment = isString && !isIn ? o.seg : ES;
}

/** IN AL/AX/EAX, imm8/DX (sk IMM: port in il). */
export function opIn(c: X86Cpu, o: Op): number {
  const port = o.sk === K_IMM ? o.il & 0xff : c.r[2] & 0xffff;
  const size = o.sz;
  if (!ioAllowed(c, port, size)) return 2;
  if (!c.emu && c.rules.ioExits(port, size, true)) { fillIoExit(c, o, port, size, true, false); return 2; }
  if (c.dbgIo) c.ioBreak(port, size);
  const v = c.ports.in(port, size);
  setReg(c, 0, size, v | 0, 0);
  return 0;
}
/** OUT imm8/DX, AL/AX/EAX (dk IMM: port in il). */
export function opOut(c: X86Cpu, o: Op): number {
  const port = o.dk === K_IMM ? o.il & 0xff : c.r[2] & 0xffff;
  const size = o.sz;
  if (!ioAllowed(c, port, size)) return 2;
  if (!c.emu && c.rules.ioExits(port, size, false)) { fillIoExit(c, o, port, size, false, false); return 2; }
  const v = size === 1 ? c.r[0] & 0xff : size === 2 ? c.r[0] & 0xffff : c.r[0] >>> 0;
  if (c.dbgIo) c.ioBreak(port, size);
  c.ports.out(port, size, v);
  return 0;
}
/** INS (cc 0) / OUTS (cc 1), with REP. */
export function opInsOuts(c: X86Cpu, o: Op): number {
  const port = c.r[2] & 0xffff;
  const size = o.sz, asz = o.asz;
  const isIn = o.cc === 0;
  if (o.rep && cntZero(c, asz)) return 0;
  if (!ioAllowed(c, port, size)) return 2;
  if (!c.emu && c.rules.ioExits(port, size, isIn)) { fillIoExit(c, o, port, size, isIn, true); return 2; }
  const d = (c.fl & DF) ? -size : size;
  for (let n = 0; ; n++) {
    if (o.rep) { if (cntZero(c, asz)) return 0; if (n >= (c.dbgArmed ? 1 : 4096)) return 3; }
    if (isIn) {
      const lin = strLin(c, ES, 7, asz, size, true); if (c.pend) return 2;
      c.wprobe(lin, size); if (c.pend) return 2;
      if (c.dbgIo) c.ioBreak(port, size);
  const v = c.ports.in(port, size);
      c.wrN(lin, size, v | 0, 0); if (c.pend) return 2;
      idxAdd(c, 7, asz, d);
    } else {
      const lin = strLin(c, o.seg, 6, asz, size, false); if (c.pend) return 2;
      const v = c.rdN(lin, size); if (c.pend) return 2;
      if (c.dbgIo) c.ioBreak(port, size);
      c.ports.out(port, size, size === 4 ? v >>> 0 : v);
      idxAdd(c, 6, asz, d);
    }
    if (!o.rep) return 0;
    cntDec(c, asz);
  }
}

/** CLTS, LMSW helpers are in opMovToCr; STAC/CLAC (cc 1 set / 0 clear AC; CPL 0, SMAP). */
export function opStacClac(c: X86Cpu, o: Op): number {
  if (c.cpl !== 0) return c.ud();
  if (o.cc === 1) c.fl |= AC; else c.fl &= ~AC;
  return 0;
}
/** RDFSBASE/RDGSBASE/WRFSBASE/WRGSBASE (cc bit0 = write, x = segment). */
export function opFsgsbase(c: X86Cpu, o: Op): number {
  if (c.bits !== 64 || !(Number(c.state.cr4) & CR4_FSGSBASE)) return c.ud();
  const s = c.state;
  const seg = o.x;
  if (o.cc & 1) {
    const lo = c.r[o.s], hi = o.sz === 8 ? c.rh[o.s] : 0;
    if (!canonHi(c, hi)) return c.gp(0);
    s.segBaseLo[seg] = lo; s.segBaseHi[seg] = hi;
    c.segUpdate(seg);
  } else setReg(c, o.d, o.sz, s.segBaseLo[seg], s.segBaseHi[seg]);
  return 0;
}
/** RDRAND (cc 0) / RDSEED (cc 1): always succeed (CF=1) from the seeded source. */
export function opRdrand(c: X86Cpu, o: Op): number {
  if (c.intercepted(o.cc === 0 ? InterceptInsn.RDRAND : InterceptInsn.RDSEED, o)) return 2;
  const lo = c.nextRandom() | 0;
  const hi = o.sz === 8 ? c.nextRandom() | 0 : 0;
  setReg(c, o.d, o.sz, o.sz === 2 ? lo & 0xffff : lo, hi);
  c.setArith(CF);
  return 0;
}
/** RDPID r (TSC_AUX). */
export function opRdpid(c: X86Cpu, o: Op): number {
  if (c.intercepted(InterceptInsn.RDPID, o)) return 2;
  setReg(c, o.d, c.bits === 64 ? 8 : 4, Number(c.state.tscAux & 0xffffffffn) | 0, 0);
  return 0;
}
/** XGETBV (XCR0 only). */
export function opXgetbv(c: X86Cpu, _o: Op): number {
  if (!(Number(c.state.cr4) & 0x40000)) return c.ud();
  if ((c.r[1] >>> 0) !== 0) return c.gp(0);
  const v = c.state.xcr0;
  c.r[0] = Number(v & 0xffffffffn) | 0; c.rh[0] = 0;
  c.r[2] = Number(v >> 32n) | 0; c.rh[2] = 0;
  return 0;
}
/**
 * What an INVPCID exit reports about its operands (SDM 28.2.1: the qualification is the
 * displacement; Table 28-11: the instruction information). RIP-relative addressing reports no
 * base and the RIP-relative offset as displacement, so base + index + displacement stays the offset.
 */
function invpcidExitOperand(c: X86Cpu, o: Op, lin: number): void {
  const ex = c.exit;
  ex.memOperandAddress = BigInt.asUintN(64, BigInt(lin));
  const asz = o.asz === 2 ? 0 : o.asz === 4 ? 1 : 2;
  let info = (o.ms & 3) | (asz << 7) | ((o.seg & 7) << 15) | ((o.d & 0xf) << 28);
  info |= o.mi >= 0 ? (o.mi & 0xf) << 18 : 1 << 22;
  info |= o.mb >= 0 && o.mb !== BASE_RIP ? (o.mb & 0xf) << 23 : 1 << 27;
  ex.instructionInfo = info >>> 0;
  let disp = asz === 2 ? (BigInt(o.dh | 0) << 32n) + BigInt(o.dl >>> 0) : asz === 1 ? BigInt(o.dl | 0) : BigInt((o.dl << 16) >> 16);
  if (o.mb === BASE_RIP) disp += BigInt(c.nextRip(o));
  ex.displacement = BigInt.asUintN(64, disp);
}

/** INVPCID r, m128 (SDM INVPCID types 0-3). */
export function opInvpcid(c: X86Cpu, o: Op): number {
  if (c.cpl !== 0) return c.gp(0);
  const lin = linOf(c, o, 16, false);
  if (c.pend) return 2;
  if (c.intercepted(InterceptInsn.INVPCID, o)) { invpcidExitOperand(c, o, lin); return 2; }
  const type = c.r[o.d] >>> 0;
  const pcidLo = c.rd32(lin);
  const pcidHi = c.rd32(c.linAdd(lin, 4));
  const aLo = c.rd32(c.linAdd(lin, 8)) >>> 0;
  const aHi = c.rd32(c.linAdd(lin, 12)) | 0;
  if (c.pend) return 2;
  if (type > 3 || (c.bits === 64 && c.rh[o.d] !== 0)) return c.gp(0);
  if ((pcidLo >>> 12) !== 0 || pcidHi !== 0) { if (type <= 1) return c.gp(0); }
  const tag = c.rules.tlbTag & 0xfffff;
  const pcid = pcidLo & 0xfff;
  switch (type) {
    case 0:
      if (!canonHi(c, aHi)) return c.gp(0);
      c.invlpgLin(aHi * TWO32 + aLo, tag, pcid);
      break;
    case 1: c.flushTlbPcid(tag, pcid, false); break;
    case 2: c.flushTlbTag(tag); break;
    default:
      for (let p = 0; p < 4096; p++) { /* all non-global: flush per-tag entries but keep globals */ }
      c.flushTlbTag(tag);
  }
  c.brk = true;
  return 0;
}

/** LAR (cc 0) / LSL (cc 1) / VERR (cc 2) / VERW (cc 3): descriptor queries setting ZF. */
export function opDescQuery(c: X86Cpu, o: Op): number {
  if (!c.pe || c.vm86) return c.ud(); // not recognized in real or virtual-8086 mode
  let sel: number;
  if (o.sk === K_REG) sel = c.r[o.s] & 0xffff;
  else { const lin = linOf(c, o, 2, false); if (c.pend) return 2; sel = c.rd16(lin); if (c.pend) return 2; }
  const f = c.getArith() & ~0x40;
  let ok = (sel & 0xfffc) !== 0 && readDesc(c, sel);
  if (c.pend) return 2;
  if (ok) {
    const a = descAttr(c.dHi);
    const dpl = (a >>> 5) & 3;
    const type = a & 0x1f;
    const conformingCode = (type & 0x1c) === 0x1c;
    if (!conformingCode && (dpl < c.cpl || dpl < (sel & 3))) ok = false;
    if (ok) {
      if (o.cc <= 1 && !(a & A_S)) {
        const okTypes = o.cc === 0 ? [1, 2, 3, 4, 5, 9, 0xb, 0xc] : [1, 2, 3, 9, 0xb];
        const lm = c.lma ? (o.cc === 0 ? [2, 9, 0xb, 0xc] : [2, 9, 0xb]) : okTypes;
        if (!lm.includes(type)) ok = false;
      } else if (o.cc === 2) ok = (a & A_S) !== 0 && (!(type & 8) || (type & 2) !== 0);
      else if (o.cc === 3) ok = (a & A_S) !== 0 && !(type & 8) && (type & 2) !== 0;
    }
    if (ok && o.cc === 0) setReg(c, o.d, o.sz, o.sz === 2 ? c.dHi & 0xff00 : c.dHi & 0x00f0ff00, 0);
    if (ok && o.cc === 1) { const l = descLimit(c.dLo, c.dHi); setReg(c, o.d, o.sz, o.sz === 2 ? l & 0xffff : l | 0, 0); }
  }
  c.setArith(ok ? f | 0x40 : f);
  return 0;
}

export { pop, getReg, CR0_PE, CR0_PG, UD, GP, DS, EFER_LMA, segLin };
