/**
 * 16550A UART (National Semiconductor PC16550D data sheet; QEMU hw/char/serial.c behaves
 * the same way): COM1 at 0x3F8, IRQ 4.
 *
 * Transmission is instantaneous: a byte written to THR goes to the output sink at once and
 * THR is empty again, so LSR.THRE/TEMT always read 1 and a THR-empty interrupt re-arms right
 * after each write. Received bytes come from `receive()` (stdin, a test) into a 16-byte FIFO;
 * what does not fit waits in an input queue and flows in as the guest drains the FIFO.
 * The character-timeout interrupt (IIR 0xC) is not modelled: data-available fires at the
 * trigger level, or at one byte with the FIFO off; with the FIFO on and fewer bytes than the
 * trigger level, RX interrupt fires when the input queue has run dry (nothing more is coming).
 */
import { IrqPin } from '../irq';
import type { IoPortBus } from '../port-bus';

export const COM1_BASE = 0x3f8;
export const COM1_IRQ = 4;

export const UART_RBR = 0; // THR on write; DLL with DLAB
export const UART_IER = 1; // DLM with DLAB
export const UART_IIR = 2; // FCR on write
export const UART_LCR = 3;
export const UART_MCR = 4;
export const UART_LSR = 5;
export const UART_MSR = 6;
export const UART_SCR = 7;

export const IER_RDI = 0x01;
export const IER_THRI = 0x02;
export const IER_RLSI = 0x04;
export const IER_MSI = 0x08;

export const IIR_NO_INT = 0x01;
export const IIR_MSI = 0x00;
export const IIR_THRI = 0x02;
export const IIR_RDI = 0x04;
export const IIR_RLSI = 0x06;
export const IIR_FIFO_ENABLED = 0xc0;

export const FCR_ENABLE = 0x01;
export const FCR_CLEAR_RX = 0x02;
export const FCR_CLEAR_TX = 0x04;

export const LCR_DLAB = 0x80;

export const MCR_DTR = 0x01;
export const MCR_RTS = 0x02;
export const MCR_OUT1 = 0x04;
export const MCR_OUT2 = 0x08;
export const MCR_LOOP = 0x10;

export const LSR_DR = 0x01;
export const LSR_OE = 0x02;
export const LSR_BI = 0x10;
export const LSR_THRE = 0x20;
export const LSR_TEMT = 0x40;

export const MSR_DCTS = 0x01;
export const MSR_DDSR = 0x02;
export const MSR_TERI = 0x04;
export const MSR_DDCD = 0x08;
export const MSR_CTS = 0x10;
export const MSR_DSR = 0x20;
export const MSR_RI = 0x40;
export const MSR_DCD = 0x80;

const FIFO_SIZE = 16;
const TRIGGER_LEVELS = [1, 4, 8, 14];

export class Uart16550 {
  private rbrFifo: number[] = [];
  private readonly input: number[] = [];
  private ier = 0;
  private lcr = 0x03; // 8N1, as QEMU resets it
  private mcr = MCR_OUT2;
  private lsrErrors = 0;
  private msr = MSR_DCD | MSR_DSR | MSR_CTS;
  private scr = 0;
  private dll = 0x0c; // 9600 baud at reset (QEMU's divider 0x0C)
  private dlm = 0;
  private fcr = 0;
  /** THR-empty interrupt pending (cleared by reading IIR when it is the reported cause, or by writing THR). */
  private thrIpending = true;
  private readonly pin: IrqPin | null;

  constructor(
    /** Where transmitted bytes go (the `--serial` sink). */
    private readonly output: (byte: number) => void,
    pin: IrqPin | null = null,
  ) {
    this.pin = pin;
  }

  attach(bus: IoPortBus, base = COM1_BASE): void {
    bus.register('uart16550', base, 8, {
      read8: (p) => this.readReg(p - base),
      write8: (p, v) => this.writeReg(p - base, v),
    });
  }

  /** Bytes from the host side (stdin). */
  receive(bytes: Iterable<number>): void {
    for (const b of bytes) this.input.push(b & 0xff);
    this.refill();
    this.update();
  }

  /** Host bytes not yet accepted into the FIFO. */
  get inputPending(): number {
    return this.input.length;
  }

  private get fifoOn(): boolean {
    return (this.fcr & FCR_ENABLE) !== 0;
  }

  private refill(): void {
    const cap = this.fifoOn ? FIFO_SIZE : 1;
    while (this.rbrFifo.length < cap && this.input.length) this.rbrFifo.push(this.input.shift()!);
  }

  /** A byte arrives at the receiver (loopback or host input). */
  private rxByte(b: number): void {
    const cap = this.fifoOn ? FIFO_SIZE : 1;
    if (this.rbrFifo.length >= cap) {
      this.lsrErrors |= LSR_OE;
      if (!this.fifoOn) this.rbrFifo[0] = b; // the holding register is overwritten
      return;
    }
    this.rbrFifo.push(b);
  }

  private lsr(): number {
    let v = LSR_THRE | LSR_TEMT | this.lsrErrors;
    if (this.rbrFifo.length) v |= LSR_DR;
    return v;
  }

  /** Highest-priority pending cause (PC16550D Table IV), or IIR_NO_INT. */
  private cause(): number {
    if (this.ier & IER_RLSI && this.lsrErrors & (LSR_OE | LSR_BI)) return IIR_RLSI;
    if (this.ier & IER_RDI && this.rbrFifo.length) {
      const trig = this.fifoOn ? TRIGGER_LEVELS[(this.fcr >> 6) & 3] : 1;
      if (this.rbrFifo.length >= trig || this.input.length === 0) return IIR_RDI;
    }
    if (this.ier & IER_THRI && this.thrIpending) return IIR_THRI;
    if (this.ier & IER_MSI && this.msr & 0x0f) return IIR_MSI;
    return IIR_NO_INT;
  }

  private update(): void {
    // On a PC the UART's interrupt reaches the PIC only through the OUT2 gate (MCR bit 3).
    const pending = this.cause() !== IIR_NO_INT;
    this.pin?.set(pending && (this.mcr & MCR_OUT2) !== 0 && !(this.mcr & MCR_LOOP));
  }

  /** Level of the interrupt output (for tests and diagnostics). */
  get interruptPending(): boolean {
    return this.cause() !== IIR_NO_INT;
  }

  readReg(off: number): number {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (off & 7) {
      case UART_RBR: {
        if (dlab) return this.dll;
        const b = this.rbrFifo.shift() ?? 0;
        this.refill();
        this.update();
        return b;
      }
      case UART_IER:
        return dlab ? this.dlm : this.ier;
      case UART_IIR: {
        const c = this.cause();
        // Reading IIR while it reports THR-empty acknowledges that interrupt.
        if (c === IIR_THRI) this.thrIpending = false;
        this.update();
        return c | (this.fifoOn ? IIR_FIFO_ENABLED : 0);
      }
      case UART_LCR:
        return this.lcr;
      case UART_MCR:
        return this.mcr;
      case UART_LSR: {
        const v = this.lsr();
        this.lsrErrors = 0; // error bits clear on read
        this.update();
        return v;
      }
      case UART_MSR: {
        let v: number;
        if (this.mcr & MCR_LOOP) {
          // Loopback: DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD.
          v = ((this.mcr & MCR_DTR) ? MSR_DSR : 0) | ((this.mcr & MCR_RTS) ? MSR_CTS : 0) |
            ((this.mcr & MCR_OUT1) ? MSR_RI : 0) | ((this.mcr & MCR_OUT2) ? MSR_DCD : 0);
          v |= this.msr & 0x0f;
        } else {
          v = this.msr;
        }
        this.msr &= 0xf0; // delta bits clear on read
        this.update();
        return v;
      }
      default:
        return this.scr;
    }
  }

  writeReg(off: number, value: number): void {
    value &= 0xff;
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (off & 7) {
      case UART_RBR:
        if (dlab) {
          this.dll = value;
          return;
        }
        this.thrIpending = false;
        if (this.mcr & MCR_LOOP) this.rxByte(value);
        else this.output(value);
        // The byte is gone at once: THR is empty again.
        this.thrIpending = true;
        this.update();
        return;
      case UART_IER: {
        if (dlab) {
          this.dlm = value;
          return;
        }
        const old = this.ier;
        this.ier = value & 0x0f;
        // Enabling THRI while THR is empty raises the interrupt at once (as the 16550 and QEMU do).
        if (!(old & IER_THRI) && this.ier & IER_THRI) this.thrIpending = true;
        this.update();
        return;
      }
      case UART_IIR: {
        // FCR
        const enabling = (value & FCR_ENABLE) !== (this.fcr & FCR_ENABLE);
        if (value & FCR_CLEAR_RX || enabling) this.rbrFifo = [];
        this.fcr = value & 0xc9;
        this.refill();
        this.update();
        return;
      }
      case UART_LCR:
        this.lcr = value;
        return;
      case UART_MCR: {
        const old = this.mcr;
        this.mcr = value & 0x1f;
        if ((old ^ this.mcr) & MCR_LOOP) this.refill();
        this.update();
        return;
      }
      case UART_LSR:
      case UART_MSR:
        return; // read-only
      default:
        this.scr = value;
    }
  }

  /** The baud-rate divisor the guest programmed (for diagnostics). */
  get divisor(): number {
    return (this.dlm << 8) | this.dll;
  }
}
