/**
 * Guest-side IDT and MSR helpers for 64-bit testkit guests: an in-image IDT whose gates the
 * guest fills itself (so the image is position-independent), and WRMSR of constants.
 */
import { Assembler, Label, eax, ecx, edx, rax, rbx, rcx, rdi, mem, qword } from '../asm';

/** The boot stub's 64-bit code selector. */
const CODE64 = 0x18;

export interface IdtLabels {
  idt: Label;
  idtr: Label;
}

/** Labels for an IDT and its IDTR, to use in code before emitIdtTable places them. */
export function idtLabels(a: Assembler): IdtLabels {
  return { idt: a.label('idt'), idtr: a.label('idtr') };
}

/** Place the 256-entry IDT and its IDTR (16-byte aligned) here. */
export function emitIdtTable(a: Assembler, { idt, idtr }: IdtLabels): IdtLabels {
  a.align(16, 0);
  a.bind(idt);
  a.space(256 * 16);
  a.bind(idtr);
  a.dw(256 * 16 - 1);
  a.dq(idt);
  return { idt, idtr };
}

/** Fill the gate for `vector` and load the IDTR: the usual prologue of an interrupt-driven guest. */
export function emitIdtSetup(a: Assembler, vector: number, handler: Label, t: IdtLabels): void {
  emitIdtGate(a, vector, handler, t.idt);
  a.lidt(mem(t.idtr));
}

/**
 * Fill gate `vector` of `idt` with a 64-bit interrupt gate (type 0xE, DPL 0, present, CS 0x18)
 * to `handler` (SDM 6.14.1). Clobbers RAX, RBX, RCX, RDI.
 */
export function emitIdtGate(a: Assembler, vector: number, handler: Label, idt: Label): void {
  a.lea(rax, mem(handler));
  a.mov(rbx, rax);
  a.and(eax, 0xffff);
  a.or(eax, CODE64 << 16);
  a.mov(rcx, 0x00008e0000000000n);
  a.or(rax, rcx);
  a.shr(rbx, 16);
  a.shl(rbx, 48);
  a.or(rax, rbx);
  a.lea(rdi, mem(idt));
  a.mov(qword(rdi, vector * 16), rax);
}

/** `wrmsr` of a constant: ECX = msr, EDX:EAX = hi:lo. */
export function wrmsrImm(a: Assembler, msr: number, lo: number, hi = 0): void {
  a.mov(ecx, msr).mov(eax, lo >>> 0).mov(edx, hi >>> 0).wrmsr();
}
