/**
 * What `tsvisor run` says about a finished run: how it ended (one line, and one line on
 * stderr when it did not end well), the report (FS base read through the backend's getMsr
 * hook, exits by the backend's own reason names), the --stats table in the manner of
 * `perf kvm stat`, and the --json object.
 *
 * Time per exit reason (--stats, --json) is measured by the Machine: performance.now() at
 * every KVM_RUN return; the wall time since the previous return (guest execution, in-kernel
 * exit handling, and the VMM's handling of the previous userspace exit) is charged to the
 * last exit the backend took in that KVM_RUN, or to "(no exit: time slice)" when it took
 * none. In-kernel exits that did not end a KVM_RUN are counted (by the backend, per reason)
 * but are charged no time of their own: their handling time is inside the KVM_RUN's.
 */
import { KvmVcpu, MachineResult, MSR, NO_EXIT } from '@tsvisor/core';
import { RunOptions } from './args';
import { ResolvedBackend } from './backends';
import { ExitStatus } from './status';

/** How the run ended: the process status, a short phrase for the report, the stderr line (when it did not end well). */
export interface RunEnd {
  status: number;
  how: string;
  error?: string;
}

export function describeEnd(r: MachineResult, o: RunOptions): RunEnd {
  const n = r.instructions;
  switch (r.reason) {
    case 'debug-exit': {
      const v = r.debugExitValue ?? 0;
      // A process status has 8 bits: the low 8 bits of the value, as a C program's exit(v).
      const status = v & 0xff;
      return { status, how: `guest wrote 0x${v.toString(16)} to isa-debug-exit (exit status ${status}; QEMU's would be ${r.qemuStatus! & 0xff})` };
    }
    case 'halted':
      return { status: ExitStatus.OK, how: 'guest halted (every vCPU in HLT with nothing to wake it)' };
    case 'poweroff':
      return { status: ExitStatus.OK, how: r.message };
    case 'reset':
      return { status: ExitStatus.RESET, how: 'guest asked for a reset', error: `${r.message}; tsvisor does not reboot guests` };
    case 'triple-fault':
      return { status: ExitStatus.TRIPLE_FAULT, how: 'guest triple-faulted (KVM_EXIT_SHUTDOWN)', error: r.message };
    case 'fail-entry':
      return {
        status: ExitStatus.FAIL_ENTRY, how: 'VM entry failed (KVM_EXIT_FAIL_ENTRY)',
        error: `${r.message}${o.dumpControlBlock ? '' : ' (--dump-control-block shows the control block)'}`,
      };
    case 'internal-error':
      return { status: ExitStatus.INTERNAL_ERROR, how: 'internal error', error: r.message };
    case 'max-instructions':
      return { status: ExitStatus.TIMEOUT, how: 'run stopped (--max-instructions)', error: `stopped after ${n} instructions (--max-instructions ${o.maxInstructions}) before the guest finished` };
    case 'timeout':
      return { status: ExitStatus.TIMEOUT, how: 'run stopped (--timeout)', error: `stopped after ${(o.timeoutMs ?? 0) / 1000} s (--timeout) and ${n} instructions before the guest finished` };
    case 'interrupted':
      return { status: ExitStatus.INTERRUPTED, how: 'run interrupted (Ctrl-C)', error: `interrupted (Ctrl-C) after ${n} instructions` };
  }
}

export function hex64(v: bigint): string {
  return `0x${v.toString(16).padStart(16, '0')}`;
}

/** MSR_FS_BASE read with KVM_GET_MSRS, which core answers through the backend's getMsr hook. */
export function readFsBase(vcpu: KvmVcpu): { value: string; ok: boolean } {
  try {
    return { value: hex64(vcpu.getMsr(MSR.FS_BASE)), ok: true };
  } catch (e) {
    return { value: `unavailable (${(e as Error).message})`, ok: false };
  }
}

export function backendLabel(b: ResolvedBackend): string {
  const pkg = b.packageName ? ` ${b.packageName}${b.version ? `@${b.version}` : ''}` : '';
  const auto = b.autoReason ? `, auto: ${b.autoReason}` : '';
  return `${b.info.name} (${b.info.vendor}${pkg}${auto})`;
}

/** The report after the run: how it ended, instructions, FS base via getMsr, exits by the backend's names. */
export function reportLines(r: MachineResult, end: RunEnd, backend: ResolvedBackend, vcpus: readonly KvmVcpu[]): string[] {
  const name = backend.info.name;
  const lines = [`--- tsvisor: ${end.how} on backend ${backendLabel(backend)}`];
  const per = r.vcpus.length > 1 ? ` (${r.vcpus.map((v) => `vCPU ${v.id}: ${v.instructions}`).join(', ')})` : '';
  lines.push(`instructions retired: ${r.instructions}${per}`);
  // The seed's get_fsgsbase_from_vmcs, done the tsvisor way: KVM_GET_MSRS → kvm_x86_ops.getMsr,
  // which the backend answers from its own control block (VMCS GUEST_FS_BASE, VMCB save.fs.base).
  lines.push(`FS base (MSR 0x${MSR.FS_BASE.toString(16)}, read with ${name} getMsr): ${readFsBase(vcpus[0]).value}`);
  lines.push(...exitTable(name, totalExits(r)));
  return lines;
}

export function totalExits(r: MachineResult): Map<string, number> {
  const m = new Map<string, number>();
  for (const v of r.vcpus) for (const [k, n] of Object.entries(v.exits)) m.set(k, (m.get(k) ?? 0) + n);
  return m;
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

// ---------------------------------------------------------------- --stats and --json

export interface ExitStat {
  reason: string;
  count: number;
  /** share of this scope's exits, in % */
  countPct: number;
  timeMs: number;
  /** share of this scope's measured time, in % */
  timePct: number;
}

export interface ExitStats {
  exits: number;
  timeMs: number;
  rows: ExitStat[];
}

export function exitStats(exits: Record<string, number>, times: Record<string, number>): ExitStats {
  const names = new Set([...Object.keys(exits), ...Object.keys(times)]);
  const total = Object.values(exits).reduce((a, b) => a + b, 0);
  const timeMs = Object.values(times).reduce((a, b) => a + b, 0);
  const rows = [...names].map((reason) => {
    const count = exits[reason] ?? 0;
    const t = times[reason] ?? 0;
    return { reason, count, countPct: total ? (100 * count) / total : 0, timeMs: t, timePct: timeMs ? (100 * t) / timeMs : 0 };
  });
  rows.sort((a, b) => b.count - a.count || b.timeMs - a.timeMs || a.reason.localeCompare(b.reason));
  return { exits: total, timeMs, rows };
}

function sumRecords(records: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of records) for (const [k, v] of Object.entries(r)) out[k] = (out[k] ?? 0) + v;
  return out;
}

export function allVcpuStats(r: MachineResult): ExitStats {
  return exitStats(sumRecords(r.vcpus.map((v) => v.exits)), sumRecords(r.vcpus.map((v) => v.exitTimeMs)));
}

export function mips(instructions: number, wallMs: number): number {
  return wallMs > 0 ? instructions / wallMs / 1000 : 0;
}

/** --stats: `perf kvm stat report`'s table, per vCPU and for all of them. */
export function statsLines(r: MachineResult, backendName: string): string[] {
  const scopes: [string, ExitStats][] = r.vcpus.map((v) => [`vCPU ${v.id} (${v.instructions} instructions)`, exitStats(v.exits, v.exitTimeMs)]);
  scopes.push([`all vCPUs (${r.instructions} instructions)`, allVcpuStats(r)]);
  const width = Math.max(12, NO_EXIT.length, ...scopes.flatMap(([, s]) => s.rows.map((x) => x.reason.length)));
  const pct = (p: number) => `${p.toFixed(2)}%`.padStart(8);
  const out = [`--- exit statistics (${backendName}; time: wall time per KVM_RUN, charged to the exit that ended it)`];
  for (const [title, s] of scopes) {
    out.push(`${title}:`);
    out.push(`  ${'exit reason'.padEnd(width)}  ${'count'.padStart(9)}  ${'exits%'.padStart(8)}  ${'time%'.padStart(8)}  ${'time ms'.padStart(10)}`);
    for (const x of s.rows) {
      out.push(`  ${x.reason.padEnd(width)}  ${String(x.count).padStart(9)}  ${pct(x.countPct)}  ${pct(x.timePct)}  ${x.timeMs.toFixed(3).padStart(10)}`);
    }
    out.push(`  ${'total'.padEnd(width)}  ${String(s.exits).padStart(9)}  ${pct(s.exits ? 100 : 0)}  ${pct(s.timeMs ? 100 : 0)}  ${s.timeMs.toFixed(3).padStart(10)}`);
  }
  out.push(`instructions retired: ${r.instructions} in ${r.wallMs} ms wall: ${mips(r.instructions, r.wallMs).toFixed(2)} MIPS`);
  return out;
}

export interface RunJson {
  status: number;
  reason: MachineResult['reason'];
  message: string;
  debugExitValue?: number;
  qemuStatus?: number;
  backend: { name: string; vendor: string; package: string | null; version: string | null; source: string; auto?: string };
  instructions: number;
  wallMs: number;
  mips: number;
  guestTimeNs: number;
  fsBase: string;
  exits: ExitStats;
  vcpus: {
    id: number;
    instructions: number;
    mpState: string;
    fsBase: string;
    exits: ExitStats;
    userspaceExits: Record<string, number>;
  }[];
  serial: string;
  debugcon: string;
  controlBlock?: string[];
}

export function runJson(r: MachineResult, end: RunEnd, backend: ResolvedBackend, vcpus: readonly KvmVcpu[]): RunJson {
  return {
    status: end.status,
    reason: r.reason,
    message: end.error ?? r.message,
    ...(r.debugExitValue !== undefined ? { debugExitValue: r.debugExitValue, qemuStatus: r.qemuStatus } : {}),
    backend: {
      name: backend.info.name, vendor: backend.info.vendor, package: backend.packageName, version: backend.version,
      source: backend.source, ...(backend.autoReason ? { auto: backend.autoReason } : {}),
    },
    instructions: r.instructions,
    wallMs: r.wallMs,
    mips: Number(mips(r.instructions, r.wallMs).toFixed(3)),
    guestTimeNs: r.guestTimeNs,
    fsBase: readFsBase(vcpus[0]).value,
    exits: allVcpuStats(r),
    vcpus: r.vcpus.map((v, i) => ({
      id: v.id,
      instructions: v.instructions,
      mpState: v.mpState,
      fsBase: readFsBase(vcpus[i]).value,
      exits: exitStats(v.exits, v.exitTimeMs),
      userspaceExits: v.userspaceExits,
    })),
    serial: r.serialOutput,
    debugcon: r.debugconOutput,
  };
}
