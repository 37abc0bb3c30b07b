/**
 * QEMU's `isa-debug-exit` as hypervisor test suites configure it
 * (`-device isa-debug-exit,iobase=0xf4,iosize=0x4`): a write of any width ends the run.
 * QEMU exits with status (value << 1) | 1; the Machine reports both the raw value and that
 * status. Reads return 0 (QEMU's read handler does the same).
 */
import type { IoPortBus } from '../port-bus';

export const DEBUG_EXIT_PORT = 0xf4;
export const DEBUG_EXIT_SIZE = 4;

export class DebugExit {
  constructor(private readonly onExit: (value: number) => void) {}
  attach(bus: IoPortBus, port = DEBUG_EXIT_PORT): void {
    const w = (_p: number, v: number) => this.onExit(v >>> 0);
    bus.register('isa-debug-exit', port, DEBUG_EXIT_SIZE, {
      read8: () => 0, read16: () => 0, read32: () => 0,
      write8: w, write16: w, write32: w,
    });
  }
}

/** QEMU's process exit status for a debug-exit write of `value`. */
export function qemuDebugExitStatus(value: number): number {
  return ((value << 1) | 1) >>> 0;
}
