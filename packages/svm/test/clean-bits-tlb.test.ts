/**
 * VMCB clean bits (APM 15.15.3) and the ASID-tagged TLB with TLB_CONTROL (APM 15.16):
 * hardware behaviours a backend must respect, shown both ways.
 */
import { KvmExitReason, KVM_MEM_LOG_DIRTY_PAGES } from '@tsvisor/core';
import { eax, rax, dword, al, bootGuest, buildLongModeGuest, runUntilStop } from '@tsvisor/testkit';
import { svmOf, SvmBackend, svmModuleParams, Intercept1, VMCB_CONTROL, VMCB_SAVE, VmcbCleanBit, TlbControl, SvmExit } from '@tsvisor/svm';
import { longModeGuest, runToHlt, exitCount } from './helpers';

function cpuidTwice(markDirty: boolean): number {
  const { vcpu } = longModeGuest((a) => {
    a.xor(eax, eax);
    a.cpuid();
    a.xor(eax, eax);
    a.cpuid();
    a.hlt();
  });
  const svm = svmOf(vcpu);
  let first = true;
  vcpu.kvm.setTrace(new Set(['kvm_exit']), () => {
    if (first && svm.vmcb.read64(VMCB_CONTROL.EXITCODE) === BigInt(SvmExit.CPUID)) {
      first = false;
      // Drop the CPUID intercept between the two CPUIDs.
      svm.vmcb.setBit32(VMCB_CONTROL.INTERCEPT_MISC1, Intercept1.CPUID, false);
      if (markDirty) svm.vmcb.markDirty(VmcbCleanBit.I);
    }
  });
  runToHlt(vcpu);
  return exitCount(vcpu, 'cpuid');
}

describe('VMCB clean bits', () => {
  test('a change with the group marked dirty takes effect at the next VMRUN', () => {
    expect(cpuidTwice(true)).toBe(1);
  });

  test('a change without clearing the clean bit is not seen: the processor uses its cached intercepts', () => {
    expect(cpuidTwice(false)).toBe(2);
  });

  test('the cache belongs to one VMCB: the first VMRUN after a reset reads everything from memory', () => {
    const { vcpu } = longModeGuest((a) => a.hlt());
    runToHlt(vcpu);
    const svm = svmOf(vcpu);
    const v = svm.vmcb;
    expect(v.isClean(VmcbCleanBit.CRX)).toBe(true);
    v.write64(VMCB_SAVE.CR4, 0x6a0n);
    expect(svm.hw.effectiveVmcb(v).read64(VMCB_SAVE.CR4)).not.toBe(0x6a0n);
    svm.hw.invalidateCache();
    expect(svm.hw.effectiveVmcb(v).read64(VMCB_SAVE.CR4)).toBe(0x6a0n);
  });

  test('KVM marks the V_TPR group and CR2 always dirty after a VMRUN (VMCB_ALWAYS_DIRTY_MASK)', () => {
    const { vcpu } = longModeGuest((a) => a.hlt());
    runToHlt(vcpu);
    const v = svmOf(vcpu).vmcb;
    expect(v.isClean(VmcbCleanBit.TPR)).toBe(false);
    expect(v.isClean(VmcbCleanBit.CR2)).toBe(false);
    expect(v.isClean(VmcbCleanBit.SEG)).toBe(true);
  });
});

describe('ASID-tagged TLB and TLB_CONTROL', () => {
  test('a flush request is deferred: TLB_CONTROL asks for it, the next VMRUN performs it', () => {
    const { vcpu } = longModeGuest((a) => {
      a.hlt();
      a.hlt();
    });
    runToHlt(vcpu);
    const svm = svmOf(vcpu);
    const asid = svm.vmcb.read32(VMCB_CONTROL.GUEST_ASID);
    expect(asid).toBeGreaterThan(0);
    const flushed: number[] = [];
    const orig = vcpu.cpu.flushTlbTag.bind(vcpu.cpu);
    vcpu.cpu.flushTlbTag = (tag: number) => { flushed.push(tag); orig(tag); };
    const before = svm.hw.tlbControlFlushes;
    vcpu.kvm.ops.tlbFlushCurrent(vcpu);
    expect(svm.vmcb.read8(VMCB_CONTROL.TLB_CONTROL)).toBe(TlbControl.FLUSH_ASID);
    expect(flushed).toEqual([]);
    expect(svm.hw.tlbControlFlushes).toBe(before);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(flushed).toEqual([asid]);
    expect(svm.hw.tlbControlFlushes).toBe(before + 1);
    expect(svm.vmcb.read8(VMCB_CONTROL.TLB_CONTROL)).toBe(TlbControl.DO_NOTHING);
  });

  test('without FlushByAsid KVM allocates a new ASID instead, at the next VMRUN', () => {
    svmModuleParams.flushByAsid = false;
    try {
      const { vcpu } = longModeGuest((a) => { a.hlt(); a.hlt(); });
      runToHlt(vcpu);
      const svm = svmOf(vcpu);
      const asid = svm.vmcb.read32(VMCB_CONTROL.GUEST_ASID);
      vcpu.kvm.ops.tlbFlushAll(vcpu);
      expect(svm.vmcb.read32(VMCB_CONTROL.GUEST_ASID)).toBe(asid);
      vcpu.runVcpu();
      expect(svm.vmcb.read32(VMCB_CONTROL.GUEST_ASID)).not.toBe(asid);
      expect(svm.hw.rules.tlbTag).toBe(svm.vmcb.read32(VMCB_CONTROL.GUEST_ASID));
    } finally {
      svmModuleParams.flushByAsid = true;
    }
  });

  test('tlbFlushGva is INVLPGA: immediate, in the guest ASID', () => {
    const { vcpu } = longModeGuest((a) => a.hlt());
    runToHlt(vcpu);
    const calls: Array<[number, bigint]> = [];
    vcpu.cpu.flushTlbGva = (tag: number, gva: bigint) => { calls.push([tag, gva]); };
    vcpu.kvm.ops.tlbFlushGva(vcpu, 0x1234000n);
    expect(calls).toEqual([[svmOf(vcpu).vmcb.read32(VMCB_CONTROL.GUEST_ASID), 0x1234000n]]);
  });
});

describe('dirty logging without PML (write-protected NPT entries)', () => {
  test('exactly the written pages come back, round after round', () => {
    const rounds = [[0, 3, 7], [3, 12], [], [1, 2, 3, 4]];
    const guest = buildLongModeGuest((a) => {
      for (const pages of rounds) {
        for (const p of pages) {
          a.mov(eax, 0x200000 + p * 0x1000 + 8);
          a.mov(dword(rax), p + 1);
        }
        a.mov(al, 1);
        a.out(0x80, al);
      }
      a.hlt();
    });
    const { kvm, vcpu } = bootGuest(SvmBackend, guest, { slotFlags: KVM_MEM_LOG_DIRTY_PAGES });
    // No PML on AMD: the backend leaves the hardware dirty-log hooks out.
    expect(kvm.has('slotEnableLogDirty')).toBe(false);
    expect(kvm.has('flushLogDirty')).toBe(false);
    expect(kvm.mmu?.format.hardwareDirtyLog).toBe(false);
    const inRegion = () => kvm.getDirtyGfns(0).filter((g) => g >= 0x200n && g < 0x300n).map((g) => Number(g - 0x200n));
    inRegion();
    let round = 0;
    const npfBefore = () => exitCount(vcpu, 'npf');
    let npf = npfBefore();
    const out = runUntilStop(vcpu, {
      ports: {
        0x80: {
          out: () => {
            expect(inRegion()).toEqual([...new Set(rounds[round])].sort((x, y) => x - y));
            const n = exitCount(vcpu, 'npf');
            // Each written page faults once per round (write-protected again after each harvest).
            expect(n - npf).toBeGreaterThanOrEqual(rounds[round].length);
            npf = n;
            round++;
          },
        },
      },
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(round).toBe(rounds.length);
    expect(kvm.slot(0)!.userspace[0x200000 + 4 * 0x1000 + 8]).toBe(5);
  });
});
