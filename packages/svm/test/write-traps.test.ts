/**
 * EFER_WRITE_TRAP (0x8F) and the CR write traps (0x90 + n): trap-like intercepts taken after the
 * write completed (AMD APM Vol. 2 15.35; intercept vector 4 bits 15 and 31:16, Table B-1).
 * EXITINFO1 is the register's new value, the saved RIP is past the instruction, and the guest
 * continues with the value it wrote; KVM's cr_trap / efer_trap bring its own view up to date.
 */
import { KvmVcpu } from '@tsvisor/core';
import { eax, ecx, rax, rbx, rdx, cr0, cr4, cr8 } from '@tsvisor/testkit';
import {
  svmOf, VMCB_CONTROL, Intercept1, Intercept2, INTERCEPT2_CR_WRITE_TRAP_SHIFT, VmcbCleanBit,
} from '@tsvisor/svm';
import { longModeGuest, runToHlt, exitCount } from './helpers';

const MSR_EFER = 0xc0000080;

interface ExitLine { reason: string; rip: bigint; info1: bigint }

/** Every kvm_exit the SVM backend traces (reason, save-area RIP, EXITINFO1). */
function recordExits(vcpu: KvmVcpu): ExitLine[] {
  const lines: ExitLine[] = [];
  vcpu.kvm.setTrace(new Set(['kvm_exit']), (_ev, _id, text) => {
    const m = /^reason (\S+) rip 0x([0-9a-f]+) info 0x([0-9a-f]+)/.exec(text);
    if (m) lines.push({ reason: m[1], rip: BigInt(`0x${m[2]}`), info1: BigInt(`0x${m[3]}`) });
  });
  return lines;
}

function trapGuest() {
  return longModeGuest((a) => {
    a.mov(rax, cr4);
    a.or(eax, 0x200); // OSFXSR
    a.mov(cr4, rax);
    a.here('after_cr4');
    a.mov(ecx, MSR_EFER);
    a.rdmsr();
    a.or(eax, 1); // SCE
    a.wrmsr();
    a.here('after_efer');
    a.mov(eax, 5);
    a.mov(cr8, rax);
    a.here('after_cr8');
    a.mov(rax, cr0);
    a.or(eax, 8); // TS
    a.mov(cr0, rax);
    a.here('after_cr0');
    a.clts();
    a.here('after_clts');
    a.mov(rbx, cr4);
    a.mov(rdx, cr8);
    a.hlt();
  });
}

/**
 * The intercepts as sev_es_init_vmcb sets them: no fault-like CR0/CR4/CR8 or selective CR0
 * intercepts (they would win over the traps), EFER writes not intercepted in the MSRPM, and —
 * with `traps` — the EFER, CR0, CR4 and CR8 write traps.
 */
function sevEsIntercepts(vcpu: KvmVcpu, traps = true): void {
  const svm = svmOf(vcpu);
  const v = svm.vmcb;
  for (const cr of [0, 4, 8]) {
    v.setBit32(VMCB_CONTROL.INTERCEPT_CR, cr, false);
    v.setBit32(VMCB_CONTROL.INTERCEPT_CR, 16 + cr, false);
  }
  v.setBit32(VMCB_CONTROL.INTERCEPT_MISC1, Intercept1.CR0_SEL_WRITE, false);
  svm.msrpm.setPassthrough(MSR_EFER, false, true);
  v.setBit32(VMCB_CONTROL.INTERCEPT_MISC2, Intercept2.EFER_WRITE_TRAP, traps);
  for (const cr of [0, 4, 8]) v.setBit32(VMCB_CONTROL.INTERCEPT_MISC2, INTERCEPT2_CR_WRITE_TRAP_SHIFT + cr, traps);
  v.markDirty(VmcbCleanBit.I);
}

describe('trap-like write intercepts (EFER_WRITE_TRAP, CR write traps)', () => {
  test('each write exits after it completed: EXITCODE, EXITINFO1 = new value, RIP past the instruction', () => {
    const { vcpu, guest } = trapGuest();
    sevEsIntercepts(vcpu);
    const lines = recordExits(vcpu);
    runToHlt(vcpu);
    const at = (label: string) => lines.filter((l) => l.rip === BigInt(guest.symbols[label]));
    const cr4Trap = at('after_cr4');
    expect(cr4Trap.map((l) => l.reason)).toEqual(['write_cr4_trap']);
    expect(cr4Trap[0].info1 & 0x200n).toBe(0x200n);
    expect(cr4Trap[0].info1 & 0x20n).toBe(0x20n); // PAE from the boot stub is still there
    const eferTrap = at('after_efer');
    expect(eferTrap.map((l) => l.reason)).toEqual(['write_efer_trap']);
    // LME|LMA from the boot stub, SCE from the guest; the VMCB's EFER.SVME is the processor's.
    expect(eferTrap[0].info1 & 0x501n).toBe(0x501n);
    expect(at('after_cr8')).toEqual([{ reason: 'write_cr8_trap', rip: BigInt(guest.symbols.after_cr8), info1: 5n }]);
    const cr0Set = at('after_cr0');
    expect(cr0Set.map((l) => l.reason)).toEqual(['write_cr0_trap']);
    expect(cr0Set[0].info1 & 0x80000009n).toBe(0x80000009n); // PG, TS, PE
    const clts = at('after_clts');
    expect(clts.map((l) => l.reason)).toEqual(['write_cr0_trap']);
    expect(clts[0].info1 & 8n).toBe(0n);
    // The boot stub's own CR0/CR4/EFER writes trapped too (the long-mode switch went through cr_trap / efer_trap).
    expect(exitCount(vcpu, 'write_cr0_trap')).toBeGreaterThanOrEqual(3);
    expect(exitCount(vcpu, 'write_cr4_trap')).toBeGreaterThanOrEqual(2);
    expect(exitCount(vcpu, 'write_efer_trap')).toBeGreaterThanOrEqual(2);
    for (const n of ['write_cr0', 'write_cr4', 'write_cr8', 'cr0_sel_write']) expect(exitCount(vcpu, n)).toBe(0);
  });

  test('the guest continues with the values it wrote, and KVM\'s view (sregs) follows', () => {
    const { vcpu } = trapGuest();
    sevEsIntercepts(vcpu);
    runToHlt(vcpu);
    const r = vcpu.getRegs();
    expect(r.rbx & 0x200n).toBe(0x200n);
    expect(r.rdx).toBe(5n);
    const s = vcpu.getSregs();
    expect(s.cr4 & 0x200n).toBe(0x200n);
    expect(s.efer & 1n).toBe(1n);
    expect(s.efer & 0x500n).toBe(0x500n);
    expect(s.cr8).toBe(5n);
    expect(s.cr0 & 8n).toBe(0n);
    expect(s.cr0 & 0x80000001n).toBe(0x80000001n);
  });

  test('a trapping instruction retires exactly once', () => {
    // Two guests that differ by one trapping MOV CR8: one more retired instruction, one more trap.
    const run = (extra: boolean) => {
      const { vcpu } = longModeGuest((a) => {
        a.mov(eax, 3);
        a.mov(cr8, rax);
        if (extra) a.mov(cr8, rax);
        a.hlt();
      });
      sevEsIntercepts(vcpu);
      runToHlt(vcpu);
      return vcpu;
    };
    const one = run(false);
    const two = run(true);
    expect(exitCount(two, 'write_cr8_trap')).toBe(exitCount(one, 'write_cr8_trap') + 1);
    expect(two.cpu.state.instructionsRetired).toBe(one.cpu.state.instructionsRetired + 1);
  });

  test('a fault-like CR write intercept takes precedence over the trap', () => {
    const { vcpu, guest } = trapGuest();
    sevEsIntercepts(vcpu);
    const v = svmOf(vcpu).vmcb;
    v.setBit32(VMCB_CONTROL.INTERCEPT_CR, 16 + 4, true);
    v.markDirty(VmcbCleanBit.I);
    const lines = recordExits(vcpu);
    runToHlt(vcpu);
    expect(lines.filter((l) => l.rip === BigInt(guest.symbols.after_cr4)).length).toBe(0);
    expect(exitCount(vcpu, 'write_cr4_trap')).toBe(0);
    expect(exitCount(vcpu, 'write_cr4')).toBe(2); // the boot stub's and the guest's
    expect(vcpu.getSregs().cr4 & 0x200n).toBe(0x200n);
  });
});
