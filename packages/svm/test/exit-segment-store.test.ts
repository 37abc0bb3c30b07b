/**
 * #VMEXIT stores ES…LDTR into the VMCB save area (APM 15.6) and VMRUN loads them (15.5.2). The
 * emulated hardware skips both when the segment fields still hold what it stored at the last
 * #VMEXIT (no write through the Vmcb accessors since) and the processor has loaded no segment
 * register since (CpuState.segWrites). These tests pin down that neither a segment the guest
 * loads between two exits, nor a segment the backend (KVM_SET_SREGS from userspace, or KVM
 * itself through set_segment) writes into the VMCB between two runs, is lost.
 */
import { KvmExitReason, KvmSegment, KvmVcpu, VcpuSreg } from '@tsvisor/core';
import { svmOf, VMCB_SAVE } from '@tsvisor/svm';
import { Assembler, BENCH_RESULT_PORT, buildLongModeGuest, eax } from '@tsvisor/testkit';
import { runWithCpuidHooks } from './helpers';

/** Port the guest reports FS's selector on (an exit to userspace). */
const FS_PORT = BENCH_RESULT_PORT;

/**
 * CPUID ×3, the null selector into FS (the boot stub left DS's flat segment there), CPUID ×3,
 * report FS, CPUID ×3, report FS, HLT. `atExit` runs at every CPUID exit (n counts them, the
 * boot stub's exits are not CPUIDs); `atReport` in userspace at each report.
 */
function run(atExit: (vcpu: KvmVcpu, n: number) => void, atReport: (vcpu: KvmVcpu, n: number) => void = () => {}) {
  const reportFs = (a: Assembler) => {
    a.xor(eax, eax);
    a.db([0x8c, 0xe0]); // mov eax, fs
    a.db([0xba, FS_PORT & 0xff, FS_PORT >> 8, 0, 0, 0xef]); // mov edx, port; out dx, eax
  };
  const guest = buildLongModeGuest((a) => {
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    a.db([0x31, 0xc9, 0x8e, 0xe1]); // xor ecx, ecx; mov fs, cx
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    reportFs(a);
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    reportFs(a);
    a.cli().hlt();
  });
  const r = runWithCpuidHooks(guest, atExit, atReport);
  return { ...r, reports: r.reports.map((v) => v & 0xffff) };
}

const fsSelector = (vcpu: KvmVcpu) => svmOf(vcpu).vmcb.segSelector(VMCB_SAVE.FS);

describe('SVM: guest segment registers at #VMEXIT and VMRUN', () => {
  test('a segment the guest loads between two exits is in the VMCB after the second', () => {
    const fs: [number, number][] = [];
    const { vcpu, out, reports } = run((v) => {
      const vmcb = svmOf(v).vmcb;
      fs.push([vmcb.segSelector(VMCB_SAVE.FS), vmcb.segAttrib(VMCB_SAVE.FS)]);
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(fs).toHaveLength(9);
    // Before the load: the boot stub's flat data segment (present). After: the null selector,
    // unusable (attrib 0, as svm_set_segment stores it).
    for (const [sel, attrib] of fs.slice(0, 3)) {
      expect(sel).not.toBe(0);
      expect(attrib).not.toBe(0);
    }
    expect(fs.slice(3)).toEqual(fs.slice(3).map(() => [0, 0]));
    expect(reports).toEqual([0, 0]);
    expect(vcpu.getSregs().fs.selector).toBe(0);
    expect(vcpu.getSregs().fs.unusable).toBe(1);
  });

  test('a segment KVM writes into the VMCB at an exit is what the guest runs with, and stays stored', () => {
    const seen: number[] = [];
    const seg = {} as KvmSegment;
    let wrote = false;
    const { vcpu, out, reports } = run((v, n) => {
      seen.push(fsSelector(v));
      // At the second CPUID exit after the guest's FS load: set_segment(FS) with selector 0x2b.
      if (n === 5) {
        v.kvm.ops.getSegment(v, seg, VcpuSreg.DS);
        v.kvm.ops.setSegment(v, { ...seg, selector: 0x2b }, VcpuSreg.FS);
        wrote = true;
      }
    });
    expect(wrote).toBe(true);
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    // VMRUN loaded the written FS (no skip of the load), and no later #VMEXIT put the old one back.
    expect(reports).toEqual([0x2b, 0x2b]);
    expect(seen).toHaveLength(9);
    expect(seen.slice(5)).toEqual([0x2b, 0x2b, 0x2b, 0x2b]);
    expect(fsSelector(vcpu)).toBe(0x2b);
    expect(vcpu.getSregs().fs.selector).toBe(0x2b);
  });

  test('a segment userspace sets with KVM_SET_SREGS between two runs is what the guest runs with', () => {
    const seen: number[] = [];
    const { vcpu, out, reports } = run((v) => void seen.push(fsSelector(v)), (v, n) => {
      if (n !== 1) return;
      const sregs = v.getSregs();
      v.setSregs({ ...sregs, fs: { ...sregs.ds, selector: 0x33 } });
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(reports).toEqual([0, 0x33]);
    // The three CPUID exits between the two reports store FS as userspace set it.
    expect(seen).toHaveLength(9);
    expect(seen.slice(6)).toEqual([0x33, 0x33, 0x33]);
    expect(fsSelector(vcpu)).toBe(0x33);
  });
});
