/**
 * A guest for the in-kernel 8254 (KVM_CREATE_PIT2): long mode, x2APIC; IRQ 0 reaches vector
 * 0x20 through the 8259 (LINT0 in ExtINT mode, master base 0x20, only IRQ 0 unmasked) or
 * through IOAPIC pin 2 (8259 fully masked, LINT0 masked; the test programs the redirection
 * entry, as firmware would). The guest programs counter 0 (mode, count), takes `irqs`
 * interrupts with STI; HLT, then latches counter 0's status and count with a read-back command
 * and stops with HLT — with interrupts off after a periodic mode, on after mode 0 (so a second
 * interrupt would show).
 *
 * Results: R15 interrupts taken, R13 the TSC when the count was written, R14 the TSC in the last
 * handler, R12 the status byte, RBX the latched count, RBP port 0x61 at the end.
 */
import {
  Assembler, emitIdtSetup, emitIdtTable, idtLabels, wrmsrImm, al, bl, bh, ebx, ebp, r12d, r13, r14, r15, rax, rdx,
} from '@tsvisor/testkit';

export const PIT_VECTOR = 0x20;

export interface PitGuestOptions {
  mode: 0 | 2 | 3;
  count: number;
  irqs: number;
  route: 'pic' | 'ioapic';
}

function outImm(a: Assembler, port: number, v: number): void {
  a.mov(al, v);
  a.out(port, al);
}

function tsc(a: Assembler, dst: typeof r13): void {
  a.rdtsc();
  a.shl(rdx, 32);
  a.or(rax, rdx);
  a.mov(dst, rax);
}

export function pitGuest(a: Assembler, o: PitGuestOptions): void {
  const handler = a.label('pit_handler');
  const wait = a.label('wait');
  const t = idtLabels(a);
  a.xor(r15, r15);
  emitIdtSetup(a, PIT_VECTOR, handler, t);
  wrmsrImm(a, 0x1b, 0xfee00d00); // IA32_APIC_BASE: enable, x2APIC
  wrmsrImm(a, 0x80f, 0x1ff); // SVR: software enable
  wrmsrImm(a, 0x835, o.route === 'pic' ? 0x700 : 0x10000); // LVT0: ExtINT, or masked
  // 8259 master: ICW1 (edge, cascade, ICW4), ICW2 base 0x20, ICW3 slave on IRQ2, ICW4 8086; OCW1.
  outImm(a, 0x20, 0x11);
  outImm(a, 0x21, PIT_VECTOR);
  outImm(a, 0x21, 0x04);
  outImm(a, 0x21, 0x01);
  outImm(a, 0x21, o.route === 'pic' ? 0xfe : 0xff);
  // Counter 0, lobyte/hibyte, the mode, binary.
  outImm(a, 0x43, 0x30 | (o.mode << 1));
  outImm(a, 0x40, o.count & 0xff);
  outImm(a, 0x40, (o.count >> 8) & 0xff);
  tsc(a, r13);
  a.sti();
  a.bind(wait);
  a.hlt();
  a.cmp(r15, o.irqs);
  a.jb(wait);
  a.cli();
  outImm(a, 0x43, 0xc2); // read-back: count and status of counter 0
  a.in(al, 0x40); // the status comes first
  a.movzx(r12d, al);
  a.xor(ebx, ebx);
  a.in(al, 0x40);
  a.mov(bl, al);
  a.in(al, 0x40);
  a.mov(bh, al);
  a.xor(ebp, ebp);
  a.in(al, 0x61);
  a.movzx(ebp, al);
  if (o.mode === 0) a.sti();
  a.hlt();
  a.cli();
  a.hlt();
  a.bind(handler);
  a.inc(r15);
  tsc(a, r14);
  outImm(a, 0x20, 0x20); // 8259 non-specific EOI
  wrmsrImm(a, 0x80b, 0); // LAPIC EOI
  a.iretq();
  emitIdtTable(a, t);
}
