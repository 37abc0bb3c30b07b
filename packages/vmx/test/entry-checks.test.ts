/**
 * VM-entry checks (SDM Vol. 3C 27.2–27.3): for each family a valid state enters the guest
 * (which halts) and an invalid one fails the entry: control/host-state failures are
 * VM-instruction errors 7/8, guest-state failures exit reason 33 with bit 31 set — both
 * reported to userspace as KVM_EXIT_FAIL_ENTRY with the hardware reason, as KVM does.
 */
import { KvmExitReason, KvmReg, KvmVcpu } from '@tsvisor/core';
import { F, Vmcs, VmInstructionError, ExitReason, VMX_EXIT_REASONS_FAILED_VMENTRY } from '@tsvisor/vmx';
import * as D from '@tsvisor/vmx';
import { realModeVm } from './helpers';

const INVALID_STATE = (ExitReason.INVALID_STATE | VMX_EXIT_REASONS_FAILED_VMENTRY) >>> 0;

let current: KvmVcpu;
function attempt(mutate: (v: Vmcs) => void) {
  const { vcpu, vmx } = realModeVm((a) => a.hlt());
  vcpu.runVcpu(); // the guest halts once: the VMCS now holds state saved by a VM exit
  current = vcpu;
  mutate(vmx.vmcs);
  const run = vcpu.runVcpu();
  return { run, vcpu, vmx };
}

function expectEnters(mutate: (v: Vmcs) => void) {
  const { run } = attempt(mutate);
  expect(run.internalMessage).toBe('');
  expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
}

function expectInvalidGuest(mutate: (v: Vmcs) => void, why: RegExp, qualification = 0n) {
  const { run, vmx } = attempt(mutate);
  expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_FAIL_ENTRY);
  expect(run.failEntry.hardwareEntryFailureReason).toBe(BigInt(INVALID_STATE));
  expect(vmx.vmcs.read32(F.VM_EXIT_REASON)).toBe(INVALID_STATE);
  expect(vmx.vmcs.readNat(F.EXIT_QUALIFICATION)).toBe(qualification);
  expect(run.internalMessage).toMatch(why);
  expect(run.internalMessage).toContain('GUEST_CS_AR_BYTES'); // the VMCS dump
}

function expectVmFail(mutate: (v: Vmcs) => void, error: VmInstructionError, why: RegExp) {
  const { run, vmx } = attempt(mutate);
  expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_FAIL_ENTRY);
  expect(run.failEntry.hardwareEntryFailureReason).toBe(BigInt(error));
  expect(vmx.vmcs.read32(F.VM_INSTRUCTION_ERROR)).toBe(error);
  expect(run.internalMessage).toMatch(why);
}

/** Re-point RIP at the HLT (through the register cache, which VM entry flushes) so a valid entry halts again. */
const atHlt = (_v: Vmcs) => current.registerWrite(KvmReg.RIP, 0x1000n);

describe('27.2.1 VM-execution, exit and entry control fields → VM-instruction error 7', () => {
  it('reserved control bits', () => {
    expectEnters((v) => { atHlt(v); v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) | D.CPU_BASED_PAUSE_EXITING); });
    expectVmFail((v) => { atHlt(v); v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) | (1 << 0)); },
      VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /TRUE_PROCBASED/);
    expectVmFail((v) => { atHlt(v); v.write32(F.PIN_BASED_VM_EXEC_CONTROL, v.read32(F.PIN_BASED_VM_EXEC_CONTROL) & ~0x16); },
      VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /pin-based/);
    expectVmFail((v) => { atHlt(v); v.write32(F.SECONDARY_VM_EXEC_CONTROL, v.read32(F.SECONDARY_VM_EXEC_CONTROL) | D.SECONDARY_EXEC_SHADOW_VMCS); },
      VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /secondary/);
  });
  it('NMI controls', () => {
    expectVmFail((v) => { atHlt(v); v.write32(F.PIN_BASED_VM_EXEC_CONTROL, v.read32(F.PIN_BASED_VM_EXEC_CONTROL) & ~D.PIN_BASED_NMI_EXITING); },
      VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /virtual NMIs/);
  });
  it('CR3-target count', () => {
    expectEnters((v) => { atHlt(v); v.write32(F.CR3_TARGET_COUNT, 4); });
    expectVmFail((v) => { atHlt(v); v.write32(F.CR3_TARGET_COUNT, 5); }, VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /CR3-target/);
  });
  it('bitmap addresses', () => {
    expectEnters((v) => { atHlt(v); v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) | D.CPU_BASED_USE_IO_BITMAPS); });
    expectVmFail((v) => { atHlt(v); v.writeNum(F.MSR_BITMAP, v.readNum(F.MSR_BITMAP) + 8); }, VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /MSR-bitmap/);
  });
  it('VPID and EPTP', () => {
    expectVmFail((v) => { atHlt(v); v.write16(F.VIRTUAL_PROCESSOR_ID, 0); }, VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /nonzero VPID/);
    expectVmFail((v) => { atHlt(v); v.write64(F.EPT_POINTER, (v.read64(F.EPT_POINTER) & ~7n) | 1n); }, VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /memory type/);
    expectVmFail((v) => { atHlt(v); v.write64(F.EPT_POINTER, v.read64(F.EPT_POINTER) & ~0x38n); }, VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /page-walk/);
  });
  it('unrestricted guest requires EPT; PML requires EPT', () => {
    expectVmFail((v) => { atHlt(v); v.write32(F.SECONDARY_VM_EXEC_CONTROL, v.read32(F.SECONDARY_VM_EXEC_CONTROL) & ~D.SECONDARY_EXEC_ENABLE_EPT); },
      VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /requires "enable EPT"/);
  });
  it('preemption-timer save needs the timer', () => {
    expectVmFail((v) => {
      atHlt(v);
      v.write32(F.PIN_BASED_VM_EXEC_CONTROL, v.read32(F.PIN_BASED_VM_EXEC_CONTROL) & ~D.PIN_BASED_VMX_PREEMPTION_TIMER);
      v.write32(F.VM_EXIT_CONTROLS, v.read32(F.VM_EXIT_CONTROLS) | D.VM_EXIT_SAVE_VMX_PREEMPTION_TIMER);
    }, VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /preemption timer/);
  });
  it('27.2.1.3 event injection field', () => {
    expectEnters((v) => { atHlt(v); v.write32(F.VM_ENTRY_INTR_INFO_FIELD, 0); });
    expectVmFail((v) => { atHlt(v); v.write32(F.VM_ENTRY_INTR_INFO_FIELD, (D.INTR_INFO_VALID_MASK | D.INTR_TYPE_NMI_INTR | 3) >>> 0); },
      VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /NMI injection with vector 3/);
    expectVmFail((v) => { atHlt(v); v.write32(F.VM_ENTRY_INTR_INFO_FIELD, (D.INTR_INFO_VALID_MASK | D.INTR_TYPE_HARD_EXCEPTION | 40) >>> 0); },
      VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /> 31/);
    expectVmFail((v) => { atHlt(v); v.write32(F.VM_ENTRY_INTR_INFO_FIELD, (D.INTR_INFO_VALID_MASK | D.INTR_TYPE_HARD_EXCEPTION | D.INTR_INFO_DELIVER_CODE_MASK | 13) >>> 0); },
      VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /real mode/);
    expectVmFail((v) => {
      atHlt(v);
      v.writeNat(F.GUEST_CR0, 0x31n);
      v.write32(F.VM_ENTRY_INTR_INFO_FIELD, (D.INTR_INFO_VALID_MASK | D.INTR_TYPE_HARD_EXCEPTION | D.INTR_INFO_DELIVER_CODE_MASK | 13) >>> 0);
      v.write32(F.VM_ENTRY_EXCEPTION_ERROR_CODE, 0x10000);
    }, VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /bits 31:16/);
    expectVmFail((v) => { atHlt(v); v.write32(F.VM_ENTRY_INTR_INFO_FIELD, (D.INTR_INFO_VALID_MASK | D.INTR_TYPE_SOFT_INTR | 0x21) >>> 0); v.write32(F.VM_ENTRY_INSTRUCTION_LEN, 0); },
      VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, /instruction length 0/);
  });
});

describe('27.2.2 host-state area → VM-instruction error 8', () => {
  it('host CR0/CR4 fixed bits', () => {
    expectVmFail((v) => { atHlt(v); v.writeNat(F.HOST_CR0, 0x80050013n); }, VmInstructionError.ENTRY_INVALID_HOST_STATE_FIELD, /HOST_CR0/);
    expectVmFail((v) => { atHlt(v); v.writeNat(F.HOST_CR4, 0x6a0n); }, VmInstructionError.ENTRY_INVALID_HOST_STATE_FIELD, /HOST_CR4/);
  });
  it('host selectors and canonical bases', () => {
    expectVmFail((v) => { atHlt(v); v.write16(F.HOST_TR_SELECTOR, 0); }, VmInstructionError.ENTRY_INVALID_HOST_STATE_FIELD, /HOST_TR_SELECTOR/);
    expectVmFail((v) => { atHlt(v); v.write16(F.HOST_CS_SELECTOR, 0x13); }, VmInstructionError.ENTRY_INVALID_HOST_STATE_FIELD, /RPL/);
    expectVmFail((v) => { atHlt(v); v.writeNat(F.HOST_RIP, 0x0000_8000_0000_0000n); }, VmInstructionError.ENTRY_INVALID_HOST_STATE_FIELD, /canonical/);
  });
  it('host address-space size and EFER', () => {
    expectVmFail((v) => { atHlt(v); v.write64(F.HOST_IA32_EFER, 0x101n); }, VmInstructionError.ENTRY_INVALID_HOST_STATE_FIELD, /EFER/);
  });
});

describe('27.3.1 guest-state area → exit reason 33 | bit 31', () => {
  it('27.3.1.1 CR0 and CR4 fixed bits', () => {
    // Unrestricted guest: PE and PG may be 0, NE may not.
    expectEnters((v) => { atHlt(v); v.writeNat(F.GUEST_CR0, 0x30n); });
    expectInvalidGuest((v) => { atHlt(v); v.writeNat(F.GUEST_CR0, 0x10n); }, /GUEST_CR0/);
    expectInvalidGuest((v) => { atHlt(v); v.writeNat(F.GUEST_CR0, 0x80000030n); }, /PG set without PE/);
    expectInvalidGuest((v) => { atHlt(v); v.writeNat(F.GUEST_CR4, 0n); }, /GUEST_CR4/);
    expectInvalidGuest((v) => { atHlt(v); v.writeNat(F.GUEST_CR4, 0x2000n | 0x10000n); }, /GUEST_CR4/);
  });
  it('27.3.1.1 IA-32e mode guest and EFER', () => {
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.VM_ENTRY_CONTROLS, v.read32(F.VM_ENTRY_CONTROLS) | D.VM_ENTRY_IA32E_MODE); }, /IA-32e mode guest/);
    expectInvalidGuest((v) => { atHlt(v); v.write64(F.GUEST_IA32_EFER, 0x400n); }, /LMA must equal/);
    expectInvalidGuest((v) => { atHlt(v); v.write64(F.GUEST_IA32_EFER, 0x2n); }, /reserved/);
  });
  it('27.3.1.2 CS access rights', () => {
    expectEnters((v) => { atHlt(v); v.write32(F.GUEST_CS_AR_BYTES, 0x9f); }); // conforming, accessed
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_CS_AR_BYTES, 0x9a); }, /CS type 10/);
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_CS_AR_BYTES, 0x1b); }, /CS must be present/);
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_CS_AR_BYTES, 0x1009b); }, /CS access rights/);
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_CS_AR_BYTES, 0x89b); }, /reserved/);
  });
  it('27.3.1.2 SS, data segments, TR and LDTR', () => {
    expectEnters((v) => { atHlt(v); v.write32(F.GUEST_DS_AR_BYTES, 0x10000); }); // an unusable DS is fine
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_SS_AR_BYTES, 0x9b); }, /SS type 11/);
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_DS_AR_BYTES, 0x92); }, /DS must be accessed/);
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_TR_AR_BYTES, 0x89); }, /TR type 9/);
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_TR_AR_BYTES, 0x1008b); }, /TR access rights/);
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_LDTR_AR_BYTES, 0x83); }, /LDTR/);
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_SS_LIMIT, 0xffff0); v.write32(F.GUEST_SS_AR_BYTES, 0x8093); }, /SS limit and G/);
    expectInvalidGuest((v) => { atHlt(v); v.writeNat(F.GUEST_FS_BASE, 0x0000_8000_0000_0000n); }, /FS base must be canonical/);
  });
  it('27.3.1.3 descriptor-table registers', () => {
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_GDTR_LIMIT, 0x10000); }, /GDTR\/IDTR limit/);
  });
  it('27.3.1.4 RIP and RFLAGS', () => {
    expectEnters((v) => { atHlt(v); v.writeNat(F.GUEST_RFLAGS, 0x202n); });
    expectInvalidGuest((v) => { atHlt(v); v.writeNat(F.GUEST_RFLAGS, 0x0n); }, /RFLAGS/);
    expectInvalidGuest((v) => { atHlt(v); v.writeNat(F.GUEST_RFLAGS, 0x8002n); }, /RFLAGS/);
    expectInvalidGuest(() => current.registerWrite(KvmReg.RIP, 0x1_0000_1000n), /RIP bits 63:32/);
  });
  it('27.3.1.5 activity and interruptibility state', () => {
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_ACTIVITY_STATE, 4); }, /activity state 4/);
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_INTERRUPTIBILITY_INFO, 3); }, /STI and by MOV SS/);
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_INTERRUPTIBILITY_INFO, 1); }, /RFLAGS.IF/);
    expectInvalidGuest((v) => { atHlt(v); v.write32(F.GUEST_INTERRUPTIBILITY_INFO, 0x20); }, /reserved/);
    expectInvalidGuest((v) => {
      atHlt(v);
      v.write32(F.GUEST_INTERRUPTIBILITY_INFO, D.GUEST_INTR_STATE_NMI);
      v.write32(F.VM_ENTRY_INTR_INFO_FIELD, (D.INTR_INFO_VALID_MASK | D.INTR_TYPE_NMI_INTR | 2) >>> 0);
    }, /virtual-NMI blocking/, 3n);
    expectInvalidGuest((v) => { atHlt(v); v.writeNat(F.GUEST_PENDING_DBG_EXCEPTIONS, 0x10n); }, /pending debug/);
  });
  it('27.3.1.5 VMCS link pointer (qualification 4)', () => {
    expectInvalidGuest((v) => { atHlt(v); v.write64(F.VMCS_LINK_POINTER, 0x5000n); }, /link pointer/, 4n);
  });
});

describe('27.4 VM-entry MSR-load list → exit reason 34 | bit 31; 28.4 VM-exit MSR-store list', () => {
  function withLists(entries: [number, bigint, number?][]) {
    const { vcpu, vmx, kvm } = realModeVm((a) => a.hlt());
    const page = kvm.hostMemory.allocPages(1, 'test msr lists');
    entries.forEach(([index, data, rsvd], i) => {
      kvm.hostMemory.write32(page + 16 * i, index);
      kvm.hostMemory.write32(page + 16 * i + 4, rsvd ?? 0);
      kvm.hostMemory.write64(page + 16 * i + 8, data);
    });
    const store = page + 2048;
    kvm.hostMemory.write32(store, 0xc0000102);
    vmx.vmcs.writeNum(F.VM_ENTRY_MSR_LOAD_ADDR, page);
    vmx.vmcs.write32(F.VM_ENTRY_MSR_LOAD_COUNT, entries.length);
    vmx.vmcs.writeNum(F.VM_EXIT_MSR_STORE_ADDR, store);
    vmx.vmcs.write32(F.VM_EXIT_MSR_STORE_COUNT, 1);
    return { vcpu, vmx, kvm, store, run: () => vcpu.runVcpu() };
  }
  it('valid entries are loaded and the store list is written at exit', () => {
    const { vcpu, kvm, store, run } = withLists([[0xc0000102, 0x1234_5000n], [0x174, 0x10n]]);
    expect(run().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(kvm.hostMemory.read64(store + 8)).toBe(0x1234_5000n);
    expect(vcpu.getMsr(0xc0000102)).toBe(0x1234_5000n);
    expect(vcpu.getMsr(0x174)).toBe(0x10n);
  });
  it('an entry the processor cannot load fails the entry with its 1-based number as qualification', () => {
    for (const [entries, n] of [
      [[[0x174, 0x10n], [0xc0000100, 0n]], 2], // FS_BASE may not be in the list
      [[[0xc0000082, 0x0000_8000_0000_0000n]], 1], // non-canonical LSTAR would #GP
      [[[0x174, 0n, 1]], 1], // reserved bits 63:32 of the entry
    ] as [[number, bigint, number?][], number][]) {
      const { vmx, run } = withLists(entries);
      const r = run();
      expect(r.exitReason).toBe(KvmExitReason.KVM_EXIT_FAIL_ENTRY);
      expect(r.failEntry.hardwareEntryFailureReason).toBe(BigInt((ExitReason.MSR_LOAD_FAIL | VMX_EXIT_REASONS_FAILED_VMENTRY) >>> 0));
      expect(vmx.vmcs.readNat(F.EXIT_QUALIFICATION)).toBe(BigInt(n));
    }
  });
});
