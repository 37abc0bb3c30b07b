/**
 * The few ports this slice's VMM answers when the vCPU exits with KVM_EXIT_IO: a minimal
 * 16550A on COM1 that is always ready to transmit, and the PC's rule for everything else
 * (no device answers: reads float to all-ones, writes vanish). The full PC platform
 * (issue 6) replaces this with core's device models.
 */
import { KVM_EXIT_IO_OUT, KvmRun } from '@tsvisor/core';

export const COM1_BASE = 0x3f8;

/** 16550A register offsets from the base port (DLAB = 0 unless noted). */
export const UART = {
  THR_RBR: 0, // DLAB=1: divisor latch low
  IER: 1, // DLAB=1: divisor latch high
  IIR_FCR: 2,
  LCR: 3,
  MCR: 4,
  LSR: 5,
  MSR: 6,
  SCR: 7,
} as const;

const LCR_DLAB = 0x80;
/** LSR: transmitter holding register empty (bit 5) and transmitter empty (bit 6). */
export const LSR_THRE_TEMT = 0x60;
/** IIR: bit 0 set = no interrupt pending. */
const IIR_NO_INTERRUPT = 0x01;
/** MSR with CTS, DSR and DCD asserted, as a connected line reads. */
const MSR_CONNECTED = 0xb0;

/**
 * COM1 as a transmit-only console: bytes written to THR go to `write`; nothing is ever
 * received; transmission completes at once, so LSR always reads 0x60.
 */
export class SerialConsole {
  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private scr = 0;
  private dll = 0x01; // 115200 baud after reset, as firmware leaves it
  private dlm = 0;

  constructor(private readonly write: (byte: number) => void) {}

  read(offset: number): number {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (offset) {
      case UART.THR_RBR: return dlab ? this.dll : 0;
      case UART.IER: return dlab ? this.dlm : this.ier;
      case UART.IIR_FCR: return IIR_NO_INTERRUPT;
      case UART.LCR: return this.lcr;
      case UART.MCR: return this.mcr;
      case UART.LSR: return LSR_THRE_TEMT;
      case UART.MSR: return MSR_CONNECTED;
      default: return this.scr;
    }
  }

  writeReg(offset: number, value: number): void {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (offset) {
      case UART.THR_RBR:
        if (dlab) this.dll = value;
        else this.write(value);
        return;
      case UART.IER:
        if (dlab) this.dlm = value;
        else this.ier = value & 0x0f;
        return;
      case UART.IIR_FCR: return; // FIFO control: nothing to do for an always-empty FIFO
      case UART.LCR: this.lcr = value; return;
      case UART.MCR: this.mcr = value & 0x1f; return;
      case UART.LSR:
      case UART.MSR: return; // read-only in practice
      default: this.scr = value;
    }
  }
}

/**
 * Userspace's half of KVM_EXIT_IO: `count` elements of `size` bytes at run.ioData. A wide
 * access to 8-bit devices is split into byte accesses to consecutive ports, as the ISA bus does.
 */
export class PortIo {
  /** Last value written to the POST-code port 0x80 (-1: none), for diagnostics. */
  postCode = -1;

  constructor(private readonly com1: SerialConsole) {}

  handle(run: KvmRun): void {
    const { direction, size, port, count } = run.io;
    const data = run.ioData;
    const out = direction === KVM_EXIT_IO_OUT;
    for (let i = 0; i < count; i++) {
      for (let b = 0; b < size; b++) {
        const at = i * size + b;
        if (out) this.outb(port + b, data[at]);
        else data[at] = this.inb(port + b);
      }
    }
  }

  private inb(port: number): number {
    if (port >= COM1_BASE && port < COM1_BASE + 8) return this.com1.read(port - COM1_BASE);
    return 0xff;
  }

  private outb(port: number, value: number): void {
    if (port >= COM1_BASE && port < COM1_BASE + 8) this.com1.writeReg(port - COM1_BASE, value);
    else if (port === 0x80) this.postCode = value;
  }
}
