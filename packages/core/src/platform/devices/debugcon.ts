/**
 * QEMU's `isa-debugcon` at port 0xE9 (Bochs' "port E9 hack"): each byte written goes to the
 * sink (`--debugcon`; nowhere by default, as in QEMU). Reading returns 0xE9, QEMU's
 * `readback` value, which is how a guest detects the console.
 */
import type { IoPortBus } from '../port-bus';

export const DEBUGCON_PORT = 0xe9;

export class DebugCon {
  constructor(private readonly sink: ((byte: number) => void) | null = null) {}
  attach(bus: IoPortBus, port = DEBUGCON_PORT): void {
    bus.register('debugcon', port, 1, {
      read8: () => DEBUGCON_PORT,
      write8: (_p, v) => this.sink?.(v),
    });
  }
}
