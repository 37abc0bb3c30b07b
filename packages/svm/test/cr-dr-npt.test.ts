/** CR and DR intercepts with decode assists, and the NPT walk over the tables core's MMU builds. */
import { Kvm, KvmExitReason, GuestExit, GuestExitKind, ACCESS_READ, ACCESS_WRITE, ACCESS_FETCH, KVM_MEM_LOG_DIRTY_PAGES } from '@tsvisor/core';
import { eax, rax, rbx, cr4, cr8, dr7, dr6 } from '@tsvisor/testkit';
import { SvmBackend, svmOf, NptWalker, dumpControlBlock, VMCB_CONTROL } from '@tsvisor/svm';
import { longModeGuest, runToHlt, exitCount, bootExits } from './helpers';

describe('CR and DR intercepts (decode assists)', () => {
  test('MOV CR4 read/write exit (KVM intercepts CR4) and are emulated from the GPR in EXITINFO1', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(rax, cr4);
      a.mov(rbx, rax);
      a.or(eax, 1 << 9); // OSFXSR
      a.mov(cr4, rax);
      a.hlt();
    });
    runToHlt(vcpu);
    expect(exitCount(vcpu, 'read_cr4') - bootExits('read_cr4')).toBe(1);
    expect(exitCount(vcpu, 'write_cr4') - bootExits('write_cr4')).toBe(1);
    expect(vcpu.getRegs().rbx).toBe(0x20n); // PAE from the stub
    expect(vcpu.getSregs().cr4).toBe(0x220n);
  });

  test('setting CR4.VMXE on AMD is #GP (the stub has no IDT: shutdown)', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(rax, cr4);
      a.or(eax, 1 << 13);
      a.mov(cr4, rax);
      a.hlt();
    });
    let run = vcpu.runVcpu();
    while (run.exitReason === KvmExitReason.KVM_EXIT_INTR) run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_SHUTDOWN);
  });

  test('MOV CR8 write is intercepted (0x18) and sets the TPR', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(eax, 9);
      a.mov(cr8, rax);
      a.hlt();
    });
    runToHlt(vcpu);
    expect(exitCount(vcpu, 'write_cr8')).toBe(1);
    expect(vcpu.arch.cr8).toBe(9n);
  });

  test('MOV DR7 / MOV from DR6 exit (KVM intercepts DRs) and use kvm_set_dr/kvm_get_dr', () => {
    const { vcpu } = longModeGuest((a) => {
      a.mov(eax, 0x401);
      a.mov(dr7, rax);
      a.mov(rbx, dr6);
      a.hlt();
    });
    runToHlt(vcpu);
    expect(exitCount(vcpu, 'write_dr7')).toBe(1);
    expect(exitCount(vcpu, 'read_dr6')).toBe(1);
    expect(vcpu.arch.dr7).toBe(0x401n);
    expect(vcpu.getRegs().rbx).toBe(0xffff0ff0n);
  });
});

describe('NPT walk (APM 15.25)', () => {
  function mmuVm(flags = 0) {
    const kvm = Kvm.create({ backend: SvmBackend });
    kvm.setUserMemoryRegion({ slot: 0, flags, guestPhysAddr: 0n, memorySize: 0x100000n });
    const mmu = kvm.mmu!;
    return { kvm, mmu, walker: new NptWalker(kvm.hostMemory, BigInt(mmu.root), true), slot: kvm.slot(0)! };
  }

  test("a leaf core mapped translates to the slot's host page and gets A (and D on write)", () => {
    const { mmu, walker, slot, kvm } = mmuVm();
    mmu.pageFault(0x5000n, false);
    const ex = new GuestExit();
    expect(walker.translate(0x5000, ACCESS_READ, 0, false, ex)).toBe(slot.hostBase + 0x5000);
    expect(walker.translate(0x5000, ACCESS_FETCH, 0, false, ex)).toBe(slot.hostBase + 0x5000);
    const leaf = kvm.hostMemory.read64(mmu.leafEntryAddress(5, false));
    expect(leaf & 0x20n).toBe(0x20n);
    expect(walker.translate(0x5000, ACCESS_WRITE, 0, false, ex)).toBe(slot.hostBase + 0x5000);
    expect(kvm.hostMemory.read64(mmu.leafEntryAddress(5, false)) & 0x40n).toBe(0x40n);
  });

  test('not present → #NPF with P clear; write-protected (dirty logging) → P|RW; MMIO leaf → RSVD', () => {
    const { mmu, walker } = mmuVm(KVM_MEM_LOG_DIRTY_PAGES);
    const ex = new GuestExit();
    expect(walker.translate(0x7000, ACCESS_READ, 0, false, ex)).toBe(-1);
    expect(ex.kind).toBe(GuestExitKind.TDP_FAULT);
    expect(ex.tdpPermissions).toBe(0);
    mmu.pageFault(0x7000n, false); // a read fault on a logged slot maps read-only
    expect(walker.translate(0x7000, ACCESS_WRITE, 0, false, ex)).toBe(-1);
    expect(ex.tdpPermissions).not.toBe(0);
    expect(ex.reservedBit).toBe(false);
    mmu.pageFault(0x20000000n, false); // no slot: MMIO leaf
    expect(walker.translate(0x20000000, ACCESS_READ, 0, false, ex)).toBe(-1);
    expect(ex.reservedBit).toBe(true);
  });
});

describe('dumpControlBlock', () => {
  test('prints the VMCB by field name', () => {
    const { vcpu } = longModeGuest((a) => a.hlt());
    runToHlt(vcpu);
    const s = dumpControlBlock(vcpu);
    for (const name of ['INTERCEPT_CR', 'IOPM_BASE_PA', 'GUEST_ASID', 'EXITCODE', 'EXITINFO1', 'N_CR3', 'VMCB_CLEAN', 'NRIP', 'CS', 'CPL', 'EFER', 'CR3', 'RIP', 'G_PAT']) {
      expect(s).toMatch(new RegExp(`\\b${name}\\b`));
    }
    expect(s).toContain('(hlt)');
    expect(s).toContain(`0x${svmOf(vcpu).vmcb.read64(VMCB_CONTROL.N_CR3).toString(16).padStart(16, '0')}`);
  });
});
