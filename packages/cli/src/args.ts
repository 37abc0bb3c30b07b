/**
 * Command-line parsing (node:util parseArgs, strict). Every mistake becomes a CliError with
 * exit status 2 and one line that names the option and what was expected.
 */
import { totalmem } from 'node:os';
import { parseArgs, ParseArgsConfig } from 'node:util';
import { CliError } from './status';

export type StartMode = 'real' | 'protected' | 'long';
export const START_MODES: readonly StartMode[] = ['real', 'protected', 'long'];

/** Where a byte stream goes (--serial, --debugcon): the terminal, a file, or nowhere. */
export type OutputTarget = { kind: 'stdio' } | { kind: 'none' } | { kind: 'file'; path: string };

export interface RunOptions {
  /** guest file to run (flat binary, ELF or Multiboot kernel); null: the built-in demo guest */
  guest: string | null;
  /** vmx | svm | auto | package name | path */
  backend: string;
  /** guest RAM in bytes */
  memory: number;
  /** vCPUs */
  smp: number;
  /** kernel command line (Multiboot) */
  append: string | null;
  /** files to hand over as Multiboot modules, in order */
  initrd: string[];
  /** flat binaries and ELF overrides; null: the loader's default */
  loadAddress: number | null;
  entry: number | null;
  mode: StartMode | null;
  serial: OutputTarget;
  debugcon: OutputTarget;
  clock: 'virtual' | 'host';
  /** stop with status 6 after this many retired instructions (all vCPUs together) */
  maxInstructions: number | null;
  /** stop with status 6 after this many milliseconds of wall-clock time */
  timeoutMs: number | null;
  /** KVM tracepoint names (validated by the run command against core's list) */
  trace: string[];
  /** where trace lines go; null: stderr */
  traceFile: string | null;
  stats: boolean;
  json: boolean;
  dumpControlBlock: boolean;
}

export type Command =
  | { kind: 'help'; topic: 'main' | 'run' | 'backends' }
  | { kind: 'version' }
  | { kind: 'backends' }
  | { kind: 'run'; options: RunOptions };

export const DEFAULT_MEMORY = 256 * 2 ** 20;
/** The platform's minimum: the BIOS area and a kernel at 1 MiB. */
export const MIN_MEMORY = 2 * 2 ** 20;
/** The platform's maximum (core's host-memory limit for one VM); also capped at the host's RAM. */
export const MAX_MEMORY = 64 * 2 ** 30;
export const MAX_SMP = 255;

const RUN_OPTIONS = {
  backend: { type: 'string', short: 'b' },
  memory: { type: 'string', short: 'm' },
  smp: { type: 'string' },
  append: { type: 'string' },
  initrd: { type: 'string', multiple: true },
  'load-addr': { type: 'string' },
  entry: { type: 'string' },
  mode: { type: 'string' },
  serial: { type: 'string' },
  debugcon: { type: 'string' },
  clock: { type: 'string' },
  'max-instructions': { type: 'string' },
  timeout: { type: 'string' },
  trace: { type: 'string', multiple: true },
  'trace-file': { type: 'string' },
  stats: { type: 'boolean' },
  json: { type: 'boolean' },
  'dump-control-block': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

const BACKENDS_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

export function parseCommandLine(argv: readonly string[]): Command {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
      throw new CliError('no command given (try: tsvisor run, tsvisor backends, tsvisor --help)');
    case '-h':
    case '--help':
    case 'help':
      return { kind: 'help', topic: rest[0] === 'run' || rest[0] === 'backends' ? rest[0] : 'main' };
    case '-V':
    case '--version':
      return { kind: 'version' };
    case 'run':
      return parseRun(rest);
    case 'backends': {
      const { values, positionals } = parse('backends', rest, BACKENDS_OPTIONS);
      if (values.help) return { kind: 'help', topic: 'backends' };
      if (positionals.length) throw new CliError(`backends takes no arguments, got '${positionals[0]}'`);
      return { kind: 'backends' };
    }
    default:
      if (cmd.startsWith('-')) throw new CliError(`unknown option '${cmd}' (try: tsvisor --help)`);
      throw new CliError(`unknown command '${cmd}' (commands: run, backends, help)`);
  }
}

function parseRun(args: string[]): Command {
  const { values: v, positionals } = parse('run', args, RUN_OPTIONS);
  if (v.help) return { kind: 'help', topic: 'run' };
  if (positionals.length > 1) {
    throw new CliError(`run takes at most one GUEST file, got ${positionals.length}: ${positionals.join(' ')}`);
  }
  const guest = positionals[0] ?? null;
  if (guest === '') throw new CliError('the GUEST file name is empty');
  if (!guest) {
    for (const o of ['load-addr', 'entry', 'mode'] as const) {
      if (v[o] !== undefined) throw new CliError(`--${o} describes a GUEST file, but none was given (the demo guest sets its own)`);
    }
  }
  const mode = v.mode ?? null;
  if (mode !== null && !(START_MODES as readonly string[]).includes(mode)) {
    throw new CliError(`--mode must be one of ${START_MODES.join(', ')}, got '${mode}'`);
  }
  const clock = v.clock ?? 'virtual';
  if (clock !== 'virtual' && clock !== 'host') throw new CliError(`--clock must be virtual or host, got '${clock}'`);
  const json = v.json ?? false;
  const trace = (v.trace ?? []).flatMap((t) => t.split(',')).map((t) => t.trim()).filter((t) => t !== '');
  if (v.trace !== undefined && trace.length === 0) throw new CliError('--trace needs a comma-separated list of tracepoint names (e.g. kvm_exit,kvm_pio)');
  if (v['trace-file'] !== undefined && trace.length === 0) throw new CliError('--trace-file needs --trace EVENTS to say what to trace');
  return {
    kind: 'run',
    options: {
      guest,
      backend: v.backend ?? 'auto',
      memory: v.memory !== undefined ? parseMemory(v.memory) : DEFAULT_MEMORY,
      smp: v.smp !== undefined ? parseSmp(v.smp) : 1,
      append: v.append ?? null,
      initrd: v.initrd ?? [],
      loadAddress: v['load-addr'] !== undefined ? parseAddress('--load-addr', v['load-addr']) : null,
      entry: v.entry !== undefined ? parseAddress('--entry', v.entry) : null,
      mode: mode as StartMode | null,
      // With --json, stdout carries the JSON object alone unless --serial stdio is asked for.
      serial: parseTarget('--serial', v.serial ?? (json ? 'none' : 'stdio')),
      debugcon: parseTarget('--debugcon', v.debugcon ?? 'none'),
      clock,
      maxInstructions: v['max-instructions'] !== undefined ? parseCount('--max-instructions', v['max-instructions']) : null,
      timeoutMs: v.timeout !== undefined ? parseSeconds('--timeout', v.timeout) * 1000 : null,
      trace,
      traceFile: v['trace-file'] ?? null,
      stats: v.stats ?? false,
      json,
      dumpControlBlock: v['dump-control-block'] ?? false,
    },
  };
}

/** stdio | none | file:PATH | PATH */
export function parseTarget(option: string, text: string): OutputTarget {
  if (text === 'stdio') return { kind: 'stdio' };
  if (text === 'none' || text === 'null') return { kind: 'none' };
  const path = text.startsWith('file:') ? text.slice(5) : text;
  if (path === '') throw new CliError(`${option} must be stdio, none or a file name, got '${text}'`);
  return { kind: 'file', path };
}

/** -m: a size in 1..64 GiB, a multiple of 4 KiB, no more than this host's RAM. */
export function parseMemory(text: string, hostBytes = totalmem()): number {
  const bytes = parseSize('-m/--memory', text);
  if (bytes === 0) throw new CliError(`-m/--memory must be at least 2M, got '${text}' (zero bytes)`);
  if (bytes < MIN_MEMORY) throw new CliError(`-m/--memory must be at least 2M (the BIOS area and a kernel at 1 MiB need it), got '${text}'`);
  if (bytes % 4096) throw new CliError(`-m/--memory must be a multiple of 4 KiB, got '${text}'`);
  const cap = Math.min(MAX_MEMORY, hostBytes);
  if (bytes > cap) {
    throw new CliError(`-m/--memory ${text} is more than this host allows (at most ${formatSize(cap)}: ${cap === MAX_MEMORY ? 'the platform limit' : "the host's RAM"})`);
  }
  return bytes;
}

function parseSmp(text: string): number {
  const n = toInteger(text);
  if (n === null || n < 1 || n > MAX_SMP) throw new CliError(`--smp must be a number of vCPUs from 1 to ${MAX_SMP}, got '${text}'`);
  return n;
}

export function formatSize(bytes: number): string {
  for (const [unit, size] of [['G', 2 ** 30], ['M', 2 ** 20], ['K', 2 ** 10]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(1)}G`;
  return `${bytes} bytes`;
}

function parse<O extends NonNullable<ParseArgsConfig['options']>>(command: string, args: string[], options: O) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    const err = e as Error & { code?: string };
    const unknown = /Unknown option '([^']+)'/.exec(err.message);
    if (unknown) throw new CliError(`${command}: unknown option '${unknown[1]}' (try: tsvisor ${command} --help)`);
    const missing = /Option '(?:-\w, )?(--[\w-]+)[^']*' argument missing/.exec(err.message);
    if (missing) throw new CliError(`${command}: option ${missing[1]} needs a value`);
    const ambiguous = /Option '(?:-\w, )?(--[\w-]+)' argument is ambiguous/.exec(err.message);
    if (ambiguous) throw new CliError(`${command}: option ${ambiguous[1]} needs a value (write ${ambiguous[1]}=VALUE for a value that starts with '-')`);
    throw new CliError(`${command}: ${err.message.split('\n')[0]}`);
  }
}

const INTEGER = /^(0x[0-9a-f_]+|[0-9][0-9_]*)$/i;

function toInteger(text: string): number | null {
  if (!INTEGER.test(text)) return null;
  const n = Number(text.replace(/_/g, ''));
  return Number.isSafeInteger(n) ? n : null;
}

/** A guest-physical address: decimal or 0x-hex, below 4 GiB (what a flat binary can be loaded at). */
export function parseAddress(option: string, text: string): number {
  const n = toInteger(text);
  if (n === null || n >= 2 ** 32) throw new CliError(`${option} must be an address below 4 GiB (decimal or 0x hex), got '${text}'`);
  return n;
}

/** A size with an optional K/M/G suffix (binary units): 2M, 0x200000, 512K. */
export function parseSize(option: string, text: string): number {
  if (/^\s*-/.test(text)) throw new CliError(`${option} must not be negative, got '${text}'`);
  const m = /^(0x[0-9a-f_]+|[0-9][0-9_]*)\s*([kmg])?(?:i?b)?$/i.exec(text);
  const n = m ? toInteger(m[1]) : null;
  if (!m || n === null) throw new CliError(`${option} must be a size such as 16M, 512K or 1G, got '${text}'`);
  const unit = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 }[(m[2] ?? '').toLowerCase() as 'k' | 'm' | 'g'] ?? 1;
  return n * unit;
}

/** A positive count (decimal, 0x hex, or with a k/M/G decimal suffix: 10M = 10 000 000). */
export function parseCount(option: string, text: string): number {
  const m = /^(0x[0-9a-f_]+|[0-9][0-9_]*)([kmg])?$/i.exec(text);
  const n = m ? toInteger(m[1]) : null;
  const unit = m?.[2] ? { k: 1e3, m: 1e6, g: 1e9 }[m[2].toLowerCase() as 'k' | 'm' | 'g'] : 1;
  if (!m || n === null || n <= 0 || !Number.isSafeInteger(n * unit)) {
    throw new CliError(`${option} must be a positive whole number (e.g. 1000000 or 1M), got '${text}'`);
  }
  return n * unit;
}

function parseSeconds(option: string, text: string): number {
  const s = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || !(s > 0)) throw new CliError(`${option} must be a positive number of seconds, got '${text}'`);
  return s;
}
