/**
 * The local APIC (arch/x86/kvm/lapic.c semantics; SDM Vol. 3A ch. 10): xAPIC registers in a
 * 4 KiB page laid out as the hardware's (so APICv's virtual-APIC page and AVIC's backing page
 * can mirror it), x2APIC through MSRs 0x800–0x8FF, IRR/ISR/TMR, TPR/PPR, EOI, the six LVTs,
 * the timer in one-shot, periodic and TSC-deadline modes, IPIs through the ICR, INIT and SIPI.
 *
 * Who touches it: the vCPU's own context (MMIO, MSRs, the run loop's acknowledge/accept-events),
 * and other vCPUs or the IOAPIC/MSI path through `acceptIrq` (sets IRR and requests an event).
 */
import type { KvmVcpu } from '../kvm/vcpu';
import { KvmMpState, KvmReq } from '../kvm/vcpu';
import type { KvmTimer } from '../kvm/clock';
import { guestCpuidHas } from '../kvm/cpuid';
import {
  APIC_ARBPRI, APIC_DEST_ALLBUT, APIC_DEST_ALLINC, APIC_DEST_LOGICAL, APIC_DEST_NOSHORT, APIC_DEST_SELF, APIC_DFR,
  APIC_DFR_CLUSTER, APIC_DFR_FLAT, APIC_EOI, APIC_ESR, APIC_ESR_RECV_ILLEGAL_VECTOR, APIC_ESR_SEND_ILLEGAL_VECTOR,
  APIC_ICR, APIC_ICR2, APIC_ID, APIC_INT_ASSERT, APIC_INT_LEVELTRIG, APIC_IRR, APIC_ISR, APIC_LDR, APIC_LVR,
  APIC_LVR_VALUE, APIC_LVT_LEVEL_TRIGGER, APIC_LVT_MASKED, APIC_LVT_TIMER_MASK, APIC_LVT_TIMER_PERIODIC,
  APIC_LVT_TIMER_TSCDEADLINE, APIC_LVT_WRITE_MASK, APIC_LVT0, APIC_LVT1, APIC_LVTERR, APIC_LVTPC, APIC_LVTT,
  APIC_LVTTHMR, APIC_MODE_MASK, APIC_PROCPRI, APIC_SELF_IPI, APIC_SHORT_MASK, APIC_SPIV, APIC_SPIV_APIC_ENABLED,
  APIC_SPIV_FOCUS_DISABLED, APIC_TASKPRI, APIC_TDCR, APIC_TMCCT, APIC_TMICT, APIC_TMR, APIC_BROADCAST,
  ApicDeliveryMode, APIC_DEFAULT_PHYS_BASE, KVM_APIC_LVT_NUM, MIN_TIMER_PERIOD_NS, MSR_IA32_APICBASE_BASE, MSR_IA32_APICBASE_BSP,
  MSR_IA32_APICBASE_ENABLE, X2APIC_BROADCAST, X2APIC_ENABLE, X2APIC_MSR_BASE,
} from './apic-regs';
import type { KvmIrqchip } from './irqchip';

/** An interrupt message (struct kvm_lapic_irq): what an ICR write, an IOAPIC pin or an MSI sends. */
export interface KvmLapicIrq {
  vector: number;
  deliveryMode: ApicDeliveryMode;
  /** Logical (true) or physical destination mode. */
  destModeLogical: boolean;
  /** Level: assert (true) / de-assert. */
  level: boolean;
  /** Trigger: level-triggered (true) or edge. */
  levelTriggered: boolean;
  /** APIC_DEST_NOSHORT / SELF / ALLINC / ALLBUT. */
  shorthand: number;
  destId: number;
}

/** Pending INIT / SIPI (apic->pending_events). */
const KVM_APIC_INIT = 1;
const KVM_APIC_SIPI = 2;

/** Registers a read may name (KVM's valid_reg_mask), by offset >> 4. */
const READABLE = new Set<number>([
  APIC_ID, APIC_LVR, APIC_TASKPRI, APIC_PROCPRI, APIC_LDR, APIC_SPIV, APIC_ESR, APIC_ICR,
  APIC_LVTT, APIC_LVTTHMR, APIC_LVTPC, APIC_LVT0, APIC_LVT1, APIC_LVTERR, APIC_TMICT, APIC_TMCCT, APIC_TDCR,
  ...[0, 1, 2, 3, 4, 5, 6, 7].flatMap((i) => [APIC_ISR + i * 0x10, APIC_TMR + i * 0x10, APIC_IRR + i * 0x10]),
]);

export class KvmLapic {
  /** The APIC register page: register at offset `o` is regs[o >> 2] (apic->regs). */
  readonly regs = new Uint32Array(1024);
  /** The timer (apic->lapic_timer). */
  readonly timer: KvmTimer;
  /** Timer state: period in ns (0: not running), absolute target in ns, guest-TSC deadline. */
  private period = 0;
  private target = 0;
  tscDeadline = 0n;
  private timerMode = 0;
  private divideCount = 2;
  /** Errors detected since the last ESR write (the visible ESR is latched from this on write). */
  private esrPending = 0;
  pendingEvents = 0;
  sipiVector = 0;

  constructor(readonly vcpu: KvmVcpu, readonly irqchip: KvmIrqchip) {
    this.timer = vcpu.kvm.clock.createTimer(() => this.timerExpired(), vcpu);
  }

  // ---------------------------------------------------------------- register page

  getReg(off: number): number {
    return this.regs[off >> 2] >>> 0;
  }
  setReg(off: number, v: number): void {
    this.regs[off >> 2] = v >>> 0;
  }

  private testVec(base: number, vec: number): boolean {
    return ((this.regs[(base >> 2) + (vec >> 5) * 4] >>> (vec & 31)) & 1) === 1;
  }
  private setVec(base: number, vec: number): void {
    this.regs[(base >> 2) + (vec >> 5) * 4] |= 1 << (vec & 31);
  }
  private clearVec(base: number, vec: number): void {
    this.regs[(base >> 2) + (vec >> 5) * 4] &= ~(1 << (vec & 31));
  }
  /** Highest set vector in the IRR/ISR/TMR block at `base`, or -1. */
  private highest(base: number): number {
    for (let i = 7; i >= 0; i--) {
      const w = this.regs[(base >> 2) + i * 4];
      if (w) return i * 32 + 31 - Math.clz32(w);
    }
    return -1;
  }
  highestIrr(): number {
    return this.highest(APIC_IRR);
  }
  highestIsr(): number {
    return this.highest(APIC_ISR);
  }
  irrPending(vec: number): boolean {
    return this.testVec(APIC_IRR, vec);
  }
  isrSet(vec: number): boolean {
    return this.testVec(APIC_ISR, vec);
  }
  tmrSet(vec: number): boolean {
    return this.testVec(APIC_TMR, vec);
  }

  // ---------------------------------------------------------------- mode

  get apicBase(): bigint {
    return this.vcpu.arch.apicBase;
  }
  /** IA32_APIC_BASE.EN (kvm_apic_hw_enabled). */
  get hwEnabled(): boolean {
    return (this.vcpu.arch.apicBase & MSR_IA32_APICBASE_ENABLE) !== 0n;
  }
  /** SVR.APIC software enable (kvm_apic_sw_enabled). */
  get swEnabled(): boolean {
    return (this.getReg(APIC_SPIV) & APIC_SPIV_APIC_ENABLED) !== 0;
  }
  /** Hardware and software enabled (apic_enabled). */
  get enabled(): boolean {
    return this.hwEnabled && this.swEnabled;
  }
  get x2apicMode(): boolean {
    return (this.vcpu.arch.apicBase & X2APIC_ENABLE) !== 0n;
  }
  /** Guest-physical base of the xAPIC page. */
  get mmioBase(): number {
    return Number(this.vcpu.arch.apicBase & MSR_IA32_APICBASE_BASE);
  }
  get isBsp(): boolean {
    return (this.vcpu.arch.apicBase & MSR_IA32_APICBASE_BSP) !== 0n;
  }
  /** The APIC ID: 32 bits in x2APIC mode, bits 31:24 of the ID register in xAPIC mode. */
  get id(): number {
    return this.x2apicMode ? this.getReg(APIC_ID) : this.getReg(APIC_ID) >>> 24;
  }

  private setX2apicId(id: number): void {
    this.setReg(APIC_ID, id);
    this.setReg(APIC_LDR, (((id >>> 4) << 16) | (1 << (id & 0xf))) >>> 0);
  }

  // ---------------------------------------------------------------- reset (kvm_lapic_reset)

  /** RESET (`initEvent` false) or INIT: SDM 10.4.7.1 / 10.12.5.1; the ID survives an INIT. */
  reset(initEvent: boolean): void {
    this.timer.cancel();
    const arch = this.vcpu.arch;
    if (!initEvent) {
      // kvm_lapic_reset: RESET puts the APIC back at the default base, enabled, in xAPIC mode.
      const old = arch.apicBase;
      arch.apicBase = BigInt(APIC_DEFAULT_PHYS_BASE) | MSR_IA32_APICBASE_ENABLE | (old & MSR_IA32_APICBASE_BSP);
      if ((old ^ arch.apicBase) & MSR_IA32_APICBASE_BASE) this.irqchip.lapicMmioMoved();
    }
    const x2 = this.x2apicMode;
    const id = initEvent ? this.getReg(APIC_ID) : (this.vcpu.vcpuId & 0xff) << 24;
    const ldr = this.getReg(APIC_LDR);
    this.regs.fill(0);
    this.setReg(APIC_ID, id);
    if (x2) this.setReg(APIC_LDR, ldr); // INIT keeps x2APIC mode and its derived logical ID
    else this.setReg(APIC_DFR, 0xffffffff);
    this.setReg(APIC_LVR, APIC_LVR_VALUE);
    for (let i = 0; i < KVM_APIC_LVT_NUM; i++) this.setReg(APIC_LVTT + 0x10 * i, APIC_LVT_MASKED);
    // KVM_X86_QUIRK_LINT0_REENABLED: the BSP's LINT0 is ExtINT so the 8259 works out of reset (virtual wire).
    if (this.isBsp) this.setReg(APIC_LVT0, ApicDeliveryMode.EXTINT << 8);
    this.setReg(APIC_SPIV, 0xff);
    this.period = 0;
    this.target = 0;
    this.tscDeadline = 0n;
    this.timerMode = 0;
    this.updateDivideCount();
    this.esrPending = 0;
    if (!initEvent) {
      this.pendingEvents = 0;
      this.sipiVector = 0;
    }
    this.updatePpr();
    this.vcpu.arch.cr8 = 0n;
  }

  /**
   * kvm_lapic_set_base: IA32_APIC_BASE changed (already validated by the caller). Entering the
   * disabled state resets the registers (SDM 10.4.3, 10.12.5.1: x2APIC state is not preserved
   * across mode transitions); entering x2APIC mode makes the ID the 32-bit x2APIC ID.
   */
  baseChanged(old: bigint, value: bigint): void {
    if ((old & MSR_IA32_APICBASE_ENABLE) && !(value & MSR_IA32_APICBASE_ENABLE)) {
      const id = (old & X2APIC_ENABLE) ? this.getReg(APIC_ID) : this.getReg(APIC_ID) >>> 24;
      this.reset(true);
      this.setReg(APIC_ID, (id & 0xff) << 24);
    }
    if (!(old & X2APIC_ENABLE) && (value & X2APIC_ENABLE)) this.setX2apicId(this.vcpu.vcpuId);
    if ((old ^ value) & MSR_IA32_APICBASE_BASE) this.irqchip.lapicMmioMoved();
    this.vcpu.makeRequest(KvmReq.EVENT);
  }

  // ---------------------------------------------------------------- priorities

  /** apic_update_ppr (SDM 10.8.3.1): PPR = TPR if TPR's class ≥ ISRV's, else ISRV's class. */
  updatePpr(): void {
    const tpr = this.getReg(APIC_TASKPRI) & 0xff;
    const isrv = this.highestIsr();
    const ppr = isrv < 0 || (tpr & 0xf0) >= (isrv & 0xf0) ? tpr : isrv & 0xf0;
    const old = this.getReg(APIC_PROCPRI);
    this.setReg(APIC_PROCPRI, ppr);
    if (ppr < old && this.highestIrr() >= 0) this.vcpu.makeRequest(KvmReq.EVENT);
  }

  /** apic_set_tpr; CR8 mirrors TPR[7:4] (kvm_lapic_set_tpr / kvm_lapic_get_cr8). */
  setTpr(tpr: number): void {
    this.setReg(APIC_TASKPRI, tpr & 0xff);
    this.vcpu.arch.cr8 = BigInt((tpr >> 4) & 0xf);
    this.updatePpr();
  }

  /** The run loop: pick up a CR8 value the backend stored (MOV to CR8 changes TPR). */
  syncCr8(): void {
    // (CR8 bits 63:4 are reserved and always 0, SDM 2.5: Number() of the small value allocates nothing.)
    const c = this.vcpu.arch.cr8;
    const cr8 = c <= 0xfn ? Number(c) : Number(c & 0xfn);
    if (cr8 !== this.getReg(APIC_TASKPRI) >> 4) this.setTpr(cr8 << 4);
  }

  /** apic_has_interrupt_for_ppr: the highest IRR vector whose class beats PPR, or -1. */
  hasInterrupt(): number {
    if (!this.hwEnabled) return -1;
    const irr = this.highestIrr();
    if (irr < 0) return -1;
    return (irr & 0xf0) > (this.getReg(APIC_PROCPRI) & 0xf0) ? irr : -1;
  }

  /** kvm_get_apic_interrupt: move the vector from IRR to ISR. */
  ackInterrupt(): number {
    const v = this.hasInterrupt();
    if (v < 0) return -1;
    this.clearVec(APIC_IRR, v);
    this.setVec(APIC_ISR, v);
    this.updatePpr();
    this.vcpu.kvm.trace('kvm_apic_accept_irq', this.vcpu, () => `apicid ${this.id} vec ${v}`);
    return v;
  }

  /** apic_set_eoi: retire the highest ISR vector; a level-triggered one is broadcast to the IOAPIC. */
  setEoi(): void {
    const v = this.highestIsr();
    if (v < 0) return;
    this.clearVec(APIC_ISR, v);
    this.updatePpr();
    if (this.testVec(APIC_TMR, v)) this.irqchip.ioapic.eoi(v);
    this.vcpu.makeRequest(KvmReq.EVENT);
  }

  /** kvm_apic_accept_pic_intr: LINT0 takes the 8259's output (ExtINT unmasked, or APIC disabled). */
  acceptPicIntr(): boolean {
    const lvt0 = this.getReg(APIC_LVT0);
    if (!this.hwEnabled) return true;
    return (lvt0 & APIC_LVT_MASKED) === 0 && ((lvt0 & APIC_MODE_MASK) >> 8) === ApicDeliveryMode.EXTINT;
  }

  // ---------------------------------------------------------------- accepting interrupts

  /** __apic_accept_irq: returns 1 if the interrupt was accepted. */
  acceptIrq(mode: ApicDeliveryMode, vector: number, level: boolean, levelTriggered: boolean): number {
    const vcpu = this.vcpu;
    switch (mode) {
      case ApicDeliveryMode.LOWEST:
      case ApicDeliveryMode.FIXED:
        if (levelTriggered && !level) return 0; // a level de-assert message carries no interrupt
        if (!this.enabled) return 0;
        if (vector < 16) {
          // SDM 10.5.3: vectors 0–15 are illegal; the receiver logs it and drops the interrupt.
          this.reportError(APIC_ESR_RECV_ILLEGAL_VECTOR);
          return 0;
        }
        if (levelTriggered) this.setVec(APIC_TMR, vector);
        else this.clearVec(APIC_TMR, vector);
        this.setVec(APIC_IRR, vector);
        vcpu.makeRequest(KvmReq.EVENT);
        return 1;
      case ApicDeliveryMode.NMI:
        vcpu.arch.nmiPending++;
        vcpu.makeRequest(KvmReq.NMI | KvmReq.EVENT);
        return 1;
      case ApicDeliveryMode.SMI:
        vcpu.makeRequest(KvmReq.SMI | KvmReq.EVENT);
        return 1;
      case ApicDeliveryMode.INIT:
        if (levelTriggered && !level) return 0; // INIT level de-assert: no effect (SDM 10.6.1)
        this.pendingEvents = KVM_APIC_INIT;
        vcpu.makeRequest(KvmReq.EVENT);
        return 1;
      case ApicDeliveryMode.STARTUP:
        this.sipiVector = vector;
        this.pendingEvents |= KVM_APIC_SIPI;
        vcpu.makeRequest(KvmReq.EVENT);
        return 1;
      default:
        // ExtINT is polled through LINT0 (acceptPicIntr); remote read is not supported.
        return 0;
    }
  }

  /** kvm_apic_local_deliver: raise the interrupt an LVT entry describes, unless masked. */
  localDeliver(lvt: number): number {
    const reg = this.getReg(lvt);
    if (!this.hwEnabled || (reg & APIC_LVT_MASKED)) return 0;
    const mode = ((reg & APIC_MODE_MASK) >> 8) as ApicDeliveryMode;
    return this.acceptIrq(mode, reg & 0xff, true, (reg & APIC_LVT_LEVEL_TRIGGER) !== 0);
  }

  private reportError(bits: number): void {
    const fresh = bits & ~this.esrPending;
    this.esrPending |= bits;
    if (fresh && lvtErrorIsValid(this.getReg(APIC_LVTERR))) this.localDeliver(APIC_LVTERR);
  }

  // ---------------------------------------------------------------- INIT / SIPI

  /**
   * kvm_apic_accept_events, in the vCPU's own context: INIT resets the vCPU (an AP then waits
   * for SIPI); SIPI starts a waiting AP in real mode at vector << 8 : 0.
   */
  acceptEvents(): void {
    const pe = this.pendingEvents;
    if (!pe) return;
    this.pendingEvents = 0;
    const vcpu = this.vcpu;
    if (pe & KVM_APIC_INIT) {
      this.irqchip.resetVcpu(vcpu, true);
      vcpu.arch.mpState = this.isBsp ? KvmMpState.RUNNABLE : KvmMpState.INIT_RECEIVED;
      vcpu.kvm.trace('kvm_apic', vcpu, 'INIT');
    }
    if ((pe & KVM_APIC_SIPI) && vcpu.arch.mpState === KvmMpState.INIT_RECEIVED) {
      this.irqchip.deliverSipiVector(vcpu, this.sipiVector);
      vcpu.arch.mpState = KvmMpState.RUNNABLE;
      vcpu.kvm.trace('kvm_apic', vcpu, () => `SIPI vector 0x${this.sipiVector.toString(16)}`);
    }
  }

  // ---------------------------------------------------------------- destinations

  /** kvm_apic_match_physical_addr. */
  matchPhysical(mda: number): boolean {
    if (this.x2apicMode) return mda === X2APIC_BROADCAST || mda === this.getReg(APIC_ID);
    return mda === APIC_BROADCAST || mda === this.id;
  }

  /** kvm_apic_match_logical_addr: flat / cluster (xAPIC per DFR) or x2APIC cluster. */
  matchLogical(mda: number): boolean {
    const ldr = this.getReg(APIC_LDR);
    if (this.x2apicMode) {
      if (mda === X2APIC_BROADCAST) return true;
      return (ldr >>> 16) === (mda >>> 16) && (ldr & mda & 0xffff) !== 0;
    }
    const m = mda & 0xff;
    if (m === APIC_BROADCAST) return true;
    const lid = ldr >>> 24;
    switch (this.getReg(APIC_DFR) >>> 28) {
      case APIC_DFR_FLAT: return (lid & m) !== 0;
      case APIC_DFR_CLUSTER: return ((lid ^ m) & 0xf0) === 0 && (lid & m & 0xf) !== 0;
      default: return false;
    }
  }

  /** kvm_apic_match_dest. `source` is the sending LAPIC for IPIs, null for IOAPIC/MSI messages. */
  matchDest(source: KvmLapic | null, shorthand: number, destId: number, logical: boolean): boolean {
    switch (shorthand) {
      case APIC_DEST_NOSHORT: {
        // An 8-bit broadcast from the IOAPIC or an MSI reaches x2APIC targets too (KVM's quirk).
        const mda = !source && destId === APIC_BROADCAST && this.x2apicMode ? X2APIC_BROADCAST : destId >>> 0;
        return logical ? this.matchLogical(mda) : this.matchPhysical(mda);
      }
      case APIC_DEST_SELF: return source === this;
      case APIC_DEST_ALLINC: return true;
      case APIC_DEST_ALLBUT: return source !== this;
      default: return false;
    }
  }

  // ---------------------------------------------------------------- register reads

  /** kvm_lapic_reg_read for a 32-bit register at `off`; undefined for a register that cannot be read. */
  readRegister(off: number): number | undefined {
    if (off === APIC_ARBPRI || off === APIC_DFR) return this.x2apicMode ? undefined : this.getReg(off);
    if (off === APIC_ICR2) return this.x2apicMode ? undefined : this.getReg(off);
    if (!READABLE.has(off)) return undefined;
    switch (off) {
      case APIC_TMCCT: return this.currentCount();
      case APIC_PROCPRI: this.updatePpr(); return this.getReg(off);
      case APIC_ESR: return this.getReg(off);
      default: return this.getReg(off);
    }
  }

  // ---------------------------------------------------------------- register writes

  /** kvm_lapic_reg_write. Returns false when the write is invalid (x2APIC: #GP). */
  writeRegister(off: number, val: number): boolean {
    val >>>= 0;
    this.vcpu.kvm.trace('kvm_apic', this.vcpu, () => `apic_write 0x${off.toString(16)} = 0x${val.toString(16)}`);
    const x2 = this.x2apicMode;
    switch (off) {
      case APIC_ID:
        if (x2) return false;
        this.setReg(APIC_ID, val & 0xff000000);
        return true;
      case APIC_TASKPRI:
        this.setTpr(val & 0xff);
        return true;
      case APIC_EOI:
        this.setEoi();
        return true;
      case APIC_LDR:
        if (x2) return false;
        this.setReg(APIC_LDR, val & 0xff000000);
        return true;
      case APIC_DFR:
        if (x2) return false;
        this.setReg(APIC_DFR, (val | 0x0fffffff) >>> 0);
        return true;
      case APIC_SPIV: {
        this.setReg(APIC_SPIV, val & (0xff | APIC_SPIV_APIC_ENABLED | APIC_SPIV_FOCUS_DISABLED));
        if (!(val & APIC_SPIV_APIC_ENABLED)) {
          // SDM 10.4.7.2: software-disabling masks every LVT entry.
          for (let i = 0; i < KVM_APIC_LVT_NUM; i++) {
            const r = APIC_LVTT + 0x10 * i;
            this.setReg(r, this.getReg(r) | APIC_LVT_MASKED);
          }
        }
        this.vcpu.makeRequest(KvmReq.EVENT);
        return true;
      }
      case APIC_ICR:
        this.setReg(APIC_ICR, val & ~(1 << 12)); // delivery status always reads idle
        this.sendIpi(val, this.getReg(APIC_ICR2));
        return true;
      case APIC_ICR2:
        if (x2) return false;
        this.setReg(APIC_ICR2, val & 0xff000000);
        return true;
      case APIC_LVTT:
      case APIC_LVTTHMR:
      case APIC_LVTPC:
      case APIC_LVT0:
      case APIC_LVT1:
      case APIC_LVTERR: {
        const idx = (off - APIC_LVTT) >> 4;
        let v = val;
        if (!this.swEnabled) v |= APIC_LVT_MASKED;
        let mask = APIC_LVT_WRITE_MASK[idx];
        if (off === APIC_LVTT) mask |= this.timerModeMask();
        this.setReg(off, v & mask);
        if (off === APIC_LVTT) this.updateLvtt();
        return true;
      }
      case APIC_TMICT:
        if (this.timerMode === APIC_LVT_TIMER_TSCDEADLINE) return true; // ignored in TSC-deadline mode
        this.timer.cancel();
        this.setReg(APIC_TMICT, val);
        this.startTimer();
        return true;
      case APIC_TDCR: {
        const oldDivide = this.divideCount;
        this.setReg(APIC_TDCR, val & 0xb);
        this.updateDivideCount();
        if (this.divideCount !== oldDivide && this.period && this.timer.armed) {
          // Keep the remaining count: the remaining time scales with the divisor.
          const now = this.now();
          const left = Math.max(0, this.target - now) * this.divideCount / oldDivide;
          this.period = this.period * this.divideCount / oldDivide;
          this.target = now + left;
          this.timer.arm(this.target);
        }
        return true;
      }
      case APIC_ESR:
        if (x2 && val !== 0) return false;
        // SDM 10.5.3: a write latches the errors seen since the last write into the register.
        this.setReg(APIC_ESR, this.esrPending);
        this.esrPending = 0;
        return true;
      case APIC_SELF_IPI:
        if (!x2) return false;
        return this.writeRegister(APIC_ICR, APIC_DEST_SELF | (val & 0xff));
      default:
        return false;
    }
  }

  /** kvm_apic_send_ipi: decode ICR (low, high) and deliver. */
  private sendIpi(low: number, high: number): void {
    const irq: KvmLapicIrq = {
      vector: low & 0xff,
      deliveryMode: ((low >> 8) & 7) as ApicDeliveryMode,
      destModeLogical: (low & APIC_DEST_LOGICAL) !== 0,
      level: (low & APIC_INT_ASSERT) !== 0,
      levelTriggered: (low & APIC_INT_LEVELTRIG) !== 0,
      shorthand: low & APIC_SHORT_MASK,
      destId: this.x2apicMode ? high >>> 0 : (high >>> 24) & 0xff,
    };
    if ((irq.deliveryMode === ApicDeliveryMode.FIXED || irq.deliveryMode === ApicDeliveryMode.LOWEST) && irq.vector < 16) {
      this.reportError(APIC_ESR_SEND_ILLEGAL_VECTOR);
      return;
    }
    this.vcpu.kvm.trace('kvm_apic_ipi', this.vcpu, () => `dst ${irq.destId} vec ${irq.vector} (${ApicDeliveryMode[irq.deliveryMode]}|${irq.destModeLogical ? 'logical' : 'physical'}|${irq.levelTriggered ? 'level' : 'edge'}|sh ${irq.shorthand >> 18})`);
    this.irqchip.deliverToApic(this, irq);
  }

  // ---------------------------------------------------------------- MMIO and MSR front ends

  /** xAPIC MMIO read of `len` bytes at page offset `offset` (apic_mmio_read). */
  mmioRead(offset: number, len: number, data: Uint8Array): void {
    if (!this.hwEnabled || this.x2apicMode) {
      data.fill(0xff, 0, len); // KVM_X86_QUIRK_LAPIC_MMIO_HOLE: reads as all-ones
      return;
    }
    const align = offset & 0xf;
    let v = 0;
    if (align + len <= 4) v = this.readRegister(offset & 0xff0) ?? 0;
    this.vcpu.kvm.trace('kvm_apic', this.vcpu, () => `apic_read 0x${(offset & 0xff0).toString(16)} = 0x${(v >>> 0).toString(16)}`);
    v = v >>> (align * 8);
    for (let i = 0; i < len; i++) data[i] = i < 4 ? (v >>> (8 * i)) & 0xff : 0;
  }

  /** xAPIC MMIO write (apic_mmio_write): only aligned 32-bit writes take effect. */
  mmioWrite(offset: number, len: number, data: Uint8Array): void {
    if (!this.hwEnabled || this.x2apicMode) return;
    if (len !== 4 || (offset & 0xf)) return;
    const v = (data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24)) >>> 0;
    this.writeRegister(offset & 0xff0, v);
  }

  /** kvm_x2apic_msr_read: undefined → #GP. */
  x2apicMsrRead(msr: number): bigint | undefined {
    if (!this.x2apicMode) return undefined;
    const off = (msr - X2APIC_MSR_BASE) << 4;
    if (off === APIC_ICR2 || off === APIC_DFR || off === APIC_ARBPRI) return undefined;
    const low = this.readRegister(off);
    if (low === undefined) return undefined;
    this.vcpu.kvm.trace('kvm_apic', this.vcpu, () => `apic_read 0x${off.toString(16)} = 0x${low.toString(16)}`);
    if (off === APIC_ICR) return (BigInt(this.getReg(APIC_ICR2)) << 32n) | BigInt(low);
    return BigInt(low);
  }

  /** kvm_x2apic_msr_write: false → #GP (SDM 10.12.1.2: reserved bits, read-only registers). */
  x2apicMsrWrite(msr: number, data: bigint): boolean {
    if (!this.x2apicMode) return false;
    const off = (msr - X2APIC_MSR_BASE) << 4;
    if (off === APIC_ICR) {
      this.setReg(APIC_ICR2, Number(data >> 32n));
      return this.writeRegister(APIC_ICR, Number(data & 0xffffffffn));
    }
    if (data >> 32n) return false;
    const v = Number(data);
    if (off === APIC_EOI && v !== 0) return false;
    if (off === APIC_SELF_IPI && (v & ~0xff)) return false;
    if (off === APIC_TASKPRI && (v & ~0xff)) return false;
    return this.writeRegister(off, v);
  }

  // ---------------------------------------------------------------- timer

  private now(): number {
    return this.vcpu.kvm.clock.nowNs(this.vcpu);
  }

  /** TSC-deadline mode exists when the guest's CPUID says so (CPUID.1:ECX[24]), as in KVM. */
  private timerModeMask(): number {
    return guestCpuidHas(this.vcpu, 1, 'ecx', 24) ? APIC_LVT_TIMER_MASK : APIC_LVT_TIMER_PERIODIC;
  }

  /** Divide configuration (SDM Figure 10-10): bits 3,1:0 → 2, 4, …, 128, 1. */
  private updateDivideCount(): void {
    const tdcr = this.getReg(APIC_TDCR);
    const v = (tdcr & 3) | ((tdcr & 8) >> 1);
    this.divideCount = 1 << ((v + 1) & 7);
  }

  get timerDivide(): number {
    return this.divideCount;
  }

  /** apic_update_lvtt: switching into or out of TSC-deadline mode stops the timer. */
  private updateLvtt(): void {
    const mode = this.getReg(APIC_LVTT) & this.timerModeMask();
    if (mode === this.timerMode) return;
    const wasDeadline = this.timerMode === APIC_LVT_TIMER_TSCDEADLINE;
    if (wasDeadline !== (mode === APIC_LVT_TIMER_TSCDEADLINE)) {
      this.timer.cancel();
      this.setReg(APIC_TMICT, 0);
      this.period = 0;
      this.tscDeadline = 0n;
    }
    this.timerMode = mode;
  }

  /** start_apic_timer. */
  private startTimer(): void {
    const now = this.now();
    if (this.timerMode === APIC_LVT_TIMER_TSCDEADLINE) {
      if (this.tscDeadline === 0n) return;
      this.timer.arm(Math.max(now, this.vcpu.kvm.clock.tscToNs(this.vcpu, this.tscDeadline)));
      return;
    }
    // One APIC bus cycle is 1 ns (1 GHz bus, KVM's APIC_BUS_CYCLE_NS).
    this.period = this.getReg(APIC_TMICT) * this.divideCount;
    if (!this.period) return;
    if (this.timerMode === APIC_LVT_TIMER_PERIODIC && this.period < MIN_TIMER_PERIOD_NS) this.period = MIN_TIMER_PERIOD_NS;
    this.target = now + this.period;
    this.timer.arm(this.target);
  }

  /** apic_timer_expired + kvm_inject_apic_timer_irqs. */
  private timerExpired(): void {
    this.localDeliver(APIC_LVTT);
    this.vcpu.kvm.trace('kvm_apic', this.vcpu, 'timer expired');
    if (this.timerMode === APIC_LVT_TIMER_TSCDEADLINE) {
      this.tscDeadline = 0n;
    } else if (this.timerMode === APIC_LVT_TIMER_PERIODIC && this.period) {
      const now = this.now();
      this.target += this.period;
      // Ticks missed while the vCPU was not checking coalesce (the IRR bit holds one).
      if (this.target <= now) this.target += Math.floor((now - this.target) / this.period + 1) * this.period;
      this.timer.arm(this.target);
    }
  }

  /** apic_get_tmcct. */
  private currentCount(): number {
    if (this.timerMode === APIC_LVT_TIMER_TSCDEADLINE) return 0;
    if (!this.getReg(APIC_TMICT) || !this.period || !this.timer.armed) return 0;
    let remaining = Math.max(0, this.target - this.now());
    if (remaining > this.period) remaining %= this.period;
    return Math.min(this.getReg(APIC_TMICT), Math.floor(remaining / this.divideCount));
  }

  /** kvm_get_lapic_tscdeadline_msr: reads 0 unless the timer is in TSC-deadline mode. */
  getTscDeadline(): bigint {
    if (!this.hwEnabled || this.timerMode !== APIC_LVT_TIMER_TSCDEADLINE) return 0n;
    return this.tscDeadline;
  }

  /** kvm_set_lapic_tscdeadline_msr: ignored unless in TSC-deadline mode; 0 disarms. */
  setTscDeadline(data: bigint): void {
    if (!this.hwEnabled || this.timerMode !== APIC_LVT_TIMER_TSCDEADLINE) return;
    this.timer.cancel();
    this.tscDeadline = data;
    this.startTimer();
  }
}

/** The error LVT needs a vector; a masked one delivers nothing anyway. */
function lvtErrorIsValid(reg: number): boolean {
  return (reg & APIC_LVT_MASKED) === 0;
}

export { APIC_DEST_ALLBUT, APIC_DEST_ALLINC, APIC_DEST_NOSHORT, APIC_DEST_SELF };
