/**
 * Exit-benchmark guests beyond the testkit's buildExitLoop: HLT woken by the LAPIC timer
 * (adapted from test/integration/lapic-timer-guest.ts), an IPI ping-pong between two vCPUs,
 * and the dirty-logging writer. Each reports on BENCH_RESULT_PORT and halts, like the
 * testkit's workloads.
 */
import {
  Assembler, BENCH_RESULT_PORT, buildLongModeGuest, emitIdtSetup, emitIdtTable, reportEax, wrmsrImm, GuestImage, al, dx, eax, ebx, ecx, edx, r12, r14, r14d, r15, r15d,
  rax, rbx, rcx, rdi, rsi, rsp, byte, mem, qword,
} from '@tsvisor/testkit';

export const TIMER_VECTOR = 0x40;
/** LAPIC timer initial count for the HLT loop (divide by 1: ns of guest time at 1 GHz). */
export const HLT_TIMER_COUNT = 10_000;

/**
 * `iterations` times: arm the x2APIC one-shot timer (HLT_TIMER_COUNT), then with `halt`
 * STI; HLT; CLI (the timer interrupt wakes the vCPU; the handler counts in R15 and EOIs),
 * without `halt` nothing (the re-armed timer never expires). Reports R15 (iterations or 0).
 */
export function buildHltTimerGuest(iterations: number, halt: boolean): GuestImage {
  return buildLongModeGuest((a) => {
    const handler = a.label('timer_handler');
    const idt = a.label('idt');
    const idtr = a.label('idtr');
    a.xor(r15, r15);
    emitIdtSetup(a, TIMER_VECTOR, handler, { idt, idtr });
    wrmsrImm(a, 0x1b, 0xfee00d00); // IA32_APIC_BASE: x2APIC on
    wrmsrImm(a, 0x80f, 0x1ff); // SVR: software enable
    wrmsrImm(a, 0x83e, 0xb); // divide by 1
    wrmsrImm(a, 0x832, TIMER_VECTOR); // LVT timer: one-shot
    a.mov(r12, iterations);
    const loop = a.here('hlt_loop');
    wrmsrImm(a, 0x838, HLT_TIMER_COUNT); // initial count: (re)arm
    if (halt) a.sti().hlt().cli();
    a.dec(r12);
    a.jnz(loop);
    wrmsrImm(a, 0x838, 0); // disarm
    a.mov(eax, r15d);
    reportEax(a);
    a.cli().hlt();
    a.bind(handler);
    a.inc(r15);
    wrmsrImm(a, 0x80b, 0); // EOI
    a.iretq();
    emitIdtTable(a, { idt, idtr });
  });
}

/**
 * Two vCPUs (x2APIC IDs 0 and 1) run this image. vCPU 1 waits in STI; HLT. vCPU 0, `iterations`
 * times with `ipi`: sends a fixed IPI (vector 0x40) to APIC 1 by writing the ICR, then
 * STI; HLT; CLI until vCPU 1's handler has EOI'd and sent one back (its own handler EOIs).
 * Reports vCPU 0's handler count (iterations, or 0 without `ipi`).
 */
export function buildIpiGuest(iterations: number, ipi: boolean): GuestImage {
  return buildLongModeGuest((a) => {
    const handler = a.label('ipi_handler');
    const idt = a.label('idt');
    const idtr = a.label('idtr');
    const ap = a.label('ap');
    a.xor(r15, r15);
    emitIdtSetup(a, TIMER_VECTOR, handler, { idt, idtr });
    a.mov(ecx, 0x1b).rdmsr().or(eax, 0xc00).wrmsr(); // x2APIC on (keeps the BSP bit as it is)
    wrmsrImm(a, 0x80f, 0x1ff);
    a.mov(ecx, 0x802).rdmsr().mov(r14d, eax); // x2APIC ID
    a.test(r14d, r14d);
    a.jnz(ap);
    a.mov(r12, iterations);
    const loop = a.here('ipi_loop');
    if (ipi) {
      wrmsrImm(a, 0x830, 0x4000 | TIMER_VECTOR, 1); // ICR: fixed, physical, to APIC 1
      a.sti().hlt().cli();
    }
    a.dec(r12);
    a.jnz(loop);
    a.mov(eax, r15d);
    reportEax(a);
    a.cli().hlt();
    a.bind(ap);
    a.mov(rsp, 0x60000); // its own stack
    a.sti();
    const wait = a.here('ap_wait');
    a.hlt();
    a.jmp(wait);
    a.bind(handler);
    a.inc(r15);
    wrmsrImm(a, 0x80b, 0); // EOI
    const done = a.label('ipi_done');
    a.test(r14d, r14d);
    a.jz(done);
    wrmsrImm(a, 0x830, 0x4000 | TIMER_VECTOR, 0); // answer: IPI to APIC 0
    a.bind(done);
    a.iretq();
    emitIdtTable(a, { idt, idtr });
  });
}

/**
 * Dirty-logging writer: forever, one byte per 4 KiB page over [base, base + bytes) (4
 * instructions per page), then the next sweep with the next byte value.
 */
export function buildDirtyWriter(base: number, bytes: number): GuestImage {
  return buildLongModeGuest((a) => {
    a.xor(eax, eax);
    const sweep = a.here('sweep');
    a.mov(rsi, base);
    a.mov(rcx, bytes / 4096);
    const page = a.here('page');
    a.mov(byte(rsi), al);
    a.add(rsi, 4096);
    a.dec(rcx);
    a.jnz(page);
    a.inc(eax);
    a.jmp(sweep);
  });
}

/** Instructions one sweep of buildDirtyWriter retires. */
export function dirtyWriterSweepInstructions(bytes: number): number {
  return (bytes / 4096) * 4 + 4;
}
