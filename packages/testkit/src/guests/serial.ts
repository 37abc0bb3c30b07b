/**
 * Guest-side building blocks: printing over the COM1 UART and halting.
 *
 * They work in 16-, 32- and 64-bit sections, using the mode's natural pointer and
 * counter registers (SI/ESI/RSI, CX/ECX/RCX).
 */
import {
  Assembler,
  Label,
  LabelRef,
  Reg,
  al,
  byte,
  cx,
  dx,
  ecx,
  esi,
  mem,
  rcx,
  rsi,
  si,
} from '../asm';

/** I/O base of the first serial port. */
export const COM1_PORT = 0x3f8;
/** Line Status Register offset; bit 5 (THRE) = transmitter holding register empty. */
export const UART_LSR = 5;
export const UART_LSR_THRE = 0x20;

export interface SerialOptions {
  /** UART I/O base (default COM1, 0x3F8) */
  port?: number;
  /**
   * Poll LSR.THRE before each byte, as a driver for real hardware must. Off by default:
   * an emulated UART that is always ready gains nothing from it and each poll is one
   * more PIO exit (with a UART that never reports THRE the guest would spin forever).
   */
  pollLsr?: boolean;
}

function ptrReg(a: Assembler): Reg {
  return a.bitness === 16 ? si : a.bitness === 32 ? esi : rsi;
}

function countReg(a: Assembler): Reg {
  return a.bitness === 16 ? cx : a.bitness === 32 ? ecx : rcx;
}

function loadPointer(a: Assembler, src: Label | LabelRef | Reg): void {
  const p = ptrReg(a);
  if (src instanceof Reg) {
    if (src !== p) a.mov(p, src);
  } else if (a.bitness === 64) {
    a.lea(p, mem(src)); // RIP-relative: works wherever the image is loaded
  } else {
    a.mov(p, src);
  }
}

function emitWaitThre(a: Assembler, port: number): void {
  const wait = a.here();
  a.mov(dx, port + UART_LSR);
  a.in(al, dx);
  a.test(al, UART_LSR_THRE);
  a.jz(wait);
  a.mov(dx, port);
}

/**
 * Inline code printing the NUL-terminated string at `str` (a label, or a register
 * already holding its address) to the UART, byte by byte with `out dx, al`.
 * Clobbers AL, DX and the pointer register (SI/ESI/RSI). In 16-bit code the string is
 * read through DS, so pass `label.minus(dsBase)` when DS is not 0.
 */
export function serialPrint(a: Assembler, str: Label | LabelRef | Reg, opts: SerialOptions = {}): void {
  const port = opts.port ?? COM1_PORT;
  const p = ptrReg(a);
  const done = a.label('print_done');
  loadPointer(a, str);
  a.mov(dx, port);
  const next = a.here('print_next');
  if (opts.pollLsr) emitWaitThre(a, port);
  a.mov(al, byte(p));
  a.test(al, al);
  a.jz(done);
  a.out(dx, al);
  a.inc(p);
  a.jmp(next);
  a.bind(done);
}

/** `serialPrint` of a string literal placed in the section's literal pool. */
export function serialPrintString(a: Assembler, text: string, opts: SerialOptions = {}): Label {
  const l = a.literal(text);
  serialPrint(a, l, opts);
  return l;
}

/**
 * Emit a subroutine writing CX/ECX/RCX bytes from SI/ESI/RSI to the UART and return its
 * label (`entry` if given, so calls may precede the routine). Clobbers AL, DX, the pointer and the counter.
 * Emits a RET, so place it where execution does not fall into it.
 */
export function serialWriteRoutine(a: Assembler, opts: SerialOptions = {}, entry: Label = new Label('serial_write')): Label {
  const port = opts.port ?? COM1_PORT;
  a.bind(entry);
  const p = ptrReg(a);
  const done = a.label('serial_write_done');
  a.test(countReg(a), countReg(a));
  a.jz(done);
  a.mov(dx, port);
  const next = a.here('serial_write_next');
  if (opts.pollLsr) emitWaitThre(a, port);
  a.mov(al, byte(p));
  a.out(dx, al);
  a.inc(p);
  a.loop(next);
  a.bind(done);
  a.ret();
  return entry;
}

/**
 * `cli; .l: hlt; jmp .l`: the guest stops for good (an NMI or SMI would only bring it
 * back to the HLT). Returns the label of the HLT instruction.
 */
export function haltLoop(a: Assembler): Label {
  a.cli();
  const h = a.here('halt');
  a.hlt();
  a.jmp(h);
  return h;
}
