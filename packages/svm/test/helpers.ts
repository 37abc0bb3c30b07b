/** Small long-mode guests on SVM through the public KVM API (testkit's boot stub + runner). */
import { KvmExitReason, KvmVcpu, Kvm } from '@tsvisor/core';
import { Assembler, bootGuest, buildLongModeGuest, runUntilStop, RunOutcome, GuestImage } from '@tsvisor/testkit';
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
