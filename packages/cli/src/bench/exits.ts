/**
 * Exit round trips, each as (time of a guest loop of N operations − time of the same loop
 * without them) / N, the way KVM's own exit microbenchmarks (kvm-unit-tests vmexit.c) count.
 * Every VM has the in-kernel irqchip (KVM_CREATE_IRQCHIP), as a real VMM's would.
 *
 * Like vmexit.c, the loop workloads measure the steady state: each VM (one with the
 * operation, one without) is created once, runs its loop once untimed (V8 compiles the exit
 * path, the processor's TLB and block caches fill), and then runs the same loop again for
 * every timed pass — restarted at its loop label, in the same VM — so neither VM creation nor
 * first-run costs are in the per-exit figure. Wall and CPU time are both taken around
 * KVM_RUN only.
 */
import { KvmExitReason, KvmMpState, Machine, KvmVcpu } from '@tsvisor/core';
import { buildExitLoop, ExitOp, GuestImage } from '@tsvisor/testkit';
import { buildHltTimerGuest, buildIpiGuest } from './guests';
import { BenchSizes, ExitWorkload } from './options';
import { settleHeap } from './heap';
import { mapStat, Stat, stat } from './stats';
import { BACKEND_CLASSES, BenchBackend, bootBench, CpuTier, cpuNs, DEFAULT_TIER, drive, expectHalt, nowNs, setTier } from './vm';

/** In-kernel device port for 'pio-kernel': the master 8259's IMR (core's in-kernel PIC). */
export const KERNEL_PIO_PORT = 0x21;
/** The ACPI PM timer of the platform (a userspace device on Machine's port bus). */
export const PM_TIMER_PORT = 0x608;

export interface ExitResult {
  exit: ExitWorkload;
  backend: BenchBackend;
  description: string;
  iterations: number;
  /** Operations per iteration the figure is divided by (2 for the IPI ping-pong). */
  perIteration: number;
  ns: Stat;
  /** The same over this process's CPU time (user + system) instead of wall time. */
  nsCpu: Stat;
  /** Loop with / without the operation, seconds (medians). */
  withSeconds: number;
  baselineSeconds: number;
  checksum: { expected: number[]; got: number[]; ok: boolean };
  note?: string;
}

interface Timed {
  ns: number;
  /** This process's CPU time over the same interval. */
  cpuNs: number;
  results: number[];
}

function describe(exit: ExitWorkload, backend: BenchBackend): string {
  switch (exit) {
    case 'cpuid': return 'CPUID exit (leaf 0), handled in core (kvm_emulate_cpuid)';
    case 'hypercall': return `${backend === 'vmx' ? 'VMCALL' : 'VMMCALL'} hypercall (KVM_HC_VAPIC_POLL_IRQ)`;
    case 'rdmsr': return 'RDMSR of IA32_APIC_BASE (intercepted)';
    case 'wrmsr': return 'WRMSR of EFER, same value (intercepted)';
    case 'pio-kernel': return `IN from the in-kernel PIC (port 0x${KERNEL_PIO_PORT.toString(16)}), no userspace exit`;
    case 'pm-timer': return `IN from the ACPI PM timer (port 0x${PM_TIMER_PORT.toString(16)}), a userspace device: KVM_EXIT_IO to Machine`;
    case 'pio-user': return 'OUT to an unclaimed port: KVM_EXIT_IO to userspace and back';
    case 'mmio-user': return 'MOV from unbacked memory: KVM_EXIT_MMIO to userspace and back (instruction emulation)';
    case 'hlt-timer': return 'HLT woken by the LAPIC timer interrupt (idle time skipped by the virtual clock), handler EOIs';
    case 'ipi': return 'IPI to a halted vCPU (ICR write, wake, handler EOIs); ping-pong / 2';
  }
}

/** Least CPU time of one timed loop with the operation (vmexit.c's GOAL of 2^27 cycles). */
const STEADY_GOAL_NS = 50e6;
const STEADY_MAX_ITERATIONS = 1 << 23;
/** Exits run untimed (after the boot pass) before the steady-state figure is taken. */
const STEADY_WARMUP_EXITS = 50_000;

const LOOP_OPS: Partial<Record<ExitWorkload, ExitOp>> = {
  cpuid: 'cpuid', hypercall: 'hypercall', rdmsr: 'rdmsr', wrmsr: 'wrmsr', 'pio-kernel': 'pio-kernel', 'pio-user': 'pio-user', 'mmio-user': 'mmio-user',
};

/** Run a single-vCPU guest through the KVM API (irqchip on) and time KVM_RUN until it halts. */
function timeKvm(backend: BenchBackend, guest: GuestImage, tier: CpuTier, what: string): Timed {
  const { kvm, vcpu } = bootBench(backend, guest, { memory: 32 << 20, irqchip: true, tier });
  try {
    const c0 = cpuNs();
    const t0 = nowNs();
    const r = drive(vcpu);
    const ns = nowNs() - t0;
    const cpu = cpuNs() - c0;
    expectHalt(what, vcpu, r);
    return { ns, cpuNs: cpu, results: r.results };
  } finally {
    kvm.destroy();
  }
}

/**
 * One VM running an exit loop (testkit's buildExitLoop) pass after pass: the first pass boots
 * the guest to long mode and runs the loop; each later pass restarts it at `exit_loop` with
 * R12 = n (the loop counter; the value the guest reports stays the image's N) and the vCPU
 * runnable again after its HLT.
 */
class LoopVm {
  private readonly booted;
  private readonly loopRip: bigint;
  private started = false;

  /** Loop iterations of the next restarted pass (the image's own count on the first). */
  n: number;

  constructor(backend: BenchBackend, guest: GuestImage, n: number, tier: CpuTier, private readonly what: string) {
    this.n = n;
    const rip = guest.symbols.exit_loop;
    if (rip === undefined) throw new Error(`${what}: the exit loop has no 'exit_loop' label`);
    this.loopRip = BigInt(rip); // the long-mode stub identity-maps the image
    this.booted = bootBench(backend, guest, { memory: 32 << 20, irqchip: true, tier });
  }

  pass(): Timed {
    const { vcpu } = this.booted;
    if (this.started) {
      vcpu.setRegs({ ...vcpu.getRegs(), r12: BigInt(this.n), rip: this.loopRip });
      vcpu.setMpState(KvmMpState.RUNNABLE);
    }
    this.started = true;
    const c0 = cpuNs();
    const t0 = nowNs();
    const r = drive(vcpu);
    const ns = nowNs() - t0;
    const cpu = cpuNs() - c0;
    expectHalt(this.what, vcpu, r);
    return { ns, cpuNs: cpu, results: r.results };
  }

  destroy(): void {
    this.booted.kvm.destroy();
  }
}

/** Run a flat guest on the platform Machine (its devices answer the exits) and time it. */
function timeMachine(backend: BenchBackend, guest: GuestImage, what: string): Timed {
  const results: number[] = [];
  const m = Machine.create({
    backend: BACKEND_CLASSES[backend], memory: 32 << 20, kernel: { name: 'bench.bin', data: guest.image },
    format: 'flat', loadAddr: guest.loadAddress, mode: 'real', sliceInstructions: 1_000_000,
  });
  try {
    try {
      m.ports.register('bench-result', 0x504, 4, { write32: (_p, v) => void results.push(v >>> 0) });
    } catch {
      /* the port is taken: no checksum */
    }
    const c0 = cpuNs();
    const t0 = nowNs();
    const r = m.runSync();
    const ns = nowNs() - t0;
    const cpu = cpuNs() - c0;
    if (r.reason !== 'halted') throw new Error(`${what}: machine stopped with ${r.reason}: ${r.message}`);
    return { ns, cpuNs: cpu, results };
  } finally {
    m.kvm.destroy();
  }
}

/** Two vCPUs through the KVM API: vCPU 1 first (to its HLT), then alternate until vCPU 0 reports. */
function timeIpi(backend: BenchBackend, guest: GuestImage, tier: CpuTier, what: string): Timed {
  const { kvm, vcpu: v0 } = bootBench(backend, guest, { memory: 32 << 20, irqchip: true, tier });
  try {
    const v1 = kvm.createVcpu(1);
    setTier(v1, tier);
    const s = v1.getSregs();
    v1.setSregs({ ...s, cs: { ...s.cs, selector: guest.cs, base: BigInt(guest.cs * 16), limit: 0xffff } });
    v1.setRegs({ ...v1.getRegs(), rip: BigInt(guest.ip), rflags: 2n });
    v1.setMpState(KvmMpState.RUNNABLE);
    const c0 = cpuNs();
    const t0 = nowNs();
    step(v1, what);
    for (let i = 0; ; i++) {
      const r = drive(v0, 1);
      if (r.results.length) {
        return { ns: nowNs() - t0, cpuNs: cpuNs() - c0, results: r.results };
      }
      if (r.exitReason !== KvmExitReason.KVM_EXIT_INTR && r.exitReason !== KvmExitReason.KVM_EXIT_HLT) expectHalt(what, v0, r);
      step(v1, what);
      if (i > 100_000_000) throw new Error(`${what}: no progress`);
    }
  } finally {
    kvm.destroy();
  }
}

function step(v: KvmVcpu, what: string): void {
  const r = drive(v, 1);
  if (r.exitReason !== KvmExitReason.KVM_EXIT_INTR && r.exitReason !== KvmExitReason.KVM_EXIT_HLT && r.exitReason !== KvmExitReason.KVM_EXIT_IO) {
    expectHalt(what, v, r);
  }
}

interface ExitCase {
  iterations: number;
  perIteration: number;
  expectedWith: number[];
  expectedBase: number[];
  /** One timed run (a warm-up when `steady` and it is the first). */
  run(withOp: boolean): Timed;
  /**
   * run() reuses one VM per side and restarts its loop there with `iterations` operations
   * (the warm-up runs in that VM and may raise `iterations`, see STEADY_GOAL_NS).
   */
  steady?: boolean;
  dispose?(): void;
  note?: string;
}

function exitCase(exit: ExitWorkload, backend: BenchBackend, s: BenchSizes, tier: CpuTier): ExitCase {
  const what = `${exit} on ${backend}`;
  const op = LOOP_OPS[exit];
  if (op) {
    const n = s.exitIterations;
    const opts = { hypercall: backend === 'vmx' ? 'vmcall' as const : 'vmmcall' as const, kernelPort: KERNEL_PIO_PORT };
    const withVm = new LoopVm(backend, buildExitLoop(op, n, opts), n, tier, what);
    let baseVm: LoopVm;
    try {
      baseVm = new LoopVm(backend, buildExitLoop('none', n, opts), n, tier, `${what} (baseline)`);
    } catch (e) {
      withVm.destroy();
      throw e;
    }
    const c: ExitCase = {
      iterations: n, perIteration: 1, expectedWith: [n], expectedBase: [n], steady: true,
      run: (w) => {
        const vm = w ? withVm : baseVm;
        vm.n = c.iterations;
        return vm.pass();
      },
      dispose: () => { withVm.destroy(); baseVm.destroy(); },
      note: 'steady state: one VM per side; untimed passes (50,000 exits, then vmexit.c\'s doubling until one loop takes ≥ 50 ms of CPU) and a full garbage collection (heap.ts), then each timed pass restarts the loop in the same VM',
    };
    return c;
  }
  switch (exit) {
    case 'pm-timer': {
      const n = s.exitIterations;
      const withG = buildExitLoop('pio-kernel', n, { kernelPort: PM_TIMER_PORT });
      const baseG = buildExitLoop('none', n);
      return {
        iterations: n, perIteration: 1, expectedWith: [n], expectedBase: [n], run: (w) => timeMachine(backend, w ? withG : baseG, what),
        note: 'the PM timer is a userspace device in this platform (Machine\'s port bus): every read is a KVM_EXIT_IO; the default JIT tier; a fresh machine per run (its creation is not timed)',
      };
    }
    case 'hlt-timer': {
      const n = s.hltIterations;
      const withG = buildHltTimerGuest(n, true);
      const baseG = buildHltTimerGuest(n, false);
      return {
        iterations: n, perIteration: 1, expectedWith: [n], expectedBase: [0], run: (w) => timeKvm(backend, w ? withG : baseG, tier, what),
        note: 'virtual clock: the timer period itself is skipped, so this is the software cost of HLT + timer expiry + injection + EOI',
      };
    }
    case 'ipi': {
      const n = s.ipiIterations;
      const withG = buildIpiGuest(n, true);
      const baseG = buildIpiGuest(n, false);
      return {
        iterations: n, perIteration: 2, expectedWith: [n], expectedBase: [0], run: (w) => timeIpi(backend, w ? withG : baseG, tier, what),
        note: 'both vCPUs on one host thread, switched by the benchmark\'s loop at each HLT (KVM_EXIT_INTR)',
      };
    }
    default:
      throw new Error(`not an exit workload: ${exit}`);
  }
}

export function benchExit(exit: ExitWorkload, backend: BenchBackend, s: BenchSizes, tier: CpuTier = DEFAULT_TIER): ExitResult {
  const c = exitCase(exit, backend, s, tier);
  const withNs: number[] = [];
  const baseNs: number[] = [];
  const withCpu: number[] = [];
  const baseCpu: number[] = [];
  let got: number[] = [];
  let ok = true;
  const same = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);
  try {
    // The steady-state cases always run their boot pass untimed.
    if (s.warmup || c.steady) {
      c.run(true);
      c.run(false);
    }
    if (c.steady && s.warmup) {
      // Warm up until V8 has optimized the exit path (it takes a few thousand exits and
      // passes): doubling passes, STEADY_WARMUP_EXITS in all.
      for (let done = c.iterations; done < STEADY_WARMUP_EXITS; done += c.iterations) {
        c.iterations *= 2;
        c.run(true);
        c.run(false);
      }
      // kvm-unit-tests vmexit.c: double the iterations until one loop is long enough (its
      // GOAL, 2^27 TSC cycles ≈ 50 ms) for the clocks' resolution and the noise not to matter.
      while (c.iterations < STEADY_MAX_ITERATIONS && c.run(true).cpuNs < STEADY_GOAL_NS) c.iterations *= 2;
      c.run(false);
      // The heap as a VM that has run for a while has it (heap.ts): warmed-up objects old.
      settleHeap();
    }
    for (let i = 0; i < s.repeat; i++) {
      const w = c.run(true);
      const b = c.run(false);
      withCpu.push(w.cpuNs);
      baseCpu.push(b.cpuNs);
      withNs.push(w.ns);
      baseNs.push(b.ns);
      got = w.results;
      ok &&= same(w.results, c.expectedWith) && same(b.results, c.expectedBase);
    }
  } finally {
    c.dispose?.();
  }
  // Pair each run with its own baseline (they ran back to back, under the same load).
  const per = withNs.map((w, i) => (w - baseNs[i]) / (c.iterations * c.perIteration));
  return {
    exit,
    backend,
    description: describe(exit, backend),
    iterations: c.iterations,
    perIteration: c.perIteration,
    ns: stat(per),
    nsCpu: stat(withCpu.map((w, i) => (w - baseCpu[i]) / (c.iterations * c.perIteration))),
    withSeconds: stat(withNs).median / 1e9,
    baselineSeconds: stat(baseNs).median / 1e9,
    checksum: { expected: c.expectedWith, got, ok },
    note: c.note,
  };
}

export { mapStat };
