// Host x86 instructions per exit round trip, counted (deterministic, unlike time on a shared host).
//
//   scripts/exit-insns.sh [vmx|svm] [cpuid|hypercall|rdmsr|wrmsr|pio-kernel|...] [tree]
//
// runs this script twice under valgrind (N and 2N exits after the same warm-up and a full GC,
// as `bench` measures: packages/cli/src/bench/heap.ts) and prints (count(2N) − count(N)) / N.
// With `node --predictable --single-threaded` V8 compiles and collects at the same points in
// both runs, so the difference is the exits' own instructions (±10 between runs).
//
//   node scripts/exit-insns.js <n> <op>   (env B = backend, R = repository root, W = warm-up exits)
const root = (process.env.R || require('path').resolve(__dirname, '..')) + '/packages';
const n = Number(process.argv[2] || 0);
const op = process.argv[3] || 'cpuid';
const { bootBench, drive } = require(root + '/cli/dist/bench/vm.js');
const { buildExitLoop } = require(root + '/testkit/dist/index.js');
const { KvmMpState } = require(root + '/core/dist');
const B = process.env.B || 'vmx';
const g = buildExitLoop(op, 1000, { hypercall: B === 'svm' ? 'vmmcall' : 'vmcall', kernelPort: 0x21 });
const { vcpu } = bootBench(B, g, { irqchip: true });
drive(vcpu);
const loop = (k) => {
  vcpu.setRegs({ ...vcpu.getRegs(), r12: BigInt(k), rip: BigInt(g.symbols.exit_loop) });
  vcpu.setMpState(KvmMpState.RUNNABLE);
  drive(vcpu);
};
const W = Number(process.env.W || 200000);
for (let i = 0; i < 10; i++) loop(W / 10);
if (global.gc) global.gc();
if (n) loop(n);
