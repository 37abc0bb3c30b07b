/**
 * A LAPIC-timer guest for the backends' tests: long mode, x2APIC, one-shot timer of 100 000
 * APIC bus cycles (divide by 1) on vector 0x40; the handler counts in R15 and EOIs; the main
 * line waits with STI; HLT, then stops with CLI; HLT.
 */
import { Assembler, eax, ecx, edx, rax, rbx, rcx, rdi, r15, mem, qword } from '@tsvisor/testkit';

export const TIMER_COUNT = 100_000;

export function lapicTimerGuest(a: Assembler): void {
  const handler = a.label('timer_handler');
  const idt = a.label('idt');
  const idtr = a.label('idtr');
  const wrmsr = (msr: number, value: number) => {
    a.mov(ecx, msr);
    a.mov(eax, value);
    a.xor(edx, edx);
    a.wrmsr();
  };
  a.xor(r15, r15);
  // IDT gate 0x40: 64-bit interrupt gate, CS 0x18, present, DPL 0.
  a.lea(rax, mem(handler));
  a.mov(rbx, rax);
  a.and(eax, 0xffff);
  a.or(eax, 0x18 << 16);
  a.mov(rcx, 0x00008e0000000000n);
  a.or(rax, rcx);
  a.shr(rbx, 16);
  a.shl(rbx, 48);
  a.or(rax, rbx);
  a.lea(rdi, mem(idt));
  a.mov(qword(rdi, 0x40 * 16), rax);
  a.lidt(mem(idtr));
  wrmsr(0x1b, 0xfee00d00); // IA32_APIC_BASE: enable x2APIC
  wrmsr(0x80f, 0x1ff); // SVR: software enable
  wrmsr(0x83e, 0xb); // divide by 1
  wrmsr(0x832, 0x40); // LVT timer: one-shot, vector 0x40
  wrmsr(0x838, TIMER_COUNT); // initial count
  a.sti();
  a.hlt();
  a.cli();
  a.hlt();
  a.bind(handler);
  a.inc(r15);
  wrmsr(0x80b, 0); // EOI
  a.iretq();
  a.align(16, 0);
  a.bind(idt);
  a.space(256 * 16);
  a.bind(idtr);
  a.dw(256 * 16 - 1);
  a.dq(idt);
}
