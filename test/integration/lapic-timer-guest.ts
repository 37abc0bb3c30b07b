/**
 * A LAPIC-timer guest for the backends' tests: long mode, x2APIC, one-shot timer of 100 000
 * APIC bus cycles (divide by 1) on vector 0x40; the handler counts in R15 and EOIs; the main
 * line waits with STI; HLT, then stops with CLI; HLT.
 */
import { Assembler, emitIdtSetup, emitIdtTable, idtLabels, wrmsrImm, r15 } from '@tsvisor/testkit';

export const TIMER_COUNT = 100_000;

export function lapicTimerGuest(a: Assembler): void {
  const handler = a.label('timer_handler');
  const t = idtLabels(a);
  a.xor(r15, r15);
  emitIdtSetup(a, 0x40, handler, t);
  wrmsrImm(a, 0x1b, 0xfee00d00); // IA32_APIC_BASE: enable x2APIC
  wrmsrImm(a, 0x80f, 0x1ff); // SVR: software enable
  wrmsrImm(a, 0x83e, 0xb); // divide by 1
  wrmsrImm(a, 0x832, 0x40); // LVT timer: one-shot, vector 0x40
  wrmsrImm(a, 0x838, TIMER_COUNT); // initial count
  a.sti();
  a.hlt();
  a.cli();
  a.hlt();
  a.bind(handler);
  a.inc(r15);
  wrmsrImm(a, 0x80b, 0); // EOI
  a.iretq();
  emitIdtTable(a, t);
}
