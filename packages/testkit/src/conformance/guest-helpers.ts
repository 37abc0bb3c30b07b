/**
 * Host-side helpers the conformance scenarios share: an IDT written by the host for a
 * long-mode testkit guest, and reading guest RAM.
 */
import type { Kvm } from '@tsvisor/core';
import { Assembler, Label, eax, mem } from '../asm';

/** Where scenario guests keep their IDT (below the boot stub's page tables at 0x70000). */
export const IDT_BASE = 0x60000;
export const IDT_LIMIT = 256 * 16 - 1;
/** The boot stub's 64-bit code selector. */
const CODE64 = 0x18;

/** Emit `lidt` of an IDTR pointing at IDT_BASE (the IDTR itself lives in the literal data). */
export function loadScenarioIdt(a: Assembler): void {
  const idtr = a.label('scenario_idtr');
  const after = a.label('scenario_idtr_after');
  a.jmp(after);
  a.bind(idtr);
  a.dw(IDT_LIMIT);
  a.dq(IDT_BASE);
  a.bind(after);
  a.lidt(mem(idtr));
}

/** Write a 64-bit interrupt gate (type 0xE, DPL 0, present) for `vector` → `handler` (SDM 6.14.1). */
export function writeIdtGate(kvm: Kvm, vector: number, handler: number): void {
  const ram = kvm.slot(0)!.userspace;
  const dv = new DataView(ram.buffer, ram.byteOffset);
  const at = IDT_BASE + vector * 16;
  dv.setUint16(at, handler & 0xffff, true);
  dv.setUint16(at + 2, CODE64, true);
  dv.setUint8(at + 4, 0); // IST 0
  dv.setUint8(at + 5, 0x8e); // P=1, DPL=0, 64-bit interrupt gate
  dv.setUint16(at + 6, (handler >>> 16) & 0xffff, true);
  dv.setUint32(at + 8, Math.floor(handler / 2 ** 32), true);
  dv.setUint32(at + 12, 0, true);
}

export function readU64(kvm: Kvm, gpa: number): bigint {
  const ram = kvm.slot(0)!.userspace;
  return new DataView(ram.buffer, ram.byteOffset).getBigUint64(gpa, true);
}

export function writeU64(kvm: Kvm, gpa: number, v: bigint): void {
  const ram = kvm.slot(0)!.userspace;
  new DataView(ram.buffer, ram.byteOffset).setBigUint64(gpa, v, true);
}

/** `mov rax, imm; out port, eax`: report a 32-bit value to the host. */
export function report(a: Assembler, port: number, value: number): void {
  a.mov(eax, value);
  a.out(port, eax);
}

export type { Label };
