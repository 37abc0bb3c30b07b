/**
 * The benchmark's smallest userspace VMM: backends by name, a guest booted through core's
 * KVM API (testkit's bootGuest), the processor tier chosen per vCPU, and a run loop that
 * answers port I/O and MMIO exits with as little userspace work as a real VMM would do.
 */
import {
  BackendClass, KvmExitReason, KvmVcpu, KVM_EXIT_IO_OUT, X86Cpu,
} from '@tsvisor/core';
import { SvmBackend } from '@tsvisor/svm';
import { BENCH_RESULT_PORT, BootedGuest, bootGuest, GuestImage, VmBootOptions } from '@tsvisor/testkit';
import { VmxBackend } from '@tsvisor/vmx';

export type BenchBackend = 'vmx' | 'svm';
export const BENCH_BACKENDS: readonly BenchBackend[] = ['vmx', 'svm'];

export const BACKEND_CLASSES: Record<BenchBackend, BackendClass> = { vmx: VmxBackend, svm: SvmBackend };

/** The processor's execution tiers (X86CpuOptions.tier); the first is the default. */
export type CpuTier = NonNullable<ConstructorParameters<typeof X86Cpu>[2]['tier']>;
export const CPU_TIERS: readonly CpuTier[] = ['jit', 'interpreter'];
export const DEFAULT_TIER: CpuTier = 'jit';

/**
 * Select the processor tier of a vCPU. X86CpuOptions.tier is read once, into the processor's
 * `jitOn` switch, and Kvm.createVcpu does not pass a tier through (KvmCreateOptions has no
 * such field yet), so the benchmark flips the switch on the vCPU it just created — before
 * the first instruction, which is equivalent to constructing the processor with that tier.
 */
export function setTier(vcpu: KvmVcpu, tier: CpuTier): void {
  (vcpu.cpu as unknown as { jitOn: boolean }).jitOn = tier !== 'interpreter';
}

export interface BootBenchOptions extends VmBootOptions {
  tier?: CpuTier;
  /** KVM_CREATE_IRQCHIP right after the VM is created (in-kernel PIC/IOAPIC/LAPIC). */
  irqchip?: boolean;
}

export function bootBench(backend: BenchBackend, guest: GuestImage, opts: BootBenchOptions = {}): BootedGuest {
  const booted = bootGuest(BACKEND_CLASSES[backend], guest, { memory: opts.memory ?? 32 << 20, slotFlags: opts.slotFlags, kvm: opts.kvm });
  if (opts.irqchip) booted.kvm.createIrqchip();
  setTier(booted.vcpu, opts.tier ?? DEFAULT_TIER);
  return booted;
}

export interface DriveResult {
  /** Values the guest wrote to BENCH_RESULT_PORT, in order. */
  results: number[];
  exitReason: KvmExitReason;
  runs: number;
}

const MMIO_ZERO = new Uint8Array(8);

/**
 * KVM_RUN until the guest halts (or another exit userspace cannot continue from): OUTs to
 * BENCH_RESULT_PORT are recorded, other port writes dropped, port reads and MMIO reads
 * answer zero, MMIO writes are dropped, KVM_EXIT_INTR resumes.
 */
export function drive(vcpu: KvmVcpu, maxRuns = 50_000_000, results: number[] = []): DriveResult {
  let reason = KvmExitReason.KVM_EXIT_UNKNOWN;
  for (let runs = 1; runs <= maxRuns; runs++) {
    const run = vcpu.runVcpu();
    reason = run.exitReason;
    switch (run.exitReason) {
      case KvmExitReason.KVM_EXIT_IO: {
        const io = run.io;
        if (io.direction === KVM_EXIT_IO_OUT) {
          if (io.port === BENCH_RESULT_PORT) {
            const d = run.ioData;
            results.push((d[0] | (d[1] << 8) | (d[2] << 16) | (d[3] << 24)) >>> 0);
          }
        } else {
          run.ioData.fill(0, 0, io.size * io.count);
        }
        break;
      }
      case KvmExitReason.KVM_EXIT_MMIO:
        if (!run.mmio.isWrite) run.mmio.data.set(MMIO_ZERO);
        break;
      case KvmExitReason.KVM_EXIT_INTR:
        break;
      default:
        return { results, exitReason: run.exitReason, runs };
    }
  }
  if (maxRuns > 1) throw new Error(`guest did not stop within ${maxRuns} KVM_RUN calls`);
  return { results, exitReason: reason, runs: maxRuns };
}

/** A guest that did not end the way a benchmark expects: name the exit and where. */
export function expectHalt(what: string, vcpu: KvmVcpu, r: DriveResult): void {
  if (r.exitReason !== KvmExitReason.KVM_EXIT_HLT) {
    const extra = vcpu.run.internalMessage || vcpu.run.hostError;
    throw new Error(`${what}: guest stopped with ${KvmExitReason[r.exitReason]} at RIP 0x${vcpu.getRegs().rip.toString(16)} ${extra}`);
  }
}

export function nowNs(): number {
  return Number(process.hrtime.bigint());
}

/** This process's CPU time (user + system), ns: on a loaded host it does not count time spent waiting for a core. */
export function cpuNs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}
