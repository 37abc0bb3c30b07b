/**
 * Register operands. iced-x86's `Register` is a plain numeric enum, which would be
 * indistinguishable from an immediate in an operand list, so the assembler wraps each
 * register in a `Reg` object that also carries its width and class (the assembler picks
 * the instruction `Code` from them).
 */
import { Register } from 'iced-x86';

export type RegKind = 'gpr' | 'seg' | 'cr' | 'dr' | 'ip';

export class Reg {
  constructor(
    /** iced-x86 register id */
    readonly id: Register,
    /** lower-case NASM name */
    readonly name: string,
    /** width in bytes (segment registers: 2; CR/DR: natural width, filled by the mode) */
    readonly size: 1 | 2 | 4 | 8,
    readonly kind: RegKind,
  ) {}

  toString(): string {
    return this.name;
  }
}

function gpr(name: string, size: 1 | 2 | 4 | 8): Reg {
  const id = (Register as unknown as Record<string, Register>)[name.toUpperCase()];
  if (id === undefined) throw new Error(`iced-x86 has no register ${name}`);
  return new Reg(id, name, size, 'gpr');
}

// 8-bit
export const al = gpr('al', 1), cl = gpr('cl', 1), dl = gpr('dl', 1), bl = gpr('bl', 1);
export const ah = gpr('ah', 1), ch = gpr('ch', 1), dh = gpr('dh', 1), bh = gpr('bh', 1);
export const spl = gpr('spl', 1), bpl = gpr('bpl', 1), sil = gpr('sil', 1), dil = gpr('dil', 1);
// iced-x86 spells the low byte of r8..r15 "R8L"; NASM accepts both r8b and r8l.
export const r8b = new Reg(Register.R8L, 'r8b', 1, 'gpr'), r9b = new Reg(Register.R9L, 'r9b', 1, 'gpr');
export const r10b = new Reg(Register.R10L, 'r10b', 1, 'gpr'), r11b = new Reg(Register.R11L, 'r11b', 1, 'gpr');
export const r12b = new Reg(Register.R12L, 'r12b', 1, 'gpr'), r13b = new Reg(Register.R13L, 'r13b', 1, 'gpr');
export const r14b = new Reg(Register.R14L, 'r14b', 1, 'gpr'), r15b = new Reg(Register.R15L, 'r15b', 1, 'gpr');
// 16-bit
export const ax = gpr('ax', 2), cx = gpr('cx', 2), dx = gpr('dx', 2), bx = gpr('bx', 2);
export const sp = gpr('sp', 2), bp = gpr('bp', 2), si = gpr('si', 2), di = gpr('di', 2);
export const r8w = gpr('r8w', 2), r9w = gpr('r9w', 2), r10w = gpr('r10w', 2), r11w = gpr('r11w', 2);
export const r12w = gpr('r12w', 2), r13w = gpr('r13w', 2), r14w = gpr('r14w', 2), r15w = gpr('r15w', 2);
// 32-bit
export const eax = gpr('eax', 4), ecx = gpr('ecx', 4), edx = gpr('edx', 4), ebx = gpr('ebx', 4);
export const esp = gpr('esp', 4), ebp = gpr('ebp', 4), esi = gpr('esi', 4), edi = gpr('edi', 4);
export const r8d = gpr('r8d', 4), r9d = gpr('r9d', 4), r10d = gpr('r10d', 4), r11d = gpr('r11d', 4);
export const r12d = gpr('r12d', 4), r13d = gpr('r13d', 4), r14d = gpr('r14d', 4), r15d = gpr('r15d', 4);
// 64-bit
export const rax = gpr('rax', 8), rcx = gpr('rcx', 8), rdx = gpr('rdx', 8), rbx = gpr('rbx', 8);
export const rsp = gpr('rsp', 8), rbp = gpr('rbp', 8), rsi = gpr('rsi', 8), rdi = gpr('rdi', 8);
export const r8 = gpr('r8', 8), r9 = gpr('r9', 8), r10 = gpr('r10', 8), r11 = gpr('r11', 8);
export const r12 = gpr('r12', 8), r13 = gpr('r13', 8), r14 = gpr('r14', 8), r15 = gpr('r15', 8);
// segment registers
export const es = new Reg(Register.ES, 'es', 2, 'seg'), cs = new Reg(Register.CS, 'cs', 2, 'seg');
export const ss = new Reg(Register.SS, 'ss', 2, 'seg'), ds = new Reg(Register.DS, 'ds', 2, 'seg');
export const fs = new Reg(Register.FS, 'fs', 2, 'seg'), gs = new Reg(Register.GS, 'gs', 2, 'seg');
// control and debug registers; `size` is nominal, MOV CR/DR takes its width from the mode.
export const cr0 = new Reg(Register.CR0, 'cr0', 8, 'cr'), cr2 = new Reg(Register.CR2, 'cr2', 8, 'cr');
export const cr3 = new Reg(Register.CR3, 'cr3', 8, 'cr'), cr4 = new Reg(Register.CR4, 'cr4', 8, 'cr');
export const cr8 = new Reg(Register.CR8, 'cr8', 8, 'cr');
export const dr0 = new Reg(Register.DR0, 'dr0', 8, 'dr'), dr1 = new Reg(Register.DR1, 'dr1', 8, 'dr');
export const dr2 = new Reg(Register.DR2, 'dr2', 8, 'dr'), dr3 = new Reg(Register.DR3, 'dr3', 8, 'dr');
export const dr6 = new Reg(Register.DR6, 'dr6', 8, 'dr'), dr7 = new Reg(Register.DR7, 'dr7', 8, 'dr');
/** Only valid as a memory base in 64-bit code (RIP-relative addressing). */
export const rip = new Reg(Register.RIP, 'rip', 8, 'ip');
