/**
 * The same guest on both backends: identical serial output (but for the vendor string each
 * vendor's CPUID reports), identical vendor-neutral exit counts, each backend counting exits in
 * its own vocabulary, and the FS base read back through each backend's getMsr hook.
 */
import { KvmExitReason, MSR, BackendClass } from '@tsvisor/core';
import { VmxBackend } from '@tsvisor/vmx';
import { SvmBackend } from '@tsvisor/svm';
import { bootGuest, buildDemoGuest, DEMO_FS_BASE, runUntilStop } from '@tsvisor/testkit';

interface Outcome {
  serial: string;
  fsBase: bigint;
  stats: Record<string, number>;
  exitNames: string[];
  exitTotal: number;
  finalExit: KvmExitReason;
}

function runDemo(Backend: BackendClass): Outcome {
  const { kvm, vcpu } = bootGuest(Backend, buildDemoGuest());
  const out = runUntilStop(vcpu);
  return {
    serial: out.serial,
    fsBase: vcpu.getMsr(MSR.FS_BASE),
    stats: { ...kvm.stats },
    exitNames: [...vcpu.exitCounts.keys()].sort(),
    exitTotal: [...vcpu.exitCounts.values()].reduce((a, b) => a + b, 0),
    finalExit: out.exitReason,
  };
}

describe('the demo guest on both backends', () => {
  const vmx = runDemo(VmxBackend as unknown as BackendClass);
  const svm = runDemo(SvmBackend as unknown as BackendClass);

  it('halts on both', () => {
    expect(vmx.finalExit).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(svm.finalExit).toBe(KvmExitReason.KVM_EXIT_HLT);
  });

  it('prints the banner with each vendor string', () => {
    const demo = buildDemoGuest();
    expect(vmx.serial).toBe(demo.expectedOutput('GenuineIntel'));
    expect(svm.serial).toBe(demo.expectedOutput('AuthenticAMD'));
  });

  it('reads back the FS base the guest wrote, through each backend getMsr', () => {
    expect(vmx.fsBase).toBe(DEMO_FS_BASE);
    expect(svm.fsBase).toBe(DEMO_FS_BASE);
  });

  it('takes the same exits by kind, counted in each vendor vocabulary', () => {
    // Vendor-neutral kinds; the totals may differ where the vendors intercept differently (CR0 writes).
    const kinds = (o: Outcome) => ({ pio: o.stats.pioExits, rdmsr: o.stats.msrReads, wrmsr: o.stats.msrWrites,
      cpuid: o.stats.cpuidExits, hypercalls: o.stats.hypercalls, hlt: o.stats.haltExits, mmio: o.stats.mmioExits });
    expect(kinds(vmx)).toEqual(kinds(svm));
    expect(vmx.stats.pioExits).toBeGreaterThan(0);
    expect(vmx.stats.haltExits).toBe(1);
    expect(vmx.stats.msrWrites).toBeGreaterThanOrEqual(1);
    expect(vmx.exitNames).not.toEqual(svm.exitNames);
  });
});
