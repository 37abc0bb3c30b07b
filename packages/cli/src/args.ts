/**
 * Command-line parsing (node:util parseArgs, strict). Every mistake becomes a CliError with
 * exit status 2 and one line that names the option and what was expected.
 */
import { parseArgs, ParseArgsConfig } from 'node:util';
import { DEFAULT_LOAD_ADDRESS, START_MODES, StartMode } from './guest';
import { CliError } from './status';

export interface RunOptions {
  /** flat binary to run; null: the built-in demo guest */
  guest: string | null;
  /** vmx | svm | auto | package name | path */
  backend: string;
  /** guest RAM in bytes (slot 0 at GPA 0) */
  memory: number;
  loadAddress: number;
  entry: number;
  mode: StartMode;
  /** stop with status 6 after this many retired instructions */
  maxInstructions: number | null;
  /** stop with status 6 after this many milliseconds of wall-clock time */
  timeoutMs: number | null;
  dumpControlBlock: boolean;
}

export type Command =
  | { kind: 'help'; topic: 'main' | 'run' | 'backends' }
  | { kind: 'version' }
  | { kind: 'backends' }
  | { kind: 'run'; options: RunOptions };

export const DEFAULT_MEMORY = 16 * 2 ** 20;
export const MIN_MEMORY = 1 * 2 ** 20;
export const MAX_MEMORY = 2 * 2 ** 30;

const RUN_OPTIONS = {
  backend: { type: 'string', short: 'b' },
  memory: { type: 'string', short: 'm' },
  'load-addr': { type: 'string' },
  entry: { type: 'string' },
  mode: { type: 'string' },
  'max-instructions': { type: 'string' },
  timeout: { type: 'string' },
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
  if (!guest) {
    for (const o of ['load-addr', 'entry', 'mode'] as const) {
      if (v[o] !== undefined) throw new CliError(`--${o} describes a GUEST file, but none was given (the demo guest sets its own)`);
    }
  }
  const mode = v.mode ?? 'real';
  if (!(START_MODES as readonly string[]).includes(mode)) {
    throw new CliError(`--mode must be one of ${START_MODES.join(', ')}, got '${mode}'`);
  }
  const loadAddress = v['load-addr'] !== undefined ? parseAddress('--load-addr', v['load-addr']) : DEFAULT_LOAD_ADDRESS;
  const entry = v.entry !== undefined ? parseAddress('--entry', v.entry) : loadAddress;
  const memory = v.memory !== undefined ? parseSize('-m/--memory', v.memory) : DEFAULT_MEMORY;
  if (memory < MIN_MEMORY || memory > MAX_MEMORY || memory % 4096 !== 0) {
    throw new CliError(`-m/--memory must be a multiple of 4 KiB between 1M and 2G, got '${v.memory}'`);
  }
  return {
    kind: 'run',
    options: {
      guest,
      backend: v.backend ?? 'auto',
      memory,
      loadAddress,
      entry,
      mode: mode as StartMode,
      maxInstructions: v['max-instructions'] !== undefined ? parseCount('--max-instructions', v['max-instructions']) : null,
      timeoutMs: v.timeout !== undefined ? parseSeconds('--timeout', v.timeout) * 1000 : null,
      dumpControlBlock: v['dump-control-block'] ?? false,
    },
  };
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
