/**
 * Multiboot kernels built with the testkit for the CLI's end-to-end tests (cli-*.test.ts),
 * and a way to run `tsvisor` in-process on them.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { CliIo } from '@tsvisor/cli';
import { Captured, runCli, tempDir } from '../../packages/cli/test/helpers';
import {
  Assembler, al, ax, bl, ds, dx, eax, ebx, ecx, edi, esi, esp, byte, dword,
  buildMultibootKernel, haltLoop, serialPrint, serialPrintString,
} from '@tsvisor/testkit';

export type { Captured };

/** `tsvisor ARGV` in-process, output captured (the CLI package's test runner, no host cpuinfo). */
export function tsvisor(argv: string[], io: Partial<CliIo> = {}): Promise<Captured> {
  return runCli(argv, { readCpuinfo: () => null, ...io });
}

export { tempDir };

export function writeTemp(bytes: Uint8Array | string, name = 'kernel.bin'): string {
  const file = path.join(tempDir(), name);
  writeFileSync(file, bytes);
  return file;
}

function exitWith(a: Assembler, value: number): void {
  a.mov(dx, 0xf4);
  a.mov(eax, value);
  a.out(dx, eax);
  haltLoop(a);
}

/** Print the NUL-terminated string at [reg] (ESI is clobbered). */
function printAt(a: Assembler, reg: typeof esi): void {
  serialPrint(a, reg);
}

/**
 * Prints "hello from multiboot\n", "cmdline: <command line>\n", then per Multiboot module
 * "module <string>: <its bytes>\n", then writes `exitValue` to isa-debug-exit.
 */
export function helloKernel(exitValue: number): Uint8Array {
  return buildMultibootKernel((a) => {
    const bad = a.label('bad');
    a.mov(esp, 0x80000); // Multiboot leaves ESP undefined
    a.cmp(eax, 0x2badb002);
    a.jne(bad);
    a.mov(edi, ebx); // the Multiboot information structure
    serialPrintString(a, 'hello from multiboot\n');
    serialPrintString(a, 'cmdline: ');
    a.mov(esi, dword(edi, 16));
    printAt(a, esi);
    serialPrintString(a, '\n');
    // Modules: mods_count at +20, mods_addr at +24; each entry is start, end, string, reserved.
    a.mov(ecx, dword(edi, 20));
    a.mov(ebx, dword(edi, 24));
    const next = a.here('next_module');
    const done = a.label('modules_done');
    a.test(ecx, ecx);
    a.jz(done);
    a.push(ecx);
    serialPrintString(a, 'module ');
    a.mov(esi, dword(ebx, 8));
    printAt(a, esi);
    serialPrintString(a, ': ');
    a.mov(esi, dword(ebx, 0));
    a.mov(ecx, dword(ebx, 4));
    a.sub(ecx, esi);
    a.mov(dx, 0x3f8);
    const byteLoop = a.here('module_byte');
    a.mov(al, byte(esi));
    a.out(dx, al);
    a.inc(esi);
    a.loop(byteLoop);
    a.pop(ecx);
    a.add(ebx, 16);
    a.dec(ecx);
    a.jmp(next);
    a.bind(done);
    exitWith(a, exitValue);
    a.bind(bad);
    serialPrintString(a, 'not booted by a Multiboot loader\n');
    exitWith(a, 0xee);
  }).image;
}

/** A kernel that never stops: a tight loop (for --max-instructions, --timeout, Ctrl-C). */
export function spinKernel(): Uint8Array {
  return buildMultibootKernel((a) => {
    serialPrintString(a, 'spinning\n');
    const l = a.here('spin');
    a.jmp(l);
  }).image;
}

/** A kernel that halts for good after one line. */
export function haltKernel(): Uint8Array {
  return buildMultibootKernel((a) => {
    serialPrintString(a, 'halting\n');
    haltLoop(a);
  }).image;
}

const TRAMPOLINE = 0x8000;
const LOCK = 0x7000;
const AP_COUNT = 0x7008;
const APIC_ICR_LOW = 0xfee00300;
const APIC_SVR = 0xfee000f0;

/**
 * SMP: the BSP prints "BSP: starting N APs", copies a real-mode trampoline to 0x8000 and
 * starts the APs with INIT and two SIPIs (vector 0x08) through its xAPIC's ICR. Each AP
 * takes a spin lock, prints "AP <initial APIC id> up", counts itself and halts. When all
 * are up the BSP prints "BSP: N APs up" and writes `exitValue` to isa-debug-exit.
 */
export function smpKernel(aps: number, exitValue: number): Uint8Array {
  // The AP trampoline: 16-bit code at 0x8000 (a SIPI with vector 0x08 starts it at CS = 0x0800, IP = 0).
  const trampoline = buildTrampoline();

  return buildMultibootKernel((a) => {
    serialPrintString(a, `BSP: starting ${aps} APs\n`);
    // Copy the trampoline below 1 MiB, where a SIPI vector can point.
    const code = a.label('trampoline');
    a.mov(esi, code);
    a.mov(edi, TRAMPOLINE);
    a.mov(ecx, trampoline.length);
    a.repMovsb();
    a.mov(dword(AP_COUNT), 0);
    a.mov(dword(LOCK), 0);
    // Software-enable the local APIC, then INIT, SIPI, SIPI to all excluding self (SDM Vol. 3A 8.4.4.1).
    a.mov(dword(APIC_SVR), 0x1ff);
    a.mov(dword(APIC_ICR_LOW), 0x000c4500);
    a.mov(dword(APIC_ICR_LOW), 0x000c4600 | (TRAMPOLINE >> 12));
    a.mov(dword(APIC_ICR_LOW), 0x000c4600 | (TRAMPOLINE >> 12));
    const wait = a.here('wait_aps');
    a.pause();
    a.cmp(dword(AP_COUNT), aps);
    a.jb(wait);
    serialPrintString(a, `BSP: ${aps} APs up\n`);
    exitWith(a, exitValue);
    a.align(16, 0);
    a.bind(code);
    a.db(trampoline);
  }).image;

  function buildTrampoline(): Uint8Array {
    const r = new Assembler(16, TRAMPOLINE);
    r.cli();
    r.xor(ax, ax);
    r.mov(ds, ax);
    // Spin lock: xchg is atomic (a locked operation) on x86.
    const spin = r.here('spin');
    r.mov(al, 1);
    r.xchg(byte(LOCK), al);
    r.test(al, al);
    r.jnz(spin);
    r.mov(dx, 0x3f8);
    for (const ch of 'AP ') {
      r.mov(al, ch.charCodeAt(0));
      r.out(dx, al);
    }
    r.mov(eax, 1);
    r.cpuid();
    r.shr(ebx, 24); // CPUID.1:EBX[31:24] = initial APIC id
    r.add(bl, 0x30);
    r.mov(al, bl);
    r.mov(dx, 0x3f8);
    r.out(dx, al);
    for (const ch of ' up\n') {
      r.mov(al, ch.charCodeAt(0));
      r.out(dx, al);
    }
    r.inc(dword(AP_COUNT));
    r.mov(byte(LOCK), 0);
    haltLoop(r);
    return r.assemble();
  }
}
