/**
 * The PAE PDPTE registers of a VMX guest under EPT (Intel SDM Vol. 3C): VM entry to PAE paging
 * loads them from GUEST_PDPTR0-3 (27.3.2.4) after checking their reserved bits (27.3.1.6; a
 * failure is exit reason 33 with bit 31 and exit qualification 2, 27.8), and VM exit stores
 * the registers back into those fields (28.3.4). KVM's side: ept_save_pdptrs (vmx_cache_reg
 * for VCPU_EXREG_PDPTR) and ept_load_pdptrs (vmx_load_mmu_pgd with the register dirty).
 *
 * The guest enables PAE paging (MOV CR0 loads the registers from its PDPT), then clears its
 * PDPTE 0 in memory and keeps running across exits: it must go on translating through the
 * loaded registers, never through the PDPT in memory.
 */
import { KvmExitReason, KvmReg } from '@tsvisor/core';
import { ExitReason, F, toVmx, VMX_EXIT_REASONS_FAILED_VMENTRY, dumpControlBlock } from '@tsvisor/vmx';
import { al, bootGuest, buildProtectedModeGuest, cr0, cr3, cr4, dword, eax } from '@tsvisor/testkit';
import { VMX } from './helpers';

const PDPT = 0x50000, PD = 0x51000;
const PDPTE0 = BigInt(PD | 1);
/** Each phase's fresh page (never touched before): its first access walks from the PDPTEs. */
const PAGE = [0x100000, 0x101000, 0x102000];

function paeVm() {
  const guest = buildProtectedModeGuest((a) => {
    a.mov(eax, cr4).or(eax, 0x20).mov(cr4, eax); // CR4.PAE (paging still off)
    a.mov(eax, PDPT).mov(cr3, eax);
    a.mov(eax, cr0).or(eax, 0x80000000).mov(cr0, eax); // PAE paging: the PDPTEs are loaded here
    a.mov(dword(PDPT), 0).mov(dword(PDPT + 4), 0); // PDPTE 0 not present in memory from now on
    for (let k = 0; k < PAGE.length; k++) {
      a.out(0xe9, al); // exit to userspace
      a.mov(dword(PAGE[k]), 0x600d0 + k);
    }
    a.out(0xe9, al);
    a.hlt();
  });
  const { kvm, vcpu } = bootGuest(VMX, guest);
  vcpu.runBudget = 2_000_000;
  const ram = kvm.slot(0)!.userspace;
  const dv = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
  dv.setBigUint64(PDPT, PDPTE0, true);
  dv.setBigUint64(PD, 0x83n, true); // 0-2 MiB, 2 MiB page, present + writable
  dv.setBigUint64(PD + 8, 0x200083n, true);
  return { vcpu, vmx: toVmx(vcpu), dv };
}

function runToOut(vcpu: ReturnType<typeof paeVm>['vcpu']) {
  const run = vcpu.runVcpu();
  expect(KvmExitReason[run.exitReason]).toBe('KVM_EXIT_IO');
  expect(run.io.port).toBe(0xe9);
  return run;
}

describe('VMX PAE PDPTEs under EPT (GUEST_PDPTR0-3)', () => {
  it('the registers loaded by MOV CR0 survive exits and re-entries; the VMCS shows them', () => {
    const { vcpu, vmx, dv } = paeVm();
    runToOut(vcpu);
    expect(vmx.rules.tdp).not.toBeNull(); // EPT on
    // SDM 28.3.4: the exit stored the registers (loaded from the PDPT before the guest cleared it).
    expect(vmx.vmcs.read64(F.GUEST_PDPTR0)).toBe(PDPTE0);
    expect([1, 2, 3].map((i) => vmx.vmcs.read64([F.GUEST_PDPTR1, F.GUEST_PDPTR2, F.GUEST_PDPTR3][i - 1]))).toEqual([0n, 0n, 0n]);
    expect(dumpControlBlock(vcpu)).toMatch(new RegExp(`GUEST_PDPTR0\\s+\\[280a\\] = 0x${PDPTE0.toString(16).padStart(16, '0')}`));
    expect(dv.getBigUint64(PDPT, true)).toBe(0n);

    // Re-entry with the VMCS unchanged since the exit.
    runToOut(vcpu);
    expect(dv.getUint32(PAGE[0], true)).toBe(0x600d0);
    // Re-entry after a VMWRITE (the full guest-state load reads GUEST_PDPTR0-3).
    vmx.vmcs.write32(F.GUEST_ACTIVITY_STATE, 0);
    runToOut(vcpu);
    expect(dv.getUint32(PAGE[1], true)).toBe(0x600d1);
    expect(vmx.vmcs.read64(F.GUEST_PDPTR0)).toBe(PDPTE0);
    expect(vcpu.cpu.state.getPdptr(0)).toBe(PDPTE0);
  });

  it('KVM side: cacheReg(PDPTR) reads GUEST_PDPTR0-3 (ept_save_pdptrs); a dirty PDPTR is written at loadMmuPgd (ept_load_pdptrs)', () => {
    const { vcpu, vmx, dv } = paeVm();
    runToOut(vcpu);
    const ops = vcpu.kvm.ops;
    const s = vcpu.cpu.state;
    s.setPdptr(0, 0n);
    ops.cacheReg(vcpu, KvmReg.PDPTR);
    expect(s.getPdptr(0)).toBe(PDPTE0);
    // Core loaded other PDPTEs (as after a task switch) and marks the register dirty: the VMCS follows.
    const other = 0x52000n | 1n;
    dv.setBigUint64(0x52000, 0x83n, true);
    dv.setBigUint64(0x52008, 0x200083n, true);
    s.setPdptr(0, other);
    vcpu.arch.regsAvail |= 1 << KvmReg.PDPTR;
    vcpu.arch.regsDirty |= 1 << KvmReg.PDPTR;
    ops.loadMmuPgd(vcpu, BigInt(vcpu.kvm.mmu?.root ?? 0));
    expect(vmx.vmcs.read64(F.GUEST_PDPTR0)).toBe(other);
    runToOut(vcpu);
    expect(dv.getUint32(PAGE[0], true)).toBe(0x600d0);
    expect(vmx.vmcs.read64(F.GUEST_PDPTR0)).toBe(other);
  });

  it('a reserved bit in GUEST_PDPTR0 fails VM entry: exit reason 33 | bit 31, qualification 2', () => {
    const { vcpu, vmx } = paeVm();
    runToOut(vcpu);
    vmx.vmcs.write64(F.GUEST_PDPTR0, PDPTE0 | 2n); // bit 1 is reserved in a PAE PDPTE (SDM Table 4-8)
    const run = vcpu.runVcpu();
    expect(KvmExitReason[run.exitReason]).toBe('KVM_EXIT_FAIL_ENTRY');
    expect(run.failEntry.hardwareEntryFailureReason).toBe(BigInt((ExitReason.INVALID_STATE | VMX_EXIT_REASONS_FAILED_VMENTRY) >>> 0));
    expect(vmx.vmcs.readNat(F.EXIT_QUALIFICATION)).toBe(2n);
    // A not-present PDPTE may hold anything; bits 63:MAXPHYADDR of a present one are reserved too.
    for (const [value, ok] of [[2n, true], [PDPTE0 | (1n << 52n), false]] as const) {
      const t = paeVm();
      runToOut(t.vcpu);
      t.vmx.vmcs.write64(F.GUEST_PDPTR1, value);
      const r = t.vcpu.runVcpu();
      expect(KvmExitReason[r.exitReason]).toBe(ok ? 'KVM_EXIT_IO' : 'KVM_EXIT_FAIL_ENTRY');
    }
  });
});
