/**
 * Seeded guest fuzzing (issue #9): random and mutated instruction streams in real, protected
 * and long mode on the full platform (Machine), with prologues that provoke the hard cases —
 * a garbage IDT (exceptions inside exception delivery), a stack that faults during interrupt
 * delivery, self-modifying code, and guest-chosen device register indices. The harness counts
 * programs, retired instructions, how runs ended, and host errors (JavaScript exceptions that
 * reached KVM_RUN, or that escaped the API): the only number that must be zero.
 */
import { BackendClass, Machine, MachineResult } from '@tsvisor/core';

/** A small, fast, seedable PRNG (xorshift32); the same seed gives the same programs. */
export class Prng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  below(n: number): number {
    return this.next() % n;
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.below(xs.length)];
  }
}

export type FuzzMode = 'real' | 'protected' | 'long';
export type FuzzVariant = 'random' | 'bad-idt' | 'bad-stack' | 'self-modifying' | 'devices' | 'mutated';

export const FUZZ_VARIANTS: readonly FuzzVariant[] = ['random', 'bad-idt', 'bad-stack', 'self-modifying', 'devices', 'mutated'];

const LOAD = 0x10000;

/** Device registers a guest may poke with chosen indices: [port, width] and MMIO windows. */
const DEVICE_PORTS = [0x20, 0x21, 0xa0, 0xa1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x64, 0x70, 0x71, 0x92,
  0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0x510, 0x511, 0xcf8, 0xcfc, 0xcfd, 0xcfe, 0xcff,
  0xe0, 0xe4, 0xe8, 0x2000, 0x2004, 0x4d0, 0x4d1, 0x600, 0x604, 0x608, 0xe9];
const DEVICE_MMIO = [0xfee00000, 0xfec00000, 0xfec00010, 0xfed00000, 0xff000000];

function le32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

/** Hand-encoded prologues (no assembler dependency, so every mode is covered the same way). */
function prologue(v: FuzzVariant, mode: FuzzMode, r: Prng): number[] {
  const out: number[] = [];
  const o32 = mode === 'real' ? [0x66] : [];
  switch (v) {
    case 'bad-idt': {
      // lidt [here+…]: an IDTR with a random base and limit, stored right after the instruction.
      // Encoded as: jmp over the 10-byte IDTR; lidt with an absolute address operand.
      const at = LOAD + 2 + 10;
      out.push(0xeb, 10, ...le32(r.next() & 0xffff), ...le32(r.next()), 0, 0);
      if (mode === 'real') out.push(0x66, 0x0f, 0x01, 0x1e, at & 0xff, (at >> 8) & 0xff);
      else if (mode === 'protected') out.push(0x0f, 0x01, 0x1d, ...le32(at));
      else out.push(0x0f, 0x01, 0x1c, 0x25, ...le32(at));
      out[2] = r.below(2) ? 0xff : r.next() & 0xff; // limit low byte
      out.push(0xcd, r.next() & 0xff); // int n through the garbage table
      break;
    }
    case 'bad-stack': {
      // mov esp/rsp, <address that faults or is odd>; then an interrupt or a push.
      const sp = r.pick([0, 3, 0xfffffff0, 0x7ffffff0, r.next()]);
      out.push(...o32, 0xbc, ...le32(sp));
      if (mode === 'long') out.unshift(0x48 ^ 0x48); // mov esp, imm32 zero-extends into RSP
      out.push(r.pick([0xcc, 0x9c, 0x50]));
      out.push(0xcd, r.next() & 0xff);
      break;
    }
    case 'self-modifying': {
      // Store random dwords a few bytes ahead of the store, in a loop of 8.
      // mov ecx, 8; L: mov dword [LOAD+0x40+ecx*4], imm32; loop L   (absolute addressing)
      out.push(...o32, 0xb9, ...le32(8));
      const l = out.length;
      if (mode === 'real') out.push(0x67, 0x66, 0xc7, 0x04, 0x8d, ...le32(LOAD + 0x40), ...le32(r.next()));
      else out.push(0xc7, 0x04, 0x8d, ...le32(LOAD + 0x40), ...le32(r.next()));
      out.push(mode === 'real' ? 0x67 : 0x90, 0xe2, (l - (out.length + 2)) & 0xff);
      break;
    }
    case 'devices': {
      for (let i = 0; i < 24; i++) {
        const port = r.pick(DEVICE_PORTS);
        out.push(0x66, 0xba, port & 0xff, (port >> 8) & 0xff); // mov dx, port
        out.push(...o32, 0xb8, ...le32(r.next())); // mov eax, random
        out.push(r.pick([0xee, 0xef, 0xec, 0xed])); // out dx,al / out dx,eax / in al,dx / in eax,dx
        if (mode !== 'real' && r.below(2)) {
          const a = r.pick(DEVICE_MMIO) + (r.below(64) << 4);
          // mov [abs32], eax  (A3 in 32-bit; 64-bit uses C7 05? keep to mov r/m32 with SIB abs)
          out.push(0x89, 0x04, 0x25, ...le32(a));
        }
      }
      break;
    }
    default:
      break;
  }
  return out;
}

export interface FuzzOptions {
  backend: BackendClass;
  seed: number;
  programs: number;
  modes?: readonly FuzzMode[];
  variants?: readonly FuzzVariant[];
  /** Random bytes after the prologue. */
  bodyBytes?: number;
  /** Instruction budget per program. */
  maxInstructions?: number;
  /** Wall-clock safety net per program (a host hang shows up as a 'timeout' ending). */
  timeoutMs?: number;
  /** Guest RAM per program (default 16 MiB). */
  memory?: number;
  /** Valid code to mutate for the 'mutated' variant (e.g. a testkit guest's image). */
  corpus?: readonly Uint8Array[];
  /** Progress: called before each program with its number, mode, variant and bytes. */
  onProgram?(program: number, mode: FuzzMode, variant: FuzzVariant, code: Uint8Array): void;
}

export interface FuzzReport {
  seed: number;
  programs: number;
  instructions: number;
  /** How runs ended, by MachineResult.reason. */
  endings: Record<string, number>;
  /** Exits by the backend's own names, summed. */
  exits: Record<string, number>;
  hostErrors: { program: number; mode: FuzzMode; variant: FuzzVariant; error: string }[];
}

/** Run `programs` seeded programs and report; never throws for anything a guest does. */
export function fuzzGuests(o: FuzzOptions): FuzzReport {
  const r = new Prng(o.seed);
  const modes = o.modes ?? ['real', 'protected', 'long'];
  const variants = o.variants ?? FUZZ_VARIANTS;
  const report: FuzzReport = { seed: o.seed, programs: 0, instructions: 0, endings: {}, exits: {}, hostErrors: [] };
  for (let p = 0; p < o.programs; p++) {
    const mode = modes[p % modes.length];
    const variant = variants[Math.floor(p / modes.length) % variants.length];
    let code: Uint8Array;
    if (variant === 'mutated' && o.corpus?.length) {
      const base = r.pick(o.corpus);
      code = base.slice(0, Math.min(base.length, 4096));
      const flips = 1 + r.below(8);
      for (let i = 0; i < flips; i++) code[r.below(code.length)] ^= 1 << r.below(8);
    } else {
      const pro = prologue(variant, mode, r);
      code = new Uint8Array(pro.length + (o.bodyBytes ?? 256));
      code.set(pro);
      code.set(r.bytes(o.bodyBytes ?? 256), pro.length);
    }
    o.onProgram?.(p, mode, variant, code);
    let result: MachineResult | null = null;
    let machine: Machine | null = null;
    try {
      machine = Machine.create({
        backend: o.backend, memory: o.memory ?? 16 << 20, kernel: { name: `fuzz-${o.seed}-${p}.bin`, data: code },
        format: 'flat', loadAddr: LOAD, entry: LOAD, mode, maxInstructions: o.maxInstructions ?? 20_000, timeoutMs: o.timeoutMs ?? 10_000,
        serial: null, debugcon: null,
      });
      result = machine.runSync();
      for (const v of machine.kvm.vcpus) {
        if (v.run.hostError) report.hostErrors.push({ program: p, mode, variant, error: v.run.hostError });
        else if (v.cpu.hostError) report.hostErrors.push({ program: p, mode, variant, error: String(v.cpu.hostError) });
      }
    } catch (e) {
      report.hostErrors.push({ program: p, mode, variant, error: `escaped the API: ${(e as Error)?.stack ?? String(e)}` });
    } finally {
      try { machine?.destroy(); } catch (e) { report.hostErrors.push({ program: p, mode, variant, error: `destroy: ${String(e)}` }); }
    }
    report.programs++;
    if (result) {
      report.instructions += result.instructions;
      report.endings[result.reason] = (report.endings[result.reason] ?? 0) + 1;
      for (const vs of result.vcpus) for (const [k, n] of Object.entries(vs.exits)) report.exits[k] = (report.exits[k] ?? 0) + n;
    }
  }
  return report;
}
