import type { X86Cpu } from './x86-cpu';

/**
 * An operation: one decoded guest instruction, pre-specialized at translation time.
 * `fn` returns 0 (retired; the run loop advances RIP by `len`), 1 (retired; `fn` set RIP
 * itself and the block ends), 2 (not retired: an exception or exit is pending in
 * `cpu.pend`), or 3 (a partial REP string step: not retired, RIP unchanged, run again).
 */
export type OpFn = (c: X86Cpu, o: Op) => number;

/** Operand kinds. */
export const K_REG = 0, K_MEM = 1, K_IMM = 2, K_NONE = 3;
/** `mb` value for RIP-relative addressing. */
export const BASE_RIP = 16;

/** Fixed-shape record (every field initialized) so V8 keeps one hidden class for all ops. */
export class Op {
  fn: OpFn;
  /** Instruction length. */
  len = 0;
  /** Operand size in bytes (1, 2, 4, 8). */
  sz = 4;
  /** Address size in bytes (2, 4, 8). */
  asz = 4;
  /** Destination and source operand kinds and values (register number, see regCode). */
  dk = K_NONE; d = 0;
  sk = K_NONE; s = 0;
  /** Third operand (count/immediate of SHLD, IMUL r,r/m,imm; BMI sources). */
  tk = K_NONE; t = 0;
  /** Memory operand: segment, base (-1 none, BASE_RIP), index (-1 none), scale shift, displacement lo/hi. */
  seg = 3; mb = -1; mi = -1; ms = 0; dl = 0; dh = 0;
  /** Immediate (sign- or zero-extended to the operand size) lo/hi. */
  il = 0; ih = 0;
  /** Second immediate (ENTER level, far pointer selector, ...). */
  i2 = 0;
  /** Relative branch displacement. */
  br = 0;
  /** Condition code or sub-operation. */
  cc = 0;
  /** Extra per-op datum. */
  x = 0;
  /** REP prefix: 0 none, 1 REP/REPE, 2 REPNE. */
  rep = 0;
  /** The instruction's bytes (for exits: SVM decode assists, VMX instruction length). */
  bytes: Uint8Array;
  constructor(fn: OpFn, bytes: Uint8Array) {
    this.fn = fn;
    this.bytes = bytes;
  }
}
