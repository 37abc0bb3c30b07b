/**
 * Hardware task switching end to end on both backends (Intel SDM Vol. 3A 7.3): the processor
 * stops with a task-switch exit (VMX exit reason 9 / SVM #VMEXIT 0x7D), the vendor's handler
 * decodes it (handle_task_switch / task_switch_interception) and core's kvmTaskSwitch performs
 * the switch. One 32-bit protected-mode guest runs the same scenario table on VMX and SVM:
 *
 *   1 far JMP to TSS B; B JMPs back          — busy bits move, no back link
 *   2 far CALL through a task gate, IRET back — NT and the back link in B, B not busy after
 *   3 INT 0x40 through a task gate (task H)   — back link, software-interrupt DPL path
 *   5 #NP(0x58) through a task gate (task N)  — the error code is on N's stack
 *   6 JMP to the busy current task            — #GP(0x18) seen by the guest's handler
 *   7 JMP to a TSS whose limit is < 67H       — #TS(0x48)
 *   8 JMP to a not-present TSS                — #NP(0x50), through the task gate to N
 *   9 JMP to a TSS with a data segment as CS  — #TS(0x10) after the commit point, in the new task
 *
 * and checks each vendor's own exit encoding through the handlers' kvm_task_switch trace:
 * the VMX exit qualification (SDM Table 28-2) and IDT-vectoring information, the SVM
 * EXITINFO1/EXITINFO2 bits (IRET 36, JMP 38, error code 44) and EXITINTINFO. Two more cases:
 * a far JMP whose m16:32 operand is MMIO (core emulates the instruction, and the switch with
 * it), and a TSS outside RAM (KVM_EXIT_INTERNAL_ERROR, suberror EMULATION, as in KVM).
 */
import { BackendClass, KvmExitReason, KvmInternalError } from '@tsvisor/core';
import {
  Assembler, ax, bootGuest, buildProtectedModeGuest, ds, dword, eax, ecx, esp, mem, runUntilStop,
} from '@tsvisor/testkit';
import { SvmBackend } from '@tsvisor/svm';
import { VmxBackend } from '@tsvisor/vmx';

const GDT = 0x20000, IDT = 0x21000;
const TSS = { A: 0x22000, B: 0x22100, H: 0x22200, X: 0x22300, SHORT: 0x22400, NP: 0x22500, N: 0x22600 };
const SEL = { CODE: 0x08, DATA: 0x10, A: 0x18, B: 0x20, GATE_B: 0x28, H: 0x30, X: 0x40, SHORT: 0x48, NP: 0x50, DATA_NP: 0x58, N: 0x60, MMIO_TSS: 0x68 };
/** Fault results by phase: error code at R + 4*phase, vector at R + 0x40 + 4*phase, back link at R + 0x80 + 4*phase. */
const R = 0x30000;
/** Results the tasks record at given points. */
const S = 0x31000;
const PHASE = 0x32000, SKIP = 0x32004, VEC = 0x32008;

function tssDesc(base: number, limit: number, type: number, present = 1): bigint {
  const lo = ((limit & 0xffff) | ((base & 0xffff) << 16)) >>> 0;
  const hi = (((base >>> 16) & 0xff) | (type << 8) | (present << 15) | (limit & 0xf0000) | (base & 0xff000000)) >>> 0;
  return (BigInt(hi) << 32n) | BigInt(lo);
}
function taskGate(sel: number, dpl = 0): bigint {
  return (BigInt(0x8500 | (dpl << 13)) << 32n) | BigInt((sel << 16) >>> 0);
}
function intGate(target: number): bigint {
  return (BigInt(((target & 0xffff0000) | 0x8e00) >>> 0) << 32n) | BigInt(((SEL.CODE << 16) | (target & 0xffff)) >>> 0);
}

/** Unbacked guest-physical memory: the far pointer of the emulated JMP lives here. */
const MMIO_PTR = 0x500000;

function guestCode(a: Assembler, variant: 'table' | 'mmio-jmp' | 'mmio-tss' = 'table'): void {
  const gdtr = a.label('ts_gdtr'), idtr = a.label('ts_idtr');
  const faultCommon = a.label('fault_common'), faultDone = a.label('fault_done');
  a.lgdt(mem(gdtr));
  a.lidt(mem(idtr));
  a.mov(ax, SEL.A).ltr(ax);
  // Touch the IDT and TSS pages once, so no EPT/NPT fault interrupts an event's delivery below
  // (an exit in the middle of delivering INT n is another test's subject).
  a.mov(eax, dword(IDT)).mov(eax, dword(IDT + 0x400)).mov(eax, dword(TSS.A));
  if (variant === 'mmio-tss') {
    // The TSS is not RAM: the emulator cannot do the switch.
    a.jmpFar(SEL.MMIO_TSS, 0);
    a.hlt();
  }
  if (variant === 'mmio-jmp') {
    // JMP m16:32 whose operand is MMIO: core emulates the instruction, and with it the switch.
    a.jmpFarIndirect(mem(MMIO_PTR), 32);
    a.here('ts_after_mmio_jmp');
    a.mov(eax, dword(GDT + SEL.B + 4)).mov(dword(S + 0x00), eax);
    a.mov(dword(S + 0x14), 0x600d);
    a.hlt();
  }
  // 1: JMP to B; B jumps back.
  a.jmpFar(SEL.B, 0);
  a.mov(eax, dword(GDT + SEL.B + 4)).mov(dword(S + 0x00), eax);
  // 2: CALL through the task gate; B IRETs back.
  a.callFar(SEL.GATE_B, 0);
  a.pushf().pop(eax).mov(dword(S + 0x04), eax);
  a.mov(eax, dword(GDT + SEL.B + 4)).mov(dword(S + 0x08), eax);
  a.mov(eax, dword(GDT + SEL.A + 4)).mov(dword(S + 0x0c), eax);
  // 3: INT 0x40 through a task gate in the IDT.
  a.int(0x40);
  a.mov(eax, dword(TSS.H)).mov(dword(S + 0x10), eax);
  // 5: #NP through a task gate: N records the error code from its stack and skips MOV DS (2 bytes).
  a.mov(dword(PHASE), 5).mov(dword(SKIP), 2);
  a.mov(eax, SEL.DATA_NP).mov(ds, eax); // 8E D8 (no 66h prefix)
  // 6: JMP to the busy current task: #GP(0x18); handlers skip the 7-byte JMP.
  a.mov(dword(PHASE), 6).mov(dword(SKIP), 7);
  a.jmpFar(SEL.A, 0);
  // 7: a TSS too short for its type: #TS(0x48).
  a.mov(dword(PHASE), 7);
  a.jmpFar(SEL.SHORT, 0);
  // 8: a not-present TSS: #NP(0x50), delivered through the task gate to N.
  a.mov(dword(PHASE), 8);
  a.jmpFar(SEL.NP, 0);
  a.mov(dword(S + 0x14), 0x600d);
  // 9: CS in the new TSS is a data segment: #TS(0x10) after the commit, in task X.
  a.mov(dword(PHASE), 9);
  a.jmpFar(SEL.X, 0);
  a.hlt();

  // Task B.
  a.here('task_b');
  a.mov(dword(S + 0x20), 0xb0b);
  a.jmpFar(SEL.A, 0);
  a.pushf().pop(eax).mov(dword(S + 0x24), eax);
  a.mov(eax, dword(TSS.B)).mov(dword(S + 0x28), eax);
  a.iretd();
  a.hlt();

  // Task H (INT 0x40).
  const h = a.here('task_h');
  a.mov(dword(S + 0x30), 0x40);
  a.iretd();
  a.jmp(h);

  // Task N (#NP through a task gate).
  const n = a.here('task_n');
  a.pop(eax);
  a.mov(ecx, dword(PHASE));
  a.mov(dword({ index: ecx, scale: 4, disp: R }), eax);
  a.mov(dword({ index: ecx, scale: 4, disp: R + 0x40 }), 11);
  a.mov(eax, dword(TSS.N)).mov(dword({ index: ecx, scale: 4, disp: R + 0x80 }), eax);
  a.mov(eax, dword(SKIP)).add(dword(TSS.A + 0x20), eax);
  a.iretd();
  a.jmp(n);

  // #GP / #TS interrupt-gate handlers.
  a.here('fault_gp');
  a.mov(dword(VEC), 13).jmp(faultCommon);
  a.here('fault_ts');
  a.mov(dword(VEC), 10).jmp(faultCommon);
  a.bind(faultCommon);
  a.pop(eax);
  a.mov(ecx, dword(PHASE));
  a.mov(dword({ index: ecx, scale: 4, disp: R }), eax);
  a.mov(eax, dword(VEC)).mov(dword({ index: ecx, scale: 4, disp: R + 0x40 }), eax);
  a.cmp(ecx, 9).je(faultDone);
  a.mov(eax, dword(SKIP)).add(dword(esp), eax);
  a.iretd();
  a.bind(faultDone);
  a.hlt();

  a.align(8, 0);
  a.bind(gdtr);
  a.dw(0x6f);
  a.dd(GDT);
  a.bind(idtr);
  a.dw(0x7ff);
  a.dd(IDT);
}

interface Tss { eip: number; esp: number; cs?: number }

function writeTables(mem8: Uint8Array, sym: Record<string, number>): void {
  const dv = new DataView(mem8.buffer, mem8.byteOffset, mem8.byteLength);
  const q = (a: number, v: bigint) => dv.setBigUint64(a, v, true);
  const d = (a: number, v: number) => dv.setUint32(a, v >>> 0, true);
  q(GDT + SEL.CODE, 0x00cf9b000000ffffn);
  q(GDT + SEL.DATA, 0x00cf93000000ffffn);
  q(GDT + SEL.A, tssDesc(TSS.A, 0x67, 0x9));
  q(GDT + SEL.B, tssDesc(TSS.B, 0x67, 0x9));
  q(GDT + SEL.GATE_B, taskGate(SEL.B));
  q(GDT + SEL.H, tssDesc(TSS.H, 0x67, 0x9));
  q(GDT + SEL.X, tssDesc(TSS.X, 0x67, 0x9));
  q(GDT + SEL.SHORT, tssDesc(TSS.SHORT, 0x50, 0x9));
  q(GDT + SEL.NP, tssDesc(TSS.NP, 0x67, 0x9, 0));
  q(GDT + SEL.DATA_NP, 0x00cf13000000ffffn);
  q(GDT + SEL.N, tssDesc(TSS.N, 0x67, 0x9));
  q(GDT + SEL.MMIO_TSS, tssDesc(MMIO_PTR, 0x67, 0x9));
  const tss = (base: number, t: Tss) => {
    for (let i = 0; i < 0x68; i += 4) d(base + i, 0);
    d(base + 0x20, t.eip);
    d(base + 0x24, 0x2);
    d(base + 0x38, t.esp);
    for (let i = 0; i < 6; i++) d(base + 0x48 + 4 * i, i === 1 ? (t.cs ?? SEL.CODE) : SEL.DATA);
  };
  tss(TSS.B, { eip: sym.task_b, esp: 0x50000 });
  tss(TSS.H, { eip: sym.task_h, esp: 0x51000 });
  tss(TSS.N, { eip: sym.task_n, esp: 0x52000 });
  tss(TSS.X, { eip: 0x1000, esp: 0x53000, cs: SEL.DATA });
  q(IDT + 10 * 8, intGate(sym.fault_ts));
  q(IDT + 13 * 8, intGate(sym.fault_gp));
  q(IDT + 11 * 8, taskGate(SEL.N));
  q(IDT + 0x40 * 8, taskGate(SEL.H));
}

const backends: [string, BackendClass][] = [['vmx', VmxBackend], ['svm', SvmBackend]];

/** Each vendor's encoding of the guest's task switches, in order (the handlers' kvm_task_switch lines). */
const EXIT_TRACE: Record<string, string[]> = {
  vmx: [
    'vmx qualification 0x80000020 idt_vectoring_info 0x0', // 1: JMP 0x20
    'vmx qualification 0x80000018 idt_vectoring_info 0x0', // 1: B's JMP back
    'vmx qualification 0x20 idt_vectoring_info 0x0', // 2: CALL through the gate: the gate's TSS
    'vmx qualification 0x40000018 idt_vectoring_info 0x0', // 2: IRET to the back link
    'vmx qualification 0xc0000030 idt_vectoring_info 0x80000440', // 3: INT 0x40 (software interrupt)
    'vmx qualification 0x40000018 idt_vectoring_info 0x0',
    'vmx qualification 0xc0000060 idt_vectoring_info 0x80000b0b idt_vectoring_error_code 0x58', // 5: #NP
    'vmx qualification 0x40000018 idt_vectoring_info 0x0',
    'vmx qualification 0x80000048 idt_vectoring_info 0x0', // 7: JMP to the short TSS (#TS from the emulation)
    'vmx qualification 0xc0000060 idt_vectoring_info 0x80000b0b idt_vectoring_error_code 0x50', // 8: #NP
    'vmx qualification 0x40000018 idt_vectoring_info 0x0',
    'vmx qualification 0x80000040 idt_vectoring_info 0x0', // 9: JMP to X
  ],
  svm: [
    'svm exit_info1 0x20 exit_info2 0x4000000000 exit_int_info 0x0', // JMP: bit 38
    'svm exit_info1 0x18 exit_info2 0x4000000000 exit_int_info 0x0',
    'svm exit_info1 0x20 exit_info2 0x0 exit_int_info 0x0', // CALL: neither bit
    'svm exit_info1 0x18 exit_info2 0x1000000000 exit_int_info 0x0', // IRET: bit 36
    'svm exit_info1 0x30 exit_info2 0x0 exit_int_info 0x80000440',
    'svm exit_info1 0x18 exit_info2 0x1000000000 exit_int_info 0x0',
    'svm exit_info1 0x60 exit_info2 0x100000000058 exit_int_info 0x80000b0b', // bit 44 + error code
    'svm exit_info1 0x18 exit_info2 0x1000000000 exit_int_info 0x0',
    'svm exit_info1 0x48 exit_info2 0x4000000000 exit_int_info 0x0',
    'svm exit_info1 0x60 exit_info2 0x100000000050 exit_int_info 0x80000b0b',
    'svm exit_info1 0x18 exit_info2 0x1000000000 exit_int_info 0x0',
    'svm exit_info1 0x40 exit_info2 0x4000000000 exit_int_info 0x0',
  ],
};

describe.each(backends)('hardware task switching in a guest (%s)', (name, backend) => {
  it('runs the scenario table; the guest sees the SDM\'s state and faults', () => {
    const guest = buildProtectedModeGuest((a) => guestCode(a));
    const { kvm, vcpu } = bootGuest(backend, guest);
    const ram = kvm.slot(0)!.userspace;
    writeTables(ram, guest.symbols);
    const trace: string[] = [];
    // The vendor handlers' kvm_task_switch lines carry the raw exit fields (core's line follows each).
    kvm.setTrace(new Set(['kvm_task_switch']), (_event, _id, text) => { if (text.startsWith(`${name} `)) trace.push(text); });
    const out = runUntilStop(vcpu);
    expect(KvmExitReason[out.exitReason]).toBe('KVM_EXIT_HLT');
    const dv = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
    const d = (a: number) => dv.getUint32(a, true);
    const type = (hi: number) => (hi >>> 8) & 0xf;

    // 1: B ran; after B's JMP back, B is not busy and A is.
    expect(d(S + 0x20)).toBe(0xb0b);
    expect(type(d(S + 0x00))).toBe(0x9);
    // 2: in B after the CALL: NT set, back link = A; back in A: NT clear, B not busy, A busy.
    expect(d(S + 0x24) & 0x4000).toBe(0x4000);
    expect(d(S + 0x28) & 0xffff).toBe(SEL.A);
    expect(d(S + 0x04) & 0x4000).toBe(0);
    expect(type(d(S + 0x08))).toBe(0x9);
    expect(type(d(S + 0x0c))).toBe(0xb);
    // B's saved EFLAGS: the IRET cleared NT in the image it saved.
    expect(d(TSS.B + 0x24) & 0x4000).toBe(0);
    // 3: H ran, linked back to A.
    expect(d(S + 0x30)).toBe(0x40);
    expect(d(S + 0x10) & 0xffff).toBe(SEL.A);
    // 5: #NP(0x58) through the task gate: the error code was on N's stack, N's back link is A.
    expect([d(R + 4 * 5), d(R + 0x40 + 4 * 5), d(R + 0x80 + 4 * 5) & 0xffff]).toEqual([0x58, 11, SEL.A]);
    // 6, 7: #GP(0x18) and #TS(0x48) before the commit point, delivered in A.
    expect([d(R + 4 * 6), d(R + 0x40 + 4 * 6)]).toEqual([SEL.A, 13]);
    expect([d(R + 4 * 7), d(R + 0x40 + 4 * 7)]).toEqual([SEL.SHORT, 10]);
    // 8: #NP(0x50) for the not-present TSS, then A went on.
    expect([d(R + 4 * 8), d(R + 0x40 + 4 * 8)]).toEqual([SEL.NP, 11]);
    expect(d(S + 0x14)).toBe(0x600d);
    // 9: #TS(0x10) after the commit: the handler ran in task X (TR = X, A's EIP saved past the JMP).
    expect([d(R + 4 * 9), d(R + 0x40 + 4 * 9)]).toEqual([SEL.DATA, 10]);
    expect(vcpu.getSregs().tr.selector).toBe(SEL.X);
    expect(type(d(GDT + SEL.X + 4))).toBe(0xb);
    expect(type(d(GDT + SEL.A + 4))).toBe(0x9);
    expect(vcpu.getSregs().cr0 & 8n).toBe(8n);

    expect(trace).toEqual(EXIT_TRACE[name]);
    expect(vcpu.exitCounts.get(name === 'vmx' ? 'TASK_SWITCH' : 'task_switch')).toBe(EXIT_TRACE[name].length);
  });

  it('an emulated far JMP (its m16:32 operand in MMIO) switches tasks through core\'s emulator', () => {
    const guest = buildProtectedModeGuest((a) => guestCode(a, 'mmio-jmp'));
    const { kvm, vcpu } = bootGuest(backend, guest);
    const ram = kvm.slot(0)!.userspace;
    writeTables(ram, guest.symbols);
    const ptr = new Uint8Array([0, 0, 0, 0, SEL.B, 0]);
    let mmioReads = 0;
    let run = vcpu.runVcpu();
    for (let i = 0; i < 1000 && run.exitReason !== KvmExitReason.KVM_EXIT_HLT; i++) {
      if (run.exitReason === KvmExitReason.KVM_EXIT_MMIO) {
        const off = Number(run.mmio.physAddr) - MMIO_PTR;
        expect(run.mmio.isWrite).toBe(false);
        run.mmio.data.set(ptr.subarray(off, off + run.mmio.len));
        mmioReads++;
      } else expect(KvmExitReason[run.exitReason]).toBe('KVM_EXIT_INTR');
      run = vcpu.runVcpu();
    }
    expect(KvmExitReason[run.exitReason]).toBe('KVM_EXIT_HLT');
    expect(mmioReads).toBeGreaterThan(0);
    const dv = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
    // B ran (the switch happened in the emulator: TR, segments, EIP written back), then JMPed back.
    expect(dv.getUint32(S + 0x20, true)).toBe(0xb0b);
    expect(dv.getUint32(S + 0x14, true)).toBe(0x600d);
    expect((dv.getUint32(S + 0x00, true) >>> 8) & 0xf).toBe(0x9);
    expect(dv.getUint32(TSS.A + 0x20, true)).toBe(guest.symbols.ts_after_mmio_jmp);
    expect(vcpu.getSregs().tr.selector).toBe(SEL.A);
    expect(vcpu.exitCounts.get(name === 'vmx' ? 'TASK_SWITCH' : 'task_switch')).toBe(1); // only B's JMP back exits
  });

  it('a switch the emulator cannot do (the new TSS is not RAM) is KVM_EXIT_INTERNAL_ERROR / EMULATION', () => {
    const guest = buildProtectedModeGuest((a) => guestCode(a, 'mmio-tss'));
    const { kvm, vcpu } = bootGuest(backend, guest);
    writeTables(kvm.slot(0)!.userspace, guest.symbols);
    const out = runUntilStop(vcpu);
    expect(KvmExitReason[out.exitReason]).toBe('KVM_EXIT_INTERNAL_ERROR');
    expect(out.run.internal.suberror).toBe(KvmInternalError.KVM_INTERNAL_ERROR_EMULATION);
    expect(out.run.internalMessage).toMatch(/task switch to TSS 0x68 \(JMP\)/);
  });
});
