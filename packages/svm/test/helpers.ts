/** Small long-mode guests on SVM through the public KVM API (testkit's boot stub + runner). */
import { KvmExitReason, KvmVcpu, Kvm } from '@tsvisor/core';
import { Assembler, BENCH_RESULT_PORT, bootGuest, buildLongModeGuest, runUntilStop, RunOutcome, GuestImage } from '@tsvisor/testkit';
import { SvmBackend } from '@tsvisor/svm';

export interface SvmGuest {
  kvm: Kvm;
  vcpu: KvmVcpu;
  guest: GuestImage;
}

export function longModeGuest(body: (a: Assembler) => void, memory = 4 << 20): SvmGuest {
  const guest = buildLongModeGuest((a) => body(a));
  const { kvm, vcpu } = bootGuest(SvmBackend, guest, { memory });
  return { kvm, vcpu, guest };
}

/** Run to HLT (failing loudly with the exit and message otherwise). */
export function runToHlt(vcpu: KvmVcpu): RunOutcome {
  const out = runUntilStop(vcpu);
  if (out.exitReason !== KvmExitReason.KVM_EXIT_HLT) {
    throw new Error(`expected KVM_EXIT_HLT, got ${KvmExitReason[out.exitReason]}: ${out.run.internalMessage}`);
  }
  return out;
}

/** Exit counts by KVM's SVM exit name, ignoring the boot stub's exits before `mark`. */
export function exitCount(vcpu: KvmVcpu, name: string): number {
  return vcpu.exitCounts.get(name) ?? 0;
}

let baseline: Map<string, number> | null = null;
/** Exits the boot stub itself takes (real → protected → long mode), by name. */
export function bootExits(name: string): number {
  if (!baseline) {
    const { vcpu } = longModeGuest((a) => a.hlt());
    runToHlt(vcpu);
    baseline = new Map(vcpu.exitCounts);
    baseline.set('hlt', (baseline.get('hlt') ?? 1) - 1);
  }
  return baseline.get(name) ?? 0;
}

/**
 * Run `guest` on SVM to its stop, calling `atExit(vcpu, n)` at the n-th CPUID #VMEXIT (from the
 * kvm_exit tracepoint, before KVM handles it; the boot stub takes no CPUID exits) and
 * `atReport(vcpu, n)` in userspace at the guest's n-th OUT of EAX to BENCH_RESULT_PORT, whose
 * values are returned in order.
 */
export function runWithCpuidHooks(
  guest: GuestImage, atExit: (vcpu: KvmVcpu, n: number) => void, atReport: (vcpu: KvmVcpu, n: number) => void,
): { vcpu: KvmVcpu; out: RunOutcome; reports: number[] } {
  const { vcpu } = bootGuest(SvmBackend, guest);
  let exits = 0;
  vcpu.kvm.setTrace(new Set(['kvm_exit']), (_name, _id, msg) => {
    if (String(msg).startsWith('reason cpuid ')) atExit(vcpu, ++exits);
  });
  const reports: number[] = [];
  const out = runUntilStop(vcpu, {
    ports: { [BENCH_RESULT_PORT]: { out: (_p, _s, v) => { reports.push(v >>> 0); atReport(vcpu, reports.length); } } },
  });
  return { vcpu, out, reports };
}
