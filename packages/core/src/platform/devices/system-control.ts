/**
 * The PC's ways to reset (and, with ACPI, power off) the machine, and the A20 gate:
 * - port 0x92, System Control Port A: bit 1 = A20 gate (reads back), bit 0 written 1 = fast reset;
 * - port 0xCF9, Reset Control Register (ICH9 / PIIX): a write with bit 2 (RST_CPU) set resets;
 * - the 8042 keyboard controller at 0x60/0x64, as far as firmware and kernels use it to reset
 *   and gate A20: command 0xFE pulses the reset line; 0xD1 + data writes the output port
 *   (bit 0 clear = reset, bit 1 = A20); 0xDD/0xDF disable/enable A20; 0x20/0x60 read/write
 *   the command byte; 0xAA self-test answers 0x55. There is no keyboard behind it.
 *
 * A20 is tracked and reported but memory is never wrapped at 1 MiB: the processor always
 * runs with A20 enabled (as KVM does; QEMU's -kernel boots leave it enabled as well).
 */
import type { IoPortBus } from '../port-bus';

export const PORT_A_92 = 0x92;
export const RESET_CONTROL_CF9 = 0xcf9;
export const KBC_DATA = 0x60;
export const KBC_STATUS_CMD = 0x64;

const KBC_STAT_OBF = 0x01;
const KBC_STAT_SYS = 0x04;
const KBC_STAT_CMD = 0x08;
const KBC_STAT_UNLOCKED = 0x10;

export type SystemEventKind = 'reset' | 'poweroff';

export class SystemControl {
  a20 = true;
  private cf9 = 0;
  private kbcCommand = 0;
  private kbcCommandByte = 0x45; // translate, system flag, IRQ1 enabled (what BIOSes leave)
  private kbcOut: number[] = [];
  private lastKbcWasCommand = false;

  constructor(private readonly onEvent: (kind: SystemEventKind, why: string) => void) {}

  attach(bus: IoPortBus, withKbc = true): void {
    bus.register('port92', PORT_A_92, 1, {
      read8: () => (this.a20 ? 2 : 0),
      write8: (_p, v) => {
        this.a20 = (v & 2) !== 0;
        if (v & 1) this.onEvent('reset', 'port 0x92 fast reset');
      },
    });
    bus.register('reset-control', RESET_CONTROL_CF9, 1, {
      read8: () => this.cf9,
      write8: (_p, v) => {
        this.cf9 = v & 0x0e;
        if (v & 0x04) this.onEvent('reset', `port 0xCF9 reset (0x${v.toString(16)})`);
      },
    });
    if (!withKbc) return;
    bus.register('i8042', KBC_DATA, 1, {
      read8: () => this.kbcOut.shift() ?? 0,
      write8: (_p, v) => this.kbcData(v),
    });
    bus.register('i8042-cmd', KBC_STATUS_CMD, 1, {
      read8: () => (this.kbcOut.length ? KBC_STAT_OBF : 0) | KBC_STAT_SYS | KBC_STAT_UNLOCKED | (this.lastKbcWasCommand ? KBC_STAT_CMD : 0),
      write8: (_p, v) => this.kbcCmd(v),
    });
  }

  private kbcCmd(v: number): void {
    this.lastKbcWasCommand = true;
    this.kbcCommand = 0;
    switch (v) {
      case 0x20: this.kbcOut.push(this.kbcCommandByte); return;
      case 0x60: case 0xd1: this.kbcCommand = v; return;
      case 0xaa: this.kbcOut.push(0x55); return;
      case 0xd0: this.kbcOut.push(0x01 | (this.a20 ? 2 : 0)); return;
      case 0xdd: this.a20 = false; return;
      case 0xdf: this.a20 = true; return;
      default:
        // 0xF0..0xFF pulse output-port bits for 6 µs; bit 0 low is the CPU reset line.
        if ((v & 0xf0) === 0xf0 && !(v & 1)) this.onEvent('reset', `keyboard controller reset pulse (0x${v.toString(16)} to port 0x64)`);
    }
  }

  private kbcData(v: number): void {
    this.lastKbcWasCommand = false;
    const cmd = this.kbcCommand;
    this.kbcCommand = 0;
    if (cmd === 0x60) this.kbcCommandByte = v;
    else if (cmd === 0xd1) {
      this.a20 = (v & 2) !== 0;
      if (!(v & 1)) this.onEvent('reset', 'keyboard controller output port reset bit cleared');
    }
  }
}
