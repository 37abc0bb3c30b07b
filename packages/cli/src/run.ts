/**
 * `tsvisor run`: a thin front end over core's `Machine` (the PC platform: devices, firmware,
 * ACPI, the flat/ELF/Multiboot loaders, the SMP scheduler). The CLI picks the backend, reads
 * the guest files, says where the byte streams go, runs the Machine, and reports: the
 * process status (status.ts), one line on stderr when the run did not end well, the report
 * (FS base read with the backend's getMsr, exits in the backend's vocabulary), --stats,
 * --json, --trace lines, a status line on an interactive terminal, Ctrl-C.
 */
import { readFileSync, statSync } from 'node:fs';
import {
  BackendBindError,
  GuestFile,
  GuestLoadError,
  isKvmTracepoint,
  KVM_TRACEPOINT_NAMES,
  KvmError,
  KvmVcpu,
  Machine,
  MachineConfigError,
  MachineOptions,
  MachineResult,
} from '@tsvisor/core';
import { RunOptions } from './args';
import { resolveBackend, ResolvedBackend } from './backends';
import { DEMO_GUEST, demoGuestImage } from './demo-guest';
import { CliIo } from './io';
import { ByteSink, Outputs } from './outputs';
import { describeEnd, reportLines, runJson, RunEnd, statsLines } from './report';
import { CliError, ExitStatus } from './status';
import { StatusLine } from './status-line';

/** Serial and debugcon bytes kept for --json (the streams themselves go where --serial/--debugcon say). */
const JSON_CAPTURE_LIMIT = 1024 * 1024;
/** How often buffered output is flushed during a run. */
const FLUSH_MS = 100;

export async function runCommand(opts: RunOptions, io: CliIo): Promise<number> {
  // The cheapest mistakes first: names of tracepoints, then the files the user named.
  checkTracepoints(opts.trace);
  const kernel = opts.guest === null ? null : readGuestFile('guest file', opts.guest);
  const initrd = opts.initrd.map((f) => readGuestFile('--initrd file', f));
  const backend = resolveBackend(opts.backend, io);
  const outputs = new Outputs(io);
  try {
    return await runMachine(opts, io, backend, kernel, initrd, outputs);
  } finally {
    outputs.close();
  }
}

async function runMachine(opts: RunOptions, io: CliIo, backend: ResolvedBackend, kernel: GuestFile | null, initrd: GuestFile[], outputs: Outputs): Promise<number> {
  const serial = outputs.open('--serial', opts.serial);
  const debugcon = outputs.open('--debugcon', opts.debugcon);
  const traceOut: ByteSink | null = opts.trace.length ? (opts.traceFile ? outputs.file('--trace-file', opts.traceFile) : outputs.stderr) : null;

  let machine: Machine | null = null;
  const options: MachineOptions = {
    backend: backend.cls,
    memory: opts.memory,
    smp: opts.smp,
    kernel: kernel ?? { name: 'demo', data: new Uint8Array(0) },
    append: opts.append ?? undefined,
    initrd,
    serial: serial ? (b) => serial.push(b) : null,
    debugcon: debugcon ? (b) => debugcon.push(b) : null,
    clock: opts.clock,
    maxInstructions: opts.maxInstructions ?? undefined,
    timeoutMs: opts.timeoutMs ?? undefined,
    captureLimit: opts.json ? JSON_CAPTURE_LIMIT : 0,
    exitTiming: opts.stats || opts.json,
    ...(opts.loadAddress !== null ? { loadAddr: opts.loadAddress } : {}),
    ...(opts.entry !== null ? { entry: opts.entry } : {}),
    ...(opts.mode !== null ? { mode: opts.mode } : {}),
    ...(traceOut ? {
      trace: {
        events: opts.trace,
        // trace-cmd's shape: task, CPU, timestamp (guest time), event: text.
        sink: (event: string, vcpuId: number, text: string) => {
          const vcpu = machine?.kvm.vcpus[vcpuId];
          const ns = vcpu ? machine!.kvm.clock.nowNs(vcpu) : 0;
          traceOut.write(`vcpu${vcpuId} [${String(vcpuId).padStart(3, '0')}] ${(ns / 1e9).toFixed(9)}: ${event}: ${text}\n`);
        },
      },
    } : {}),
  };
  if (!kernel) {
    // The built-in demo: a flat real-mode image (real → protected → long mode, banner, WRMSR FS_BASE, HLT),
    // testkit's buildDemoGuest() prebuilt (demo-guest.ts), so no assembler is loaded to start it.
    Object.assign(options, { kernel: { name: 'demo', data: demoGuestImage() }, format: 'flat', mode: 'real', loadAddr: DEMO_GUEST.loadAddress, entry: DEMO_GUEST.entry });
  }

  machine = createMachine(options, backend);
  const stopInterrupt = io.onInterrupt?.(() => machine!.interrupt('interrupted (SIGINT)')) ?? (() => undefined);
  const stopStdin = serial && opts.serial.kind === 'stdio' && io.readStdin ? io.readStdin((bytes) => machine!.uart.receive(bytes)) : () => undefined;
  const statusLine = io.stderr.isTTY && !opts.json && !(traceOut && !opts.traceFile) ? new StatusLine(io, machine) : null;
  const flusher = setInterval(() => {
    outputs.flush();
    statusLine?.tick();
  }, FLUSH_MS);
  let result: MachineResult;
  try {
    result = await machine.run();
  } finally {
    clearInterval(flusher);
    stopInterrupt();
    stopStdin();
    statusLine?.clear();
  }
  try {
    return finish(opts, io, outputs, backend, machine, result);
  } finally {
    machine.destroy();
  }
}

function finish(opts: RunOptions, io: CliIo, outputs: Outputs, backend: ResolvedBackend, machine: Machine, r: MachineResult): number {
  const end = describeEnd(r, opts);
  const vcpus = machine.vcpus.map((s) => s.vcpu);
  const out = outputs.stdout;
  const dump = opts.dumpControlBlock ? controlBlockDumps(io, backend, vcpus) : null;
  outputs.flush();
  if (end.error) io.stderr.write(`tsvisor: ${end.error}\n`);
  if (opts.json) {
    const json = runJson(r, end, backend, vcpus);
    if (dump) json.controlBlock = dump;
    if (!out.atLineStart) out.write('\n');
    out.write(JSON.stringify(json) + '\n');
    return end.status;
  }
  const lines = reportLines(r, end, backend, vcpus);
  if (opts.stats) lines.push(...statsLines(r, backend.info.name));
  if (!out.atLineStart) out.write('\n');
  out.write(lines.join('\n') + '\n');
  if (dump) {
    dump.forEach((text, i) => {
      const which = dump.length > 1 ? ` (vCPU ${i})` : '';
      out.write(`--- ${backend.info.name} control block${which}\n${text}${text.endsWith('\n') ? '' : '\n'}`);
    });
  }
  return end.status;
}

function checkTracepoints(names: readonly string[]): void {
  const unknown = names.filter((n) => !isKvmTracepoint(n));
  if (unknown.length) {
    throw new CliError(`--trace: unknown tracepoint${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (valid: ${KVM_TRACEPOINT_NAMES.join(', ')})`);
  }
}

function readGuestFile(what: string, file: string): GuestFile {
  let data: Uint8Array;
  try {
    if (statSync(file).isDirectory()) throw Object.assign(new Error('directory'), { code: 'EISDIR' });
    data = readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why =
      err.code === 'ENOENT' ? 'no such file' :
      err.code === 'EACCES' ? 'permission denied' :
      err.code === 'EISDIR' ? 'it is a directory' :
      err.message;
    throw new CliError(`cannot read ${what} '${file}': ${why}`);
  }
  if (data.length === 0) throw new CliError(`${what} '${file}' is empty`);
  return { name: file, data };
}

/** Machine.create with its errors as CLI errors: the user's (status 2) or tsvisor's (status 1). */
function createMachine(options: MachineOptions, backend: ResolvedBackend): Machine {
  try {
    return Machine.create(options);
  } catch (e) {
    if (e instanceof GuestLoadError || e instanceof MachineConfigError) throw new CliError(oneLine((e as Error).message));
    // A third-party backend that cannot be used is the user's choice to fix (status 2); a
    // built-in one is a bug in tsvisor (status 1).
    const builtin = backend.source === 'built-in';
    const status = builtin ? ExitStatus.SOFTWARE : ExitStatus.USAGE;
    const from = builtin ? '' : ` (from ${backend.modulePath})`;
    if (e instanceof BackendBindError) throw new CliError(`${oneLine(e.message)}${from}`, status);
    if (e instanceof KvmError && e.code === 'ENOMEM') throw new CliError(`cannot create the machine: ${oneLine(e.message)}`);
    throw new CliError(`backend ${backend.info.name}${from} could not create the machine: ${oneLine((e as Error).message)}`, status);
  }
}

function oneLine(text: string): string {
  const i = text.indexOf('\n');
  return i < 0 ? text : text.slice(0, i);
}

/** --dump-control-block: the backend module's optional `dumpControlBlock(vcpu)` export, per vCPU. */
function controlBlockDumps(io: CliIo, backend: ResolvedBackend, vcpus: readonly KvmVcpu[]): string[] | null {
  const dump = backend.module.dumpControlBlock;
  if (typeof dump !== 'function') {
    io.stderr.write(`tsvisor: backend ${backend.info.name} has no control-block dump (its module exports no dumpControlBlock)\n`);
    return null;
  }
  const texts: string[] = [];
  for (const vcpu of vcpus) {
    let text: unknown;
    try {
      text = (dump as (v: KvmVcpu) => unknown)(vcpu);
    } catch (e) {
      io.stderr.write(`tsvisor: ${backend.info.name} dumpControlBlock failed: ${(e as Error).message}\n`);
      return null;
    }
    if (text === undefined) continue; // it printed for itself
    texts.push(typeof text === 'string' ? text
      : Array.isArray(text) ? text.join('\n')
      : JSON.stringify(text, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v), 2));
  }
  return texts;
}

export type { RunEnd };
