/**
 * The same guests under QEMU with TCG, when qemu-system-x86_64 is on PATH. The testkit's
 * workloads are flat real-mode images; QEMU boots them as Multiboot kernels through a small
 * wrapper (32-bit entry: copy the image to its load address, drop to real mode through a
 * 16-bit segment, jump to its CS:IP), with the guest's final `cli; hlt` after its last report
 * patched into `out 0xf4, al` for isa-debug-exit. QEMU's speed = the instructions tsvisor
 * retired for the same guest / (QEMU's wall time − QEMU's wall time for an empty guest).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildExitLoop, buildMultibootKernel, ecx, edi, esi, GuestImage, mem } from '@tsvisor/testkit';
import { BenchSizes, SpeedWorkload } from './options';
import { runSpeedOnce, speedGuest } from './speed';
import { Stat, stat } from './stats';
import { BenchBackend, nowNs } from './vm';

export const QEMU = 'qemu-system-x86_64';

export interface QemuInfo {
  available: boolean;
  version?: string;
  /** Why the column is missing, and whether the package could be installed. */
  note: string;
}

export function qemuInfo(): QemuInfo {
  const r = spawnSync(QEMU, ['--version'], { encoding: 'utf8' });
  if (r.status === 0) return { available: true, version: r.stdout.split('\n')[0].trim(), note: `${QEMU} on PATH` };
  const p = spawnSync('apt-cache', ['policy', 'qemu-system-x86'], { encoding: 'utf8' });
  const cand = p.status === 0 ? /Candidate:\s*(\S+)/.exec(p.stdout)?.[1] : undefined;
  const how = cand && cand !== '(none)' ? `; apt-get install qemu-system-x86 would install ${cand}` : '';
  return { available: false, note: `${QEMU} is not on PATH: QEMU TCG column skipped${how}` };
}

/** The guest's end — `mov edx, BENCH_RESULT_PORT; out dx, eax; cli; hlt` — as bytes. */
const END = [0xba, 0x04, 0x05, 0x00, 0x00, 0xef, 0xfa, 0xf4];

/** Multiboot kernel that starts `g` in real mode at its CS:IP and ends QEMU via isa-debug-exit. */
export function multibootWrap(g: GuestImage): Uint8Array {
  const image = Uint8Array.from(g.image);
  let at = -1;
  for (let i = image.length - END.length; i >= 0 && at < 0; i--) if (END.every((b, j) => image[i + j] === b)) at = i;
  if (at < 0) throw new Error('qemu: the guest has no final report + cli; hlt to patch');
  image[at + 6] = 0xe6; // out 0xf4, al (isa-debug-exit's default port)
  image[at + 7] = 0xf4;
  const TRAMP = 0x6000;
  const tramp = [
    0xb8, 0x10, 0x00, // mov ax, 0x10
    0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0x8e, 0xe0, 0x8e, 0xe8, // ds, es, ss, fs, gs = 16-bit data
    0x0f, 0x20, 0xc0, 0x24, 0xfe, 0x0f, 0x22, 0xc0, // CR0.PE = 0
    0xea, g.ip & 0xff, g.ip >> 8, g.cs & 0xff, g.cs >> 8, // jmp far cs:ip
  ];
  const k = buildMultibootKernel((a) => {
    const payload = a.label('payload');
    const trampL = a.label('tramp');
    const gdt = a.label('gdt');
    const gdtr = a.label('gdtr');
    a.cli().cld();
    a.mov(esi, payload).mov(edi, g.loadAddress).mov(ecx, image.length).repMovsb();
    a.mov(esi, trampL).mov(edi, TRAMP).mov(ecx, tramp.length).repMovsb();
    a.lgdt(mem(gdtr));
    a.jmpFar(0x08, TRAMP, 32);
    a.align(8, 0);
    a.bind(gdt);
    a.dq(0n, 0x00009a000000ffffn, 0x000092000000ffffn); // null, 16-bit code, 16-bit data (base 0, limit 64 KiB)
    a.bind(gdtr);
    a.dw(23);
    a.dd(gdt);
    a.bind(trampL);
    a.db(tramp);
    a.bind(payload);
    a.db(image);
  });
  return k.image;
}

function runQemu(kernel: string): Promise<{ ns: number; code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const args = ['-accel', 'tcg', '-m', '256', '-kernel', kernel, '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04', '-display', 'none', '-serial', 'none', '-monitor', 'none', '-no-reboot'];
    const t0 = nowNs();
    const child = spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ ns: nowNs() - t0, code, stderr }));
  });
}

export interface QemuRun {
  /** Wall seconds of the QEMU process, minus the empty guest's median. */
  seconds: Stat;
  /** isa-debug-exit status = ((last checksum & 0x7f) << 1) | 1: the low bits of the checksum agree. */
  checksumOk: boolean;
}

export class QemuRunner {
  private readonly dir = mkdtempSync(path.join(os.tmpdir(), 'tsvisor-bench-qemu-'));
  private baselineNs: number | null = null;
  private n = 0;

  async baseline(repeat: number): Promise<number> {
    if (this.baselineNs === null) {
      const f = this.write(multibootWrap(buildExitLoop('none', 1)));
      await runQemu(f);
      const ns: number[] = [];
      for (let i = 0; i < repeat; i++) ns.push((await runQemu(f)).ns);
      this.baselineNs = stat(ns).median;
    }
    return this.baselineNs;
  }

  async run(g: GuestImage, lastChecksum: number, repeat: number): Promise<QemuRun> {
    const base = await this.baseline(repeat);
    const f = this.write(multibootWrap(g));
    const want = (((lastChecksum & 0x7f) << 1) | 1) & 0xff;
    const secs: number[] = [];
    let ok = true;
    for (let i = 0; i < repeat; i++) {
      const r = await runQemu(f);
      if (r.code !== want) ok = false;
      if (r.code === null || (r.code & 1) === 0) throw new Error(`qemu: guest did not exit through isa-debug-exit (status ${r.code}): ${r.stderr.trim().slice(0, 200)}`);
      secs.push(Math.max(1e-6, (r.ns - base) / 1e9));
    }
    return { seconds: stat(secs), checksumOk: ok };
  }

  private write(bytes: Uint8Array): string {
    const f = path.join(this.dir, `guest-${this.n++}.elf`);
    writeFileSync(f, bytes);
    return f;
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- QEMU speed: large guests, instruction counts from tsvisor's exact linear model ----

/**
 * QEMU TCG runs thousands of MIPS, so its guests are made large enough to dwarf its ~0.3 s
 * start-up. tsvisor's retired-instruction count is exactly linear in each loop count; it is
 * measured on small variants (interpreter tier, vmx) and extrapolated to the large guest.
 */
export const QEMU_SIZES: Record<SpeedWorkload, Partial<BenchSizes>> = {
  cpu32: { sieveRounds: 400, xorshiftIterations: 50_000_000 },
  cpu64: { sieveRounds: 400, xorshiftIterations: 50_000_000 },
  memwalk: { memwalkBytes: 32 << 20, memwalkRounds: 2000 },
  string: { stringRounds: 64 },
};

function countInstructions(w: SpeedWorkload, s: BenchSizes, backend: BenchBackend): number {
  return runSpeedOnce(speedGuest(w, s), backend, 'interpreter').instructions;
}

/** Retired instructions of `w` at the QEMU sizes, from two or three small runs. */
export function modelInstructions(w: SpeedWorkload, base: BenchSizes, backend: BenchBackend): { sizes: BenchSizes; instructions: number } {
  const big = { ...base, ...QEMU_SIZES[w] };
  if (w === 'cpu32' || w === 'cpu64') {
    const s0 = { ...base, sieveRounds: 1, xorshiftIterations: 1000 };
    const i0 = countInstructions(w, s0, backend);
    const dr = countInstructions(w, { ...s0, sieveRounds: 2 }, backend) - i0;
    const dx = countInstructions(w, { ...s0, xorshiftIterations: 2000 }, backend) - i0;
    return { sizes: big, instructions: i0 + (big.sieveRounds - 1) * dr + ((big.xorshiftIterations - 1000) / 1000) * dx };
  }
  const key = w === 'memwalk' ? 'memwalkRounds' : 'stringRounds';
  const s0 = { ...big, [key]: 1 };
  const i0 = countInstructions(w, s0, backend);
  const d = countInstructions(w, { ...s0, [key]: 2 }, backend) - i0;
  return { sizes: big, instructions: i0 + (big[key] - 1) * d };
}
