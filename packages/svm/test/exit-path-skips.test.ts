/**
 * Work the emulated SVM hardware skips on the VMRUN/#VMEXIT round trip, and the cases where
 * it must not: TSC_OFFSET kept in the processor while clean-bit group I is held (APM 15.15.3),
 * the CR8 → V_TPR store left out when the guest wrote no CR8 (APM 15.21.1), and the decode-assist
 * bytes (APM 15.8.4) rewritten only when they are not already zero.
 */
import { GuestExit, GuestExitKind, HostMemory, InterceptInsn, KvmExitReason, KvmMpState, KvmVcpu, Memslots, X86Cpu } from '@tsvisor/core';
import { SvmBackend, SvmHardware, svmOf, Vmcb, VMCB_CONTROL, VmcbCleanBit } from '@tsvisor/svm';
import { bootGuest, buildLongModeGuest, cr8, eax, ecx, edx, rax, rdx, rsi, runUntilStop } from '@tsvisor/testkit';

const REPORT_PORT = 0x80;

/**
 * RDTSC, CPUID, RDTSC; reports (second − first) >> 40, so 0 unless a TSC_OFFSET change of 2^40
 * made at the CPUID exit took effect for the second RDTSC. `atCpuid` runs at that exit.
 */
function tscAcrossCpuid(atCpuid: (vcpu: KvmVcpu) => void) {
  const guest = buildLongModeGuest((a) => {
    a.rdtsc().shl(rdx, 32).or(rax, rdx).mov(rsi, rax);
    a.xor(eax, eax).cpuid();
    a.rdtsc().shl(rdx, 32).or(rax, rdx).sub(rax, rsi).shr(rax, 40);
    a.out(REPORT_PORT, eax);
    a.cli().hlt();
  });
  const { vcpu } = bootGuest(SvmBackend, guest);
  vcpu.kvm.setTrace(new Set(['kvm_exit']), (_name, _id, msg) => {
    if (String(msg).startsWith('reason cpuid ')) atCpuid(vcpu);
  });
  const reports: number[] = [];
  const out = runUntilStop(vcpu, { ports: { [REPORT_PORT]: { out: (_p, _s, v) => void reports.push(v >>> 0) } } });
  return { out, reports };
}

describe('TSC_OFFSET (clean-bit group I)', () => {
  const bump = (markDirty: boolean) => (vcpu: KvmVcpu) => {
    const v = svmOf(vcpu).vmcb;
    v.write64(VMCB_CONTROL.TSC_OFFSET, v.read64(VMCB_CONTROL.TSC_OFFSET) + (1n << 40n));
    if (markDirty) v.markDirty(VmcbCleanBit.I);
  };

  test('unchanged: the guest sees a TSC that only moves forward a little across the exit', () => {
    const { out, reports } = tscAcrossCpuid(() => {});
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(reports).toEqual([0]);
  });

  test('a new TSC_OFFSET with group I marked dirty applies at the next VMRUN', () => {
    const { out, reports } = tscAcrossCpuid(bump(true));
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(reports).toEqual([1]);
  });

  test('left marked clean, the processor keeps the TSC_OFFSET it holds (APM 15.15.3)', () => {
    const { out, reports } = tscAcrossCpuid(bump(false));
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(reports).toEqual([0]);
  });
});

describe('V_TPR at #VMEXIT (CR8, APM 15.21.1)', () => {
  /**
   * Per step, MOV CR8 with the value (not intercepted: in-kernel LAPIC, nothing pending) or
   * nothing (null), then CPUID; `atCpuid` runs at each CPUID exit.
   */
  function cr8Steps(steps: Array<number | null>, atCpuid: (vcpu: KvmVcpu, n: number) => void) {
    const guest = buildLongModeGuest((a) => {
      // x2APIC on and software-enabled (SVR.8), so that KVM lets CR8 writes land in V_TPR.
      a.mov(ecx, 0x1b).rdmsr().or(eax, 0xc00).wrmsr();
      a.mov(ecx, 0x80f).mov(eax, 0x1ff).xor(edx, edx).wrmsr();
      for (const x of steps) {
        if (x !== null) a.mov(eax, x).mov(cr8, rax);
        a.xor(eax, eax).cpuid();
      }
      a.cli().hlt();
    });
    const { kvm, vcpu } = bootGuest(SvmBackend, guest, { memory: 4 << 20 });
    kvm.createIrqchip();
    vcpu.setMpState(KvmMpState.RUNNABLE);
    let n = 0;
    vcpu.kvm.setTrace(new Set(['kvm_exit']), (_name, _id, msg) => {
      if (String(msg).startsWith('reason cpuid ')) atCpuid(vcpu, n++);
    });
    return runUntilStop(vcpu, {});
  }
  const vTpr = (vcpu: KvmVcpu) => svmOf(vcpu).vmcb.read8(VMCB_CONTROL.V_TPR) & 0xf;

  test('each CR8 the guest writes is in V_TPR and in KVM\'s CR8 at the next exit', () => {
    const seen: Array<[number, bigint]> = [];
    const values = [3, 3, 7, 0, 0, 15];
    const out = cr8Steps(values, (vcpu) => void seen.push([vTpr(vcpu), vcpu.arch.cr8]));
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(seen).toEqual(values.map((x) => [x, BigInt(x)]));
  });

  test('a TPR KVM sets between exits is loaded; the guest writing no CR8 leaves it, writing one replaces it', () => {
    const seen: Array<[number, bigint]> = [];
    const out = cr8Steps([2, null, null, 4], (vcpu, n) => {
      seen.push([vTpr(vcpu), vcpu.arch.cr8]);
      // kvm_lapic_set_tpr: KVM's CR8 follows, and sync_lapic_to_cr8 puts it in V_TPR before VMRUN.
      if (n === 0) vcpu.kvm.irqchip!.lapic(vcpu)!.setTpr(9 << 4);
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(seen).toEqual([[2, 2n], [9, 9n], [9, 9n], [4, 4n]]);
  });
});

describe('decode-assist bytes (GUEST_INSN_LEN and GUEST_INSN_BYTES, APM 15.8.4)', () => {
  function setup() {
    const host = new HostMemory();
    const cpu = new X86Cpu(host, new Memslots(host), { vendor: 'amd' });
    return { hw: new SvmHardware(cpu, host), vmcb: Vmcb.alloc(host), ex: new GuestExit() };
  }
  const insnArea = (vmcb: Vmcb) => Array.from(vmcb.bytes.subarray(0xd0, 0xe0));

  test('a #PF exit fills them; the next exit without decode assists clears all 16 bytes', () => {
    const { hw, vmcb, ex } = setup();
    Object.assign(ex, { kind: GuestExitKind.EXCEPTION, vector: 14, hasErrorCode: true, errorCode: 2, faultAddress: 0x1000n, insnBytesCount: 3 });
    ex.insnBytes.fill(0xcc);
    ex.insnBytes.set([0x89, 0x07, 0x90]);
    hw.recordExit(vmcb, ex);
    expect(insnArea(vmcb)).toEqual([3, 0x89, 0x07, 0x90, ...new Array(12).fill(0)]);
    Object.assign(ex, { kind: GuestExitKind.INSTRUCTION, insn: InterceptInsn.CPUID, nextRip: 0x2002n });
    hw.recordExit(vmcb, ex);
    expect(insnArea(vmcb)).toEqual(new Array(16).fill(0));
  });

  test('bytes written by anyone else are cleared by the next exit too', () => {
    const { hw, vmcb, ex } = setup();
    vmcb.bytes[0xdf] = 0x55; // the last instruction byte, through no accessor
    Object.assign(ex, { kind: GuestExitKind.INSTRUCTION, insn: InterceptInsn.CPUID, nextRip: 0x2002n });
    hw.recordExit(vmcb, ex);
    expect(insnArea(vmcb)).toEqual(new Array(16).fill(0));
    expect(vmcb.read64(VMCB_CONTROL.NRIP)).toBe(0x2002n);
  });
});
