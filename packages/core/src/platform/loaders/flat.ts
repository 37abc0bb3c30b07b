/**
 * Flat binaries: the file's bytes at a load address, execution from an entry point in the
 * mode the user names (like `tsvisor run --load-addr A --entry A --mode M`).
 */
import type { GuestRam } from '../memory';
import { BootState, bootStructureRanges, StartMode, START_MODES } from './boot-state';
import { GuestLoadError, hex } from './errors';

export interface FlatOptions {
  loadAddr: number;
  entry?: number;
  mode?: StartMode;
}

export interface LoadedImage {
  kind: 'flat' | 'elf' | 'multiboot';
  boot: BootState;
  /** [start, end) of guest memory the image occupies (including zeroed BSS). */
  ranges: [number, number][];
}

export function checkOverlapsBoot(file: string, mode: StartMode, start: number, end: number): void {
  for (const [s, e] of bootStructureRanges(mode)) {
    if (start < e && end > s) {
      throw new GuestLoadError(file, `the image at [${hex(start)}, ${hex(end)}) overlaps the ${mode}-mode boot structures tsvisor places at [${hex(s)}, ${hex(e)}); load it elsewhere`);
    }
  }
}

export function loadFlat(ram: GuestRam, file: string, image: Uint8Array, opts: FlatOptions): LoadedImage {
  const mode = opts.mode ?? 'real';
  if (!START_MODES.includes(mode)) throw new GuestLoadError(file, `start mode '${mode}' is not one of ${START_MODES.join(', ')}`);
  if (image.length === 0) throw new GuestLoadError(file, 'the file is empty');
  const load = opts.loadAddr;
  if (!Number.isSafeInteger(load) || load < 0) throw new GuestLoadError(file, `load address ${load} is not a non-negative integer`);
  const entry = opts.entry ?? load;
  if (!Number.isSafeInteger(entry) || entry < 0) throw new GuestLoadError(file, `entry ${entry} is not a non-negative integer`);
  const end = load + image.length;
  if (!ram.contains(load, image.length)) {
    throw new GuestLoadError(file, `${image.length} bytes at ${hex(load)} (up to ${hex(end)}) do not fit in guest RAM ${ram.describe()}; give more memory with -m or a lower load address`);
  }
  if (mode === 'real' && entry >= 0x100000) throw new GuestLoadError(file, `entry ${hex(entry)} is not reachable in real mode (must be below 0x100000)`);
  if (mode !== 'real' && entry >= 0x1_0000_0000) throw new GuestLoadError(file, `entry ${hex(entry)} is above 4 GiB, outside what the ${mode}-mode boot mapping covers`);
  checkOverlapsBoot(file, mode, load, end);
  ram.write(load, image);
  const boot: BootState = { mode, entry };
  if (mode === 'real') {
    // SS:SP = 0:load address, where a BIOS leaves a boot sector's stack.
    boot.rsp = load <= 0xffff ? load : 0;
  } else {
    boot.rsp = load; // the stack grows down from the image
  }
  return { kind: 'flat', boot, ranges: [[load, end]] };
}
