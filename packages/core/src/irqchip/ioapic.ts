/**
 * The I/O APIC (Intel 82093AA datasheet; arch/x86/kvm/ioapic.c semantics): 24 pins, the
 * IOREGSEL/IOWIN window at 0xFEC00000, a redirection entry per pin with level/edge trigger,
 * polarity, mask and remote IRR, and delivery to the LAPICs as an interrupt message.
 *
 * Pin levels are logical (asserted / not), as KVM_IRQ_LINE gives them; the polarity bit is
 * kept for the guest but does not invert the input (KVM and QEMU do the same).
 */
import type { KvmIoDevice } from '../kvm/io-bus';
import { ApicDeliveryMode, APIC_DEST_NOSHORT } from './apic-regs';
import type { KvmIrqchip } from './irqchip';

export const IOAPIC_DEFAULT_BASE_ADDRESS = 0xfec00000;
export const IOAPIC_MEM_LENGTH = 0x100;
export const IOAPIC_NUM_PINS = 24;
/** Version 0x11, maximum redirection entry 23 (82093AA). */
export const IOAPIC_VERSION = 0x11 | ((IOAPIC_NUM_PINS - 1) << 16);

const IOREGSEL = 0x00;
const IOWIN = 0x10;
const IOAPIC_REG_APIC_ID = 0x00;
const IOAPIC_REG_VERSION = 0x01;
const IOAPIC_REG_ARB_ID = 0x02;
const IOAPIC_REG_REDTBL = 0x10;

// Redirection entry fields (82093AA 3.2.4).
const RTE_VECTOR = 0xffn;
const RTE_DELIVERY_STATUS = 1n << 12n;
const RTE_REMOTE_IRR = 1n << 14n;
const RTE_LEVEL = 1n << 15n;
const RTE_MASKED = 1n << 16n;
/** Bits the guest may write: all but delivery status and remote IRR (read-only). */
const RTE_WRITABLE = 0x1afffn | (0xffn << 56n);

export class KvmIoapic implements KvmIoDevice {
  readonly name = 'ioapic';
  readonly baseAddress = IOAPIC_DEFAULT_BASE_ADDRESS;
  ioregsel = 0;
  id = 0;
  /** Pin input levels (ioapic->irr): bit n set while pin n is asserted (edge: until serviced). */
  irr = 0;
  /** Input line levels, for edge detection (an edge pin delivers on 0 → 1 only). */
  lines = 0;
  readonly redirtbl: bigint[] = new Array<bigint>(IOAPIC_NUM_PINS).fill(RTE_MASKED);

  constructor(private readonly irqchip: KvmIrqchip) {}

  reset(): void {
    this.ioregsel = 0;
    this.id = 0;
    this.irr = 0;
    this.lines = 0;
    this.redirtbl.fill(RTE_MASKED);
  }

  // ---------------------------------------------------------------- register window

  private readIndirect(): number {
    const reg = this.ioregsel;
    switch (reg) {
      case IOAPIC_REG_VERSION: return IOAPIC_VERSION;
      case IOAPIC_REG_APIC_ID:
      case IOAPIC_REG_ARB_ID: return (this.id & 0xf) << 24;
      default: {
        const idx = (reg - IOAPIC_REG_REDTBL) >> 1;
        if (reg < IOAPIC_REG_REDTBL || idx >= IOAPIC_NUM_PINS) return 0;
        const e = this.redirtbl[idx];
        return Number(reg & 1 ? e >> 32n : e & 0xffffffffn);
      }
    }
  }

  private writeIndirect(val: number): void {
    const reg = this.ioregsel;
    if (reg === IOAPIC_REG_APIC_ID) {
      this.id = (val >>> 24) & 0xf;
      return;
    }
    if (reg < IOAPIC_REG_REDTBL) return; // version and arbitration ID are read-only
    const idx = (reg - IOAPIC_REG_REDTBL) >> 1;
    if (idx >= IOAPIC_NUM_PINS) return;
    const old = this.redirtbl[idx];
    const half = BigInt(val >>> 0);
    let e = reg & 1 ? (old & 0xffffffffn) | (half << 32n) : (old & ~0xffffffffn) | half;
    e = (e & RTE_WRITABLE) | (old & (RTE_DELIVERY_STATUS | RTE_REMOTE_IRR));
    // Guests (Linux, Xen) expect an entry switched to edge to drop a stale remote IRR (KVM does this).
    if (!(e & RTE_LEVEL)) e &= ~RTE_REMOTE_IRR;
    this.redirtbl[idx] = e;
    // A level-triggered line still asserted is delivered once the entry allows it.
    if ((e & RTE_LEVEL) && (this.irr & (1 << idx))) this.service(idx);
  }

  read(addr: number, len: number, data: Uint8Array): boolean {
    const off = addr - this.baseAddress;
    let v = 0;
    if ((off & ~3) === IOREGSEL) v = this.ioregsel;
    else if ((off & ~3) === IOWIN) v = this.readIndirect();
    v >>>= (off & 3) * 8;
    for (let i = 0; i < len; i++) data[i] = i < 4 ? (v >>> (8 * i)) & 0xff : 0;
    return true;
  }

  write(addr: number, len: number, data: Uint8Array): boolean {
    const off = addr - this.baseAddress;
    let v = 0;
    for (let i = 0; i < Math.min(len, 4); i++) v |= data[i] << (8 * i);
    v >>>= 0;
    if (off === IOREGSEL) this.ioregsel = v & 0xff;
    else if (off === IOWIN && len === 4) this.writeIndirect(v);
    return true;
  }

  // ---------------------------------------------------------------- pins

  /** kvm_ioapic_set_irq: returns 1 if delivered, 0 if masked/coalesced, -1 if no LAPIC took it. */
  setIrq(pin: number, level: boolean): number {
    const mask = 1 << pin;
    const e = this.redirtbl[pin];
    const wasHigh = (this.lines & mask) !== 0;
    if (!level) {
      this.lines &= ~mask;
      this.irr &= ~mask;
      return 1;
    }
    this.lines |= mask;
    if (!(e & RTE_LEVEL) && wasHigh) return 0; // edge: no new rising edge
    this.irr |= mask;
    return this.service(pin);
  }

  /** ioapic_service: send the pin's message unless masked or awaiting EOI (remote IRR). */
  private service(pin: number): number {
    const e = this.redirtbl[pin];
    if (e & RTE_MASKED) return 0;
    const level = (e & RTE_LEVEL) !== 0n;
    if (level && (e & RTE_REMOTE_IRR)) return 0;
    if (!level) this.irr &= ~(1 << pin);
    const r = this.irqchip.deliverToApic(null, {
      vector: Number(e & RTE_VECTOR),
      deliveryMode: Number((e >> 8n) & 7n) as ApicDeliveryMode,
      destModeLogical: ((e >> 11n) & 1n) === 1n,
      level: true,
      levelTriggered: level,
      shorthand: APIC_DEST_NOSHORT,
      destId: Number((e >> 56n) & 0xffn),
    });
    if (r > 0 && level) this.redirtbl[pin] = e | RTE_REMOTE_IRR;
    return r;
  }

  /** kvm_ioapic_update_eoi: a LAPIC retired a level-triggered `vector`. */
  eoi(vector: number): void {
    for (let pin = 0; pin < IOAPIC_NUM_PINS; pin++) {
      const e = this.redirtbl[pin];
      if (Number(e & RTE_VECTOR) !== vector || !(e & RTE_LEVEL)) continue;
      this.redirtbl[pin] = e & ~RTE_REMOTE_IRR;
      if (!(e & RTE_MASKED) && (this.irr & (1 << pin))) this.service(pin);
    }
  }

  remoteIrr(pin: number): boolean {
    return (this.redirtbl[pin] & RTE_REMOTE_IRR) !== 0n;
  }
}
