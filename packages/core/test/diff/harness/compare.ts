/** Comparing one case's host and emulator results, and describing a mismatch. */
import { COMPARED_FLAGS, DiffCase, GPR_NAMES, disassemble, flagsToString, hex } from './cases';
import { CODE_ADDR, DiffOutput } from './native';
import { SLOT_SIZE } from './emulator';

// Module-level aliases of globals: under jest, code runs in a vm context where each global
// lookup goes through interceptors and costs far more than a closure variable.
const big = BigInt;
const asUintN = BigInt.asUintN;
const asIntN = BigInt.asIntN;
const num = Number;
const U64Array = BigUint64Array;
const U8Array = Uint8Array;
const M = Math;

const VECTOR_NAMES: Record<number, string> = {
  [-3]: 'emulator threw', [-2]: 'unexpected exit', [-1]: 'none', 0: '#DE', 1: '#DB', 3: '#BP', 4: '#OF', 5: '#BR', 6: '#UD',
  7: '#NM', 8: '#DF', 10: '#TS', 11: '#NP', 12: '#SS', 13: '#GP', 14: '#PF', 16: '#MF', 17: '#AC', 18: '#MC', 19: '#XM',
};

export function vectorName(v: number): string {
  return VECTOR_NAMES[v] ?? `vector ${v}`;
}

const h64 = (v: bigint) => `0x${v.toString(16).padStart(16, '0')}`;

/** Differences between host and emulator for one case (empty: they agree). */
export function compareCase(c: DiffCase, slot: number, host: DiffOutput, emu: DiffOutput & { rip: bigint }): string[] {
  const diffs: string[] = [];
  if (host.vector !== emu.vector) {
    diffs.push(`exception: host ${vectorName(host.vector)}, emulator ${vectorName(emu.vector)}${emu.note ? ` (${emu.note})` : ''}`);
    return diffs;
  }
  const faulted = host.vector !== -1;
  const slotAddr = big(CODE_ADDR + slot * SLOT_SIZE);
  const expectRip = faulted ? slotAddr : slotAddr + big(c.bytes.length);
  if (emu.rip !== expectRip) diffs.push(`rip: expected ${h64(expectRip)} (${faulted ? 'faulting instruction' : 'next instruction'}), emulator ${h64(emu.rip)}`);
  const dest = c.locations[0];
  const skipGpr = c.destUndefined && dest?.type === 'reg' ? dest.gpr : -1;
  for (let i = 0; i < 16; i++) {
    if (i === skipGpr) continue;
    if (host.regs[i] !== emu.regs[i]) diffs.push(`${GPR_NAMES[i]}: host ${h64(host.regs[i])}, emulator ${h64(emu.regs[i])}`);
  }
  const m = faulted ? COMPARED_FLAGS : COMPARED_FLAGS & ~c.undefinedFlags;
  const d = (host.rflags ^ emu.rflags) & m;
  if (d) diffs.push(`rflags: host [${flagsToString(host.rflags & m)}], emulator [${flagsToString(emu.rflags & m)}] (differ: ${flagsToString(d)})`);
  if (!(c.destUndefined && dest?.type === 'mem')) {
    for (let i = 0; i < host.mem.length; i++) {
      if (host.mem[i] !== emu.mem[i]) {
        diffs.push(`memory @data+0x${(c.memOff + i).toString(16)}: host ${hex(host.mem.subarray(i, i + 8))}, emulator ${hex(emu.mem.subarray(i, i + 8))}`);
        break;
      }
    }
  }
  return diffs;
}

/** A self-contained description of a mismatching case. */
export function describeMismatch(c: DiffCase, seed: number, host: DiffOutput, emu: DiffOutput, diffs: string[]): string {
  const lines: string[] = [];
  lines.push(`${c.form.id} case #${c.index}: ${disassemble(c.bytes)}   [${hex(c.bytes)}]`);
  lines.push(`  reproduce: TSVISOR_DIFF_SEED=${seed} TSVISOR_DIFF_FORMS='^${c.form.id}$'`);
  const ops = c.locations.map((l, i) => {
    const v = `0x${c.opVals[i].toString(16)}`;
    if (l.type === 'reg') return `op${i}=${v}`;
    if (l.type === 'mem') return `op${i}=[mem]${v}`;
    return `op${i}=imm ${v}`;
  });
  lines.push(`  operands: ${ops.join(', ')}; rflags in [${flagsToString(c.rflags & COMPARED_FLAGS)}]; undefined flags [${flagsToString(c.undefinedFlags)}]${c.undefinedWhy ? ` (${c.undefinedWhy})` : ''}`);
  lines.push(`  registers in: ${Array.from(c.regs, (v, i) => `${GPR_NAMES[i]}=${v.toString(16)}`).join(' ')}`);
  lines.push(`  host: ${vectorName(host.vector)}, rflags [${flagsToString(host.rflags & COMPARED_FLAGS)}]; emulator: ${vectorName(emu.vector)}, rflags [${flagsToString(emu.rflags & COMPARED_FLAGS)}]`);
  for (const d of diffs) lines.push(`  - ${d}`);
  return lines.join('\n');
}
