/**
 * Hardware task switching (Intel SDM Vol. 3A 7.3 "Task Switching", 7.2 "Task Management Data
 * Structures"; AMD APM Vol. 2 12.3): JMP/CALL to a TSS descriptor or a task gate, INT n /
 * an exception / an interrupt through a task gate in the IDT, and IRET with EFLAGS.NT = 1.
 * Both TSS formats: 32-bit (descriptor types 9/B, limit >= 67H) and 16-bit (types 1/3,
 * limit >= 2BH).
 *
 * Who calls what: sys.ts calls `taskSwitch` where the instruction or the event delivery has
 * done its own checks (gate DPL and P, SDM JMP/CALL/INT n/IRET pseudo-code) and the vendor's
 * rules let the switch happen (bare hardware; VMX always exits, SVM exits when the TASK_SWITCH
 * intercept is set). Core's kvmTaskSwitch (KVM's kvm_task_switch, after a task-switch exit)
 * calls `emulateTaskSwitch`, which runs the same switch on the vCPU's state outside guest mode.
 *
 * Atomicity (SDM 7.3 steps 1-11): every check, the read of the new TSS and a probe of every
 * page the switch writes come before the first write, so a fault before the commit point
 * leaves registers and memory as they were. Faults found while loading the new task's
 * segments (step 12 onward, Table 7-1's last rows) are raised after the commit: they are
 * delivered in the new task's context.
 */
import type { MmioBus, X86Cpu } from './x86-cpu';
import { EmulationResult, PEND_EXC, PEND_EXIT, PEND_UNHANDLED, PEND_USER } from './x86-cpu';
import { GuestExitKind, passthroughRules } from './guest-mode';
import type { Op } from './op';
import { CS, DB, DS, ES, FS, GP, GS, LDTR, NP, NT, SS, SS_VEC, TR, TS, VM, CR0_PG, A_UNUSABLE } from './consts';
import { loadNull, loadV86Seg, readDesc } from './sys';
import { paePagingActive, loadPdptrs } from './pdptr';
import { push } from './ops';
import { decodeOne } from './decode';

/** What started the switch: KVM's TASK_SWITCH_* and the VMX qualification's source (SDM Table 28-2). */
export const TS_CALL = 0, TS_IRET = 1, TS_JMP = 2, TS_GATE = 3;

/** DR7 bits a task switch clears: L0-L3 and LE (SDM Vol. 3B 18.2.4). */
const DR7_LOCAL = 0x155n;
/** DR6.BT: the debug trap flag of the new TSS caused the #DB (SDM Vol. 3B 18.2.3). */
const DR6_BT = 0x8000n;
const P_SR = 1, P_SW = 2;

/**
 * Did the last switch pass its commit point? Core reads it after emulating one to know whether
 * the new task's state must be written back (a fault before the commit changes nothing).
 */
export const taskSwitchStatus = { committed: false };

// The new task's state, read before anything is written (no allocation per switch).
const nGpr = new Int32Array(8);
const nSel = new Int32Array(6);
const DATA_SEGS = [ES, DS, FS, GS];

function descAttr(hi: number): number { return (hi >>> 8) & 0xf0ff; }
function descBase(lo: number, hi: number): number {
  return ((lo >>> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000)) >>> 0;
}
function descLimit(lo: number, hi: number): number {
  const l = (lo & 0xffff) | (hi & 0xf0000);
  return (hi & 0x800000) ? ((l << 12) | 0xfff) >>> 0 : l;
}

/** Implicit supervisor accesses to the TSSs and the GDT (SDM 5.5 "implicit" accesses). */
function sysRd(c: X86Cpu, lin: number, sz: 2 | 4): number {
  const save = c.accR;
  c.accR = P_SR; c.implicitSup = true;
  const v = sz === 2 ? c.rd16(lin) : c.rd32(lin);
  c.accR = save; c.implicitSup = false;
  return v;
}
function sysWr(c: X86Cpu, lin: number, sz: 2 | 4, v: number): void {
  const save = c.accW;
  c.accW = P_SW; c.implicitSup = true;
  if (sz === 2) c.wr16(lin, v); else c.wr32(lin, v);
  c.accW = save; c.implicitSup = false;
}
/** Step 5: is [lin, lin+len) writable by an implicit supervisor access? (pend set if not) */
function probeWrite(c: X86Cpu, lin: number, len: number): boolean {
  const save = c.accW;
  c.accW = P_SW; c.implicitSup = true;
  let ok = c.xlate(lin, 1) !== -1;
  const last = (lin + len - 1) >>> 0;
  if (ok && (last & ~0xfff) !== (lin & ~0xfff)) ok = c.xlate(last, 1) !== -1;
  c.accW = save; c.implicitSup = false;
  return ok && c.pend === 0;
}

/**
 * Switch to the task whose TSS descriptor `sel` selects (SDM 7.3 steps 3-14). `c.rip` must
 * hold the EIP to save in the old task (the instruction after JMP/CALL/IRET; for an event, the
 * return address its delivery would push). `ext` is the EXT bit of error codes (SDM 6.13);
 * `hasErr`/`err`: an exception's error code, pushed on the new task's stack (SDM 6.12.2).
 *
 * Returns false when a fault before the commit point is pending (state untouched); true when
 * the switch committed — possibly with a fault (or the T-flag #DB trap) pending, to be
 * delivered in the new task.
 */
export function taskSwitch(c: X86Cpu, sel: number, reason: number, ext: number, hasErr: boolean, err: number): boolean {
  const s = c.state;
  taskSwitchStatus.committed = false;
  const isIret = reason === TS_IRET;
  const nest = reason === TS_CALL || reason === TS_GATE;
  sel &= 0xffff;
  const selErr = (sel & 0xfffc) | ext;
  // IA-32e mode has no task switching (SDM 7.7): the callers raise #GP before getting here.
  if (c.lma) { c.gp(0); return false; }
  // Table 7-1 row 1: the selector references the GDT, within its limit (#TS for IRET, else #GP).
  const badVec = isIret ? TS : GP;
  if (sel & 4) { c.raise(badVec, selErr, true); return false; }
  if (!readDesc(c, sel)) { if (!c.pend) c.raise(badVec, selErr, true); return false; }
  const nLo = c.dLo, nHi = c.dHi, nDescLin = c.dLin;
  const nType = (nHi >>> 8) & 0x1f;
  if (nType !== 0x01 && nType !== 0x03 && nType !== 0x09 && nType !== 0x0b) { c.raise(badVec, selErr, true); return false; }
  // Step 4: available for JMP/CALL/INT/exception (#GP), busy for IRET (#TS).
  const busy = (nType & 2) !== 0;
  if (isIret ? !busy : busy) { c.raise(badVec, selErr, true); return false; }
  // Step 3: present (#NP) with a limit that holds the TSS (#TS).
  if (!(nHi & 0x8000)) { c.raise(NP, selErr, true); return false; }
  const n32 = (nType & 8) !== 0;
  const nBase = descBase(nLo, nHi);
  if (descLimit(nLo, nHi) < (n32 ? 0x67 : 0x2b)) { c.raise(TS, selErr, true); return false; }

  // The current task: its TSS must hold the dynamic fields the switch saves.
  const oSel = s.segSel[TR];
  const o32 = (s.segAttr[TR] & 8) !== 0;
  const oBase = s.segBaseLo[TR] >>> 0;
  if ((s.segAttr[TR] & A_UNUSABLE) || s.segLimit[TR] < (o32 ? 0x5f : 0x29)) { c.raise(TS, (oSel & 0xfffc) | ext, true); return false; }
  let oDescLin = -1, oHi = 0;
  if (isIret || reason === TS_JMP) {
    // Its descriptor, whose busy bit step 7 clears (CALL and events leave it busy).
    if (!readDesc(c, oSel)) { if (!c.pend) c.raise(TS, (oSel & 0xfffc) | ext, true); return false; }
    oDescLin = c.dLin; oHi = c.dHi;
  }

  // Read the new task's state (step 12's values) before anything is written.
  let nCr3 = 0, nEip: number, nFlags: number, nLdt: number, tFlag = 0;
  if (n32) {
    nCr3 = sysRd(c, (nBase + 0x1c) >>> 0, 4);
    nEip = sysRd(c, (nBase + 0x20) >>> 0, 4);
    nFlags = sysRd(c, (nBase + 0x24) >>> 0, 4);
    for (let i = 0; i < 8; i++) nGpr[i] = sysRd(c, (nBase + 0x28 + 4 * i) >>> 0, 4);
    for (let i = 0; i < 6; i++) nSel[i] = sysRd(c, (nBase + 0x48 + 4 * i) >>> 0, 2);
    nLdt = sysRd(c, (nBase + 0x60) >>> 0, 2);
    tFlag = sysRd(c, (nBase + 0x64) >>> 0, 2) & 1;
  } else {
    nEip = sysRd(c, (nBase + 0x0e) >>> 0, 2);
    nFlags = sysRd(c, (nBase + 0x10) >>> 0, 2);
    for (let i = 0; i < 8; i++) nGpr[i] = sysRd(c, (nBase + 0x12 + 2 * i) >>> 0, 2);
    for (let i = 0; i < 4; i++) nSel[i] = sysRd(c, (nBase + 0x22 + 2 * i) >>> 0, 2);
    nSel[4] = 0; nSel[5] = 0; // a 16-bit TSS has no FS/GS: they become null
    nLdt = sysRd(c, (nBase + 0x2a) >>> 0, 2);
  }
  if (c.pend) return false;
  // A 32-bit TSS whose EFLAGS image has VM = 1 starts a virtual-8086 task (SDM 20.2.1).
  const v86 = n32 && (nFlags & VM) !== 0;

  // Step 5: every page the switch writes is present and writable.
  if (!probeWrite(c, (oBase + (o32 ? 0x20 : 0x0e)) >>> 0, o32 ? 0x40 : 0x1c)) return false;
  if (nest && !probeWrite(c, nBase, 2)) return false;
  if (oDescLin >= 0 && !probeWrite(c, c.linAdd(oDescLin, 4), 4)) return false;
  if (!isIret && !probeWrite(c, c.linAdd(nDescLin, 4), 4)) return false;

  // Step 6: save the current task's dynamic state (step 8: IRET clears NT in the saved image).
  let flags = c.getFlags();
  if (isIret) flags &= ~NT;
  const r = c.r;
  if (o32) {
    sysWr(c, (oBase + 0x20) >>> 0, 4, c.rip);
    sysWr(c, (oBase + 0x24) >>> 0, 4, flags);
    for (let i = 0; i < 8; i++) sysWr(c, (oBase + 0x28 + 4 * i) >>> 0, 4, r[i]);
    for (let i = 0; i < 6; i++) sysWr(c, (oBase + 0x48 + 4 * i) >>> 0, 2, s.segSel[i]);
  } else {
    sysWr(c, (oBase + 0x0e) >>> 0, 2, c.rip);
    sysWr(c, (oBase + 0x10) >>> 0, 2, flags);
    for (let i = 0; i < 8; i++) sysWr(c, (oBase + 0x12 + 2 * i) >>> 0, 2, r[i]);
    for (let i = 0; i < 4; i++) sysWr(c, (oBase + 0x22 + 2 * i) >>> 0, 2, s.segSel[i]);
  }
  // Step 7: JMP and IRET leave the old task not busy.
  if (oDescLin >= 0) sysWr(c, c.linAdd(oDescLin, 4), 4, oHi & ~0x200);
  // Step 13 (CALL, INT, exception): the new TSS's previous-task link is the old task.
  if (nest) sysWr(c, nBase, 2, oSel);
  // Step 10: the new task is busy.
  if (!isIret) sysWr(c, c.linAdd(nDescLin, 4), 4, nHi | 0x200);
  if (c.pend) return false; // cannot happen after the probes; kept for safety

  // ---- Commit point. Step 11: TR; CR0.TS (SDM 2.5: set on every task switch).
  taskSwitchStatus.committed = true;
  s.segSel[TR] = sel;
  s.segBaseLo[TR] = nBase | 0;
  s.segBaseHi[TR] = 0;
  s.segLimit[TR] = descLimit(nLo, nHi);
  s.segAttr[TR] = descAttr(nHi | 0x200);
  c.segUpdate(TR);
  s.cr0 |= 8n;
  s.sysWrites++; // CR0.TS, and CR3 / DR7 below

  // Step 12: CR3 (32-bit TSS; not loaded when paging is off), with the PDPTEs under PAE paging.
  let fault = false;
  if (n32 && (Number(s.cr0 & 0xffffffffn) & CR0_PG)) {
    const v = BigInt(nCr3 >>> 0);
    if (paePagingActive(c) && !loadPdptrs(c, v)) fault = true;
    else {
      s.cr3 = v;
      c.flushCurrentCtx(c.pge);
    }
  }
  c.rip = n32 ? nEip >>> 0 : nEip & 0xffff;
  // Step 9: CALL/INT/exception set NT in the new task; IRET/JMP take it from the TSS.
  c.setFlags((n32 ? nFlags : nFlags & 0xffff) | (nest ? NT : 0));
  for (let i = 0; i < 8; i++) { r[i] = n32 ? nGpr[i] : nGpr[i] & 0xffff; c.rh[i] = 0; }
  // Selectors first, without checks, so a fault below is reported in the new task's context.
  for (let i = 0; i < 6; i++) s.segSel[i] = nSel[i];
  s.segSel[LDTR] = nLdt;
  s.cpl = v86 ? 3 : nSel[CS] & 3;
  c.updateMode();
  // Debug registers: local breakpoints end with the task (SDM 18.2.4).
  s.dr7 &= ~DR7_LOCAL;
  c.dbgUpdate();

  // Table 7-1: the new task's LDT and segments, faults in the new context.
  if (!fault) fault = !loadTaskLdt(c, nLdt, ext);
  if (v86) {
    // Virtual-8086 segments: base = selector * 16, no descriptor checks (SDM 20.1.1).
    if (!fault) for (let i = 0; i < 6; i++) loadV86Seg(c, i, nSel[i]);
  } else {
    if (!fault) fault = !loadTaskSeg(c, CS, nSel[CS], ext);
    if (!fault) fault = !loadTaskSeg(c, SS, nSel[SS], ext);
    for (let k = 0; k < 4; k++) if (!fault) fault = !loadTaskSeg(c, DATA_SEGS[k], nSel[DATA_SEGS[k]], ext);
  }
  c.updateMode();
  // CALL/JMP/IRET pseudo-code: "IF EIP not within code segment limit THEN #GP(0)".
  if (!fault && c.rip > s.segLimit[CS]) { c.gp(0); fault = true; }
  // SDM 6.12.2: an exception's error code is pushed on the new task's stack.
  if (!fault && hasErr && !push(c, n32 ? 4 : 2, err, 0)) fault = true;
  // The T flag (32-bit TSS byte 100 bit 0): #DB after the switch, before the new task runs.
  if (!fault && tFlag) {
    s.dr6 |= DR6_BT;
    c.raise(DB, 0, false);
  }
  return true;
}

/** Load LDTR from the new TSS (Table 7-1: invalid or not present → #TS(LDT selector)). */
function loadTaskLdt(c: X86Cpu, sel: number, ext: number): boolean {
  const s = c.state;
  if ((sel & 0xfffc) === 0) { loadNull(c, LDTR, sel); return true; }
  const e = (sel & 0xfffc) | ext;
  if (sel & 4) { c.raise(TS, e, true); return false; }
  if (!readDesc(c, sel)) { if (!c.pend) c.raise(TS, e, true); return false; }
  const a = descAttr(c.dHi);
  if ((a & 0x1f) !== 0x02 || !(a & 0x80)) { c.raise(TS, e, true); return false; }
  s.segSel[LDTR] = sel;
  s.segBaseLo[LDTR] = descBase(c.dLo, c.dHi) | 0;
  s.segBaseHi[LDTR] = 0;
  s.segLimit[LDTR] = descLimit(c.dLo, c.dHi);
  s.segAttr[LDTR] = a;
  c.segUpdate(LDTR);
  return true;
}

/**
 * Load CS, SS or a data segment from the new TSS with Table 7-1's checks: invalid selector,
 * wrong type or privilege → #TS(selector); not present → #NP (#SS for SS). CPL is CS.RPL.
 */
function loadTaskSeg(c: X86Cpu, seg: number, sel: number, ext: number): boolean {
  const s = c.state;
  const cpl = s.cpl;
  const rpl = sel & 3;
  const e = (sel & 0xfffc) | ext;
  if ((sel & 0xfffc) === 0) {
    if (seg === CS || seg === SS) { c.raise(TS, e, true); return false; }
    loadNull(c, seg, sel);
    return true;
  }
  if (!readDesc(c, sel)) { if (!c.pend) c.raise(TS, e, true); return false; }
  const a = descAttr(c.dHi);
  const dpl = (a >>> 5) & 3;
  const type = a & 0xf;
  if (!(a & 0x10)) { c.raise(TS, e, true); return false; }
  if (seg === CS) {
    if (!(type & 8)) { c.raise(TS, e, true); return false; }
    if ((type & 4) ? dpl > rpl : dpl !== rpl) { c.raise(TS, e, true); return false; }
    if (!(a & 0x80)) { c.raise(NP, e, true); return false; }
  } else if (seg === SS) {
    if ((type & 8) || !(type & 2) || rpl !== cpl || dpl !== cpl) { c.raise(TS, e, true); return false; }
    if (!(a & 0x80)) { c.raise(SS_VEC, e, true); return false; }
  } else {
    if ((type & 8) && !(type & 2)) { c.raise(TS, e, true); return false; }
    if (!((type & 8) && (type & 4)) && (dpl < cpl || dpl < rpl)) { c.raise(TS, e, true); return false; }
    if (!(a & 0x80)) { c.raise(NP, e, true); return false; }
  }
  // The accessed bit (SDM 3.4.5.1).
  if (!(c.dHi & 0x100)) {
    sysWr(c, c.linAdd(c.dLin, 4), 4, c.dHi | 0x100);
    if (c.pend) return false;
  }
  s.segSel[seg] = sel;
  s.segBaseLo[seg] = descBase(c.dLo, c.dHi) | 0;
  s.segBaseHi[seg] = 0;
  s.segLimit[seg] = descLimit(c.dLo, c.dHi);
  s.segAttr[seg] = a | 1;
  c.segUpdate(seg);
  return true;
}

// =====================================================================================
// The instructions and the event delivery that start a switch (sys.ts calls these)
// =====================================================================================

/**
 * Does a task switch stop the guest instead of happening? VMX: always (SDM 26.1.3 / 26.4.2);
 * SVM: when the TASK_SWITCH intercept is set (APM 15.14); bare hardware and core's emulator:
 * never. The exit comes after the checks SDM 26.4.2 lists (gate P/DPL, TSS descriptor DPL,
 * the IRET back link), which the callers below make first.
 */
function switchExits(c: X86Cpu): boolean {
  return !c.emu && c.rules.taskSwitchExits !== false;
}

/** Fill a TASK_SWITCH exit (`o` null: during event delivery, RIP at the event's return point). */
function exitTaskSwitch(c: X86Cpu, o: Op | null, sel: number, source: number, hasErr: boolean, err: number): number {
  const ex = c.exit;
  if (o) c.exitInsn(GuestExitKind.TASK_SWITCH, o);
  else {
    ex.kind = GuestExitKind.TASK_SWITCH;
    ex.noInsnBytes();
    ex.vectoring.valid = false;
    ex.nextRip = c.ripBig(c.rip);
    // INT n / INT3 / INTO through a task gate: deliverEvent's exit path moves RIP back to the
    // instruction and reports its length (SDM 28.2.5 VM-exit instruction length; SVM's intercept
    // is fault-like too), as for any exit during the delivery of a software event.
    ex.insnLength = c.dlvLen;
    c.pend = PEND_EXIT;
  }
  ex.taskSelector = sel & 0xffff;
  ex.taskSource = source;
  ex.hasErrorCode = hasErr;
  ex.errorCode = hasErr ? err >>> 0 : 0;
  return 2;
}

/**
 * JMP/CALL far to a TSS descriptor or a task gate (SDM JMP/CALL pseudo-code TASK-GATE and
 * TASK-STATE-SEGMENT), with the descriptor for `sel` in c.dLo/c.dHi. Returns the op code.
 */
export function farTaskSwitch(c: X86Cpu, o: Op, sel: number, isCall: boolean): number {
  const type = (c.dHi >>> 8) & 0x1f;
  const dpl = (c.dHi >>> 13) & 3;
  // Gate or TSS descriptor DPL >= CPL and >= RPL.
  if (dpl < c.cpl || dpl < (sel & 3)) return c.gp(sel & 0xfffc);
  let tss = sel;
  if (type === 0x05) {
    if (!(c.dHi & 0x8000)) return c.raise(NP, sel & 0xfffc, true);
    tss = c.dLo >>> 16;
    if (tss & 4) return c.gp(tss & 0xfffc);
    if (!readDesc(c, tss)) return c.pend ? 2 : c.gp(tss & 0xfffc);
  }
  const t = (c.dHi >>> 8) & 0x1f;
  // Not an available TSS (busy, or not a TSS at all behind a gate) → #GP(TSS selector).
  if (t !== 0x01 && t !== 0x09) return c.gp(tss & 0xfffc);
  if (!(c.dHi & 0x8000)) return c.raise(NP, tss & 0xfffc, true);
  const reason = isCall ? TS_CALL : TS_JMP;
  if (switchExits(c)) return exitTaskSwitch(c, o, tss, reason, false, 0);
  const start = c.rip;
  c.rip = c.nextRip(o);
  if (!taskSwitch(c, tss, reason, 0, false, 0)) { c.rip = start; return 2; }
  return c.pend !== 0 ? 2 : 1;
}

/** IRET with EFLAGS.NT = 1 (SDM IRET "TASK-RETURN"): back to the task in the previous-task link. */
export function iretTaskSwitch(c: X86Cpu, o: Op): number {
  // IA-32e mode: IRET with NT = 1 is #GP(0).
  if (c.lma) return c.gp(0);
  const link = sysRd(c, c.state.segBaseLo[TR] >>> 0, 2);
  if (c.pend) return 2;
  if (switchExits(c)) return exitTaskSwitch(c, o, link, TS_IRET, false, 0);
  const start = c.rip;
  c.rip = c.nextRip(o);
  if (!taskSwitch(c, link, TS_IRET, 0, false, 0)) { c.rip = start; return 2; }
  // IRET ends NMI blocking whatever it returns to (SDM 6.7.1).
  c.state.nmiBlocked = false;
  return c.pend !== 0 ? 2 : 1;
}

/**
 * An event delivered through a task gate in the IDT (SDM INT n pseudo-code TASK-GATE, 6.12.2).
 * `gLo`/`gHi`: the gate; `idtErr`: vector*8+2+EXT. Returns true when delivered; false with an
 * exception or an exit pending.
 */
export function gateTaskSwitch(
  c: X86Cpu, gLo: number, gHi: number, idtErr: number, err: number, hasErr: boolean, soft: boolean, ext: number,
): boolean {
  // Software interrupts check the gate's DPL (INT1 and hardware events do not).
  if (soft && ((gHi >>> 13) & 3) < c.cpl) { c.gp(idtErr); return false; }
  if (!(gHi & 0x8000)) { c.raise(NP, idtErr, true); return false; }
  const tss = gLo >>> 16;
  const e = (tss & 0xfffc) | ext;
  if (tss & 4) { c.gp(e); return false; }
  if (!readDesc(c, tss)) { if (!c.pend) c.gp(e); return false; }
  const t = (c.dHi >>> 8) & 0x1f;
  if (t !== 0x01 && t !== 0x09) { c.gp(e); return false; }
  if (!(c.dHi & 0x8000)) { c.raise(NP, e, true); return false; }
  if (switchExits(c)) { exitTaskSwitch(c, null, tss, TS_GATE, hasErr, err); return false; }
  if (!taskSwitch(c, tss, TS_GATE, ext, hasErr, err)) return false;
  if (c.pend !== 0) {
    // A fault after the commit point is delivered in the new task (SDM 7.3). deliverEvent treats
    // it as a fault during this delivery and moves RIP back over a software interrupt's
    // instruction; RIP is the new task's EIP now, so pre-compensate.
    c.rip += c.dlvLen;
    return false;
  }
  return true;
}

// =====================================================================================
// Core's emulation of a switch after a task-switch exit
// =====================================================================================

const emuRules = passthroughRules();

/**
 * Run a task switch outside guest mode on core's behalf (KVM's emulator_task_switch), on the
 * state core loaded into the processor. `idtIndex` >= 0: a software interrupt (INT n) through
 * a task gate, whose DPL is checked against CPL and the TSS selector's RPL (#GP(idt*8+2)).
 * An exception it raises is left in `injection` (a #PF also sets CR2), as emulateInstruction
 * does; a TSS or descriptor outside RAM is UNHANDLEABLE.
 */
export function emulateTaskSwitch(
  c: X86Cpu, mmio: MmioBus, sel: number, reason: number, idtIndex: number, hasErr: boolean, err: number,
): EmulationResult {
  c.rules = emuRules;
  c.emu = true;
  c.mmio = mmio;
  c.syncIn();
  c.curOp = null;
  c.injection.valid = false;
  let res = EmulationResult.DONE;
  try {
    let ok = true;
    if (reason === TS_GATE && idtIndex >= 0) ok = checkSoftGate(c, sel, idtIndex);
    if (ok) taskSwitch(c, sel, reason, 0, hasErr, err);
    if (c.pend === PEND_USER || c.pend === PEND_UNHANDLED) res = EmulationResult.UNHANDLEABLE;
    else if (c.pend === PEND_EXC) {
      res = EmulationResult.EXCEPTION;
      c.pendingExceptionToInjection();
    } else if (c.pend !== 0) res = EmulationResult.UNHANDLEABLE;
  } catch {
    res = EmulationResult.UNHANDLEABLE;
  }
  c.pend = 0;
  c.emu = false;
  c.mmio = null;
  c.syncOut();
  return res;
}

/** INT n through a task gate: gate DPL >= CPL and >= the TSS selector's RPL (KVM's check). */
function checkSoftGate(c: X86Cpu, sel: number, idtIndex: number): boolean {
  const s = c.state;
  const err = idtIndex * 8 + 2;
  if (idtIndex * 8 + 7 > s.idtrLimit) { c.gp(err); return false; }
  const hi = sysRd(c, (Number(s.idtrBase & 0xffffffffn) + idtIndex * 8 + 4) >>> 0, 4);
  if (c.pend) return false;
  const dpl = (hi >>> 13) & 3;
  if ((sel & 3) > dpl || c.cpl > dpl) { c.gp(err); return false; }
  return true;
}

/**
 * The length of the instruction at RIP, decoded outside guest mode (0 if its fetch faults).
 * SVM saves no next RIP for a task-switch intercept (APM 15.7.1 lists nRIP only for
 * instruction intercepts), so KVM finds the end of the JMP/CALL/IRET/INT n that started the
 * switch by decoding it (x86_emulate_instruction with EMULTYPE_SKIP).
 */
export function emulatedInsnLength(c: X86Cpu, mmio: MmioBus): number {
  c.rules = emuRules;
  c.emu = true;
  c.mmio = mmio;
  c.syncIn();
  let len = 0;
  try {
    const op = decodeOne(c, c.rip);
    if (op !== null && c.pend === 0) len = op.len;
  } catch {
    len = 0;
  }
  c.pend = 0;
  c.emu = false;
  c.mmio = null;
  c.syncOut();
  return len;
}
