/**
 * The built-in demo guest (what `tsvisor run` boots when given no kernel).
 *
 * Real → protected → long mode via the boot stub, then in 64-bit mode:
 *   1. prints "tsvisor demo: long mode, CPU vendor <vendor>\n" on COM1, the vendor
 *      string read with CPUID leaf 0 (EBX, EDX, ECX) and printed from the stack;
 *   2. writes MSR_FS_BASE (0xC0000100) = DEMO_FS_BASE with WRMSR;
 *   3. port I/O: reads the UART's LSR (port 0x3FD) and writes DEMO_POST_CODE to port 0x80;
 *   4. `cli; hlt; jmp .` — a HLT exit, and HLT again if ever woken.
 *
 * A test runs it and checks the serial output, the FS base through get-MSRs/sregs, the
 * PIO exits, and that the vCPU stops at `haltAddress`.
 */
import { Label, dword, eax, ebx, ecx, edx, mem, al, dx, rsi, rsp } from '../asm';
import { BootOptions, GuestImage, buildGuest, createLongModeBoot } from './boot';
import { COM1_PORT, UART_LSR, haltLoop, serialPrint, serialWriteRoutine } from './serial';

export const MSR_FS_BASE = 0xc0000100;
/** Value the demo writes to MSR_FS_BASE (canonical: bits 63:47 are zero). */
export const DEMO_FS_BASE = 0x0000_7e57_0000_1000n;
/** Byte the demo writes to the POST-code port 0x80. */
export const DEMO_POST_CODE = 0x64;
export const POST_PORT = 0x80;
export const DEMO_BANNER_PREFIX = 'tsvisor demo: long mode, CPU vendor ';

/** The exact serial output of the demo on a CPU whose CPUID vendor is `vendor`. */
export function demoExpectedOutput(vendor: string): string {
  return `${DEMO_BANNER_PREFIX}${vendor}\n`;
}

export interface DemoGuest extends GuestImage {
  fsBase: bigint;
  postCode: number;
  /** address of the HLT the guest stops at */
  haltAddress: number;
  /** serial output for a given CPUID vendor string */
  expectedOutput(vendor: string): string;
  labels: {
    main: Label;
    halt: Label;
    serialWrite: Label;
  };
}

export function buildDemoGuest(opts: BootOptions = {}): DemoGuest {
  const stub = createLongModeBoot(opts);
  const a = stub.long;
  const main = a.here('demo_main');
  const serialWrite = a.label('serial_write');

  // 1. banner
  serialPrint(a, a.literal(DEMO_BANNER_PREFIX));
  a.xor(eax, eax);
  a.cpuid();
  // The 12 vendor bytes go to the stack, in EBX, EDX, ECX order.
  a.sub(rsp, 16);
  a.mov(dword(rsp), ebx);
  a.mov(dword(rsp, 4), edx);
  a.mov(dword(rsp, 8), ecx);
  a.mov(rsi, rsp);
  a.mov(ecx, 12);
  a.call(serialWrite);
  a.add(rsp, 16);
  a.lea(rsi, mem(a.literal('\n')));
  a.mov(ecx, 1);
  a.call(serialWrite);

  // 2. FS base: WRMSR takes EDX:EAX
  a.mov(ecx, MSR_FS_BASE);
  a.mov(eax, Number(DEMO_FS_BASE & 0xffffffffn));
  a.mov(edx, Number(DEMO_FS_BASE >> 32n));
  a.wrmsr();

  // 3. port I/O: one IN, one OUT
  a.mov(dx, COM1_PORT + UART_LSR);
  a.in(al, dx);
  a.mov(al, DEMO_POST_CODE);
  a.out(POST_PORT, al);

  // 4. stop
  const halt = haltLoop(a);

  // subroutine, after the halt loop so execution never falls into it
  a.align(16);
  serialWriteRoutine(a, {}, serialWrite);

  const guest = buildGuest(stub);
  return {
    ...guest,
    fsBase: DEMO_FS_BASE,
    postCode: DEMO_POST_CODE,
    haltAddress: guest.assembled.addressOf(halt),
    expectedOutput: demoExpectedOutput,
    labels: { main, halt, serialWrite },
  };
}
