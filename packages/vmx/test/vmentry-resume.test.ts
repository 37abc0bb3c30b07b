/**
 * The resume: VMX's lean VM-entry path (vmenter.ts vmxResume) for the common re-entry —
 * VMRESUME of the VMCS the processor last exited from, the processor having run nothing else
 * since, no VMWRITE since that exit except RIP/RSP/RFLAGS/interruptibility state/preemption-timer
 * value (Vmcs.heldGeneration), no event injection. It must give exactly the general path's
 * results (SDM Vol. 3C 27.2–27.3 entry checks and guest-state loading, 27.6 event injection,
 * 28.2–28.3 exit information and guest-state saving).
 *
 * Each scenario boots the same guest twice through the KVM API, once with the resume on and
 * once with it off (Vmcs.resumeEnabled). The VM's kvm_x86_ops.run is wrapped to make the
 * VMM-side change under test right before an entry (after KVM prepared it, as vmx_vcpu_run would
 * see it) and to record, after every entry/exit round trip, the whole VMCS (every component: the
 * guest-state and exit-information fields included) and whether the round trip was a resume
 * (Vmcs.resumes). The two runs must agree: the same VMCS after every exit, the same KVM copies of
 * CR2/DR6, the same values reported by the guest, the same final registers. The cases the
 * resume must leave to the general path are checked to have done so, and the cases it covers to
 * have been resumes.
 */
import { KvmExitReason, KvmMpState, KvmVcpu } from '@tsvisor/core';
import {
  ExitReason, F, GUEST_INTR_STATE_STI, toVmx, Vmcs, VmxBackend,
} from '@tsvisor/vmx';
import {
  Assembler, BENCH_RESULT_PORT, GuestImage, bootGuest, buildLongModeGuest, emitIdtSetup, emitIdtTable, idtLabels, runUntilStop,
  al, cr0, cr2, cr3, cr8, eax, ecx, edx, es, mem, qword, r12, r13, r14, rax, rbx, rsi, rsp,
} from '@tsvisor/testkit';
import { VMX } from './helpers';

/** One entry/exit round trip as seen from outside the processor. */
interface RoundTrip {
  /** Every VMCS component (low and high halves) right after the exit. */
  lo: Uint32Array;
  hi: Uint32Array;
  /** Whether this entry took the resume. */
  lean: boolean;
  /** Full exit reason (bit 31: failed entry). */
  reason: number;
  /** KVM's copies of the registers it switches by hand. */
  cr2: bigint;
  dr6: bigint;
}

type Hook = (vcpu: KvmVcpu, vmcs: Vmcs, cpuidExits: number) => void;

interface Scenario {
  guest: GuestImage;
  memory?: number;
  /** An in-kernel irqchip with the vCPU runnable. */
  irqchip?: boolean;
  /** Makes, for one run, the hook called right before each entry: the VMM-side change under test. */
  beforeEntry?(): Hook;
}

interface Outcome {
  trips: RoundTrip[];
  reports: number[];
  vcpu: KvmVcpu;
  exitReason: KvmExitReason;
  regs: ReturnType<KvmVcpu['getRegs']>;
  sregs: ReturnType<KvmVcpu['getSregs']>;
}

const S = (f: Parameters<typeof Vmcs.slotOf>[0]) => Vmcs.slotOf(f);
const field64 = (t: RoundTrip, f: Parameters<typeof Vmcs.slotOf>[0]) => (BigInt(t.hi[S(f)]) << 32n) | BigInt(t.lo[S(f)]);

function run(sc: Scenario, lean: boolean): Outcome {
  const { kvm, vcpu } = bootGuest(VMX, sc.guest, { memory: sc.memory ?? 4 << 20 });
  if (sc.irqchip) {
    kvm.createIrqchip();
    vcpu.setMpState(KvmMpState.RUNNABLE);
  }
  vcpu.runBudget = 2_000_000;
  const vmcs = toVmx(vcpu).vmcs;
  vmcs.resumeEnabled = lean;
  const ops = kvm.ops;
  const orig = ops.run.bind(ops);
  const trips: RoundTrip[] = [];
  let cpuidExits = 0;
  const hook = sc.beforeEntry?.();
  ops.run = (v) => {
    hook?.(v, vmcs, cpuidExits);
    const before = vmcs.resumes;
    const r = orig(v);
    const reason = vmcs.read32(F.VM_EXIT_REASON);
    if (reason === ExitReason.CPUID) cpuidExits++;
    trips.push({ lo: vmcs.lo.slice(), hi: vmcs.hi.slice(), lean: vmcs.resumes !== before, reason, cr2: v.arch.cr2, dr6: v.arch.dr6 });
    return r;
  };
  const reports: number[] = [];
  const out = runUntilStop(vcpu, { ports: { [BENCH_RESULT_PORT]: { out: (_p, _s, v) => void reports.push(v >>> 0) } } });
  return { trips, reports, vcpu, exitReason: out.exitReason, regs: vcpu.getRegs(), sregs: vcpu.getSregs() };
}

/** The scenario with the resume on and off: identical VMCS after every exit and identical final state. */
function both(sc: Scenario): { on: Outcome; off: Outcome } {
  const on = run(sc, true);
  const off = run(sc, false);
  expect(off.trips.some((t) => t.lean)).toBe(false);
  expect(toVmx(off.vcpu).vmcs.resumes).toBe(0);
  expect(on.trips.length).toBe(off.trips.length);
  on.trips.forEach((t, i) => {
    const o = off.trips[i];
    const at = t.lo.findIndex((x, k) => x !== o.lo[k] || t.hi[k] !== o.hi[k]);
    if (at >= 0) throw new Error(`VMCS differs after round trip ${i} (lean: ${t.lean}) at slot ${at}`);
    expect([t.reason, t.cr2, t.dr6]).toEqual([o.reason, o.cr2, o.dr6]);
  });
  expect(on.exitReason).toBe(off.exitReason);
  expect(on.reports).toEqual(off.reports);
  expect(on.regs).toEqual(off.regs);
  expect(on.sregs).toEqual(off.sregs);
  return { on, off };
}

/** The round trips that ended in a CPUID exit, in order. */
const cpuidTrips = (o: Outcome) => o.trips.filter((t) => t.reason === ExitReason.CPUID);
/** The round trip right after the n-th (0-based) CPUID exit. */
const afterCpuid = (o: Outcome, n: number) => o.trips[o.trips.indexOf(cpuidTrips(o)[n]) + 1];
/** A hook that acts once, right before the entry after the n-th CPUID exit (1-based count). */
const once = (n: number, act: Hook) => (): Hook => {
  let done = false;
  return (vcpu, vmcs, exits) => {
    if (exits !== n || done) return;
    done = true;
    act(vcpu, vmcs, exits);
  };
};

/** mov edx, BENCH_RESULT_PORT; out dx, eax. */
function report(a: Assembler): void {
  a.mov(edx, BENCH_RESULT_PORT).db([0xef]);
}
const cpuid = (a: Assembler) => a.xor(eax, eax).cpuid();

describe('VMX VM entry: the resume (lean path) and the general path agree', () => {
  test('a CPUID loop re-enters on the resume, with the general path\'s VMCS after every exit', () => {
    const N = 40;
    const { on } = both({
      guest: buildLongModeGuest((a) => {
        a.mov(r12, N).xor(r13, r13);
        const l = a.here('l');
        a.mov(eax, 1).cpuid();
        a.add(r13, rbx);
        a.dec(r12);
        a.jnz(l);
        a.mov(rax, r13);
        report(a);
        a.cli().hlt();
      }),
    });
    expect(cpuidTrips(on)).toHaveLength(N);
    // Every entry after a CPUID exit resumes but the first: the guest turned on paging (EFER.LMA)
    // before that exit, whose store of "IA-32e mode guest" (SDM 28.2) rewrote a control.
    expect(afterCpuid(on, 0).lean).toBe(false);
    for (let i = 1; i < N; i++) expect(afterCpuid(on, i).lean).toBe(true);
    expect(toVmx(on.vcpu).vmcs.resumes).toBeGreaterThanOrEqual(N);
  });

  test('RFLAGS, RSP and the interruptibility state the VMM writes between exits are loaded by the resume', () => {
    const { on } = both({
      guest: buildLongModeGuest((a) => {
        a.sti();
        cpuid(a);
        a.clc();
        cpuid(a);
        // (The VMM sets CF, moves RSP and sets blocking by STI before the entry that resumes here.)
        a.setcc('c', al).movzx(eax, al);
        report(a);
        a.mov(rax, rsp);
        report(a);
        cpuid(a);
        a.cli().hlt();
      }),
      beforeEntry: once(2, (_v, vmcs) => {
        vmcs.writeNat(F.GUEST_RFLAGS, vmcs.readNat(F.GUEST_RFLAGS) | 1n);
        vmcs.writeNat(F.GUEST_RSP, vmcs.readNat(F.GUEST_RSP) - 0x100n);
        vmcs.write32(F.GUEST_INTERRUPTIBILITY_INFO, GUEST_INTR_STATE_STI);
      }),
    });
    expect(afterCpuid(on, 1).lean).toBe(true);
    expect(on.reports[0]).toBe(1);
    expect(on.reports[1]).toBe(Number(on.regs.rsp) >>> 0);
    // SDM 28.3.4: the block by STI ended after one instruction; the next exit stores it clear.
    expect(cpuidTrips(on)[2].lo[S(F.GUEST_INTERRUPTIBILITY_INFO)]).toBe(0);
  });

  test('RFLAGS and interruptibility values that fail the entry checks go to the general path, which fails the entry (SDM 27.3.1.4, 27.3.1.5)', () => {
    const guest = () => buildLongModeGuest((a) => {
      cpuid(a);
      cpuid(a);
      cpuid(a);
      a.cli().hlt();
    });
    // RFLAGS bit 3 is reserved.
    const r1 = both({ guest: guest(), beforeEntry: once(2, (_v, vmcs) => vmcs.writeNat(F.GUEST_RFLAGS, vmcs.readNat(F.GUEST_RFLAGS) | 8n)) });
    // Blocking by STI requires RFLAGS.IF (the guest runs with IF clear).
    const r2 = both({ guest: guest(), beforeEntry: once(2, (_v, vmcs) => vmcs.write32(F.GUEST_INTERRUPTIBILITY_INFO, GUEST_INTR_STATE_STI)) });
    for (const { on } of [r1, r2]) {
      const t = afterCpuid(on, 1);
      expect(t.lean).toBe(false);
      expect(t.reason).toBe((ExitReason.INVALID_STATE | 0x80000000) >>> 0);
      expect(on.exitReason).toBe(KvmExitReason.KVM_EXIT_FAIL_ENTRY);
    }
  });

  test('a VMWRITE of GUEST_CR0, GUEST_CR3 or the ES selector sends the next entry down the general path, which loads it', () => {
    const guest = () => buildLongModeGuest((a) => {
      cpuid(a);
      cpuid(a);
      a.mov(rax, cr0);
      report(a);
      a.mov(rax, cr3);
      report(a);
      a.mov(eax, es);
      report(a);
      cpuid(a);
      cpuid(a);
      a.cli().hlt();
    });
    const writes: [string, Hook][] = [
      // CR0.AM (guest-owned: no shadow involved).
      ['CR0', (_v, vmcs) => vmcs.writeNat(F.GUEST_CR0, vmcs.readNat(F.GUEST_CR0) | (1n << 18n))],
      // CR3.PWT.
      ['CR3', (_v, vmcs) => vmcs.writeNat(F.GUEST_CR3, vmcs.readNat(F.GUEST_CR3) | 8n)],
      // ES := null selector (usable attributes kept: legal for an unrestricted guest, SDM 27.3.1.2).
      ['ES', (_v, vmcs) => vmcs.write16(F.GUEST_ES_SELECTOR, 0)],
    ];
    const base = both({ guest: guest() }).on.reports;
    for (const [what, w] of writes) {
      const { on } = both({ guest: guest(), beforeEntry: once(2, w) });
      expect(afterCpuid(on, 1).lean).toBe(false);
      // The exit after the general entry restores the resume.
      expect(afterCpuid(on, 2).lean).toBe(true);
      const i = ['CR0', 'CR3', 'ES'].indexOf(what);
      expect(on.reports[i]).not.toBe(base[i]);
      expect(on.reports.filter((_, k) => k !== i)).toEqual(base.filter((_, k) => k !== i));
    }
    expect(base[2]).not.toBe(0);
  });

  test('event injection (SDM 27.6) is delivered by the general path', () => {
    const vector = 0x40;
    const { on } = both({
      guest: buildLongModeGuest((a) => {
        const t = idtLabels(a);
        const handler = a.label('handler');
        emitIdtSetup(a, vector, handler, t);
        a.xor(r14, r14);
        a.sti();
        for (let i = 0; i < 4; i++) cpuid(a);
        a.cli();
        a.mov(rax, r14);
        report(a);
        a.hlt();
        a.bind(handler);
        a.inc(r14);
        a.iretq();
        emitIdtTable(a, t);
      }),
      // Type 0 (external interrupt), valid: through the guest's IDT.
      beforeEntry: once(2, (_v, vmcs) => vmcs.write32(F.VM_ENTRY_INTR_INFO_FIELD, (vector | (1 << 31)) >>> 0)),
    });
    expect(on.reports).toEqual([1]);
    expect(afterCpuid(on, 1).lean).toBe(false);
    // SDM 25.8.3: the exit cleared the valid bit.
    expect(afterCpuid(on, 1).lo[S(F.VM_ENTRY_INTR_INFO_FIELD)] >>> 31).toBe(0);
    expect(afterCpuid(on, 2).lean).toBe(true);
  });

  test('CR0, CR3 and a segment register the guest writes are stored by the exit that ends a resume (SDM 28.3.1)', () => {
    const { on } = both({
      guest: buildLongModeGuest((a) => {
        cpuid(a);
        cpuid(a);
        // CR0.AM: guest-owned, no exit.
        a.mov(rax, cr0).or(rax, 1 << 18).mov(cr0, rax);
        cpuid(a);
        // CR3 with PWT: no CR3-load exiting with EPT.
        a.mov(rax, cr3).or(rax, 8).mov(cr3, rax);
        cpuid(a);
        // ES := null selector (legal in 64-bit mode).
        a.xor(eax, eax).mov(es, eax);
        cpuid(a);
        a.cli().hlt();
      }),
    });
    const exits = cpuidTrips(on);
    expect(exits).toHaveLength(5);
    for (const i of [2, 3, 4]) expect(afterCpuid(on, i - 1).lean).toBe(true);
    expect(field64(exits[1], F.GUEST_CR0) & (1n << 18n)).toBe(0n);
    expect(field64(exits[2], F.GUEST_CR0) & (1n << 18n)).toBe(1n << 18n);
    expect(field64(exits[2], F.GUEST_CR3) & 8n).toBe(0n);
    expect(field64(exits[3], F.GUEST_CR3) & 8n).toBe(8n);
    expect(exits[3].lo[S(F.GUEST_ES_SELECTOR)]).not.toBe(0);
    expect(exits[4].lo[S(F.GUEST_ES_SELECTOR)]).toBe(0);
    expect(on.sregs.es.selector).toBe(0);
  });

  test('a #PF the guest takes in a resumed run: CR2 reaches KVM at the exit and is what the guest reads', () => {
    const fault = 0x8000_0000; // above the boot stub's 1 GiB identity map: not present
    const { on } = both({
      guest: buildLongModeGuest((a) => {
        const t = idtLabels(a);
        const pf = a.label('pf');
        const after = a.label('after');
        emitIdtSetup(a, 14, pf, t);
        // Touch the stack and the handler's page first (EPT maps guest pages at first access).
        a.push(rax).pop(rax);
        a.mov(rbx, mem(pf));
        cpuid(a);
        cpuid(a);
        a.mov(rax, fault);
        a.mov(rbx, qword(rax, 0));
        a.bind(after);
        cpuid(a);
        a.mov(rax, cr2);
        report(a);
        a.mov(rax, r13);
        report(a);
        cpuid(a);
        a.cli().hlt();
        a.bind(pf);
        a.mov(rax, cr2).mov(r13, rax);
        a.add(rsp, 8); // the error code
        a.lea(rax, mem(after));
        a.mov(qword(rsp, 0), rax);
        a.iretq();
        emitIdtTable(a, t);
      }),
    });
    expect(on.reports).toEqual([fault, fault]);
    const exits = cpuidTrips(on);
    expect(afterCpuid(on, 1).lean).toBe(true);
    expect(exits[1].cr2).toBe(0n);
    expect(exits[2].cr2).toBe(BigInt(fault));
    expect(on.sregs.cr2).toBe(BigInt(fault));
  });

  test.each([false, true])('CR8/TPR: the guest\'s CR8 writes and a TPR KVM sets between exits (APICv %s)', (apicv) => {
    const saved = { ...VmxBackend.moduleParams };
    VmxBackend.moduleParams = { ...saved, apicv };
    try {
      const { on } = both({
        irqchip: true,
        guest: buildLongModeGuest((a) => {
          // x2APIC on and software-enabled (SVR.8).
          a.mov(ecx, 0x1b).rdmsr().or(eax, 0xc00).wrmsr(); // IA32_APIC_BASE
          a.mov(ecx, 0x80f).mov(eax, 0x1ff).xor(edx, edx).wrmsr();
          a.mov(eax, 3).mov(cr8, rax);
          cpuid(a);
          cpuid(a);
          cpuid(a);
          a.mov(rax, cr8);
          report(a);
          a.mov(eax, 5).mov(cr8, rax);
          cpuid(a);
          a.mov(rax, cr8);
          report(a);
          cpuid(a);
          a.cli().hlt();
        }),
        // After the second CPUID exit KVM's TPR changes (kvm_lapic_set_tpr, as KVM_SET_LAPIC would).
        beforeEntry: once(2, (vcpu) => vcpu.kvm.irqchip!.lapic(vcpu)!.setTpr(9 << 4)),
      });
      // (With APICv the guest's CR8 is the virtual-APIC page's VTPR, which the TPR KVM set here
      // does not reach in this VMM; both paths agree on what the guest reads.)
      expect(on.reports).toEqual(apicv ? [on.reports[0], 5] : [9, 5]);
      expect(cpuidTrips(on).length).toBe(5);
      expect(on.trips.filter((t) => t.lean).length).toBeGreaterThanOrEqual(3);
    } finally {
      VmxBackend.moduleParams = saved;
    }
  });

  test('a TLB flush KVM performs between exits is seen by the resumed guest; a VPID change leaves the resume', () => {
    // PD[1] (2 MiB page at 0x200000) of the boot stub's identity map, in the PD at 0x72000.
    const pde1 = 0x72008;
    const guest = () => buildLongModeGuest((a) => {
      a.mov(rax, 0x400000).mov(qword(rax, 0), 0x2222);
      a.mov(rax, 0x200000).mov(qword(rax, 0), 0x1111);
      a.mov(rbx, qword(rax, 0)); // the translation of 0x200000 is now cached
      cpuid(a);
      // Remap 0x200000 to the page at 0x400000, without INVLPG.
      a.mov(rax, pde1).mov(rbx, qword(rax, 0)).add(rbx, 0x200000).mov(qword(rax, 0), rbx);
      cpuid(a);
      // (KVM flushes the guest's TLB before the entry that resumes here.)
      a.mov(rax, 0x200000).mov(rax, qword(rax, 0));
      report(a);
      cpuid(a);
      a.cli().hlt();
    });
    // KVM_REQ_TLB_FLUSH as vcpu_enter_guest services it before the entry (kvm_vcpu_flush_tlb_all).
    const flush = both({ guest: guest(), memory: 8 << 20, beforeEntry: once(2, (vcpu) => vcpu.kvm.ops.tlbFlushAll(vcpu)) });
    expect(flush.on.reports).toEqual([0x2222]);
    // The flush happened at the request, in root operation (INVVPID/INVEPT semantics, SDM 29.4.3):
    // nothing is left pending for the entry, which resumes.
    expect(afterCpuid(flush.on, 1).lean).toBe(true);
    const vpid = both({
      guest: guest(), memory: 8 << 20,
      beforeEntry: once(2, (vcpu, vmcs) => {
        // A new VPID: its tag has no cached translations (SDM 29.4.3).
        vmcs.write16(F.VIRTUAL_PROCESSOR_ID, vmcs.read16(F.VIRTUAL_PROCESSOR_ID) + 1);
      }),
    });
    expect(afterCpuid(vpid.on, 1).lean).toBe(false);
    expect(afterCpuid(vpid.on, 2).lean).toBe(true);
    expect(vpid.on.reports).toEqual([0x2222]);
  });

  test('after KVM\'s emulator ran an instruction on the processor (string I/O), the next entry takes the general path', () => {
    const { on } = both({
      guest: buildLongModeGuest((a) => {
        cpuid(a);
        cpuid(a);
        // OUTSD: KVM emulates string I/O on the processor (X86Cpu.emulateInstruction).
        a.mov(eax, 0x5a5a).push(rax).mov(rsi, rsp).mov(ecx, 1).mov(edx, BENCH_RESULT_PORT).db([0xf3, 0x6f]).pop(rax);
        cpuid(a);
        cpuid(a);
        a.cli().hlt();
      }),
    });
    const io = on.trips.findIndex((t) => t.reason === ExitReason.IO_INSTRUCTION);
    expect(io).toBeGreaterThan(0);
    // The processor ran something else since the exit: X86Cpu.stateEpoch moved (and with this
    // emulation, CpuState.segWrites/sysWrites too; either sends the entry down the general path).
    expect(on.trips[io + 1].lean).toBe(false);
    expect(afterCpuid(on, 3).lean).toBe(true);
  });

  test('VMCLEAR (SDM 25.11.3) ends the resume: the next entry is a VMLAUNCH on the general path', () => {
    const { on } = both({
      guest: buildLongModeGuest((a) => {
        for (let i = 0; i < 4; i++) cpuid(a);
        a.cli().hlt();
      }),
      beforeEntry: once(2, (_v, vmcs) => vmcs.clear()),
    });
    expect(afterCpuid(on, 1).lean).toBe(false);
    expect(afterCpuid(on, 2).lean).toBe(true);
  });
});
