/**
 * How platform devices drive interrupt lines. The Machine connects this to KVM_IRQ_LINE
 * (`kvm.irqLine(gsi, level)`) when the VM has an in-kernel irqchip; tests use a recorder.
 * Numbers are GSIs: ISA IRQ n is GSI n (the irqchip's routing sends GSI 0 to IOAPIC pin 2,
 * as the MADT's interrupt source override says), PCI/HPET routes name IOAPIC pins directly.
 */
export interface IrqLine {
  setIrq(gsi: number, level: boolean): void;
}

/** One device's output pin on an IrqLine. Remembers its level so repeated sets are cheap. */
export class IrqPin {
  private level = false;
  constructor(private readonly line: IrqLine, readonly gsi: number) {}

  set(level: boolean): void {
    if (level === this.level) return;
    this.level = level;
    this.line.setIrq(this.gsi, level);
  }

  get high(): boolean {
    return this.level;
  }

  /** An edge for edge-triggered inputs: high, then low (what KVM's in-kernel PIT does). */
  pulse(): void {
    this.line.setIrq(this.gsi, true);
    this.line.setIrq(this.gsi, false);
    this.level = false;
  }
}

/** An IrqLine that goes nowhere (no irqchip). */
export const NO_IRQ_LINE: IrqLine = { setIrq() {} };

/** Records every level change (tests, tracing). */
export class RecordingIrqLine implements IrqLine {
  readonly events: { gsi: number; level: boolean }[] = [];
  readonly levels = new Map<number, boolean>();
  setIrq(gsi: number, level: boolean): void {
    this.events.push({ gsi, level });
    this.levels.set(gsi, level);
  }
  /** Rising edges seen on `gsi`. */
  edges(gsi: number): number {
    let n = 0;
    let prev = false;
    for (const e of this.events) {
      if (e.gsi !== gsi) continue;
      if (e.level && !prev) n++;
      prev = e.level;
    }
    return n;
  }
  level(gsi: number): boolean {
    return this.levels.get(gsi) ?? false;
  }
}
