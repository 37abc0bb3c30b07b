import { F, VMCS_FIELDS, VmcsField, VmcsFieldType, VmcsWidth, vmcsFieldName } from './fields';

/** VM-instruction error numbers (SDM Vol. 3C 31.4, Table 31-1). */
export enum VmInstructionError {
  VMCALL_IN_ROOT = 1,
  VMCLEAR_INVALID_ADDRESS = 2,
  VMCLEAR_VMXON_POINTER = 3,
  VMLAUNCH_NONCLEAR_VMCS = 4,
  VMRESUME_NONLAUNCHED_VMCS = 5,
  VMRESUME_AFTER_VMXOFF = 6,
  ENTRY_INVALID_CONTROL_FIELD = 7,
  ENTRY_INVALID_HOST_STATE_FIELD = 8,
  VMPTRLD_INVALID_ADDRESS = 9,
  VMPTRLD_VMXON_POINTER = 10,
  VMPTRLD_INCORRECT_REVISION = 11,
  UNSUPPORTED_VMCS_COMPONENT = 12,
  VMWRITE_READ_ONLY_COMPONENT = 13,
  VMXON_IN_VMX_ROOT = 15,
  ENTRY_INVALID_EXECUTIVE_VMCS_POINTER = 16,
  ENTRY_NONLAUNCHED_EXECUTIVE_VMCS = 17,
  ENTRY_EXECUTIVE_VMCS_NOT_VMXON = 18,
  VMCALL_NONCLEAR_VMCS = 19,
  VMCALL_INVALID_VM_EXIT_CONTROL_FIELDS = 20,
  VMCALL_INCORRECT_MSEG_REVISION = 22,
  VMXOFF_UNDER_DUAL_MONITOR = 23,
  VMCALL_INVALID_SMM_MONITOR_FEATURES = 24,
  ENTRY_INVALID_VM_EXECUTION_CONTROL_FIELDS_IN_EXECUTIVE_VMCS = 25,
  ENTRY_EVENTS_BLOCKED_BY_MOV_SS = 26,
  INVALID_OPERAND_TO_INVEPT_INVVPID = 28,
}

/**
 * A VMREAD/VMWRITE that hardware would fail with VMfailValid. In tsvisor only backend code
 * issues VMCS accesses, so this is a backend bug: it names the field and the error number.
 */
export class VmcsAccessError extends Error {
  constructor(readonly error: VmInstructionError, readonly encoding: number, detail: string) {
    super(`VM-instruction error ${error} on VMCS component ${vmcsFieldName(encoding)} (0x${encoding.toString(16)}): ${detail}`);
    this.name = 'VmcsAccessError';
  }
}

const W16 = 0, W32 = 1, W64 = 2, WNAT = 3, WHIGH = 4;
const WIDTH_CODE: Record<VmcsWidth, number> = { '16': W16, '32': W32, '64': W64, nat: WNAT };
const WIDTH_NAMES = ['16-bit', '32-bit', '64-bit', 'natural-width', '32-bit (HIGH half)'];

/** Encoding → storage slot and width code, shared by every VMCS (encodings are < 0x8000). */
const SLOT = new Int16Array(0x8000).fill(-1);
const KIND = new Uint8Array(0x8000);
const READ_ONLY = new Uint8Array(0x8000);
let slotCount = 0;
for (const info of VMCS_FIELDS.values()) {
  if (info.high) continue;
  SLOT[info.encoding] = slotCount++;
  KIND[info.encoding] = WIDTH_CODE[info.width];
  if (info.type === VmcsFieldType.EXIT_INFO) READ_ONLY[info.encoding] = 1;
}
for (const info of VMCS_FIELDS.values()) {
  if (!info.high) continue;
  SLOT[info.encoding] = SLOT[info.encoding & ~1];
  KIND[info.encoding] = WHIGH;
  if (info.type === VmcsFieldType.EXIT_INFO) READ_ONLY[info.encoding] = 1;
}
/**
 * The processor's exit-information writes (exitWrite32 / exitWriteNum, every VM exit): the slot
 * of each 32-bit and of each 64-bit/natural-width component, -1 for any other encoding (which
 * then takes the checked path and throws as before).
 */
const SLOT_W32 = new Int16Array(0x8000).fill(-1);
const SLOT_WIDE = new Int16Array(0x8000).fill(-1);
for (let enc = 0; enc < 0x8000; enc++) {
  if (SLOT[enc] < 0) continue;
  if (KIND[enc] === W32) SLOT_W32[enc] = SLOT[enc];
  else if (KIND[enc] === W64 || KIND[enc] === WNAT) SLOT_WIDE[enc] = SLOT[enc];
}
/**
 * What a VMWRITE to the component invalidates at the next VM entry: 0 control or host-state
 * (the entry checks of SDM 27.2 and the guest-mode rules), 1 guest state (the checks of 27.3),
 * 2 guest state no entry check reads (the VMX-preemption timer value, re-read at every entry).
 */
const GROUP = new Uint8Array(0x8000);
const GROUP_CTL = 0, GROUP_GUEST = 1, GROUP_UNCHECKED = 2;
for (const info of VMCS_FIELDS.values()) {
  if (info.type === VmcsFieldType.GUEST) GROUP[info.encoding] = info.encoding === F.VMX_PREEMPTION_TIMER_VALUE ? GROUP_UNCHECKED : GROUP_GUEST;
}
/**
 * The components a resume (vmenter.ts, the lean VM-entry path) loads into the processor at
 * every entry: GUEST_RIP, GUEST_RSP, GUEST_RFLAGS, GUEST_INTERRUPTIBILITY_INFO and
 * VMX_PREEMPTION_TIMER_VALUE. A VMWRITE of any other component bumps `heldGeneration`.
 */
const RESUME_LOADED = new Uint8Array(0x8000);
for (const f of [F.GUEST_RIP, F.GUEST_RSP, F.GUEST_RFLAGS, F.GUEST_INTERRUPTIBILITY_INFO, F.VMX_PREEMPTION_TIMER_VALUE]) RESUME_LOADED[f] = 1;
const MASK32 = 0xffffffffn;
/** BigInt → 32-bit halves (modulo 2^64) through a typed array: no BigInt operation, no allocation. */
const CONV64 = new BigUint64Array(1);
const CONV32 = new Uint32Array(CONV64.buffer);
const RIP_RSP = [F.GUEST_RIP, F.GUEST_RSP] as const;

/**
 * The emulated VMCS (SDM Vol. 3C ch. 25): opaque storage reached only through encodings.
 * Every component lives in two Uint32Arrays (low and high halves), so 16/32-bit accesses —
 * the hot ones — never touch BigInt. 64-bit and natural-width components are also readable
 * as plain numbers (`readNum`) for addresses, which stay below 2^53.
 *
 * The typed accessors (`read16`, `write32`, …) take only constants of the right width (a
 * build-time check) and check again at run time for untyped callers: an unknown encoding or a
 * width mismatch is VM-instruction error 12, a VMWRITE to a VM-exit information field 13
 * (this processor does not set IA32_VMX_MISC bit 29). The processor itself records exit
 * information through `exitWrite*`, which is not VMWRITE.
 */
export class Vmcs {
  /**
   * The storage: low and high 32 bits of every component, indexed by slot. Only the
   * processor's own VM-entry loads and VM-exit stores (vmenter.ts, exit-info.ts, which are not
   * VMREAD/VMWRITE) index these directly, with slots resolved once at module load
   * (`slotOf`, `exitSlotOf`); everything else goes through the accessors below.
   */
  readonly lo = new Uint32Array(slotCount);
  readonly hi = new Uint32Array(slotCount);
  /**
   * The bigint last returned for each slot and the halves it was made from: reading a 64-bit
   * or natural-width component that has not changed returns that bigint (no BigInt per read).
   */
  private readonly cLo = new Uint32Array(slotCount);
  private readonly cHi = new Uint32Array(slotCount);
  private readonly cBig: bigint[] = new Array<bigint>(slotCount).fill(0n);
  /** VMCS revision identifier and launch state (SDM 25.2, 25.11.3). */
  revisionId: number;
  launched = false;
  /** Bumped by every VMWRITE-style write (not by the processor's exit recording or guest-state saving). */
  generation = 0;
  /** Bumped by VMWRITEs of control and host-state fields: the control/host checks and the guest-mode rules depend on these. */
  ctlGeneration = 0;
  /** Bumped by VMWRITEs of guest-state fields the VM-entry checks read (SDM 27.3). */
  guestGeneration = 0;
  /**
   * Bumped by every VMWRITE that changes a component other than the five a resume loads at
   * every entry (RESUME_LOADED: RIP, RSP, RFLAGS, interruptibility state, preemption-timer
   * value), whatever its type (control, host state, guest state), and by VMCLEAR. Unchanged
   * since a VM exit, every other component holds what it held at that exit: the processor's
   * own stores and the controls it ran under (vmenter.ts, the resume).
   */
  heldGeneration = 0;

  /**
   * VM exit bookkeeping (vmenter's storeGuestState): stateGeneration right after the last exit
   * stored the guest segment registers, the processor state (CpuState) it stored them from and
   * that state's `segWrites` then. While all three still match, the segment fields hold exactly
   * what the processor holds.
   */
  segSavedGeneration = -1;
  segSavedWrites = -1;
  /** That state's `sysWrites` then: with the two above, the GDTR/IDTR, CR3, SYSENTER and EFER/PAT/DR7/DEBUGCTL fields hold the processor's values. */
  sysSavedWrites = -1;
  segSavedBy: unknown = null;

  /**
   * For tests and diagnostics: false sends every VM entry with this VMCS down the general path
   * (vmenter.ts), so that a scenario can be run both ways and the results compared. The resume
   * is an implementation shortcut with the general path's architectural result; this switch
   * changes nothing a guest or a VMM can observe except the `resumes` count.
   */
  resumeEnabled = true;
  /** VM entries that took the resume (for tests and statistics). */
  resumes = 0;
  /**
   * The resume record of the last VM exit from this VMCS (vmenter.ts): `heldGeneration` then, or
   * -1 when the next entry must take the general path (no exit yet, a failed entry, an exit that
   * wrote a control); and the processor's X86Cpu.stateEpoch then.
   */
  resumeHeld = -1;
  resumeEpoch = -1;

  /** Changes whenever a VMWRITE changed anything the VM-entry checks read (sum of two counters that only grow). */
  get stateGeneration(): number {
    return this.ctlGeneration + this.guestGeneration;
  }

  private bump(enc: number): void {
    this.generation++;
    const inRange = enc >= 0 && enc < 0x8000;
    const g = inRange ? GROUP[enc] : GROUP_CTL;
    if (g === GROUP_CTL) this.ctlGeneration++;
    else if (g === GROUP_GUEST) this.guestGeneration++;
    if (!inRange || RESUME_LOADED[enc] === 0) this.heldGeneration++;
  }

  constructor(revisionId: number) {
    this.revisionId = revisionId;
  }

  private slot(enc: number, want: number, write: boolean): number {
    const s = enc >= 0 && enc < 0x8000 ? SLOT[enc] : -1;
    if (s < 0) throw new VmcsAccessError(VmInstructionError.UNSUPPORTED_VMCS_COMPONENT, enc, 'no such component');
    const k = KIND[enc];
    if (k !== want) {
      throw new VmcsAccessError(VmInstructionError.UNSUPPORTED_VMCS_COMPONENT, enc,
        `accessed as ${WIDTH_NAMES[want]} but the component is ${WIDTH_NAMES[k]}`);
    }
    if (write && READ_ONLY[enc]) {
      throw new VmcsAccessError(VmInstructionError.VMWRITE_READ_ONLY_COMPONENT, enc, 'VM-exit information fields are read-only');
    }
    return s;
  }

  read16(f: VmcsField<'16'>): number {
    return this.lo[this.slot(f, W16, false)] & 0xffff;
  }
  read32(f: VmcsField<'32'>): number {
    const s = this.slot(f, KIND[f] === WHIGH ? WHIGH : W32, false);
    return KIND[f] === WHIGH ? this.hi[s] : this.lo[s];
  }
  read64(f: VmcsField<'64'>): bigint {
    return this.big(this.slot(f, W64, false));
  }
  readNat(f: VmcsField<'nat'>): bigint {
    return this.big(this.slot(f, WNAT, false));
  }
  /** A 64-bit or natural-width component by slot as a bigint (the same bigint while it is unchanged). */
  big(s: number): bigint {
    const lo = this.lo[s], hi = this.hi[s];
    if (lo === this.cLo[s] && hi === this.cHi[s]) return this.cBig[s];
    const v = (BigInt(hi) << 32n) | BigInt(lo);
    this.cLo[s] = lo;
    this.cHi[s] = hi;
    this.cBig[s] = v;
    return v;
  }
  /** A 64-bit or natural-width component as a number (exact below 2^53: addresses, lengths). */
  readNum(f: VmcsField<'64'> | VmcsField<'nat'>): number {
    const s = this.slot(f, KIND[f] === W64 ? W64 : WNAT, false);
    return this.hi[s] * 0x1_0000_0000 + this.lo[s];
  }
  /** Low 32 bits of a 64-bit or natural-width component (RFLAGS, CR0 …). */
  readLow(f: VmcsField<'64'> | VmcsField<'nat'>): number {
    return this.lo[this.slot(f, KIND[f] === W64 ? W64 : WNAT, false)];
  }

  /** High 32 bits of a 64-bit or natural-width component. */
  readHigh(f: VmcsField<'64'> | VmcsField<'nat'>): number {
    return this.hi[this.slot(f, KIND[f] === W64 ? W64 : WNAT, false)];
  }

  // VMWRITEs. A write that leaves the component's value as it was changes nothing the VM-entry
  // checks or the guest-mode rules read, so it does not bump the generations.

  write16(f: VmcsField<'16', 'rw'>, v: number): void {
    this.store(f, this.slot(f, W16, true), v & 0xffff, -1);
  }
  write32(f: VmcsField<'32', 'rw'>, v: number): void {
    const high = KIND[f] === WHIGH;
    const s = this.slot(f, high ? WHIGH : W32, true);
    if (high) this.store(f, s, -1, v >>> 0);
    else this.store(f, s, v >>> 0, -1);
  }
  write64(f: VmcsField<'64', 'rw'>, v: bigint): void {
    const s = this.slot(f, W64, true);
    CONV64[0] = v;
    this.store(f, s, CONV32[0], CONV32[1]);
  }
  writeNat(f: VmcsField<'nat', 'rw'>, v: bigint): void {
    const s = this.slot(f, WNAT, true);
    CONV64[0] = v;
    this.store(f, s, CONV32[0], CONV32[1]);
  }
  /** A 64-bit or natural-width component from a non-negative number below 2^53. */
  writeNum(f: VmcsField<'64', 'rw'> | VmcsField<'nat', 'rw'>, v: number): void {
    const s = this.slot(f, KIND[f] === W64 ? W64 : WNAT, true);
    this.store(f, s, v >>> 0, Math.floor(v / 0x1_0000_0000) >>> 0);
  }
  /** Set the halves directly (the hot path's form for 64-bit guest state). */
  writeHalves(f: VmcsField<'64', 'rw'> | VmcsField<'nat', 'rw'>, lo: number, hi: number): void {
    const s = this.slot(f, KIND[f] === W64 ? W64 : WNAT, true);
    this.store(f, s, lo >>> 0, hi >>> 0);
  }
  /** Store halves (-1: that half is not part of the component) and bump the generations if the value changed. */
  private store(enc: number, s: number, lo: number, hi: number): void {
    if ((lo < 0 || this.lo[s] === lo) && (hi < 0 || this.hi[s] === hi)) return;
    this.bump(enc);
    if (lo >= 0) this.lo[s] = lo;
    if (hi >= 0) this.hi[s] = hi;
  }
  /**
   * GUEST_RSP/GUEST_RIP from the register cache: a write that does not bump `generation`
   * (they change at almost every exit; VM entry checks RIP on every entry instead).
   */
  writeGuestIp(f: typeof RIP_RSP[number], lo: number, hi: number): void {
    const s = this.slot(f, WNAT, true);
    this.lo[s] = lo >>> 0;
    this.hi[s] = hi >>> 0;
  }
  readHalves(f: VmcsField<'64'> | VmcsField<'nat'>, out: Int32Array | Uint32Array, i: number): void {
    const s = this.slot(f, KIND[f] === W64 ? W64 : WNAT, false);
    out[i] = this.lo[s];
    out[i + 1] = this.hi[s];
  }

  // ---- the processor saving guest state at VM exit (SDM 28.3): not VMWRITE, so `generation` stays.
  // State the exit itself stored is what the processor held, valid by construction; only fields
  // written by VMWRITE since the last entry need the VM-entry checks again.

  /**
   * Storage slot of a writable component (resolved once per field at module load, so the exit
   * path's saveSlot/loadSlot need no per-access encoding checks).
   */
  static slotOf(f: VmcsField<VmcsWidth, 'rw'>): number {
    const s = f >= 0 && f < 0x8000 ? SLOT[f] : -1;
    if (s < 0 || KIND[f] === WHIGH || READ_ONLY[f]) throw new VmcsAccessError(VmInstructionError.UNSUPPORTED_VMCS_COMPONENT, f, 'not a full writable component');
    return s;
  }
  /** Storage slot of a VM-exit information component (SDM 25.9), which the processor writes at every exit. */
  static exitSlotOf(f: VmcsField<VmcsWidth, 'ro'>): number {
    const s = f >= 0 && f < 0x8000 ? SLOT[f] : -1;
    if (s < 0 || KIND[f] === WHIGH || !READ_ONLY[f]) throw new VmcsAccessError(VmInstructionError.UNSUPPORTED_VMCS_COMPONENT, f, 'not a full VM-exit information component');
    return s;
  }
  /** Save a 16/32-bit component (or only the low half of a wider one) by slot. */
  saveSlot(slot: number, lo: number): void {
    this.lo[slot] = lo >>> 0;
  }
  saveSlotHalves(slot: number, lo: number, hi: number): void {
    this.lo[slot] = lo >>> 0;
    this.hi[slot] = hi >>> 0;
  }
  saveSlotBig(slot: number, v: bigint): void {
    this.lo[slot] = Number(v & MASK32);
    this.hi[slot] = Number((v >> 32n) & MASK32);
  }
  /** A 32-bit component by slot as a signed int32 (stays a small integer: no boxed number for values ≥ 2^31). */
  loadSlotInt(slot: number): number {
    return this.lo[slot] | 0;
  }
  loadSlot(slot: number): number {
    return this.lo[slot];
  }
  loadSlotHigh(slot: number): number {
    return this.hi[slot];
  }

  // ---- the processor recording VM-exit information (SDM 28.2): not VMWRITE, so read-only fields are writable

  exitWrite32(f: VmcsField<'32', 'ro'>, v: number): void {
    let s = f >= 0 && f < 0x8000 ? SLOT_W32[f] : -1;
    if (s < 0) s = this.slot(f, W32, false);
    this.lo[s] = v >>> 0;
  }
  /** Exit information from a number below 2^53 (the common case: no BigInt on the exit path). */
  exitWriteNum(f: VmcsField<'nat', 'ro'> | VmcsField<'64', 'ro'>, v: number): void {
    let s = f >= 0 && f < 0x8000 ? SLOT_WIDE[f] : -1;
    if (s < 0) s = this.slot(f, KIND[f] === W64 ? W64 : WNAT, false);
    this.lo[s] = v >>> 0;
    this.hi[s] = Math.floor(v / 0x1_0000_0000) >>> 0;
  }
  exitWriteNat(f: VmcsField<'nat', 'ro'> | VmcsField<'64', 'ro'>, v: bigint): void {
    const s = this.slot(f, KIND[f] === W64 ? W64 : WNAT, false);
    this.lo[s] = Number(v & MASK32);
    this.hi[s] = Number((v >> 32n) & MASK32);
  }

  // ---- VMREAD / VMWRITE by raw encoding (SDM Vol. 3C 31.3): any width, natural 64-bit operand

  /** VMREAD: the component zero-extended to 64 bits. Throws VmcsAccessError(12) for an unsupported component. */
  vmread(enc: number): bigint {
    const s = enc >= 0 && enc < 0x8000 ? SLOT[enc] : -1;
    if (s < 0) throw new VmcsAccessError(VmInstructionError.UNSUPPORTED_VMCS_COMPONENT, enc, 'no such component');
    switch (KIND[enc]) {
      case W16: return BigInt(this.lo[s] & 0xffff);
      case W32: return BigInt(this.lo[s]);
      case WHIGH: return BigInt(this.hi[s]);
      default: return (BigInt(this.hi[s]) << 32n) | BigInt(this.lo[s]);
    }
  }

  /** VMWRITE: truncates the operand to the component's width; 12 unsupported, 13 read-only. */
  vmwrite(enc: number, value: bigint): void {
    this.bump(enc);
    const s = enc >= 0 && enc < 0x8000 ? SLOT[enc] : -1;
    if (s < 0) throw new VmcsAccessError(VmInstructionError.UNSUPPORTED_VMCS_COMPONENT, enc, 'no such component');
    if (READ_ONLY[enc]) throw new VmcsAccessError(VmInstructionError.VMWRITE_READ_ONLY_COMPONENT, enc, 'VM-exit information fields are read-only');
    const v = BigInt.asUintN(64, value);
    switch (KIND[enc]) {
      case W16: this.lo[s] = Number(v & 0xffffn); break;
      case W32: this.lo[s] = Number(v & MASK32); break;
      case WHIGH: this.hi[s] = Number(v & MASK32); break;
      default:
        this.lo[s] = Number(v & MASK32);
        this.hi[s] = Number(v >> 32n);
    }
  }

  /**
   * VMCLEAR: the launch state becomes clear (the data stays, as on hardware). SDM 25.11.3:
   * the processor writes its cached VMCS data back and the VMCS is no longer its current one,
   * so nothing it held for this VMCS may be taken as loaded at the next entry (heldGeneration).
   */
  clear(): void {
    this.launched = false;
    this.heldGeneration++;
  }
}

/** The SDM's VMREAD/VMWRITE width-specific names, for readers coming from KVM's vmcs.h. */
export const vmcsRead16 = (v: Vmcs, f: VmcsField<'16'>): number => v.read16(f);
export const vmcsRead32 = (v: Vmcs, f: VmcsField<'32'>): number => v.read32(f);
export const vmcsRead64 = (v: Vmcs, f: VmcsField<'64'>): bigint => v.read64(f);
export const vmcsReadNatural = (v: Vmcs, f: VmcsField<'nat'>): bigint => v.readNat(f);
export const vmcsWrite16 = (v: Vmcs, f: VmcsField<'16', 'rw'>, x: number): void => v.write16(f, x);
export const vmcsWrite32 = (v: Vmcs, f: VmcsField<'32', 'rw'>, x: number): void => v.write32(f, x);
export const vmcsWrite64 = (v: Vmcs, f: VmcsField<'64', 'rw'>, x: bigint): void => v.write64(f, x);
export const vmcsWriteNatural = (v: Vmcs, f: VmcsField<'nat', 'rw'>, x: bigint): void => v.writeNat(f, x);
