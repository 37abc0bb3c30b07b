/**
 * Operands: labels, label expressions, immediates and memory references.
 *
 * Labels are linear (guest-physical, in an identity-mapped guest) addresses. They are
 * not owned by a section, so one label can be bound in a 16-bit section and referenced
 * from 64-bit code of the same image.
 */
import { Reg } from './registers';

let nextLabelId = 1;

export class Label {
  readonly id: number;
  readonly name: string;
  /** Linear address, set when the image that binds this label is assembled. */
  address: number | undefined;

  constructor(name?: string) {
    this.id = nextLabelId++;
    this.name = name ?? `L${this.id}`;
  }

  /** `label + n` as an operand (immediate, displacement, data or branch target). */
  plus(n: number): LabelRef {
    return new LabelRef(this, n);
  }

  minus(n: number): LabelRef {
    return new LabelRef(this, -n);
  }

  toString(): string {
    return this.address === undefined ? this.name : `${this.name}@0x${this.address.toString(16)}`;
  }
}

/** `label + addend`. */
export class LabelRef {
  constructor(readonly label: Label, readonly addend: number) {}

  plus(n: number): LabelRef {
    return new LabelRef(this.label, this.addend + n);
  }

  minus(n: number): LabelRef {
    return new LabelRef(this.label, this.addend - n);
  }
}

/** A value known now (number/bigint) or after layout (label, label + n). */
export type Expr = number | bigint | Label | LabelRef;

export function isLabelExpr(x: unknown): x is Label | LabelRef {
  return x instanceof Label || x instanceof LabelRef;
}

export type Scale = 1 | 2 | 4 | 8;

/** Operand width in bytes for memory references; 0 = unsized (LEA, LGDT, far pointers). */
export type MemSize = 0 | 1 | 2 | 4 | 8 | 10;

export interface MemSpec {
  base?: Reg;
  index?: Reg;
  scale?: Scale;
  disp?: Expr;
  /** segment override prefix */
  seg?: Reg;
}

/**
 * A memory operand. In 64-bit code a reference with no base and no index whose
 * displacement is a label is encoded RIP-relative (position-independent, and it reaches
 * labels anywhere in the image); use `{ base: ..., disp: label }` or an explicit `abs`
 * to force absolute addressing.
 */
export class Mem {
  readonly base: Reg | undefined;
  readonly index: Reg | undefined;
  readonly scale: Scale;
  readonly disp: Expr;
  readonly seg: Reg | undefined;

  constructor(spec: MemSpec, readonly size: MemSize, readonly absolute = false) {
    this.base = spec.base;
    this.index = spec.index;
    this.scale = spec.scale ?? 1;
    this.disp = spec.disp ?? 0;
    this.seg = spec.seg;
    if (this.base && this.base.kind !== 'gpr' && this.base.kind !== 'ip') throw new Error(`bad base register ${this.base}`);
    if (this.index && this.index.kind !== 'gpr') throw new Error(`bad index register ${this.index}`);
    if (this.seg && this.seg.kind !== 'seg') throw new Error(`bad segment override ${this.seg}`);
  }

  /** Same reference with another operand size. */
  withSize(size: MemSize): Mem {
    return new Mem(this, size, this.absolute);
  }
}

/** Address forms accepted by `byte()`, `dword()`, `mem()` ...: a base register, a constant or label, or a full spec. */
export type Addr = Reg | Expr | MemSpec;

function toSpec(addr: Addr, disp?: Expr): MemSpec {
  let spec: MemSpec;
  if (addr instanceof Reg) spec = { base: addr };
  else if (typeof addr === 'number' || typeof addr === 'bigint' || isLabelExpr(addr)) spec = { disp: addr };
  else spec = { ...addr };
  if (disp !== undefined) {
    if (spec.disp !== undefined && spec.disp !== 0) throw new Error('displacement given twice');
    spec.disp = disp;
  }
  return spec;
}

/** Unsized memory reference, e.g. for `lea`, `lgdt`, `invlpg`: `mem(rbx, 8)`, `mem(gdtr)`. */
export function mem(addr: Addr, disp?: Expr): Mem {
  return new Mem(toSpec(addr, disp), 0);
}
export function byte(addr: Addr, disp?: Expr): Mem {
  return new Mem(toSpec(addr, disp), 1);
}
export function word(addr: Addr, disp?: Expr): Mem {
  return new Mem(toSpec(addr, disp), 2);
}
export function dword(addr: Addr, disp?: Expr): Mem {
  return new Mem(toSpec(addr, disp), 4);
}
export function qword(addr: Addr, disp?: Expr): Mem {
  return new Mem(toSpec(addr, disp), 8);
}
/** Force absolute (non RIP-relative) addressing of a label in 64-bit code. */
export function abs(m: Mem): Mem {
  return new Mem(m, m.size, true);
}

/** Any instruction operand. */
export type Operand = Reg | Mem | Expr;
