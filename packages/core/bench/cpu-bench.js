#!/usr/bin/env node
/**
 * Processor benchmark: the CPU-bound guests of @tsvisor/testkit (guests/bench.ts: a sieve of
 * Eratosthenes over a 128 KiB byte array, `sieveRounds` times, then a 64-bit xorshift loop),
 * booted from real mode into 32-bit protected mode and into 64-bit long mode, run on the bare
 * processor (no VMM) in each execution tier. The guest reports its checksums on port 0x504;
 * they are checked against cpuBenchExpected.
 *
 * Runs straight from the TypeScript sources (transpiled on load, no type check). Prints one JSON
 * line per workload and tier:
 *   {workload, tier, instructions, seconds, mips, compiledShare, blocksCompiled, loadavg}
 *
 *   node packages/core/bench/cpu-bench.js [--rounds N] [--iters N] [--tier interpreter|jit] [--repeat N]
 */
'use strict';
const fs = require('fs');
const os = require('os');
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
const testkit = path.join(__dirname, '..', '..', 'testkit', 'src');
const { HostMemory } = require(path.join(src, 'mmu', 'host-memory.ts'));
const { X86Cpu } = require(path.join(src, 'cpu', 'x86-cpu.ts'));
const { InterceptInsn, GuestExitKind } = require(path.join(src, 'cpu', 'guest-mode.ts'));
const { buildCpuBench32, buildCpuBench64, cpuBenchExpected, BENCH_RESULT_PORT } = require(path.join(testkit, 'guests', 'bench.ts'));

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
}

function rules() {
  return {
    insn: new Uint8Array(InterceptInsn.COUNT), exceptionExits: () => true, ioExits: () => false, msrExits: () => false,
    crWriteExits: () => false, crReadExits: () => false, crReadValue: (_c, v) => v, drExits: () => false,
    irqWindowExiting: false, nmiWindowExiting: false, shutdownExits: true, tdp: null, tlbTag: 0,
    monitorTrapFlag: false, preemptionDeadlineTsc: -1n,
  };
}

/** A processor with 4 MiB of RAM and the guest image loaded, in real mode at the image's CS:IP. */
function setup(image, tier) {
  const host = new HostMemory();
  const ram = new Uint8Array(4 << 20);
  const base = host.map(ram, 'ram');
  const cpu = new X86Cpu(host, { gpaToHpa: (g) => (g >= 0 && g < ram.length ? base + g : -1) }, { vendor: 'intel', tier });
  ram.set(image.image, image.loadAddress);
  const s = cpu.state;
  s.segSel[1] = image.cs; s.segBaseLo[1] = image.cs * 16;
  s.rip = BigInt(image.ip);
  const results = [];
  cpu.ports = {
    in: (_p, size) => (size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff),
    out: (port, _size, value) => { if (port === BENCH_RESULT_PORT) results.push(value >>> 0); },
  };
  return { cpu, results };
}

function run(bits, tier, opts) {
  const image = bits === 64 ? buildCpuBench64(opts) : buildCpuBench32(opts);
  const { cpu, results } = setup(image, tier);
  const r = rules();
  const t0 = process.hrtime.bigint();
  let kind;
  do { kind = cpu.runGuest(r, 50_000_000); } while (kind === GuestExitKind.BUDGET);
  const t1 = process.hrtime.bigint();
  if (kind !== GuestExitKind.HALTED) {
    throw new Error(`bench ${bits}/${tier}: unexpected exit ${GuestExitKind[kind]} at ${cpu.state.rip.toString(16)} ${cpu.hostError ?? ''}`);
  }
  const want = cpuBenchExpected(opts);
  if (results.length !== 2 || results[0] !== want[0] || results[1] !== want[1]) {
    throw new Error(`bench ${bits}/${tier}: wrong results ${JSON.stringify(results)}, expected ${JSON.stringify(want)}`);
  }
  const secs = Number(t1 - t0) / 1e9;
  const n = cpu.state.instructionsRetired;
  const st = cpu.stats;
  return {
    workload: `sieve128k+xorshift64 ${bits}-bit`,
    tier,
    instructions: n,
    seconds: +secs.toFixed(4),
    mips: +(n / secs / 1e6).toFixed(1),
    compiledShare: +(st.compiledInstructions / Math.max(1, n)).toFixed(3),
    blocksCompiled: st.blocksCompiled,
    loadavg: +os.loadavg()[0].toFixed(2),
  };
}

const opts = { sieveRounds: Number(arg('--rounds', 4)), xorshiftIterations: Number(arg('--iters', 1_000_000)) };
const tiers = arg('--tier', null) ? [arg('--tier')] : ['interpreter', 'jit'];
const repeat = Number(arg('--repeat', 1));
for (const tier of tiers) {
  // Warm-up: translation, compilation and V8's own tiers.
  run(32, tier, { sieveRounds: 1, xorshiftIterations: 200_000 });
  run(64, tier, { sieveRounds: 1, xorshiftIterations: 200_000 });
  for (const bits of [32, 64]) {
    let best = null;
    for (let i = 0; i < repeat; i++) {
      const r = run(bits, tier, opts);
      if (best === null || r.mips > best.mips) best = r;
    }
    console.log(JSON.stringify(best));
  }
}
