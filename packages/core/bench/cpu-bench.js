#!/usr/bin/env node
/**
 * Processor benchmark: a CPU-bound guest (sieve of Eratosthenes over a 128 KiB byte array,
 * then a 64-bit xorshift loop; 4 rounds) in 32-bit protected mode and in 64-bit long mode.
 * Runs straight from the TypeScript sources (transpiled on load). Prints one JSON line per
 * workload: {workload, instructions, seconds, mips}.
 *   node packages/core/bench/cpu-bench.js [--rounds N]
 */
'use strict';
const fs = require('fs');
const path = require('path');
const ts = require('typescript');

// Minimal require hook: transpile .ts on load (no type check; `tsc` does that).
require.extensions['.ts'] = (module, filename) => {
  const src = fs.readFileSync(filename, 'utf8');
  const out = ts.transpileModule(src, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, experimentalDecorators: true, emitDecoratorMetadata: true },
    fileName: filename,
  });
  module._compile(out.outputText, filename);
};

const src = path.join(__dirname, '..', 'src');
const { HostMemory } = require(path.join(src, 'mmu', 'host-memory.ts'));
const { X86Cpu } = require(path.join(src, 'cpu', 'x86-cpu.ts'));
const { InterceptInsn, GuestExitKind } = require(path.join(src, 'cpu', 'guest-mode.ts'));

const hex = (s) => Uint8Array.from(s.trim().split(/\s+/).map((b) => parseInt(b, 16)));
// See the listings in test/cpu/bench-guest notes: same program for both modes (assembled with GNU as).
const CODE64 = hex(`41 bf 04 00 00 00 48 c7 c7 00 00 10 00 b9 00 00 02 00 c6 44 0f ff 01 ff c9 75 f7 bb 02 00 00 00 89 d8 0f af c3 3d 00 00 02 00 73 17 80 3c 1f 00 74 0d c6 04 07 00 01 d8 3d 00 00 02 00 72 f3 ff c3 eb dd 48 b8 15 7c 4a 7f b9 79 37 9e b9 e0 93 04 00 48 89 c2 48 c1 e2 0d 48 31 d0 48 89 c2 48 c1 ea 07 48 31 d0 48 89 c2 48 c1 e2 11 48 31 d0 ff c9 75 de 41 ff cf 75 8d f4`);
const CODE32 = hex(`bd 04 00 00 00 bf 00 00 10 00 b9 00 00 02 00 c6 44 0f ff 01 49 75 f8 bb 02 00 00 00 89 d8 0f af c3 3d 00 00 02 00 73 16 80 3c 1f 00 74 0d c6 04 07 00 01 d8 3d 00 00 02 00 72 f3 43 eb de b8 15 7c 4a 7f ba b9 79 37 9e b9 e0 93 04 00 89 c6 89 d7 0f a4 f7 0d c1 e6 0d 31 f0 31 fa 89 c6 89 d7 0f ac fe 07 c1 ef 07 31 f0 31 fa 89 c6 89 d7 0f a4 f7 11 c1 e6 11 31 f0 31 fa 49 75 d0 4d 75 85 f4`);

function rules() {
  return {
    insn: new Uint8Array(InterceptInsn.COUNT), exceptionExits: () => true, ioExits: () => true, msrExits: () => true,
    crWriteExits: () => false, crReadExits: () => false, crReadValue: (_c, v) => v, drExits: () => false,
    irqWindowExiting: false, nmiWindowExiting: false, shutdownExits: true, tdp: null, tlbTag: 0,
    monitorTrapFlag: false, preemptionDeadlineTsc: -1n,
  };
}

function setup(bits, rounds) {
  const host = new HostMemory();
  const ram = new Uint8Array(4 << 20);
  const base = host.map(ram, 'ram');
  const cpu = new X86Cpu(host, { gpaToHpa: (g) => (g < ram.length ? base + g : -1) }, { vendor: 'intel' });
  const dv = new DataView(ram.buffer);
  const gdt = [0n, 0x00cf9b000000ffffn, 0x00cf93000000ffffn, 0x00af9b000000ffffn];
  gdt.forEach((d, i) => dv.setBigUint64(0x500 + i * 8, d, true));
  const code = bits === 64 ? CODE64 : CODE32;
  ram.set(code, 0x1000);
  // Patch the round count (imm32 of the first instruction).
  dv.setUint32(0x1000 + (bits === 64 ? 2 : 1), rounds, true);
  const s = cpu.state;
  s.cr0 = 0x60000011n; s.gdtrBase = 0x500n; s.gdtrLimit = 0x1f;
  for (let i = 0; i < 6; i++) { s.segSel[i] = 0x10; s.segBaseLo[i] = 0; s.segLimit[i] = 0xffffffff; s.segAttr[i] = 0xc093; }
  s.segSel[1] = 0x08; s.segAttr[1] = 0xc09b;
  if (bits === 64) {
    dv.setBigUint64(0x10000, 0x11003n, true); dv.setBigUint64(0x11000, 0x12003n, true);
    dv.setBigUint64(0x12000, 0x83n, true); dv.setBigUint64(0x12008, 0x200083n, true);
    s.cr3 = 0x10000n; s.cr4 = 0x20n; s.efer = 0x500n; s.cr0 = 0xe0000011n;
    s.segSel[1] = 0x18; s.segAttr[1] = 0xa09b;
  }
  s.rip = 0x1000n;
  s.gprLo[4] = 0x7000;
  return cpu;
}

function run(bits, rounds) {
  const cpu = setup(bits, rounds);
  const r = rules();
  const t0 = process.hrtime.bigint();
  let kind;
  do { kind = cpu.runGuest(r, 50_000_000); } while (kind === GuestExitKind.BUDGET);
  const t1 = process.hrtime.bigint();
  if (kind !== GuestExitKind.HALTED) throw new Error(`bench ${bits}: unexpected exit ${GuestExitKind[kind]} at ${cpu.state.rip.toString(16)} ${cpu.hostError ?? ''}`);
  const secs = Number(t1 - t0) / 1e9;
  const n = cpu.state.instructionsRetired;
  return { workload: `sieve128k+xorshift64 ${bits}-bit`, instructions: n, seconds: +secs.toFixed(4), mips: +(n / secs / 1e6).toFixed(1) };
}

const ri = process.argv.indexOf('--rounds');
const rounds = ri > 0 ? Number(process.argv[ri + 1]) : 4;
run(32, 1); run(64, 1); // warm-up (translation and JIT)
for (const bits of [32, 64]) console.log(JSON.stringify(run(bits, rounds)));
