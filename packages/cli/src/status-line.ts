/**
 * The status line of a long run on an interactive terminal: retired instructions, MIPS and
 * exits per second over the last interval, redrawn in place on stderr with \r at most four
 * times a second, shown only once the run has gone on for a second, erased at the end.
 */
import type { Machine } from '@tsvisor/core';
import type { CliIo } from './io';

const SHOW_AFTER_MS = 1000;
const REDRAW_MS = 250;

export class StatusLine {
  private readonly started = Date.now();
  private lastAt = this.started;
  private lastInstructions = 0;
  private lastExits = 0;
  private shown = false;

  constructor(private readonly io: CliIo, private readonly machine: Pick<Machine, 'instructions' | 'exits'>) {}

  /** Called often; redraws when a redraw is due. */
  tick(now = Date.now()): void {
    if (now - this.started < SHOW_AFTER_MS || now - this.lastAt < REDRAW_MS) return;
    const instructions = this.machine.instructions();
    const exits = this.machine.exits();
    const dt = (now - this.lastAt) / 1000;
    const mips = (instructions - this.lastInstructions) / dt / 1e6;
    const exitRate = (exits - this.lastExits) / dt;
    this.lastAt = now;
    this.lastInstructions = instructions;
    this.lastExits = exits;
    this.io.stderr.write(`\rtsvisor: ${formatCount(instructions)} instructions, ${mips.toFixed(1)} MIPS, ${formatCount(Math.round(exitRate))} exits/s, ${((now - this.started) / 1000).toFixed(1)} s\x1b[K`);
    this.shown = true;
  }

  /** Erase the line (before the report). */
  clear(): void {
    if (this.shown) this.io.stderr.write('\r\x1b[K');
    this.shown = false;
  }
}

function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}
