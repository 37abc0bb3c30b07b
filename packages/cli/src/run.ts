/**
 * `tsvisor run`: the VMM loop. Pick the backend, create the VM through core's KVM-shaped
 * API, load the guest, then KVM_RUN until the guest halts or something ends the run,
 * answering the exits userspace owns (port I/O, MMIO) the way a PC with only a serial
 * console would. Afterwards: the guest's FS base read back through the backend's getMsr
 * hook, and the exits by reason in the backend's own vocabulary.
 */
import {
  BackendBindError,
  Kvm,
  KvmExitReason,
  KvmInternalError,
  KvmRun,
  KvmSystemEventType,
  KvmVcpu,
  MSR,
  exitReasonName,
} from '@tsvisor/core';
import { RunOptions } from './args';
import { resolveBackend, ResolvedBackend } from './backends';
import { checkGuestFits, demoGuest, flatBinaryGuest, GuestSpec, loadGuest } from './guest';
import { CliIo } from './io';
import { PortIo, SerialConsole } from './ports';
import { CliError, ExitStatus } from './status';

/** Instructions per KVM_RUN when a wall-clock timeout must be checked between runs. */
const TIMEOUT_SLICE = 2_000_000;

/** How a run ended: the exit status and, unless the guest halted cleanly, one line saying why. */
export interface Outcome {
  status: ExitStatus;
  /** KVM exit that ended the run (for the report) */
  how: string;
  /** the one-line explanation on stderr (absent for a clean halt) */
  error?: string;
}

export async function runCommand(opts: RunOptions, io: CliIo): Promise<ExitStatus> {
  // A guest file the user named is checked first: it is the cheapest mistake to report.
  const file = opts.guest === null ? null
    : flatBinaryGuest(opts.guest, { loadAddress: opts.loadAddress, entry: opts.entry, mode: opts.mode });
  if (file) checkGuestFits(file, opts.memory);
  const backend = resolveBackend(opts.backend, io);
  const guest: GuestSpec = file ?? demoGuest();

  const kvm = createVm(backend);
  try {
    let vcpu: KvmVcpu;
    try {
      vcpu = kvm.createVcpu(0);
    } catch (e) {
      throw new CliError(`${backend.info.name}: KVM_CREATE_VCPU failed: ${(e as Error).message}`, ExitStatus.SOFTWARE);
    }
    try {
      loadGuest(kvm, vcpu, guest, opts.memory);
    } catch (e) {
      if (e instanceof CliError) throw e;
      throw new CliError(`cannot start ${guest.description} on ${backend.info.name}: ${(e as Error).message}`, ExitStatus.SOFTWARE);
    }

    const serial = new SerialOutput(io);
    const ports = new PortIo(new SerialConsole((b) => serial.push(b)));
    const outcome = await vcpuLoop(vcpu, ports, serial, opts);
    serial.flush();

    if (outcome.error) io.stderr.write(`tsvisor: ${outcome.error}\n`);
    report(io, backend, vcpu, outcome, serial.endsWithNewline);
    if (opts.dumpControlBlock) dumpControlBlock(io, backend, vcpu);
    return outcome.status;
  } finally {
    kvm.destroy();
  }
}

function createVm(backend: ResolvedBackend): Kvm {
  try {
    // The CLI is the one that decides which class answers X86_OPS; core only resolves it.
    return Kvm.create({ backend: backend.cls });
  } catch (e) {
    // A third-party backend that cannot be used is the user's choice to fix (status 2);
    // a built-in one is a bug in tsvisor (status 1).
    const builtin = backend.source === 'built-in';
    const status = builtin ? ExitStatus.SOFTWARE : ExitStatus.USAGE;
    const from = builtin ? '' : ` (from ${backend.modulePath})`;
    if (e instanceof BackendBindError) throw new CliError(`${e.message}${from}`, status);
    throw new CliError(`backend ${backend.info.name}${from} could not create a VM: ${(e as Error).message}`, status);
  }
}

/** The KVM_RUN loop; exported for tests, which drive it with scripted exits. */
export async function vcpuLoop(vcpu: KvmVcpu, ports: PortIo, serial: { flush(): void }, opts: RunOptions): Promise<Outcome> {
  const started = Date.now();
  const defaultSlice = vcpu.runBudget;
  const retired = () => vcpu.cpu.state.instructionsRetired;
  for (;;) {
    let slice = opts.timeoutMs !== null ? Math.min(defaultSlice, TIMEOUT_SLICE) : defaultSlice;
    if (opts.maxInstructions !== null) {
      const left = opts.maxInstructions - retired();
      if (left <= 0) return timeout(`stopped after ${retired()} instructions (--max-instructions ${opts.maxInstructions}) before the guest halted`);
      slice = Math.min(slice, left);
    }
    vcpu.runBudget = slice;

    let run: KvmRun;
    try {
      run = vcpu.runVcpu();
    } catch (e) {
      return { status: ExitStatus.INTERNAL_ERROR, how: 'KVM_RUN failed', error: `KVM_RUN failed: ${(e as Error).message}` };
    }

    switch (run.exitReason) {
      case KvmExitReason.KVM_EXIT_IO:
        ports.handle(run);
        continue;
      case KvmExitReason.KVM_EXIT_MMIO:
        // No MMIO devices in this slice: reads float to all-ones, writes are dropped, as on a PC.
        if (!run.mmio.isWrite) run.mmio.data.fill(0xff, 0, run.mmio.len);
        continue;
      case KvmExitReason.KVM_EXIT_HLT:
        return { status: ExitStatus.OK, how: 'guest halted (KVM_EXIT_HLT)' };
      case KvmExitReason.KVM_EXIT_INTR:
        // A time slice ended (or a signal): flush the console, let the event loop breathe, go on.
        serial.flush();
        if (opts.timeoutMs !== null && Date.now() - started >= opts.timeoutMs) {
          return timeout(`stopped after ${opts.timeoutMs / 1000} s (--timeout) and ${retired()} instructions before the guest halted`);
        }
        await new Promise<void>((resolve) => setImmediate(resolve));
        continue;
      case KvmExitReason.KVM_EXIT_SHUTDOWN:
        return {
          status: ExitStatus.SHUTDOWN,
          how: 'guest shut down (KVM_EXIT_SHUTDOWN)',
          error: `guest shut down (triple fault, KVM_EXIT_SHUTDOWN) at RIP ${ripOf(vcpu)}`,
        };
      case KvmExitReason.KVM_EXIT_FAIL_ENTRY: {
        const reason = run.failEntry.hardwareEntryFailureReason;
        return {
          status: ExitStatus.FAIL_ENTRY,
          how: 'VM entry failed (KVM_EXIT_FAIL_ENTRY)',
          error: `VM entry failed (KVM_EXIT_FAIL_ENTRY): hardware entry failure reason 0x${reason.toString(16)}` +
            `${run.internalMessage ? `: ${run.internalMessage}` : ''}${opts.dumpControlBlock ? '' : ' (--dump-control-block shows the control block)'}`,
        };
      }
      case KvmExitReason.KVM_EXIT_INTERNAL_ERROR: {
        const sub = KvmInternalError[run.internal.suberror] ?? `suberror ${run.internal.suberror}`;
        return {
          status: ExitStatus.INTERNAL_ERROR,
          how: 'internal error (KVM_EXIT_INTERNAL_ERROR)',
          error: `internal error (KVM_EXIT_INTERNAL_ERROR, ${sub}) at RIP ${ripOf(vcpu)}${run.internalMessage ? `: ${run.internalMessage}` : ''}`,
        };
      }
      case KvmExitReason.KVM_EXIT_SYSTEM_EVENT:
        if (run.systemEvent.type === KvmSystemEventType.KVM_SYSTEM_EVENT_SHUTDOWN) {
          return { status: ExitStatus.OK, how: 'guest powered off (KVM_EXIT_SYSTEM_EVENT shutdown)' };
        }
        if (run.systemEvent.type === KvmSystemEventType.KVM_SYSTEM_EVENT_RESET) {
          return { status: ExitStatus.SHUTDOWN, how: 'guest reset (KVM_EXIT_SYSTEM_EVENT reset)', error: 'guest asked for a reset (KVM_EXIT_SYSTEM_EVENT); tsvisor does not reboot guests' };
        }
        return { status: ExitStatus.INTERNAL_ERROR, how: 'guest crashed (KVM_EXIT_SYSTEM_EVENT)', error: `guest reported a crash (KVM_EXIT_SYSTEM_EVENT type ${run.systemEvent.type})` };
      default: {
        const name = exitReasonName(run.exitReason);
        return { status: ExitStatus.INTERNAL_ERROR, how: `unhandled exit (${name})`, error: `unhandled exit ${name} at RIP ${ripOf(vcpu)}: this VMM has no handler for it yet` };
      }
    }
  }
}

function timeout(error: string): Outcome {
  return { status: ExitStatus.TIMEOUT, how: 'run stopped (timeout)', error };
}

function ripOf(vcpu: KvmVcpu): string {
  try {
    return hex64(vcpu.getRegs().rip);
  } catch {
    return '(unavailable)';
  }
}

export function hex64(v: bigint): string {
  return `0x${v.toString(16).padStart(16, '0')}`;
}

/** The report after the run, on stdout: how it ended, FS base via getMsr, exits by reason. */
function report(io: CliIo, backend: ResolvedBackend, vcpu: KvmVcpu, outcome: Outcome, serialEndedLine: boolean): void {
  const name = backend.info.name;
  const lines: string[] = [];
  if (!serialEndedLine) lines.push('');
  const pkg = backend.packageName ? ` ${backend.packageName}${backend.version ? `@${backend.version}` : ''}` : '';
  const auto = backend.autoReason ? `, auto: ${backend.autoReason}` : '';
  lines.push(`--- tsvisor: ${outcome.how} on backend ${name} (${backend.info.vendor}${pkg}${auto})`);
  lines.push(`instructions retired: ${vcpu.cpu.state.instructionsRetired}`);
  let fsBase: string;
  try {
    // The seed's get_fsgsbase_from_vmcs, done the tsvisor way: KVM_GET_MSRS → kvm_x86_ops.getMsr,
    // which the backend answers from its own control block (VMCS GUEST_FS_BASE, VMCB save.fs.base).
    fsBase = hex64(vcpu.getMsr(MSR.FS_BASE));
  } catch (e) {
    fsBase = `unavailable (${(e as Error).message})`;
  }
  lines.push(`FS base (MSR 0x${MSR.FS_BASE.toString(16)}, read with ${name} getMsr): ${fsBase}`);
  lines.push(...exitTable(name, vcpu.exitCounts));
  io.stdout.write(lines.join('\n') + '\n');
}

/** The exits table: the backend's own exit-reason names, most frequent first. */
export function exitTable(backendName: string, counts: ReadonlyMap<string, number>): string[] {
  const rows = [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const total = rows.reduce((s, [, n]) => s + n, 0);
  const width = Math.max(6, ...rows.map(([r]) => r.length));
  const numWidth = Math.max(5, String(total).length);
  const out = [`exits by reason (${backendName}):`];
  out.push(`  ${'reason'.padEnd(width)}  ${'count'.padStart(numWidth)}`);
  for (const [reason, n] of rows) out.push(`  ${reason.padEnd(width)}  ${String(n).padStart(numWidth)}`);
  out.push(`  ${'total'.padEnd(width)}  ${String(total).padStart(numWidth)}`);
  return out;
}

/** --dump-control-block: the backend module's optional `dumpControlBlock(vcpu)` export. */
function dumpControlBlock(io: CliIo, backend: ResolvedBackend, vcpu: KvmVcpu): void {
  const dump = backend.module.dumpControlBlock;
  if (typeof dump !== 'function') {
    io.stderr.write(`tsvisor: backend ${backend.info.name} has no control-block dump (its module exports no dumpControlBlock)\n`);
    return;
  }
  let text: unknown;
  try {
    text = (dump as (v: KvmVcpu) => unknown)(vcpu);
  } catch (e) {
    io.stderr.write(`tsvisor: ${backend.info.name} dumpControlBlock failed: ${(e as Error).message}\n`);
    return;
  }
  if (text === undefined) return; // it printed for itself
  const body = typeof text === 'string' ? text
    : Array.isArray(text) ? text.join('\n')
    : JSON.stringify(text, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v), 2);
  io.stdout.write(`--- ${backend.info.name} control block\n${body}${body.endsWith('\n') ? '' : '\n'}`);
}

/** The serial console's stdout, written in chunks (a write per guest byte would be slow). */
class SerialOutput {
  private buf = new Uint8Array(4096);
  private len = 0;
  private last = 0x0a;
  private wrote = false;

  constructor(private readonly io: CliIo) {}

  push(byte: number): void {
    this.buf[this.len++] = byte;
    this.last = byte;
    this.wrote = true;
    if (this.len === this.buf.length) this.flush();
  }

  flush(): void {
    if (this.len === 0) return;
    this.io.stdout.write(Buffer.from(this.buf.subarray(0, this.len)));
    this.len = 0;
  }

  /** True when the guest printed nothing or its last byte ended a line. */
  get endsWithNewline(): boolean {
    return !this.wrote || this.last === 0x0a;
  }
}
