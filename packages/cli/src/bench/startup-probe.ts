/**
 * Start-up probe, preloaded into a `tsvisor run` child by the benchmark with
 * NODE_OPTIONS=--require <this file> and TSVISOR_BENCH_STARTUP_FILE=<path>. It changes nothing
 * else: on the processor's first guest entry (X86Cpu.runGuest, the moment before the guest's
 * first instruction) it appends the wall-clock time (ms since the epoch, sub-ms precision)
 * to that file as `first-guest-entry <ms>`. Without the variable it does nothing.
 */
import { appendFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const file = process.env.TSVISOR_BENCH_STARTUP_FILE;
if (file) {
  // Loaded from the same path the CLI resolves, so this patches the CLI's X86Cpu class.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const core = require('@tsvisor/core') as typeof import('@tsvisor/core');
  const proto = core.X86Cpu.prototype as unknown as { runGuest: (...a: unknown[]) => unknown };
  const original = proto.runGuest;
  proto.runGuest = function firstEntry(this: unknown, ...args: unknown[]) {
    proto.runGuest = original;
    appendFileSync(file, `first-guest-entry ${performance.timeOrigin + performance.now()}\n`);
    return original.apply(this, args);
  };
}
