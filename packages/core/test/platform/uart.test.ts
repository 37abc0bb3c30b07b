import {
  IoPortBus, IrqPin, RecordingIrqLine, Uart16550, COM1_BASE, COM1_IRQ,
  UART_IER, UART_IIR, UART_LCR, UART_LSR, UART_MCR, UART_MSR, UART_SCR, LSR_DR, LSR_THRE, LSR_TEMT, LSR_OE,
  IER_RDI, IER_THRI, IIR_NO_INT, IIR_RDI, IIR_THRI, MCR_LOOP, MCR_OUT2, MCR_DTR, MCR_RTS, MSR_CTS, MSR_DSR,
} from '../../src';

function setup() {
  const out: number[] = [];
  const line = new RecordingIrqLine();
  const uart = new Uart16550((b) => out.push(b), new IrqPin(line, COM1_IRQ));
  const bus = new IoPortBus();
  uart.attach(bus);
  const inb = (r: number) => bus.read(COM1_BASE + r, 1);
  const outb = (r: number, v: number) => bus.write(COM1_BASE + r, 1, v);
  return { out, line, uart, inb, outb };
}

describe('16550A UART on COM1', () => {
  it('transmits THR bytes and always reports the transmitter empty', () => {
    const { out, inb, outb } = setup();
    for (const c of 'hi') outb(0, c.charCodeAt(0));
    expect(Buffer.from(out).toString()).toBe('hi');
    expect(inb(UART_LSR) & (LSR_THRE | LSR_TEMT)).toBe(LSR_THRE | LSR_TEMT);
    expect(inb(UART_IIR)).toBe(IIR_NO_INT);
  });

  it('keeps the divisor latch behind DLAB and a scratch register', () => {
    const { inb, outb, out, uart } = setup();
    outb(UART_LCR, 0x83);
    outb(0, 0x01);
    outb(UART_IER, 0x00);
    expect(uart.divisor).toBe(1);
    expect(inb(0)).toBe(1);
    outb(UART_LCR, 0x03);
    expect(out).toEqual([]); // the divisor write did not transmit
    outb(UART_SCR, 0xa5);
    expect(inb(UART_SCR)).toBe(0xa5);
  });

  it('receives from the input queue through the FIFO and raises the RX interrupt on IRQ 4', () => {
    const { uart, line, inb, outb } = setup();
    outb(2, 0x07); // FCR: enable and clear FIFOs, trigger level 1
    outb(UART_IER, IER_RDI);
    expect(line.level(COM1_IRQ)).toBe(false);
    uart.receive(Buffer.from('ok'));
    expect(line.level(COM1_IRQ)).toBe(true);
    expect(inb(UART_IIR) & 0x0f).toBe(IIR_RDI);
    expect(inb(UART_IIR) & 0xc0).toBe(0xc0); // FIFOs enabled
    expect(inb(UART_LSR) & LSR_DR).toBe(LSR_DR);
    expect(String.fromCharCode(inb(0), inb(0))).toBe('ok');
    expect(inb(UART_LSR) & LSR_DR).toBe(0);
    expect(line.level(COM1_IRQ)).toBe(false);
  });

  it('holds 16 bytes in the FIFO and feeds the rest as the guest drains it', () => {
    const { uart, inb, outb } = setup();
    outb(2, 0x01);
    uart.receive(Array.from({ length: 20 }, (_, i) => 0x41 + i));
    expect(uart.inputPending).toBe(4);
    const got: number[] = [];
    while (inb(UART_LSR) & LSR_DR) got.push(inb(0));
    expect(got).toEqual(Array.from({ length: 20 }, (_, i) => 0x41 + i));
  });

  it('raises THR-empty when THRI is enabled and acknowledges it on an IIR read', () => {
    const { line, inb, outb } = setup();
    outb(UART_IER, IER_THRI);
    expect(line.level(COM1_IRQ)).toBe(true);
    expect(inb(UART_IIR)).toBe(IIR_THRI);
    expect(line.level(COM1_IRQ)).toBe(false);
    expect(inb(UART_IIR)).toBe(IIR_NO_INT);
    outb(0, 0x41); // a write empties THR again at once: the interrupt comes back
    expect(line.level(COM1_IRQ)).toBe(true);
  });

  it('gates the interrupt with OUT2, as the PC wiring does', () => {
    const { line, outb } = setup();
    outb(UART_MCR, 0);
    outb(UART_IER, IER_THRI);
    expect(line.level(COM1_IRQ)).toBe(false);
    outb(UART_MCR, MCR_OUT2);
    expect(line.level(COM1_IRQ)).toBe(true);
  });

  it('loops transmitted bytes back to the receiver and modem lines to MSR in loopback mode', () => {
    const { out, inb, outb } = setup();
    outb(UART_MCR, MCR_LOOP | MCR_DTR | MCR_RTS);
    outb(0, 0x55);
    expect(out).toEqual([]);
    expect(inb(UART_LSR) & LSR_DR).toBe(LSR_DR);
    expect(inb(0)).toBe(0x55);
    expect(inb(UART_MSR) & (MSR_CTS | MSR_DSR)).toBe(MSR_CTS | MSR_DSR);
    // Without FIFO the holding register overruns on a second byte.
    outb(0, 1);
    outb(0, 2);
    expect(inb(UART_LSR) & LSR_OE).toBe(LSR_OE);
    expect(inb(UART_LSR) & LSR_OE).toBe(0); // cleared by the read
  });
});
