/**
 * The processor side of AVIC (AMD APM Vol. 2 15.29): with AVIC_ENABLE set in the VMCB, guest
 * data accesses to the page at AVIC_APIC_BAR are redirected to the vCPU's APIC backing page
 * (AVIC_BACKING_PAGE) and handled as APM 15.29 describes:
 *
 * - reads of the registers the backing page holds are accelerated (no exit); the timer's current
 *   count and the reserved offsets are not (AVIC_NOACCEL, fault-like);
 * - writes to TPR and ICR high are accelerated; EOI is accelerated (the highest ISR bit is
 *   cleared and PPR recomputed) unless that vector is level-triggered (TMR set), then it is a
 *   trap-like AVIC_NOACCEL so the hypervisor can notify the IOAPIC; ICR low sends the IPI
 *   through the physical/logical APIC ID tables and the doorbell (below);
 * - writes to ID, RRR, LDR, DFR, SPIV, ESR, the LVTs, TMICT and TDCR land in the backing page and
 *   then exit trap-like (AVIC_NOACCEL with the write bit); the rest, and any write that is not an
 *   aligned 32-bit store, exit fault-like before the write;
 * - MOV CR8 reads and writes the backing page's TPR[7:4] (V_TPR follows it).
 *
 * IPIs (15.29): only fixed, edge-triggered interrupts with a vector ≥ 16 are accelerated
 * (else AVIC_INCOMPLETE_IPI "invalid interrupt type" / "invalid vector"). Each destination is
 * looked up — physical mode in the physical APIC ID table (index ≤ the table's max index, entry
 * valid), logical mode in the logical table (flat or cluster per the sender's DFR) and from there
 * in the physical table — and an invalid one makes the whole IPI AVIC_INCOMPLETE_IPI "invalid
 * target" with nothing delivered. Otherwise the vector is set in each target's backing-page IRR;
 * a target whose IsRunning bit is set gets a doorbell at its host physical APIC ID; if any was
 * not running the IPI ends in AVIC_INCOMPLETE_IPI "target not running" (the IRR bits are set,
 * the hypervisor only has to wake it). EXITINFO1 = ICR (high:low), EXITINFO2 = cause (63:32) and
 * table index (8:0); the exit is trap-like (ICR written, RIP past the store).
 *
 * The emulated processor does not inject AVIC virtual interrupts on its own: a doorbell (or an
 * accelerated TPR/EOI write that unmasks a pending vector) makes the target stop at its next
 * instruction boundary and asks KVM to evaluate the IRR, which core injects through EVENTINJ —
 * the backing page *is* the in-kernel LAPIC's register page, as in KVM (avic_get_backing_page_address
 * returns __pa(apic->regs)), so the IRR the hardware set is the one core acknowledges.
 */
import {
  APIC_ACCESS_DONE, APIC_ACCESS_DONE_TRAP, APIC_ACCESS_EXIT, ACCESS_FETCH, ACCESS_READ, ACCESS_WRITE, ApicPageHandler,
  Cr8Virtualization, GuestExit, GuestExitKind, HostMemory, X86Cpu,
  APIC_DEST_LOGICAL, APIC_DEST_NOSHORT, APIC_DEST_SELF, APIC_DEST_ALLINC, APIC_DFR, APIC_EOI, APIC_ICR, APIC_ICR2,
  APIC_INT_LEVELTRIG, APIC_IRR, APIC_ISR, APIC_MODE_MASK, APIC_PROCPRI, APIC_SHORT_MASK, APIC_TASKPRI, APIC_TMR,
  APIC_SEND_PENDING,
} from '@tsvisor/core';

/** AVIC_INCOMPLETE_IPI failure causes (EXITINFO2[63:32], APM 15.29). */
export enum AvicIpiFailure {
  INVALID_INT_TYPE = 0,
  TARGET_NOT_RUNNING = 1,
  INVALID_TARGET = 2,
  INVALID_BACKING_PAGE = 3,
  INVALID_IPI_VECTOR = 4,
}

/** Physical APIC ID table entry (APM 15.29). */
export const AVIC_PHYSICAL_ID_ENTRY_HOST_PHYSICAL_ID_MASK = 0xffn;
export const AVIC_PHYSICAL_ID_ENTRY_BACKING_PAGE_MASK = ((1n << 52n) - 1n) & ~0xfffn;
export const AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK = 1n << 62n;
export const AVIC_PHYSICAL_ID_ENTRY_VALID_MASK = 1n << 63n;
/** Logical APIC ID table entry: guest physical APIC ID 7:0, valid bit 31. */
export const AVIC_LOGICAL_ID_ENTRY_GUEST_PHYSICAL_ID_MASK = 0xff;
export const AVIC_LOGICAL_ID_ENTRY_VALID_MASK = 1 << 31;
/** AVIC_NOACCEL EXITINFO1: register offset in 11:4 (AVIC_UNACCEL_ACCESS_OFFSET_MASK), write in bit 32. */
export const AVIC_UNACCEL_ACCESS_OFFSET_MASK = 0xff0;
export const AVIC_UNACCEL_ACCESS_WRITE_BIT = 1n << 32n;

/** Register offsets (>> 4) whose reads come from the backing page (APM 15.29). */
const READ_ACCEL = new Uint8Array(0x40);
for (const o of [0x20, 0x30, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x280, 0x300, 0x310, 0x380, 0x3e0]) READ_ACCEL[o >> 4] = 1;
for (let o = 0x100; o <= 0x270; o += 0x10) READ_ACCEL[o >> 4] = 1; // ISR, TMR, IRR
for (let o = 0x320; o <= 0x370; o += 0x10) READ_ACCEL[o >> 4] = 1; // LVTs
/** Register offsets (>> 4) whose writes are trap-like AVIC_NOACCEL (KVM's is_avic_unaccelerated_access_trap less EOI/ICR, which are accelerated here). */
const WRITE_TRAP = new Uint8Array(0x40);
for (const o of [0x20, 0xc0, 0xd0, 0xe0, 0xf0, 0x280, 0x320, 0x330, 0x340, 0x350, 0x360, 0x370, 0x380, 0x3e0]) WRITE_TRAP[o >> 4] = 1;

const CR8_VALUES: readonly bigint[] = Array.from({ length: 16 }, (_, i) => BigInt(i));

/** The emulated host's doorbell wiring: host physical APIC ID → the AVIC unit of that processor. */
const doorbellsByHost = new WeakMap<HostMemory, Map<number, AvicHardware>>();
export function avicDoorbells(host: HostMemory): Map<number, AvicHardware> {
  let m = doorbellsByHost.get(host);
  if (!m) {
    m = new Map();
    doorbellsByHost.set(host, m);
  }
  return m;
}

/** One processor's AVIC unit: the ApicPageHandler and CR8 virtualization of its SVM rules. */
export class AvicHardware implements ApicPageHandler, Cr8Virtualization {
  gpaPage = -1;
  readonly hpaPage = -1;
  readonly result = new Uint32Array(2);
  /** This VMRUN's AVIC pointers (from the effective VMCB). */
  backingPage = 0;
  physicalTable = 0;
  maxPhysicalIndex = 0;
  logicalTable = 0;
  /** CR8 write trap intercepted (intercept vector 4 bit 24): MOV CR8 still exits trap-like. */
  cr8WriteTrap = false;
  /** The backing page as 32-bit registers (regs[offset >> 2]); re-resolved when backingPage moves. */
  private regs: Uint32Array = new Uint32Array(1024);
  private regsPa = -1;
  /** True while this processor runs a guest (between VMRUN and #VMEXIT): a doorbell then stops it. */
  inGuest = false;
  /**
   * Virtual-interrupt evaluation (see the file comment): called when the backing page's IRR may
   * hold a vector this vCPU can now take. Wired by the backend to KVM_REQ_EVENT.
   */
  onInterruptPending: (() => void) | null = null;
  /** Doorbells this unit received, IPIs it accelerated (for tests and statistics). */
  doorbellsReceived = 0;
  ipisAccelerated = 0;

  constructor(readonly cpu: X86Cpu, readonly host: HostMemory) {}

  /** VMRUN: take the AVIC fields of the (effective) VMCB. */
  load(apicBar: bigint, backingPage: bigint, logicalTable: bigint, physicalTable: bigint): void {
    this.gpaPage = Number(apicBar & 0x000f_ffff_ffff_f000n);
    this.backingPage = Number(backingPage & AVIC_PHYSICAL_ID_ENTRY_BACKING_PAGE_MASK);
    this.logicalTable = Number(logicalTable & AVIC_PHYSICAL_ID_ENTRY_BACKING_PAGE_MASK);
    this.physicalTable = Number(physicalTable & AVIC_PHYSICAL_ID_ENTRY_BACKING_PAGE_MASK);
    this.maxPhysicalIndex = Number(physicalTable & 0xffn);
    if (this.regsPa !== this.backingPage) {
      const r = this.host.find(this.backingPage);
      if (r !== null && this.backingPage + 4096 <= r.base + r.bytes.length) {
        this.regs = new Uint32Array(r.bytes.buffer, r.bytes.byteOffset + (this.backingPage - r.base), 1024);
      } else {
        // A backing page outside host memory: as on a machine with nothing at that address, the
        // registers read as all-ones and what the guest writes there is lost (counted as stray).
        this.host.strayAccesses++;
        this.regs = new Uint32Array(1024).fill(0xffffffff);
      }
      this.regsPa = this.backingPage;
    }
  }

  /** The doorbell (MSR_AMD64_SVM_AVIC_DOORBELL or a hardware-sent IPI): re-evaluate the IRR. */
  doorbell(): void {
    this.doorbellsReceived++;
    this.onInterruptPending?.();
    if (this.inGuest) this.cpu.kick = true;
  }

  // ---------------------------------------------------------------- ApicPageHandler

  access(offset: number, size: number, kind: number, valueLo: number, _valueHi: number, exit: GuestExit): number {
    const reg = offset & AVIC_UNACCEL_ACCESS_OFFSET_MASK;
    const idx = reg >> 4;
    if (kind === 2) return this.noAccel(exit, reg, ACCESS_FETCH, false);
    if (kind === 0) {
      const within = offset & 0xf;
      if (offset >= 0x400 || within + size > 4 || READ_ACCEL[idx] === 0) return this.noAccel(exit, reg, ACCESS_READ, false);
      const v = this.regs[reg >> 2] >>> (within * 8);
      this.result[0] = size === 4 ? v : v & (size === 1 ? 0xff : 0xffff);
      this.result[1] = 0;
      return APIC_ACCESS_DONE;
    }
    if (offset >= 0x400 || (offset & 0xf) !== 0 || size !== 4) return this.noAccel(exit, reg, ACCESS_WRITE, false);
    const v = valueLo >>> 0;
    switch (reg) {
      case APIC_TASKPRI:
        this.setTpr(v & 0xff);
        return APIC_ACCESS_DONE;
      case APIC_ICR2:
        this.regs[APIC_ICR2 >> 2] = v;
        return APIC_ACCESS_DONE;
      case APIC_EOI:
        return this.eoi(v, exit);
      case APIC_ICR:
        this.regs[APIC_ICR >> 2] = v & ~APIC_SEND_PENDING;
        return this.sendIpi(v, this.regs[APIC_ICR2 >> 2] >>> 0, exit);
      default:
        if (WRITE_TRAP[idx] === 0) return this.noAccel(exit, reg, ACCESS_WRITE, false);
        this.regs[reg >> 2] = v;
        return this.noAccel(exit, reg, ACCESS_WRITE, true);
    }
  }

  // ---------------------------------------------------------------- Cr8Virtualization

  read(): number {
    return (this.regs[APIC_TASKPRI >> 2] >>> 4) & 0xf;
  }
  write(v: number, exit: GuestExit): number {
    this.setTpr(v << 4);
    if (!this.cr8WriteTrap) return APIC_ACCESS_DONE;
    exit.kind = GuestExitKind.CR_WRITE_TRAP;
    exit.crNumber = 8;
    exit.value = CR8_VALUES[v & 0xf];
    return APIC_ACCESS_DONE_TRAP;
  }

  // ---------------------------------------------------------------- accelerated registers

  /** TPR write: the backing page's TPR and PPR, V_TPR (the processor's CR8); a lowered TPR may unmask an IRR vector. */
  private setTpr(tpr: number): void {
    this.regs[APIC_TASKPRI >> 2] = tpr;
    const s = this.cpu.state;
    s.cr8 = CR8_VALUES[(tpr >>> 4) & 0xf];
    // A CR8 write outside writeCr: counted (CpuState.sysWrites), or #VMEXIT would keep V_TPR as VMRUN loaded it.
    s.sysWrites++;
    this.updatePpr();
    this.evaluate();
  }

  /** PPR = TPR if TPR[7:4] ≥ the highest in-service class, else that class (SDM 10.8.3.1). */
  private updatePpr(): void {
    const tpr = this.regs[APIC_TASKPRI >> 2] & 0xff;
    const isrv = this.highest(APIC_ISR);
    this.regs[APIC_PROCPRI >> 2] = isrv < 0 || (tpr & 0xf0) >= (isrv & 0xf0) ? tpr : isrv & 0xf0;
  }

  /** The highest vector set in the 256-bit register at `base` in a backing page (this one by default), or -1. */
  private highest(base: number, regs: Uint32Array = this.regs): number {
    for (let i = 7; i >= 0; i--) {
      const w = regs[(base >> 2) + i * 4];
      if (w !== 0) return i * 32 + 31 - Math.clz32(w);
    }
    return -1;
  }

  /** A pending IRR vector whose class beats PPR can be taken now: evaluate (see the file comment). */
  private evaluate(): void {
    const irr = this.highest(APIC_IRR);
    if (irr >= 0 && (irr & 0xf0) > (this.regs[APIC_PROCPRI >> 2] & 0xf0)) {
      this.onInterruptPending?.();
      this.cpu.kick = true;
    }
  }

  /** EOI: retire the highest in-service vector; a level-triggered one traps so the hypervisor can EOI the IOAPIC. */
  private eoi(v: number, exit: GuestExit): number {
    this.regs[APIC_EOI >> 2] = v;
    const vec = this.highest(APIC_ISR);
    if (vec < 0) return APIC_ACCESS_DONE;
    const word = (vec >> 5) * 4;
    const bit = 1 << (vec & 31);
    if (this.regs[(APIC_TMR >> 2) + word] & bit) {
      this.noAccel(exit, APIC_EOI, ACCESS_WRITE, true);
      exit.vector = vec;
      return APIC_ACCESS_DONE_TRAP;
    }
    this.regs[(APIC_ISR >> 2) + word] &= ~bit;
    this.updatePpr();
    this.evaluate();
    return APIC_ACCESS_DONE;
  }

  // ---------------------------------------------------------------- IPIs

  /** Scratch: the physical-table indexes an IPI reaches. */
  private readonly targets = new Int32Array(256);

  private sendIpi(icrl: number, icrh: number, exit: GuestExit): number {
    const vector = icrl & 0xff;
    const mode = (icrl & APIC_MODE_MASK) >>> 8;
    if (mode !== 0 || (icrl & APIC_INT_LEVELTRIG) !== 0) return this.incompleteIpi(exit, icrl, icrh, AvicIpiFailure.INVALID_INT_TYPE, 0);
    if (vector < 16) return this.incompleteIpi(exit, icrl, icrh, AvicIpiFailure.INVALID_IPI_VECTOR, 0);
    const shorthand = icrl & APIC_SHORT_MASK;
    let n = 0;
    if (shorthand === APIC_DEST_SELF) {
      // The sender's own backing page: no table lookup, no doorbell.
      this.regs[(APIC_IRR >> 2) + (vector >> 5) * 4] |= 1 << (vector & 31);
      this.ipisAccelerated++;
      this.evaluate();
      return APIC_ACCESS_DONE;
    }
    const dest = icrh >>> 24;
    if (shorthand !== APIC_DEST_NOSHORT || dest === 0xff) {
      // Broadcast: every valid physical-table entry (all-but-self skips the sender's own page).
      for (let id = 0; id <= this.maxPhysicalIndex && id < 0xff; id++) {
        const e = this.host.read64(this.physicalTable + id * 8);
        if (!(e & AVIC_PHYSICAL_ID_ENTRY_VALID_MASK)) continue;
        if (shorthand !== APIC_DEST_ALLINC && shorthand !== APIC_DEST_NOSHORT &&
          Number(e & AVIC_PHYSICAL_ID_ENTRY_BACKING_PAGE_MASK) === this.backingPage) continue;
        this.targets[n++] = id;
      }
    } else if (!(icrl & APIC_DEST_LOGICAL)) {
      if (dest > this.maxPhysicalIndex || !(this.host.read64(this.physicalTable + dest * 8) & AVIC_PHYSICAL_ID_ENTRY_VALID_MASK)) {
        return this.incompleteIpi(exit, icrl, icrh, AvicIpiFailure.INVALID_TARGET, dest);
      }
      this.targets[n++] = dest;
    } else {
      // Logical: flat (8-bit mask, entries 0–7) or cluster (cluster 7:4, mask 3:0 → entry cluster*4 + bit), per the sender's DFR.
      const flat = (this.regs[APIC_DFR >> 2] >>> 28) === 0xf;
      const mask = flat ? dest : dest & 0xf;
      const base = flat ? 0 : (dest >>> 4) * 4;
      if (!flat && dest >>> 4 === 0xf) return this.incompleteIpi(exit, icrl, icrh, AvicIpiFailure.INVALID_TARGET, 0);
      for (let b = 0; b < 8; b++) {
        if (!((mask >>> b) & 1)) continue;
        const index = base + b;
        const le = this.host.read32(this.logicalTable + index * 4);
        if (!(le & AVIC_LOGICAL_ID_ENTRY_VALID_MASK)) return this.incompleteIpi(exit, icrl, icrh, AvicIpiFailure.INVALID_TARGET, index);
        const id = le & AVIC_LOGICAL_ID_ENTRY_GUEST_PHYSICAL_ID_MASK;
        if (id > this.maxPhysicalIndex || !(this.host.read64(this.physicalTable + id * 8) & AVIC_PHYSICAL_ID_ENTRY_VALID_MASK)) {
          return this.incompleteIpi(exit, icrl, icrh, AvicIpiFailure.INVALID_TARGET, index);
        }
        this.targets[n++] = id;
      }
    }
    let notRunning = -1;
    for (let k = 0; k < n; k++) {
      const id = this.targets[k];
      const e = this.host.read64(this.physicalTable + id * 8);
      const bp = Number(e & AVIC_PHYSICAL_ID_ENTRY_BACKING_PAGE_MASK);
      if (bp === 0 || this.host.find(bp) === null) return this.incompleteIpi(exit, icrl, icrh, AvicIpiFailure.INVALID_BACKING_PAGE, id);
      const irr = bp + APIC_IRR + (vector >> 5) * 0x10;
      this.host.write32(irr, this.host.read32(irr) | (1 << (vector & 31)));
      if (bp === this.backingPage) this.evaluate();
      else if (e & AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK) avicDoorbells(this.host).get(Number(e & AVIC_PHYSICAL_ID_ENTRY_HOST_PHYSICAL_ID_MASK))?.doorbell();
      else if (notRunning < 0) notRunning = id;
    }
    if (notRunning >= 0) return this.incompleteIpi(exit, icrl, icrh, AvicIpiFailure.TARGET_NOT_RUNNING, notRunning);
    this.ipisAccelerated++;
    return APIC_ACCESS_DONE;
  }

  // ---------------------------------------------------------------- exits

  /** AVIC_NOACCEL: fault-like (the access does not happen) or, for `trap`, after the write completed. */
  private noAccel(exit: GuestExit, reg: number, access: number, trap: boolean): number {
    exit.kind = trap ? GuestExitKind.APIC_WRITE : GuestExitKind.APIC_ACCESS;
    exit.gpa = BigInt(reg);
    exit.access = access;
    exit.vector = 0;
    return trap ? APIC_ACCESS_DONE_TRAP : APIC_ACCESS_EXIT;
  }

  /** AVIC_INCOMPLETE_IPI, trap-like: the ICR holds the value and the store retired. */
  private incompleteIpi(exit: GuestExit, icrl: number, icrh: number, cause: AvicIpiFailure, index: number): number {
    exit.kind = GuestExitKind.INCOMPLETE_IPI;
    exit.value = (BigInt(icrh >>> 0) << 32n) | BigInt(icrl >>> 0);
    exit.errorCode = cause;
    exit.vector = index & 0x1ff;
    return APIC_ACCESS_DONE_TRAP;
  }
}
