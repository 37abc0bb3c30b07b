/**
 * The heap of a long-running VM process, for steady-state measurements.
 *
 * V8 allocates new objects in the young generation and moves them to the old one when they
 * survive two scavenges. An exit loop allocates almost nothing (a few bytes per exit), so in a
 * benchmark process no scavenge comes for millions of exits and the objects the guest's first
 * exits created — decoded blocks and their operands, compiled blocks' chains, the VMCS/VMCB
 * value caches — stay young while the VM's older objects (the vCPU, the processor) are old.
 * Every store of a pointer to them into an old object then takes the generational write
 * barrier's slow path (V8's RecordWrite). A VM that has run for a while has long since had
 * those objects promoted; one full collection after the warm-up puts the benchmark in that
 * state (as JMH collects before its measurement iterations). Measured on the CPUID loop: 7,060
 * → 6,147 x86 instructions per exit on SVM (docs/performance.md, "The heap's steady state").
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let collect: (() => void) | null | undefined;

/** A full garbage collection (false: this Node cannot expose one; nothing was done). */
export function settleHeap(): boolean {
  if (collect === undefined) {
    const g = (globalThis as { gc?: () => void }).gc;
    if (typeof g === 'function') collect = g;
    else {
      try {
        // --expose-gc at run time: a context created afterwards has `gc` as a global.
        setFlagsFromString('--expose-gc');
        const fn: unknown = runInNewContext('gc');
        collect = typeof fn === 'function' ? (fn as () => void) : null;
      } catch {
        collect = null;
      }
    }
  }
  if (collect === null) return false;
  collect();
  return true;
}
