/**
 * The native side of the differential tests: builds native/diff-runner.c with the system's C
 * compiler into a cache directory keyed by the source hash (os.tmpdir()/tsvisor-diff-<hash>),
 * and talks to one long-lived runner process per test file over stdin/stdout.
 * See native/diff-runner.c for the record format.
 */
import { spawn, spawnSync, ChildProcessWithoutNullStreams } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

// Module-level aliases of globals: under jest, code runs in a vm context where each global
// lookup goes through interceptors and costs far more than a closure variable.
const big = BigInt;
const asUintN = BigInt.asUintN;
const asIntN = BigInt.asIntN;
const num = Number;
const U64Array = BigUint64Array;
const U8Array = Uint8Array;
const M = Math;

export const NATIVE_SOURCE = path.join(__dirname, '..', 'native', 'diff-runner.c');

/** Fixed guest/host addresses shared by both sides (see diff-runner.c). */
export const CODE_ADDR = 0x2000_0000;
export const DATA_ADDR = 0x3000_0000;
export const PAGE_SIZE = 4096;

export interface NativeAvailability {
  ok: boolean;
  /** Path of the built runner when ok. */
  binary?: string;
  /** Why the native side cannot run (no compiler, not x86-64 Linux, build failure). */
  reason?: string;
  compiler?: string;
}

let cached: NativeAvailability | null = null;

function findCompiler(): string | null {
  const candidates = [process.env.CC, 'cc', 'gcc', 'clang'].filter((c): c is string => !!c);
  for (const c of candidates) {
    const r = spawnSync(c, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) return c;
  }
  return null;
}

/** Build (or reuse) the native runner. Never throws; `ok: false` carries the reason. */
export function ensureNativeRunner(): NativeAvailability {
  if (cached) return cached;
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return (cached = { ok: false, reason: `the native oracle needs x86-64 Linux (this is ${process.platform}/${process.arch})` });
  }
  const cc = findCompiler();
  if (!cc) return (cached = { ok: false, reason: 'no C compiler found (tried $CC, cc, gcc, clang)' });
  const source = fs.readFileSync(NATIVE_SOURCE);
  const flags = ['-O2', '-std=gnu11', '-Wall'];
  const hash = createHash('sha256').update(source).update(cc).update(flags.join(' ')).digest('hex').slice(0, 16);
  const dir = path.join(os.tmpdir(), `tsvisor-diff-${hash}`);
  const binary = path.join(dir, 'diff-runner');
  if (fs.existsSync(binary)) return (cached = { ok: true, binary, compiler: cc });
  fs.mkdirSync(dir, { recursive: true });
  // Build to a private name and rename: parallel jest workers may race to build.
  const tmp = `${binary}.${process.pid}.${Date.now()}.tmp`;
  const r = spawnSync(cc, [...flags, '-o', tmp, NATIVE_SOURCE], { encoding: 'utf8' });
  if (r.status !== 0) {
    try { fs.unlinkSync(tmp); } catch { /* nothing to remove */ }
    return (cached = { ok: false, reason: `${cc} failed to build ${NATIVE_SOURCE}:\n${r.stderr || r.error?.message}` });
  }
  fs.renameSync(tmp, binary);
  return (cached = { ok: true, binary, compiler: cc });
}

/** One test case as both sides see it. */
export interface DiffInput {
  /** Instruction bytes (1..15). */
  bytes: Uint8Array;
  /** RAX..R15 (KVM order). */
  regs: BigUint64Array;
  /** Initial RFLAGS; only CF PF AF ZF SF OF DF are used. */
  rflags: number;
  /** Memory window in the data page (offset, bytes); empty when memLen is 0. */
  memOff: number;
  mem: Uint8Array;
}

/** What one side produced. */
export interface DiffOutput {
  /** -1: completed; otherwise the exception vector. */
  vector: number;
  regs: BigUint64Array;
  rflags: number;
  mem: Uint8Array;
  /** Host signal number (native side) or a description of an unexpected stop (emulator). */
  note?: string;
}

const IN_FIXED = 16 + 16 * 8 + 8 + 8;
const OUT_FIXED = 8 + 17 * 8;
const pad8 = (n: number) => (n + 7) & ~7;

export function encodeInputs(cases: readonly DiffInput[]): Uint8Array {
  let total = 8;
  for (const c of cases) total += IN_FIXED + pad8(c.mem.length);
  const buf = new U8Array(total);
  const q = new U64Array(buf.buffer);
  const dv = new DataView(buf.buffer);
  let o = 0;
  for (const c of cases) {
    if (c.bytes.length < 1 || c.bytes.length > 15) throw new Error(`bad instruction length ${c.bytes.length}`);
    buf[o] = c.bytes.length;
    buf.set(c.bytes, o + 1);
    q.set(c.regs, (o + 16) >> 3);
    q[(o + 144) >> 3] = big(c.rflags >>> 0);
    dv.setUint16(o + 152, c.memOff, true);
    dv.setUint16(o + 154, c.mem.length, true);
    buf.set(c.mem, o + IN_FIXED);
    o += IN_FIXED + pad8(c.mem.length);
  }
  buf[o] = 0xff; // flush
  return buf;
}

/** `buf` must start at an 8-byte-aligned offset of its ArrayBuffer. */
export function decodeOutputs(cases: readonly DiffInput[], buf: Uint8Array): DiffOutput[] {
  const out: DiffOutput[] = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const q = new U64Array(buf.buffer, buf.byteOffset, buf.byteLength >> 3);
  let o = 0;
  for (const c of cases) {
    const vector = dv.getInt32(o, true);
    const signal = dv.getUint32(o + 4, true);
    const regs = q.slice((o + 8) >> 3, (o + 136) >> 3);
    const rflags = dv.getUint32(o + 136, true);
    const mem = buf.slice(o + OUT_FIXED, o + OUT_FIXED + c.mem.length);
    out.push({ vector, regs, rflags, mem, note: signal ? `host signal ${signal}` : undefined });
    o += OUT_FIXED + pad8(c.mem.length);
  }
  return out;
}

export function outputSize(cases: readonly DiffInput[]): number {
  let n = 0;
  for (const c of cases) n += OUT_FIXED + pad8(c.mem.length);
  return n;
}

/**
 * A long-lived runner process: `run` sends a batch and resolves with its results. Batches
 * are serialized; one process serves a whole test file.
 */
export class NativeRunner {
  private child: ChildProcessWithoutNullStreams;
  private chunks: Buffer[] = [];
  private have = 0;
  private want = 0;
  private waiter: ((b: Uint8Array) => void) | null = null;
  private failer: ((e: Error) => void) | null = null;
  private stderr = '';
  private queue: Promise<unknown> = Promise.resolve();

  constructor(binary: string) {
    this.child = spawn(binary, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.have += d.length;
      this.deliver();
    });
    this.child.stderr.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    this.child.on('exit', (code, sig) => {
      this.failer?.(new Error(`diff-runner exited (code ${code}, signal ${sig}): ${this.stderr}`));
    });
    this.child.on('error', (e) => this.failer?.(e));
  }

  private deliver(): void {
    if (!this.waiter || this.have < this.want) return;
    // Copy into a fresh (8-byte-aligned) buffer so the records can be viewed as u64s.
    const mine = new U8Array(this.want);
    let o = 0;
    const rest: Buffer[] = [];
    for (const ch of this.chunks) {
      const take = M.min(ch.length, this.want - o);
      mine.set(ch.subarray(0, take), o);
      o += take;
      if (take < ch.length) rest.push(ch.subarray(take));
    }
    this.chunks = rest;
    this.have -= this.want;
    const w = this.waiter;
    this.waiter = null;
    this.failer = null;
    w(mine);
  }

  run(cases: readonly DiffInput[]): Promise<DiffOutput[]> {
    const p = this.queue.then(() => this.runNow(cases));
    this.queue = p.catch(() => undefined);
    return p;
  }

  private runNow(cases: readonly DiffInput[]): Promise<DiffOutput[]> {
    return new Promise<DiffOutput[]>((resolve, reject) => {
      this.want = outputSize(cases);
      this.waiter = (b) => resolve(decodeOutputs(cases, b));
      this.failer = reject;
      this.child.stdin.write(encodeInputs(cases));
      this.deliver();
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) return resolve();
      this.failer = null;
      this.child.once('exit', () => resolve());
      this.child.stdin.end();
    });
  }
}
