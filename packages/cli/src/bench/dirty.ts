/**
 * Dirty logging: a guest sweeps a slot writing one byte per page (4 instructions per page),
 * the host lets it run exactly one sweep per round (vcpu.runBudget) — a fixed rate of
 * slot-size/4 KiB dirty pages per round — then harvests and clears the log with
 * KVM_GET_DIRTY_LOG (kvm.getDirtyLog). Measured: the harvest per round, and the guest's speed
 * with logging on against the same guest on a slot without KVM_MEM_LOG_DIRTY_PAGES. VMX logs
 * through PML (EPT dirty bits, 512-entry buffer, PML-full exits); SVM write-protects NPT
 * entries (a #NPF per first write after each harvest).
 */
import { KvmExitReason, KVM_MEM_LOG_DIRTY_PAGES } from '@tsvisor/core';
import { buildDirtyWriter, dirtyWriterSweepInstructions } from './guests';
import { BenchSizes } from './options';
import { Stat, stat } from './stats';
import { BenchBackend, bootBench, cpuNs, drive, nowNs } from './vm';

export const DIRTY_SLOT = 1;
export const DIRTY_BASE = 0x10000000;

export interface DirtyResult {
  backend: BenchBackend;
  mechanism: 'pml' | 'write-protect';
  slotMiB: number;
  rounds: number;
  /** Dirty pages reported per round (median): the slot's page count when the log is complete. */
  dirtyPagesPerRound: number;
  pagesInSlot: number;
  harvestMs: Stat;
  /** The same over this process's CPU time (a loaded host's waits for a core left out). */
  harvestCpuMs: Stat;
  /** Guest speed while it sweeps, logging on / off. */
  mipsLogging: Stat;
  mipsNotLogging: Stat;
  /** The same over CPU time. */
  mipsLoggingCpu: Stat;
  mipsNotLoggingCpu: Stat;
  /** Guest time per round with logging / without (medians). */
  slowdown: number;
  /** The first sweep (every page faulted into the TDP tables), seconds, logging on / off. */
  firstSweepSeconds: { logging: number; notLogging: number };
  /** Exits during the measured rounds, by the backend's names (logging on). */
  exitsLogging: Record<string, number>;
}

interface Rounds {
  guestNs: number[];
  guestCpuNs: number[];
  instructions: number[];
  harvestNs: number[];
  harvestCpuNs: number[];
  dirty: number[];
  firstNs: number;
  exits: Record<string, number>;
}

function popcount(bm: Uint32Array): number {
  let n = 0;
  for (let w of bm) {
    w -= (w >>> 1) & 0x55555555;
    w = (w & 0x33333333) + ((w >>> 2) & 0x33333333);
    n += (((w + (w >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
  }
  return n;
}

function runRounds(backend: BenchBackend, bytes: number, rounds: number, logging: boolean): Rounds {
  const guest = buildDirtyWriter(DIRTY_BASE, bytes);
  const { kvm, vcpu } = bootBench(backend, guest, { memory: 16 << 20 });
  try {
    kvm.setUserMemoryRegion({
      slot: DIRTY_SLOT, flags: logging ? KVM_MEM_LOG_DIRTY_PAGES : 0, guestPhysAddr: BigInt(DIRTY_BASE), memorySize: BigInt(bytes),
    });
    const sweep = dirtyWriterSweepInstructions(bytes);
    const t0 = nowNs();
    // Boot stub plus the first sweep: every page is faulted into the EPT/NPT tables.
    vcpu.runBudget = sweep + 20_000;
    const first = drive(vcpu, 1);
    const firstNs = nowNs() - t0;
    if (first.exitReason !== KvmExitReason.KVM_EXIT_INTR) throw new Error(`dirty-log on ${backend}: first sweep ended with ${KvmExitReason[first.exitReason]}`);
    if (logging) kvm.getDirtyLog(DIRTY_SLOT);
    const before = new Map(vcpu.exitCounts);
    const out: Rounds = { guestNs: [], guestCpuNs: [], instructions: [], harvestNs: [], harvestCpuNs: [], dirty: [], firstNs, exits: {} };
    vcpu.runBudget = sweep;
    for (let i = 0; i < rounds; i++) {
      const n0 = vcpu.cpu.state.instructionsRetired;
      const ca = cpuNs();
      const a = nowNs();
      const r = drive(vcpu, 1);
      const b = nowNs();
      const cb = cpuNs();
      if (r.exitReason !== KvmExitReason.KVM_EXIT_INTR) throw new Error(`dirty-log on ${backend}: round ended with ${KvmExitReason[r.exitReason]}`);
      out.guestNs.push(b - a);
      out.guestCpuNs.push(cb - ca);
      out.instructions.push(vcpu.cpu.state.instructionsRetired - n0);
      if (logging) {
        // Timed: KVM_GET_DIRTY_LOG itself (drain PML, copy and clear the bitmap, re-arm the pages, flush).
        const hc = cpuNs();
        const h = nowNs();
        const bm = kvm.getDirtyLog(DIRTY_SLOT);
        out.harvestNs.push(nowNs() - h);
        out.harvestCpuNs.push(cpuNs() - hc);
        out.dirty.push(popcount(bm));
      }
    }
    for (const [k, v] of vcpu.exitCounts) {
      const d = v - (before.get(k) ?? 0);
      if (d) out.exits[k] = d;
    }
    return out;
  } finally {
    kvm.destroy();
  }
}

export function benchDirtyLog(backend: BenchBackend, s: BenchSizes): DirtyResult {
  const bytes = s.dirtyMiB << 20;
  const rounds = Math.max(2, s.dirtyRounds);
  const on = runRounds(backend, bytes, rounds, true);
  const off = runRounds(backend, bytes, rounds, false);
  const mips = (r: Rounds) => stat(r.guestNs.map((ns, i) => r.instructions[i] / (ns / 1e3)));
  const mipsCpu = (r: Rounds) => stat(r.guestCpuNs.map((ns, i) => r.instructions[i] / (Math.max(ns, 1) / 1e3)));
  return {
    backend,
    mechanism: backend === 'vmx' ? 'pml' : 'write-protect',
    slotMiB: s.dirtyMiB,
    rounds,
    dirtyPagesPerRound: stat(on.dirty).median,
    pagesInSlot: bytes / 4096,
    harvestMs: stat(on.harvestNs.map((ns) => ns / 1e6)),
    harvestCpuMs: stat(on.harvestCpuNs.map((ns) => ns / 1e6)),
    mipsLogging: mips(on),
    mipsNotLogging: mips(off),
    mipsLoggingCpu: mipsCpu(on),
    mipsNotLoggingCpu: mipsCpu(off),
    slowdown: stat(on.guestNs).median / stat(off.guestNs).median,
    firstSweepSeconds: { logging: on.firstNs / 1e9, notLogging: off.firstNs / 1e9 },
    exitsLogging: on.exits,
  };
}
