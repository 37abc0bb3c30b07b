/**
 * Host memory: resident set (process.memoryUsage().rss) deltas, measured in a fresh child
 * process (`node --expose-gc memory.js …`, garbage collected before each reading) so that
 * the benchmark's own heap does not blur them:
 *  - per vCPU: N more vCPUs on a VM, each run through the boot stub to HLT (decoded blocks,
 *    TLB arrays, control block), divided by N;
 *  - per GiB of guest RAM: a slot of S MiB added (untouched), then swept by the guest with one
 *    write per page (every page resident, EPT/NPT entries built), scaled to 1 GiB.
 */
import { spawn } from 'node:child_process';
import { KvmMpState } from '@tsvisor/core';
import { buildExitLoop } from '@tsvisor/testkit';
import { buildDirtyWriter, dirtyWriterSweepInstructions } from './guests';
import { BenchBackend, bootBench, drive, setTier, DEFAULT_TIER } from './vm';

export interface MemoryResult {
  backend: BenchBackend;
  /** MiB of RSS per vCPU (after running the boot stub). */
  perVcpuMiB: number;
  vcpus: number;
  /** MiB of RSS per GiB of guest RAM: slot created, untouched / touched by the guest. */
  perGiBUntouchedMiB: number;
  perGiBTouchedMiB: number;
  slotMiB: number;
  /** RSS of the child after setting up one small VM (MiB). */
  baseRssMiB: number;
}

const MiB = 2 ** 20;

function rss(): number {
  (globalThis as { gc?: () => void }).gc?.();
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss;
}

/** The measurement itself (runs in the child). */
export function measureMemory(backend: BenchBackend, slotMiB: number, vcpus: number): MemoryResult {
  const guest = buildExitLoop('none', 1);
  const a = bootBench(backend, guest, { memory: 16 * MiB, irqchip: true });
  drive(a.vcpu);
  const r0 = rss();
  for (let id = 1; id <= vcpus; id++) {
    const v = a.kvm.createVcpu(id);
    setTier(v, DEFAULT_TIER);
    const s = v.getSregs();
    v.setSregs({ ...s, cs: { ...s.cs, selector: guest.cs, base: BigInt(guest.cs * 16), limit: 0xffff } });
    v.setRegs({ ...v.getRegs(), rip: BigInt(guest.ip), rflags: 2n });
    v.setMpState(KvmMpState.RUNNABLE);
    drive(v);
  }
  const r1 = rss();
  a.kvm.destroy();

  const base = 0x20000000;
  const bytes = slotMiB * MiB;
  const b = bootBench(backend, buildDirtyWriter(base, bytes), { memory: 16 * MiB });
  const r2 = rss();
  b.kvm.setUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: BigInt(base), memorySize: BigInt(bytes) });
  const r3 = rss();
  // Boot stub, then one whole sweep (KVM_RUN may return early, e.g. on a host interrupt exit).
  const until = dirtyWriterSweepInstructions(bytes) + 20_000;
  b.vcpu.runBudget = until;
  while (b.vcpu.cpu.state.instructionsRetired < until) drive(b.vcpu, 1);
  const r4 = rss();
  b.kvm.destroy();
  const perGiB = (d: number) => (d / MiB) * (1024 / slotMiB);
  return {
    backend,
    perVcpuMiB: (r1 - r0) / MiB / vcpus,
    vcpus,
    perGiBUntouchedMiB: perGiB(r3 - r2),
    perGiBTouchedMiB: perGiB(r4 - r2),
    slotMiB,
    baseRssMiB: r0 / MiB,
  };
}

/** Run measureMemory in a fresh `node --expose-gc` child. */
export function benchMemory(backend: BenchBackend, slotMiB: number, vcpus: number): Promise<MemoryResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', __filename, backend, String(slotMiB), String(vcpus)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`memory child exited with ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
      try {
        resolve(JSON.parse(out) as MemoryResult);
      } catch (e) {
        reject(new Error(`memory child printed no JSON: ${(e as Error).message}`));
      }
    });
  });
}

if (require.main === module) {
  const [backend, slot, n] = process.argv.slice(2);
  process.stdout.write(JSON.stringify(measureMemory(backend as BenchBackend, Number(slot), Number(n))) + '\n');
}
