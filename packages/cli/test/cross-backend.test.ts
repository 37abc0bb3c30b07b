/**
 * The same guest on both backends: identical serial output (but for the vendor string each
 * vendor's CPUID reports), identical vendor-neutral exit counts, each backend counting exits in
 * its own vocabulary, and the FS base read back through each backend's getMsr hook.
 */
import { Kvm, KvmExitReason, KVM_EXIT_IO_OUT, KVM_EXIT_IO_IN, MSR, BackendClass } from '@tsvisor/core';
import { VmxBackend } from '@tsvisor/vmx';
import { SvmBackend } from '@tsvisor/svm';
import { buildDemoGuest, DEMO_FS_BASE } from '@tsvisor/testkit';

interface Outcome {
  serial: string;
  fsBase: bigint;
  stats: Record<string, number>;
  exitNames: string[];
  exitTotal: number;
  finalExit: KvmExitReason;
}

function runDemo(Backend: BackendClass): Outcome {
  const demo = buildDemoGuest();
  const kvm = Kvm.create({ backend: Backend });
  kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 4n << 20n });
  kvm.slot(0)!.userspace.set(demo.image, demo.loadAddress);
  const vcpu = kvm.createVcpu(0);
  const s = vcpu.getSregs();
  const code = { ...s.cs, selector: demo.cs, base: BigInt(demo.cs * 16), limit: 0xffff };
  vcpu.setSregs({ ...s, cs: code });
  vcpu.setRegs({ ...vcpu.getRegs(), rip: BigInt(demo.ip), rflags: 2n });
  let serial = '';
  for (let i = 0; i < 10_000; i++) {
    const run = vcpu.runVcpu();
    if (run.exitReason === KvmExitReason.KVM_EXIT_IO) {
      if (run.io.direction === KVM_EXIT_IO_OUT && run.io.port === 0x3f8) serial += String.fromCharCode(run.ioData[0]);
      else if (run.io.direction === KVM_EXIT_IO_IN) run.ioData.fill(run.io.port === 0x3fd ? 0x60 : 0xff);
      continue;
    }
    if (run.exitReason === KvmExitReason.KVM_EXIT_INTR) continue;
    return {
      serial,
      fsBase: vcpu.getMsr(MSR.FS_BASE),
      stats: { ...kvm.stats },
      exitNames: [...vcpu.exitCounts.keys()].sort(),
      exitTotal: [...vcpu.exitCounts.values()].reduce((a, b) => a + b, 0),
      finalExit: run.exitReason,
    };
  }
  throw new Error('demo did not finish');
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
