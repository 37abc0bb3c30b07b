/**
 * The in-kernel irqchip of one VM (KVM_CREATE_IRQCHIP): the 8259 pair, the IOAPIC, a LAPIC per
 * vCPU, the GSI routing between them, interrupt delivery (kvm_irq_delivery_to_apic) and the
 * run loop's side (IrqSource: kvm_cpu_has_interrupt / kvm_cpu_get_interrupt / vcpu_block).
 */
import type { Kvm } from '../kvm/kvm';
import { KvmError } from '../kvm/errors';
import type { KvmIoDevice } from '../kvm/io-bus';
import { KvmMpState, KvmReq, type KvmVcpu } from '../kvm/vcpu';
import { vcpuReset } from '../kvm/x86';
import { emptySegment, KvmReg, VcpuSreg } from '../ops/types';
import { ApicDeliveryMode, APIC_BROADCAST, APIC_DEST_NOSHORT } from './apic-regs';
import { KvmIoapic, IOAPIC_DEFAULT_BASE_ADDRESS, IOAPIC_MEM_LENGTH } from './ioapic';
import type { IrqSource } from './irq-source';
import { KvmWaitResult } from './irq-source';
import { defaultIrqRouting, KvmIrqchipId, KvmIrqRoutingEntry, KvmIrqRoutingTable } from './irq-routing';
import { KvmLapic, KvmLapicIrq } from './lapic';
import { KvmPic, PIC_ELCR_PORT, PIC_MASTER_PORT, PIC_SLAVE_PORT } from './pic';

const APIC_PAGE = 0x1000;

export class KvmIrqchip implements IrqSource {
  readonly pic = new KvmPic();
  readonly ioapic: KvmIoapic;
  /** Every vCPU's local APIC (each also in its vcpu.arch.apic, KVM's vcpu->arch.apic). */
  private readonly lapics: KvmLapic[] = [];
  routing = new KvmIrqRoutingTable(defaultIrqRouting());
  /** The xAPIC page: one device for every vCPU, answering for the vCPU that is running. */
  private readonly lapicMmio: KvmIoDevice;
  private mmioBases: number[] = [];

  constructor(readonly kvm: Kvm) {
    this.ioapic = new KvmIoapic(this);
    kvm.pioBus.register(PIC_MASTER_PORT, 2, this.pic.masterDevice);
    kvm.pioBus.register(PIC_SLAVE_PORT, 2, this.pic.slaveDevice);
    kvm.pioBus.register(PIC_ELCR_PORT, 2, this.pic.elcrDevice);
    kvm.mmioBus.register(IOAPIC_DEFAULT_BASE_ADDRESS, IOAPIC_MEM_LENGTH, this.ioapic);
    // pic_unlock: the first vCPU whose LINT0 takes ExtINT is told to look.
    this.pic.onOutput = () => {
      for (const v of kvm.vcpus) {
        const a = (v.arch.apic ?? undefined);
        if (a && a.acceptPicIntr()) {
          v.makeRequest(KvmReq.EVENT);
          return;
        }
      }
    };
    this.lapicMmio = {
      name: 'lapic',
      read: (addr, len, data) => {
        const a = this.currentLapic(addr);
        if (!a) return false;
        a.mmioRead(addr - a.mmioBase, len, data);
        return true;
      },
      write: (addr, len, data) => {
        const a = this.currentLapic(addr);
        if (!a) return false;
        a.mmioWrite(addr - a.mmioBase, len, data);
        return true;
      },
    };
    for (const v of kvm.vcpus) this.vcpuCreated(v);
  }

  /** The LAPIC of the vCPU in whose context the access happens, if its page is at `addr`. */
  private currentLapic(addr: number): KvmLapic | null {
    const v = this.kvm.currentVcpu;
    const a = v ? (v.arch.apic ?? undefined) : undefined;
    if (!a) return null;
    const base = a.mmioBase;
    return addr >= base && addr < base + APIC_PAGE ? a : null;
  }

  /** Re-register the xAPIC page at every base some vCPU's IA32_APIC_BASE names. */
  lapicMmioMoved(): void {
    const bases = [...new Set(this.lapics.map((a) => a.mmioBase))].sort((x, y) => x - y);
    if (bases.length === this.mmioBases.length && bases.every((b, i) => b === this.mmioBases[i])) return;
    this.kvm.mmioBus.unregister(this.lapicMmio);
    for (const b of bases) this.kvm.mmioBus.register(b, APIC_PAGE, this.lapicMmio);
    this.mmioBases = bases;
  }

  /** kvm_create_lapic for a vCPU (existing at KVM_CREATE_IRQCHIP, or created later). */
  vcpuCreated(vcpu: KvmVcpu): void {
    if (vcpu.arch.apic !== null) return;
    const a = new KvmLapic(vcpu, this);
    this.lapics.push(a);
    vcpu.arch.apic = a;
    a.reset(false);
    // With an in-kernel LAPIC, application processors start in wait-for-SIPI (SDM 8.4.1).
    vcpu.arch.mpState = a.isBsp ? KvmMpState.RUNNABLE : KvmMpState.INIT_RECEIVED;
    this.lapicMmioMoved();
  }

  lapic(vcpu: KvmVcpu): KvmLapic | undefined {
    return (vcpu.arch.apic ?? undefined);
  }

  /** kvm_vcpu_reset's LAPIC part (kvm_lapic_reset), called from core's vcpuReset. */
  lapicReset(vcpu: KvmVcpu, initEvent: boolean): void {
    (vcpu.arch.apic ?? undefined)?.reset(initEvent);
  }

  /** INIT: kvm_vcpu_reset(vcpu, true). */
  resetVcpu(vcpu: KvmVcpu, initEvent: boolean): void {
    vcpuReset(vcpu, initEvent);
  }

  /** kvm_vcpu_deliver_sipi_vector: real mode at CS = vector << 8, base vector << 12, IP 0. */
  deliverSipiVector(vcpu: KvmVcpu, vector: number): void {
    const ops = vcpu.kvm.ops;
    const cs = emptySegment();
    ops.getSegment(vcpu, cs, VcpuSreg.CS);
    cs.selector = (vector << 8) & 0xffff;
    cs.base = BigInt(vector) << 12n;
    ops.setSegment(vcpu, cs, VcpuSreg.CS);
    vcpu.registerWrite(KvmReg.RIP, 0n);
  }

  /** The run loop, before each entry or block: INIT/SIPI and a CR8 the backend stored. */
  vcpuPreRun(vcpu: KvmVcpu): void {
    const a = vcpu.arch.apic;
    if (a === null) return;
    if (a.pendingEvents) a.acceptEvents();
    a.syncCr8();
  }

  // ---------------------------------------------------------------- delivery

  /**
   * kvm_irq_delivery_to_apic: send `irq` from `src` (a LAPIC's ICR, or null for the IOAPIC and
   * MSIs) to every matching LAPIC; lowest priority picks one target by vector hashing, as
   * KVM does by default. Returns the number of LAPICs that accepted it, or -1 if none matched.
   */
  deliverToApic(src: KvmLapic | null, irq: KvmLapicIrq, redirHint = false): number {
    let lowestPrio = irq.deliveryMode === ApicDeliveryMode.LOWEST || redirHint;
    if (!irq.destModeLogical && irq.destId === APIC_BROADCAST && irq.shorthand === APIC_DEST_NOSHORT && lowestPrio) {
      lowestPrio = false; // a physical broadcast cannot be lowest-priority: KVM delivers it as fixed
    }
    let r = -1;
    const candidates: KvmLapic[] = [];
    for (const v of this.kvm.vcpus) {
      const a = (v.arch.apic ?? undefined);
      if (!a || !a.hwEnabled) continue;
      if (!a.matchDest(src, irq.shorthand, irq.destId, irq.destModeLogical)) continue;
      if (!lowestPrio) {
        if (r < 0) r = 0;
        r += a.acceptIrq(irq.deliveryMode === ApicDeliveryMode.LOWEST ? ApicDeliveryMode.FIXED : irq.deliveryMode, irq.vector, irq.level, irq.levelTriggered);
      } else if (a.swEnabled) {
        candidates.push(a);
      }
    }
    if (candidates.length) {
      const t = candidates[irq.vector % candidates.length];
      r = t.acceptIrq(irq.deliveryMode === ApicDeliveryMode.LOWEST ? ApicDeliveryMode.FIXED : irq.deliveryMode, irq.vector, irq.level, irq.levelTriggered);
    }
    return r;
  }

  /** kvm_set_msi: decode an MSI (address, data) into a LAPIC message (SDM 10.11). */
  setMsi(addressLo: number, addressHi: number, data: number): number {
    const irq: KvmLapicIrq = {
      vector: data & 0xff,
      deliveryMode: ((data >> 8) & 7) as ApicDeliveryMode,
      destModeLogical: ((addressLo >> 2) & 1) === 1,
      level: true,
      levelTriggered: ((data >> 15) & 1) === 1,
      shorthand: APIC_DEST_NOSHORT,
      destId: (((addressLo >>> 12) & 0xff) | (addressHi & 0xffffff00)) >>> 0,
    };
    this.kvm.trace('kvm_msi_set_irq', this.kvm.currentVcpu ?? this.kvm.vcpus[0], () => `dst ${irq.destId} vec ${irq.vector}`);
    return this.deliverToApic(null, irq, ((addressLo >> 3) & 1) === 1);
  }

  /** kvm_set_irq: drive every route of `gsi` to `level`. */
  setIrq(gsi: number, level: boolean): number {
    const entries = this.routing.lookup(gsi);
    if (!entries) {
      throw new KvmError('EINVAL', `KVM_IRQ_LINE: GSI ${String(gsi)} is not in the GSI routing table (GSIs 0..${this.routing.nrRtEntries - 1})`);
    }
    let ret = -1;
    for (const e of entries) {
      const r = this.setRoute(e, level);
      if (r < 0) continue;
      ret = r + (ret < 0 ? 0 : ret);
    }
    return ret;
  }

  private setRoute(e: KvmIrqRoutingEntry, level: boolean): number {
    if (e.type === 'msi') return level ? this.setMsi(e.addressLo, e.addressHi, e.data) : -1;
    switch (e.irqchip) {
      case KvmIrqchipId.PIC_MASTER: return this.pic.setIrq(e.pin, level);
      case KvmIrqchipId.PIC_SLAVE: return this.pic.setIrq(8 + e.pin, level);
      default: return this.ioapic.setIrq(e.pin, level);
    }
  }

  // ---------------------------------------------------------------- IrqSource

  /** kvm_cpu_has_extint: the 8259's output, taken through LINT0. */
  private hasExtint(a: KvmLapic): boolean {
    return this.pic.output && a.acceptPicIntr();
  }

  hasInterrupt(vcpu: KvmVcpu): boolean {
    const a = (vcpu.arch.apic ?? undefined);
    if (!a) return false;
    const mp = vcpu.arch.mpState;
    if (mp === KvmMpState.INIT_RECEIVED || mp === KvmMpState.UNINITIALIZED) return false;
    return this.hasExtint(a) || a.hasInterrupt() >= 0;
  }

  /** kvm_cpu_get_interrupt: ExtINT first (an INTA cycle on the 8259), then the LAPIC. */
  acknowledge(vcpu: KvmVcpu): number {
    const a = (vcpu.arch.apic ?? undefined);
    if (!a) return -1;
    if (this.hasExtint(a)) return this.pic.readIrq();
    return a.ackInterrupt();
  }

  /** Something can still happen elsewhere: another vCPU can run, or has a timer of its own. */
  private othersCanRun(vcpu: KvmVcpu): boolean {
    for (const v of this.kvm.vcpus) {
      if (v === vcpu || v.dead) continue;
      if (v.arch.mpState === KvmMpState.RUNNABLE || (v.arch.apic ?? undefined)?.pendingEvents) return true;
    }
    return false;
  }
  private timersElsewhere(vcpu: KvmVcpu): boolean {
    return this.kvm.clock.timers.some((t) => t.vcpu !== null && t.vcpu !== vcpu);
  }

  /**
   * vcpu_block's wait. Virtual clock: the halted vCPU catches up with VM time, fires what is
   * due, and — when no other vCPU can run meanwhile — skips ahead to its next deadline (idle
   * time passes instantly), up to runBudget ns per call. Host clock: sleeps (bounded) until the
   * next deadline. A vCPU with interrupts disabled is not woken by timers (only NMI/INIT/SIPI).
   */
  waitForEvent(vcpu: KvmVcpu): KvmWaitResult {
    const clock = this.kvm.clock;
    const a = (vcpu.arch.apic ?? undefined);
    const virtual = clock.mode === 'virtual';
    if (vcpu.arch.mpState !== KvmMpState.HALTED) {
      // Wait-for-SIPI: only another vCPU can start it.
      return this.othersCanRun(vcpu) || this.timersElsewhere(vcpu) ? KvmWaitResult.YIELD : KvmWaitResult.HALT;
    }
    const ops = this.kvm.ops;
    let skipped = 0;
    let slept = false;
    for (;;) {
      if (virtual) clock.catchUp(vcpu);
      clock.runExpired(vcpu);
      if (a?.pendingEvents) return KvmWaitResult.WOKEN;
      if (vcpu.arch.nmiPending > 0) return KvmWaitResult.WOKEN;
      const irqsWake = ops.interruptAllowed(vcpu, false) > 0;
      if (irqsWake && this.hasInterrupt(vcpu)) return KvmWaitResult.WOKEN;
      if (this.othersCanRun(vcpu)) return KvmWaitResult.YIELD;
      const d = irqsWake ? clock.nextDeadline(vcpu) : Infinity;
      if (d === Infinity) {
        const elsewhere = irqsWake ? clock.earliest !== Infinity : this.timersElsewhere(vcpu);
        return elsewhere ? KvmWaitResult.YIELD : KvmWaitResult.HALT;
      }
      if (d <= clock.nowNs(vcpu)) return KvmWaitResult.YIELD; // a timer that keeps re-arming in the past
      if (virtual) {
        if (skipped >= vcpu.runBudget) return KvmWaitResult.YIELD;
        skipped += Math.max(0, d - clock.nowNs(vcpu));
        clock.skipTo(vcpu, d);
      } else {
        if (slept) return KvmWaitResult.YIELD;
        clock.sleepUntil(d);
        slept = true;
      }
    }
  }
}
