/**
 * Start-up probe, preloaded into a `tsvisor run` child by the benchmark with
 * NODE_OPTIONS=--require <this file> and TSVISOR_BENCH_STARTUP_FILE=<path>. It changes nothing
 * else — in particular it loads none of tsvisor's modules, so the command loads them in its own
 * order and way: when the processor's module (the one exporting X86Cpu) has been loaded by the
 * command, it wraps X86Cpu.runGuest, and on the first guest entry (the moment before the guest's
 * first instruction) it appends the wall-clock time (ms since the epoch, sub-ms precision) to
 * that file as `first-guest-entry <ms>`. Without the variable it does nothing.
 */
import { appendFileSync } from 'node:fs';
import Module = require('node:module');
import { performance } from 'node:perf_hooks';

type Load = (request: string, parent: unknown, isMain: boolean) => unknown;
interface RunGuestOwner { prototype: { runGuest: (...a: unknown[]) => unknown } }

const file = process.env.TSVISOR_BENCH_STARTUP_FILE;
if (file) {
  const M = Module as unknown as { _load: Load };
  const load = M._load;
  M._load = function probeLoad(this: unknown, request: string, parent: unknown, isMain: boolean): unknown {
    const exports = load.call(this, request, parent, isMain) as Record<string, unknown> | null;
    // Only a module's own exports are looked at (an own data property, so no lazy getter runs).
    const own = exports && typeof exports === 'object' ? Object.getOwnPropertyDescriptor(exports, 'X86Cpu') : undefined;
    const cls: unknown = own && 'value' in own ? own.value : undefined;
    if (typeof cls === 'function' && typeof (cls as unknown as RunGuestOwner).prototype?.runGuest === 'function') {
      M._load = load;
      const proto = (cls as unknown as RunGuestOwner).prototype;
      const original = proto.runGuest;
      proto.runGuest = function firstEntry(this: unknown, ...args: unknown[]) {
        proto.runGuest = original;
        appendFileSync(file, `first-guest-entry ${performance.timeOrigin + performance.now()}\n`);
        return original.apply(this, args);
      };
    }
    return exports;
  };
}
