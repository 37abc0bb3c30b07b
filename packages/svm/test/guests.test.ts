/**
 * Guests through the public KVM API on SVM: each exit is produced by the emulated SVM hardware
 * from the VMCB's intercepts and handled by svm_exit_handlers.
 */
import { KvmExitReason, MSR } from '@tsvisor/core';
import { al, ax, eax, ebx, ecx, edx, dx, rax, rbx, dword } from '@tsvisor/testkit';
import { svmOf, VMCB_CONTROL, VMCB_SAVE, SvmExit, VMMCALL_BYTES, Intercept1, VmcbCleanBit } from '@tsvisor/svm';
import { longModeGuest, runToHlt, exitCount, bootExits } from './helpers';

const AMD = 'AuthenticAMD';

function str(...regs: number[]): string {
  return Buffer.from(new Uint32Array(regs.map((r) => r >>> 0)).buffer).toString('latin1');
}

describe('SVM guests', () => {
  test('CPUID exits (0x72) and is answered from the guest CPUID: AuthenticAMD', () => {
    const { vcpu } = longModeGuest((a) => {
      a.xor(eax, eax);
      a.cpuid();
      a.hlt();
    });
    runToHlt(vcpu);
    const r = vcpu.getRegs();
    expect(str(Number(r.rbx), Number(r.rdx), Number(r.rcx))).toBe(AMD);
    expect(exitCount(vcpu, 'cpuid')).toBe(1);
  });

  test('OUT to 0x3F8 → KVM_EXIT_IO, with the APM EXITINFO1 format and EXITINFO2 = next RIP', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(dx, 0x3f8);
      a.mov(al, 0x41);
      a.out(dx, al);
      a.mov(ax, 0x4243);
      a.out(dx, ax);
      a.in(eax, dx);
      a.hlt();
    });
    const svm = svmOf(vcpu);
    let run = vcpu.runVcpu();
    while (run.exitReason === KvmExitReason.KVM_EXIT_INTR) run = vcpu.runVcpu();
    // The boot stub makes no port I/O: the first IO exit is ours.
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.io).toMatchObject({ direction: 1, size: 1, port: 0x3f8, count: 1 });
    expect(run.ioData[0]).toBe(0x41);
    const rip = svm.vmcb.read64(VMCB_SAVE.RIP);
    expect(svm.vmcb.read64(VMCB_CONTROL.EXITCODE)).toBe(BigInt(SvmExit.IOIO));
    expect(svm.vmcb.read64(VMCB_CONTROL.EXITINFO1)).toBe((0x3f8n << 16n) | (1n << 4n) /* SZ8 */);
    expect(svm.vmcb.read64(VMCB_CONTROL.EXITINFO2)).toBe(rip + 1n); // OUT DX, AL is one byte
    expect(svm.vmcb.read64(VMCB_CONTROL.NRIP)).toBe(rip + 1n);
    run = vcpu.runVcpu();
    expect(run.io).toMatchObject({ direction: 1, size: 2, port: 0x3f8 });
    expect(svm.vmcb.read64(VMCB_CONTROL.EXITINFO1)).toBe((0x3f8n << 16n) | (1n << 5n) /* SZ16 */);
    run = vcpu.runVcpu();
    expect(run.io).toMatchObject({ direction: 0, size: 4, port: 0x3f8 });
    expect(svm.vmcb.read64(VMCB_CONTROL.EXITINFO1)).toBe((0x3f8n << 16n) | (1n << 6n) /* SZ32 */ | 1n /* TYPE=IN */);
    run.ioData.set([0x78, 0x56, 0x34, 0x12]);
    run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(vcpu.getRegs().rax).toBe(0x12345678n);
    expect(exitCount(vcpu, 'io')).toBe(3);
  });

  test('RDMSR/WRMSR exit per the MSRPM: STAR passes through, TSC_AUX exits; both land where svm_get_msr reads them', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(ecx, MSR.STAR);
      a.mov(eax, 0x1234);
      a.mov(edx, 0x00230010);
      a.wrmsr();
      a.rdmsr();
      a.mov(ebx, eax);
      a.mov(ecx, MSR.TSC_AUX);
      a.mov(eax, 0x77);
      a.xor(edx, edx);
      a.wrmsr();
      a.xor(eax, eax);
      a.rdmsr();
      a.hlt();
    });
    runToHlt(vcpu);
    const before = bootExits('msr');
    // Only the TSC_AUX accesses exit (2); STAR is in KVM's direct-access list.
    expect(exitCount(vcpu, 'msr') - before).toBe(2);
    expect(vcpu.getRegs().rbx).toBe(0x1234n);
    expect(vcpu.getRegs().rax).toBe(0x77n);
    expect(vcpu.getMsr(MSR.STAR)).toBe(0x00230010_00001234n);
    expect(svmOf(vcpu).vmcb.read64(VMCB_SAVE.STAR)).toBe(0x00230010_00001234n);
    expect(vcpu.getMsr(MSR.TSC_AUX)).toBe(0x77n);
  });

  test('an MSR the MSRPM marks intercepted exits with EXITINFO1 = 1 for WRMSR', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(ecx, MSR.STAR);
      a.mov(eax, 0x99);
      a.xor(edx, edx);
      a.wrmsr();
      a.hlt();
    });
    const svm = svmOf(vcpu);
    svm.msrpm.setPassthrough(MSR.STAR, true, false);
    runToHlt(vcpu);
    expect(exitCount(vcpu, 'msr') - bootExits('msr')).toBe(1);
    expect(vcpu.getMsr(MSR.STAR)).toBe(0x99n);
  });

  test('getMsr(FS_BASE) reads the VMCB FS base after a guest WRMSR (passed through)', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(ecx, MSR.FS_BASE);
      a.mov(eax, 0x5000_1000);
      a.mov(edx, 0x7e57);
      a.wrmsr();
      a.hlt();
    });
    runToHlt(vcpu);
    expect(vcpu.getMsr(MSR.FS_BASE)).toBe(0x7e57_5000_1000n);
    expect(svmOf(vcpu).vmcb.segBase(VMCB_SAVE.FS)).toBe(0x7e57_5000_1000n);
    vcpu.setMsr(MSR.GS_BASE, 0xabcn);
    expect(svmOf(vcpu).vmcb.segBase(VMCB_SAVE.GS)).toBe(0xabcn);
  });

  test('VMMCALL (0x81) runs the KVM hypercall: known and unknown numbers', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(eax, 1); // KVM_HC_VAPIC_POLL_IRQ
      a.vmmcall();
      a.mov(rbx, rax);
      a.mov(eax, 99);
      a.vmmcall();
      a.hlt();
    });
    runToHlt(vcpu);
    expect(vcpu.getRegs().rbx).toBe(0n);
    expect(vcpu.getRegs().rax).toBe(BigInt.asUintN(64, -1000n)); // -KVM_ENOSYS
    expect(exitCount(vcpu, 'hypercall')).toBe(2);
  });

  test('VMCALL on SVM: #UD is intercepted, the instruction is patched to VMMCALL and the hypercall runs', () => {
    const { vcpu, kvm, guest } = longModeGuest((a) => {
      a.mov(eax, 99);
      a.here('the_vmcall');
      a.vmcall();
      a.hlt();
    });
    runToHlt(vcpu);
    const at = guest.symbols['the_vmcall'];
    expect(Array.from(kvm.slot(0)!.userspace.subarray(at, at + 3))).toEqual(Array.from(VMMCALL_BYTES));
    expect(exitCount(vcpu, 'UD excp')).toBe(1);
    expect(exitCount(vcpu, 'hypercall')).toBe(1);
    expect(vcpu.getRegs().rax).toBe(BigInt.asUintN(64, -1000n));
    expect(vcpu.arch.hypercallsPatched).toBe(1);
  });

  test('an undefined opcode that is not VMCALL is reflected to the guest as #UD', () => {
    const { vcpu } = longModeGuest((a) => {
      a.ud2();
      a.hlt();
    });
    const out = vcpu.runVcpu();
    let run = out;
    while (run.exitReason === KvmExitReason.KVM_EXIT_INTR) run = vcpu.runVcpu();
    // The stub's IDT is empty: the reflected #UD escalates to a triple fault → SHUTDOWN.
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_SHUTDOWN);
    expect(exitCount(vcpu, 'UD excp')).toBe(1);
    expect(exitCount(vcpu, 'shutdown')).toBe(1);
  });

  test('HLT (0x78) → KVM_EXIT_HLT with RIP past the HLT (nRIP)', () => {
    const { vcpu, guest } = longModeGuest((a) => {
      a.here('the_hlt');
      a.hlt();
    });
    runToHlt(vcpu);
    expect(vcpu.getRegs().rip).toBe(BigInt(guest.symbols['the_hlt'] + 1));
    expect(exitCount(vcpu, 'hlt')).toBe(1);
  });

  test('#NPF: the first touch of a page exits with the GPA in EXITINFO2; an unbacked GPA becomes KVM_EXIT_MMIO', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(eax, 0x200000);
      a.mov(dword(rax), 0x1111);
      a.mov(eax, 0x3f0000);
      a.mov(dword(rax), 0x2222);
      a.mov(eax, 0x30000000); // below the stub's 1 GiB identity map, above the 4 MiB of RAM
      a.mov(dword(rax), 0x3333);
      a.hlt();
    }, 4 << 20);
    const svm = svmOf(vcpu);
    const gpas: bigint[] = [];
    vcpu.kvm.setTrace(new Set(['kvm_exit']), () => {
      if (svm.vmcb.read64(VMCB_CONTROL.EXITCODE) === BigInt(SvmExit.NPF)) gpas.push(svm.vmcb.read64(VMCB_CONTROL.EXITINFO2));
    });
    let run = vcpu.runVcpu();
    while (run.exitReason === KvmExitReason.KVM_EXIT_INTR) run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_MMIO);
    expect(run.mmio.physAddr).toBe(0x30000000n);
    expect(run.mmio.isWrite).toBe(true);
    expect(run.mmio.len).toBe(4);
    expect(gpas).toContain(0x200000n);
    expect(gpas).toContain(0x3f0000n);
    expect(gpas[gpas.length - 1]).toBe(0x30000000n);
    // #NPF error code: a write (RW) of a final translation (bit 32), user (NPT accesses are user accesses)
    const ec = svm.vmcb.read64(VMCB_CONTROL.EXITINFO1);
    expect(ec & 2n).toBe(2n);
    expect(ec & (1n << 32n)).toBe(1n << 32n);
    expect(vcpu.kvm.slot(0)!.userspace[0x200000]).toBe(0x11);
    expect(runToHlt(vcpu).exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
  });

  test('an exit code with no handler is KVM_EXIT_INTERNAL_ERROR with a VMCB dump, never a silent continue', () => {
    const { vcpu } = longModeGuest((a) => {
      a.pushf();
      a.hlt();
    });
    const svm = svmOf(vcpu);
    // Intercept PUSHF (no handler in svm_exit_handlers) behind KVM's back, marking the group dirty.
    svm.vmcb.setBit32(VMCB_CONTROL.INTERCEPT_MISC1, Intercept1.PUSHF, true);
    svm.vmcb.markDirty(VmcbCleanBit.I);
    let run = vcpu.runVcpu();
    while (run.exitReason === KvmExitReason.KVM_EXIT_INTR) run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_INTERNAL_ERROR);
    expect(run.internal.suberror).toBe(4); // KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON
    expect(run.internal.data[0]).toBe(BigInt(SvmExit.PUSHF));
    expect(run.internalMessage).toContain('unexpected exit reason 0x70 (pushf)');
    expect(run.internalMessage).toContain('INTERCEPT_MISC1');
    expect(run.internalMessage).toMatch(/RIP +\[0x578\]/);
    expect(exitCount(vcpu, 'pushf')).toBe(1);
  });
});

describe('npt=0', () => {
  test('without NPT the demo-style guest still runs: unbacked accesses exit as #NPF and become MMIO', () => {
    const { svmModuleParams } = jest.requireActual('@tsvisor/svm') as typeof import('@tsvisor/svm');
    svmModuleParams.npt = false;
    let g;
    try {
      g = longModeGuest((a) => {
        a.xor(eax, eax);
        a.cpuid();
        a.mov(eax, 0x30000000);
        a.mov(dword(rax), 0x3333);
        a.hlt();
      });
    } finally {
      svmModuleParams.npt = true;
    }
    const { vcpu, kvm } = g;
    expect(kvm.mmu).toBeNull();
    expect(svmOf(vcpu).vmcb.read64(VMCB_CONTROL.NP_ENABLE)).toBe(0n);
    let run = vcpu.runVcpu();
    while (run.exitReason === KvmExitReason.KVM_EXIT_INTR) run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_MMIO);
    expect(run.mmio.physAddr).toBe(0x30000000n);
    expect(exitCount(vcpu, 'npf')).toBe(1);
    expect(runToHlt(vcpu).exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
  });
});
