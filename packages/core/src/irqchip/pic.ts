/**
 * The 8259A PIC pair (Intel 8259A datasheet; arch/x86/kvm/i8259.c semantics): master at
 * 0x20/0x21, slave at 0xA0/0xA1 cascaded on the master's IRQ2, ICW1–ICW4, OCW1–OCW3 (EOI,
 * specific EOI, rotation, priority set, poll, special mask, IRR/ISR read), auto-EOI and the
 * ELCR edge/level registers at 0x4D0/0x4D1. The master's INT output goes to LINT0 of the
 * vCPUs whose LAPIC accepts ExtINT (kvm_cpu_get_extint).
 */
import type { KvmIoDevice } from '../kvm/io-bus';

export const PIC_MASTER_PORT = 0x20;
export const PIC_SLAVE_PORT = 0xa0;
export const PIC_ELCR_PORT = 0x4d0;

/** One 8259A (struct kvm_kpic_state). */
export class KvmKpicState {
  /** Edge detection: the line levels last seen. */
  lastIrr = 0;
  irr = 0;
  imr = 0;
  isr = 0;
  priorityAdd = 0;
  irqBase = 0;
  readRegSelect = 0;
  poll = false;
  specialMask = false;
  initState = 0;
  autoEoi = false;
  rotateOnAutoEoi = false;
  specialFullyNestedMode = false;
  init4 = false;
  single = false;
  elcr = 0;

  constructor(readonly isMaster: boolean, readonly elcrMask: number) {}

  /** pic_set_irq1: returns -1 when masked, else 1 if IRR was newly set. */
  setIrq1(irq: number, level: boolean): number {
    const mask = 1 << irq;
    let ret = 0;
    if (this.elcr & mask) {
      if (level) {
        ret = this.irr & mask ? 0 : 1;
        this.irr |= mask;
        this.lastIrr |= mask;
      } else {
        this.irr &= ~mask;
        this.lastIrr &= ~mask;
      }
    } else if (level) {
      if (!(this.lastIrr & mask)) {
        ret = this.irr & mask ? 0 : 1;
        this.irr |= mask;
      }
      this.lastIrr |= mask;
    } else {
      this.lastIrr &= ~mask;
    }
    return this.imr & mask ? -1 : ret;
  }

  /** get_priority: lowest priority number (0 highest) of the bits in `mask`; 8 if none. */
  getPriority(mask: number): number {
    if (!mask) return 8;
    let p = 0;
    while (!(mask & (1 << ((p + this.priorityAdd) & 7)))) p++;
    return p;
  }

  /** pic_get_irq: the IRQ to signal, or -1. */
  getIrq(): number {
    let mask = this.irr & ~this.imr;
    const priority = this.getPriority(mask);
    if (priority === 8) return -1;
    // The slave's request is not blocked by its own in-service cascade bit in special fully nested mode.
    mask = this.isr;
    if (this.specialFullyNestedMode && this.isMaster) mask &= ~(1 << 2);
    if (this.specialMask) mask &= ~this.imr;
    const cur = this.getPriority(mask);
    return priority < cur ? (priority + this.priorityAdd) & 7 : -1;
  }

  /** pic_intack. */
  intack(irq: number): void {
    if (this.autoEoi) {
      if (this.rotateOnAutoEoi) this.priorityAdd = (irq + 1) & 7;
    } else {
      this.isr |= 1 << irq;
    }
    // Level-triggered requests stay in IRR while the line is high.
    if (!(this.elcr & (1 << irq))) this.irr &= ~(1 << irq);
  }

  /** ICW1 (kvm_pic_reset with the ICW1 side effects). */
  reset(): void {
    this.lastIrr = 0;
    this.irr &= this.elcr;
    this.imr = 0;
    this.isr = 0;
    this.priorityAdd = 0;
    this.irqBase = 0;
    this.readRegSelect = 0;
    this.poll = false;
    this.specialMask = false;
    this.initState = 0;
    this.autoEoi = false;
    this.rotateOnAutoEoi = false;
    this.specialFullyNestedMode = false;
    this.init4 = false;
    this.single = false;
  }
}

/** struct kvm_pic: the pair, with its output line. */
export class KvmPic {
  readonly master = new KvmKpicState(true, 0xf8);
  readonly slave = new KvmKpicState(false, 0xde);
  /** The master's INT line. */
  output = false;
  /** Output went high: the irqchip tells the vCPU that takes ExtINT. */
  onOutput: (() => void) | null = null;

  readonly masterDevice: KvmIoDevice = this.portDevice('pic-master', this.master, PIC_MASTER_PORT);
  readonly slaveDevice: KvmIoDevice = this.portDevice('pic-slave', this.slave, PIC_SLAVE_PORT);
  readonly elcrDevice: KvmIoDevice = {
    name: 'pic-elcr',
    read: (addr, len, data) => {
      for (let i = 0; i < len; i++) {
        const p = addr + i - PIC_ELCR_PORT;
        data[i] = p === 0 ? this.master.elcr : p === 1 ? this.slave.elcr : 0xff;
      }
      return true;
    },
    write: (addr, len, data) => {
      for (let i = 0; i < len; i++) {
        const p = addr + i - PIC_ELCR_PORT;
        if (p === 0) this.master.elcr = data[i] & this.master.elcrMask;
        else if (p === 1) this.slave.elcr = data[i] & this.slave.elcrMask;
      }
      return true;
    },
  };

  /** IRQ line `irq` (0–15) to `level`: kvm_pic_set_irq. Returns -1 masked, else 1 if newly raised. */
  setIrq(irq: number, level: boolean): number {
    const s = irq >> 3 ? this.slave : this.master;
    const r = s.setIrq1(irq & 7, level);
    this.update();
    return r;
  }

  /** pic_update_irq: cascade the slave into IRQ2 and recompute the output. */
  update(): void {
    const irq2 = this.slave.getIrq();
    if (irq2 >= 0) {
      this.master.setIrq1(2, true);
      this.master.setIrq1(2, false);
    }
    const was = this.output;
    this.output = this.master.getIrq() >= 0;
    if (this.output && !was) this.onOutput?.();
  }

  /** kvm_pic_read_irq: the INTA cycle; the vector, or the spurious IRQ7/IRQ15 vector. */
  readIrq(): number {
    let intno: number;
    const irq = this.master.getIrq();
    if (irq >= 0) {
      this.master.intack(irq);
      if (irq === 2) {
        let irq2 = this.slave.getIrq();
        if (irq2 >= 0) this.slave.intack(irq2);
        else irq2 = 7; // spurious IRQ on the slave
        intno = this.slave.irqBase + irq2;
      } else {
        intno = this.master.irqBase + irq;
      }
    } else {
      intno = this.master.irqBase + 7; // spurious IRQ on the master
    }
    this.update();
    return intno;
  }

  private clearIsr(s: KvmKpicState, irq: number): void {
    s.isr &= ~(1 << irq);
  }

  /** pic_ioport_write. */
  ioportWrite(s: KvmKpicState, addr: number, val: number): void {
    if ((addr & 1) === 0) {
      if (val & 0x10) {
        // ICW1
        s.reset();
        s.init4 = (val & 1) !== 0;
        s.single = (val & 2) !== 0;
        s.initState = 1;
        this.update();
      } else if (val & 0x08) {
        // OCW3
        if (val & 0x04) s.poll = true;
        if (val & 0x02) s.readRegSelect = val & 1;
        if (val & 0x40) s.specialMask = ((val >> 5) & 1) === 1;
        this.update();
      } else {
        // OCW2
        const cmd = val >> 5;
        switch (cmd) {
          case 0: // rotate in auto-EOI mode (clear)
          case 4: // rotate in auto-EOI mode (set)
            s.rotateOnAutoEoi = cmd >> 2 === 1;
            break;
          case 1: // non-specific EOI
          case 5: { // rotate on non-specific EOI
            const p = s.getPriority(s.isr);
            if (p !== 8) {
              const irq = (p + s.priorityAdd) & 7;
              if (cmd === 5) s.priorityAdd = (irq + 1) & 7;
              this.clearIsr(s, irq);
              this.update();
            }
            break;
          }
          case 3: // specific EOI
            this.clearIsr(s, val & 7);
            this.update();
            break;
          case 6: // set priority
            s.priorityAdd = (val + 1) & 7;
            this.update();
            break;
          case 7: { // rotate on specific EOI
            const irq = val & 7;
            s.priorityAdd = (irq + 1) & 7;
            this.clearIsr(s, irq);
            this.update();
            break;
          }
          default: // 2: no operation
            break;
        }
      }
      return;
    }
    switch (s.initState) {
      case 0: // OCW1
        s.imr = val;
        this.update();
        break;
      case 1: // ICW2
        s.irqBase = val & 0xf8;
        s.initState = s.single ? (s.init4 ? 3 : 0) : 2;
        break;
      case 2: // ICW3 (cascade wiring is fixed: slave on IRQ2)
        s.initState = s.init4 ? 3 : 0;
        break;
      case 3: // ICW4
        s.specialFullyNestedMode = ((val >> 4) & 1) === 1;
        s.autoEoi = ((val >> 1) & 1) === 1;
        s.initState = 0;
        break;
    }
  }

  /** pic_ioport_read. A poll command acts as an INTA and answers 0x80 | level (8259A datasheet). */
  ioportRead(s: KvmKpicState, addr: number): number {
    if (s.poll) {
      s.poll = false;
      const irq = s.getIrq();
      if (irq < 0) return 0;
      s.intack(irq);
      if (s.isMaster && irq === 2) {
        const irq2 = this.slave.getIrq();
        if (irq2 >= 0) this.slave.intack(irq2);
      }
      this.update();
      return 0x80 | irq;
    }
    if ((addr & 1) === 0) return s.readRegSelect ? s.isr : s.irr;
    return s.imr;
  }

  private portDevice(name: string, s: KvmKpicState, base: number): KvmIoDevice {
    return {
      name,
      read: (addr, len, data) => {
        for (let i = 0; i < len; i++) data[i] = this.ioportRead(s, addr + i - base);
        return true;
      },
      write: (addr, len, data) => {
        for (let i = 0; i < len; i++) this.ioportWrite(s, addr + i - base, data[i]);
        return true;
      },
    };
  }
}
