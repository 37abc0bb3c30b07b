/**
 * The resume: SvmHardware.vmrun's lean path for the common re-entry (the same VMCB the
 * processor last exited from, nothing but guest execution since, every clean bit set except
 * TPR and CR2 with no clean group written since #VMEXIT, no EVENTINJ, TLB_CONTROL =
 * DO_NOTHING, AVIC off). It must give exactly the general path's results (AMD APM Vol. 2
 * 15.5–15.6 VMRUN/#VMEXIT, 15.15.3 clean bits, 15.16.1 TLB_CONTROL, 15.20 EVENTINJ, 15.14.4
 * pause filter, 15.21.1 V_TPR).
 *
 * Each scenario boots the same guest twice through the KVM API, once with the lean path on and
 * once with it off (SvmHardware.resumeEnabled). The vCPU's SvmHardware.vmrun is wrapped to
 * make the VMM-side change under test right before a VMRUN (as svm_vcpu_run would) and to
 * record, after every VMRUN/#VMEXIT round trip, the VMCB page and whether the round trip took
 * the lean path (SvmHardware.resumes). The two runs must agree: the same VMCB bytes after every
 * exit, the same values reported by the guest, the same final registers. The cases the lean
 * path must leave to the general path are checked to have done so, and the cases it covers to
 * have been resumes.
 */
import { KvmMpState, KvmVcpu } from '@tsvisor/core';
import {
  Intercept1, SvmBackend, SvmExit, svmOf, TlbControl, V_IRQ_MASK, Vmcb, VMCB_CONTROL, VMCB_SAVE, VmcbCleanBit,
} from '@tsvisor/svm';
import {
  Assembler, BENCH_RESULT_PORT, GuestImage, bootGuest, buildLongModeGuest, emitIdtSetup, emitIdtTable, idtLabels, runUntilStop,
  al, cr0, cr2, cr3, cr8, eax, ecx, edx, es, mem, qword, r12, r13, r14, rax, rbx, rdx, rsi, rsp,
} from '@tsvisor/testkit';

/** One VMRUN/#VMEXIT round trip as seen from outside the hardware. */
interface RoundTrip {
  /** The VMCB page right after #VMEXIT. */
  vmcb: Uint8Array;
  /** Whether this VMRUN took the lean path. */
  lean: boolean;
  exitCode: number;
}

interface Scenario {
  guest: GuestImage;
  /** An in-kernel irqchip with the vCPU runnable (for guests that use CR8 through the LAPIC). */
  irqchip?: boolean;
  /**
   * Makes, for one run, the hook called right before each VMRUN after KVM prepared the VMCB
   * (svm_vcpu_run): the VMM-side change under test. `cpuidExits` counts the CPUID #VMEXITs so
   * far; the hook is called before every VMRUN, so it acts once through its own state.
   */
  beforeVmrun?(): (vcpu: KvmVcpu, vmcb: Vmcb, cpuidExits: number) => void;
}

interface Outcome {
  trips: RoundTrip[];
  reports: number[];
  vcpu: KvmVcpu;
  regs: ReturnType<KvmVcpu['getRegs']>;
  sregs: ReturnType<KvmVcpu['getSregs']>;
  tlbControlFlushes: number;
}

const w32 = (b: Uint8Array, off: number) => new DataView(b.buffer, b.byteOffset).getUint32(off, true);
const w64 = (b: Uint8Array, off: number) => new DataView(b.buffer, b.byteOffset).getBigUint64(off, true);

function run(sc: Scenario, lean: boolean): Outcome {
  const { kvm, vcpu } = bootGuest(SvmBackend, sc.guest, { memory: 4 << 20 });
  if (sc.irqchip) {
    kvm.createIrqchip();
    vcpu.setMpState(KvmMpState.RUNNABLE);
  }
  const hw = svmOf(vcpu).hw;
  hw.resumeEnabled = lean;
  const vmrun = hw.vmrun.bind(hw);
  const trips: RoundTrip[] = [];
  let cpuidExits = 0;
  const hook = sc.beforeVmrun?.();
  hw.vmrun = (vmcb, budget) => {
    hook?.(vcpu, vmcb, cpuidExits);
    const before = hw.resumes;
    const kind = vmrun(vmcb, budget);
    const exitCode = vmcb.words[VMCB_CONTROL.EXITCODE.offset >> 2];
    if (exitCode === SvmExit.CPUID) cpuidExits++;
    trips.push({ vmcb: vmcb.bytes.slice(), lean: hw.resumes !== before, exitCode });
    return kind;
  };
  const reports: number[] = [];
  runUntilStop(vcpu, { ports: { [BENCH_RESULT_PORT]: { out: (_p, _s, v) => void reports.push(v >>> 0) } } });
  return { trips, reports, vcpu, regs: vcpu.getRegs(), sregs: vcpu.getSregs(), tlbControlFlushes: hw.tlbControlFlushes };
}

/** The scenario with the lean path on and off: identical VMCB after every exit and identical final state. */
function both(sc: Scenario): { on: Outcome; off: Outcome } {
  const on = run(sc, true);
  const off = run(sc, false);
  expect(off.trips.some((t) => t.lean)).toBe(false);
  expect(on.trips.length).toBe(off.trips.length);
  const firstDiff = on.trips.findIndex((t, i) => !Buffer.from(t.vmcb).equals(Buffer.from(off.trips[i].vmcb)));
  if (firstDiff >= 0) {
    const a = on.trips[firstDiff].vmcb, b = off.trips[firstDiff].vmcb;
    const at = a.findIndex((x, i) => x !== b[i]);
    throw new Error(`VMCB differs after round trip ${firstDiff} (lean: ${on.trips[firstDiff].lean}) at offset 0x${at.toString(16)}`);
  }
  expect(on.reports).toEqual(off.reports);
  expect(on.regs).toEqual(off.regs);
  expect(on.sregs).toEqual(off.sregs);
  expect(on.tlbControlFlushes).toBe(off.tlbControlFlushes);
  return { on, off };
}

/** The round trips that ended in a CPUID #VMEXIT, in order. */
const cpuidTrips = (o: Outcome) => o.trips.filter((t) => t.exitCode === SvmExit.CPUID);
/** The round trip right after the n-th (0-based) CPUID #VMEXIT. */
const afterCpuid = (o: Outcome, n: number) => o.trips[o.trips.indexOf(cpuidTrips(o)[n]) + 1];

/** mov edx, BENCH_RESULT_PORT; out dx, eax. */
function report(a: Assembler): void {
  a.mov(edx, BENCH_RESULT_PORT).db([0xef]);
}

describe('SVM VMRUN: the resume (lean path) and the general path agree', () => {
  test('a CPUID loop re-enters on the lean path, with the general path\'s VMCB after every exit', () => {
    const N = 40;
    const { on, off } = both({
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
    // Every re-entry after the first CPUID exit resumes (the first VMRUNs follow KVM's set-up).
    for (let i = 0; i < N - 1; i++) expect(afterCpuid(on, i).lean).toBe(true);
    expect(svmOf(on.vcpu).hw.resumes).toBeGreaterThanOrEqual(N);
    expect(svmOf(off.vcpu).hw.resumes).toBe(0);
  });

  test('RFLAGS, RSP and CR2 the VMM writes between exits are loaded by the resume', () => {
    const { on } = both({
      guest: buildLongModeGuest((a) => {
        a.xor(eax, eax).cpuid();
        a.xor(eax, eax).clc().cpuid();
        // (The VMM sets CF and moves RSP before the VMRUN that resumes here.)
        a.setcc('c', al).movzx(eax, al);
        report(a);
        a.mov(rax, rsp);
        report(a);
        a.mov(rax, cr2);
        report(a);
        a.cli().hlt();
      }),
      beforeVmrun: () => {
        let done = false;
        return (_v, vmcb, n) => {
          if (n !== 2 || done) return;
          done = true;
          // As svm_set_rflags / the register cache write them (no clean bit covers them, APM 15.15.3).
          vmcb.write64(VMCB_SAVE.RFLAGS, vmcb.read64(VMCB_SAVE.RFLAGS) | 1n);
          vmcb.write64(VMCB_SAVE.RSP, vmcb.read64(VMCB_SAVE.RSP) - 0x100n);
          // As KVM_SET_SREGS → svm_vcpu_run writes it (group CR2, never marked clean by KVM).
          vmcb.write64(VMCB_SAVE.CR2, 0x1234_5000n);
        };
      },
    });
    expect(afterCpuid(on, 1).lean).toBe(true);
    expect(on.reports).toEqual([1, 0x80000 - 0x100, 0x1234_5000]);
  });

  test('V_IRQ and INTERRUPT_SHADOW the VMM sets: the virtual interrupt window opens after the shadow (APM 15.21.4)', () => {
    const guest = buildLongModeGuest((a) => {
      a.sti();
      a.xor(eax, eax).cpuid();
      a.xor(eax, eax).cpuid();
      a.nop();
      a.here('second_nop');
      a.nop();
      a.xor(eax, eax).cpuid();
      a.cli().hlt();
    });
    const { on } = both({
      guest,
      beforeVmrun: () => {
        let step = 0;
        return (_v, vmcb, n) => {
          if (n === 1 && step === 0) {
            // The VINTR intercept (group I, marked dirty), V_IRQ still clear: no window exit yet.
            step = 1;
            vmcb.setBit32(VMCB_CONTROL.INTERCEPT_MISC1, Intercept1.VINTR, true);
            vmcb.markDirty(VmcbCleanBit.I);
          } else if (n === 2 && step === 1) {
            // V_IRQ (group TPR, never marked clean by KVM) and an STI shadow over the first instruction.
            step = 2;
            vmcb.write32(VMCB_CONTROL.INT_CTL, vmcb.read32(VMCB_CONTROL.INT_CTL) | V_IRQ_MASK);
            vmcb.write64(VMCB_CONTROL.INTERRUPT_SHADOW, 1n);
          }
        };
      },
    });
    const t = afterCpuid(on, 1);
    expect(t.lean).toBe(true);
    expect(t.exitCode).toBe(SvmExit.VINTR);
    // The shadow held the window closed for the first NOP.
    expect(w64(t.vmcb, VMCB_SAVE.RIP.offset)).toBe(BigInt(guest.symbols.second_nop));
  });

  test('a #DB the guest takes in a resumed run: DR6 is stored at #VMEXIT', () => {
    const { on } = both({
      guest: buildLongModeGuest((a) => {
        const t = idtLabels(a);
        const db = a.label('db');
        emitIdtSetup(a, 1, db, t);
        a.push(rax).pop(rax);
        a.mov(rbx, mem(db));
        a.xor(eax, eax).cpuid();
        a.xor(eax, eax).cpuid();
        a.pushf();
        a.or(qword(rsp, 0), 0x100);
        a.popf(); // TF: single-step #DB after the next instruction
        a.nop();
        a.xor(eax, eax).cpuid();
        a.cli().hlt();
        a.bind(db);
        a.and(qword(rsp, 16), ~0x100); // the saved RFLAGS: TF off
        a.iretq();
        emitIdtTable(a, t);
      }),
    });
    const exits = cpuidTrips(on);
    expect(exits[2].lean).toBe(true);
    expect(w64(exits[1].vmcb, VMCB_SAVE.DR6.offset) & 0x4000n).toBe(0n);
    expect(w64(exits[2].vmcb, VMCB_SAVE.DR6.offset) & 0x4000n).toBe(0x4000n);
  });

  describe('a clean group written through an accessor while its clean bit stays set (APM 15.15.3)', () => {
    /** RDTSC, CPUID, RDTSC; reports (second − first) >> 40; then more CPUIDs. */
    const tscGuest = () => buildLongModeGuest((a) => {
      a.xor(eax, eax).cpuid();
      a.rdtsc().shl(rdx, 32).or(rax, rdx).mov(rsi, rax);
      a.xor(eax, eax).cpuid();
      a.rdtsc().shl(rdx, 32).or(rax, rdx).sub(rax, rsi).shr(rax, 40);
      report(a);
      a.xor(eax, eax).cpuid();
      a.xor(eax, eax).cpuid();
      a.cli().hlt();
    });
    const bumpTscOffset = (markDirty: boolean) => () => {
      let done = false;
      return (_v: KvmVcpu, vmcb: Vmcb, n: number) => {
        if (n !== 2 || done) return;
        done = true;
        vmcb.write64(VMCB_CONTROL.TSC_OFFSET, vmcb.read64(VMCB_CONTROL.TSC_OFFSET) + (1n << 40n));
        if (markDirty) vmcb.markDirty(VmcbCleanBit.I);
      };
    };

    test('left clean, the processor runs with its copy (old TSC_OFFSET); that VMRUN is not a resume', () => {
      const { on } = both({ guest: tscGuest(), beforeVmrun: bumpTscOffset(false) });
      expect(on.reports).toEqual([0]);
      expect(afterCpuid(on, 1).lean).toBe(false);
      // The next VMRUN resumes again (the #VMEXIT refreshed the copy), still with the copy's offset.
      expect(afterCpuid(on, 2).lean).toBe(true);
    });

    test('marked dirty, the new TSC_OFFSET applies', () => {
      const { on } = both({ guest: tscGuest(), beforeVmrun: bumpTscOffset(true) });
      expect(on.reports).toEqual([1]);
      expect(afterCpuid(on, 1).lean).toBe(false);
    });
  });

  test('EVENTINJ (APM 15.20) is delivered by the general path', () => {
    const vector = 0x40;
    const guest = buildLongModeGuest((a) => {
      const t = idtLabels(a);
      const handler = a.label('handler');
      emitIdtSetup(a, vector, handler, t);
      a.xor(r14, r14);
      for (let i = 0; i < 4; i++) a.xor(eax, eax).cpuid();
      a.mov(rax, r14);
      report(a);
      a.cli().hlt();
      a.bind(handler);
      a.inc(r14);
      a.iretq();
      emitIdtTable(a, t);
    });
    const { on } = both({
      guest,
      beforeVmrun: () => {
        let done = false;
        return (_v, vmcb, n) => {
          if (n !== 2 || done) return;
          done = true;
          // TYPE 0 (INTR), V (bit 31): an external interrupt through the guest's IDT.
          vmcb.write64(VMCB_CONTROL.EVENTINJ, BigInt((vector | (1 << 31)) >>> 0));
        };
      },
    });
    expect(on.reports).toEqual([1]);
    expect(afterCpuid(on, 1).lean).toBe(false);
    expect(afterCpuid(on, 2).lean).toBe(true);
    // EVENTINJ is consumed by the VMRUN that delivered it.
    expect(w32(afterCpuid(on, 1).vmcb, VMCB_CONTROL.EVENTINJ.offset)).toBe(0);
  });

  test('TLB_CONTROL (APM 15.16.1) is performed by the general path', () => {
    const { on, off } = both({
      guest: buildLongModeGuest((a) => {
        for (let i = 0; i < 4; i++) a.xor(eax, eax).cpuid();
        a.cli().hlt();
      }),
      beforeVmrun: () => {
        let done = false;
        return (_v, vmcb, n) => {
          if (n !== 2 || done) return;
          done = true;
          vmcb.write8(VMCB_CONTROL.TLB_CONTROL, TlbControl.FLUSH_ALL_ASID);
        };
      },
    });
    expect(afterCpuid(on, 1).lean).toBe(false);
    expect(afterCpuid(on, 2).lean).toBe(true);
    expect(on.tlbControlFlushes).toBe(off.tlbControlFlushes);
    expect(on.tlbControlFlushes).toBeGreaterThanOrEqual(1);
  });

  test('CR0, CR3 and a segment register the guest writes are stored by the #VMEXIT that ends a resume', () => {
    const { on } = both({
      guest: buildLongModeGuest((a) => {
        a.xor(eax, eax).cpuid();
        a.xor(eax, eax).cpuid();
        // CR0.TS alone: the selective CR0 write intercept lets it through (APM 15.9.2).
        a.mov(rax, cr0).or(rax, 8).mov(cr0, rax);
        a.xor(eax, eax).cpuid();
        // CR3 with PCD (bit 4): not intercepted with nested paging.
        a.mov(rax, cr3).or(rax, 0x10).mov(cr3, rax);
        a.xor(eax, eax).cpuid();
        // ES := null selector (legal in 64-bit mode).
        a.xor(eax, eax).mov(es, eax);
        a.xor(eax, eax).cpuid();
        a.cli().hlt();
      }),
    });
    const exits = cpuidTrips(on);
    expect(exits).toHaveLength(5);
    // The round trips in which the guest made the writes were resumes.
    for (const i of [2, 3, 4]) expect(exits[i].lean).toBe(true);
    expect(w64(exits[1].vmcb, VMCB_SAVE.CR0.offset) & 8n).toBe(0n);
    expect(w64(exits[2].vmcb, VMCB_SAVE.CR0.offset) & 8n).toBe(8n);
    expect(w64(exits[2].vmcb, VMCB_SAVE.CR3.offset) & 0x10n).toBe(0n);
    expect(w64(exits[3].vmcb, VMCB_SAVE.CR3.offset) & 0x10n).toBe(0x10n);
    const esSel = (b: Uint8Array) => w32(b, VMCB_SAVE.ES.offset) & 0xffff;
    expect(esSel(exits[3].vmcb)).not.toBe(0);
    expect(esSel(exits[4].vmcb)).toBe(0);
    expect(on.sregs.es.selector).toBe(0);
  });

  test('a #PF the guest takes in a resumed run: CR2 is stored at #VMEXIT, and a CR2 the VMM restores is loaded', () => {
    const fault = 0x8000_0000; // above the boot stub's 1 GiB identity map: not present
    const { on } = both({
      guest: buildLongModeGuest((a) => {
        const t = idtLabels(a);
        const pf = a.label('pf');
        const after = a.label('after');
        emitIdtSetup(a, 14, pf, t);
        // Touch the stack and the handler's page first, so that delivering the #PF takes no #NPF
        // (KVM maps guest pages at their first access).
        a.push(rax).pop(rax);
        a.mov(rbx, mem(pf));
        a.xor(eax, eax).cpuid();
        a.xor(eax, eax).cpuid();
        a.mov(rax, fault);
        a.mov(rbx, qword(rax, 0));
        a.bind(after);
        a.xor(eax, eax).cpuid();
        a.mov(rax, cr2);
        report(a);
        a.mov(rax, r13);
        report(a);
        a.xor(eax, eax).cpuid();
        a.cli().hlt();
        a.bind(pf);
        a.mov(rax, cr2).mov(r13, rax);
        a.add(rsp, 8); // the error code
        a.lea(rax, mem(after));
        a.mov(qword(rsp, 0), rax);
        a.iretq();
        emitIdtTable(a, t);
      }),
      beforeVmrun: () => {
        let done = false;
        return (_v, vmcb, n) => {
          if (n !== 3 || done) return;
          done = true;
          // Right after the #VMEXIT that stored the #PF's CR2: CR2 back to its value before the
          // #PF (as KVM_SET_SREGS would have svm_vcpu_run write it).
          vmcb.write64(VMCB_SAVE.CR2, 0n);
        };
      },
    });
    expect(on.reports).toEqual([0, fault]);
    const exits = cpuidTrips(on);
    expect(exits[2].lean).toBe(true);
    expect(w64(exits[1].vmcb, VMCB_SAVE.CR2.offset)).toBe(0n);
    expect(w64(exits[2].vmcb, VMCB_SAVE.CR2.offset)).toBe(BigInt(fault));
    expect(afterCpuid(on, 2).lean).toBe(true);
    expect(on.sregs.cr2).toBe(0n);
  });

  test('V_TPR (APM 15.21.1): the guest\'s CR8 writes and a TPR KVM sets between exits', () => {
    const vTpr = (b: Uint8Array) => b[VMCB_CONTROL.V_TPR.offset] & 0xf;
    const { on } = both({
      irqchip: true,
      guest: buildLongModeGuest((a) => {
        // x2APIC on and software-enabled (SVR.8), so that KVM lets CR8 writes land in V_TPR.
        a.mov(ecx, 0x1b).rdmsr().or(eax, 0xc00).wrmsr(); // IA32_APIC_BASE
        a.mov(ecx, 0x80f).mov(eax, 0x1ff).xor(edx, edx).wrmsr();
        a.mov(eax, 3).mov(cr8, rax);
        a.xor(eax, eax).cpuid();
        a.xor(eax, eax).cpuid();
        a.xor(eax, eax).cpuid();
        a.mov(rax, cr8);
        report(a);
        a.mov(eax, 5).mov(cr8, rax);
        a.xor(eax, eax).cpuid();
        a.mov(rax, cr8);
        report(a);
        a.xor(eax, eax).cpuid();
        a.cli().hlt();
      }),
      beforeVmrun: () => {
        const done = new Set<number>();
        return (vcpu, vmcb, n) => {
          // After the second and the fourth CPUID exits KVM's TPR changes (kvm_lapic_set_tpr), and
          // V_TPR with it, as sync_lapic_to_cr8 writes it before VMRUN (group TPR, never marked
          // clean by KVM): to 9, then from the guest's 5 back to 9.
          if ((n !== 2 && n !== 4) || done.has(n)) return;
          done.add(n);
          vcpu.kvm.irqchip!.lapic(vcpu)!.setTpr(9 << 4);
          vmcb.write8(VMCB_CONTROL.V_TPR, 9);
        };
      },
    });
    expect(on.reports).toEqual([9, 9]);
    const exits = cpuidTrips(on);
    expect(exits.map((t) => vTpr(t.vmcb))).toEqual([3, 3, 9, 5, 9]);
    expect(exits[2].lean).toBe(true);
    expect(exits[3].lean).toBe(true);
    expect(afterCpuid(on, 3).lean).toBe(true);
  });

  test('V_TPR and CR2 the VMM changes across a general-path VMRUN (TLB_CONTROL set) between resumes', () => {
    const { on } = both({
      irqchip: true,
      guest: buildLongModeGuest((a) => {
        a.mov(ecx, 0x1b).rdmsr().or(eax, 0xc00).wrmsr(); // IA32_APIC_BASE: x2APIC on
        a.mov(ecx, 0x80f).mov(eax, 0x1ff).xor(edx, edx).wrmsr(); // SVR: software-enabled
        a.mov(eax, 3).mov(cr8, rax);
        a.xor(eax, eax).cpuid();
        a.xor(eax, eax).cpuid();
        a.xor(eax, eax).cpuid();
        a.mov(rax, cr8);
        report(a);
        a.mov(rax, cr2);
        report(a);
        a.cli().hlt();
      }),
      beforeVmrun: () => {
        const done = new Set<number>();
        return (vcpu, vmcb, n) => {
          if ((n !== 2 && n !== 3) || done.has(n)) return;
          done.add(n);
          // TPR 9 and CR2 0x5000 with a TLB flush (the general path), then both back (a resume).
          const tpr = n === 2 ? 9 : 3;
          vcpu.kvm.irqchip!.lapic(vcpu)!.setTpr(tpr << 4);
          vmcb.write8(VMCB_CONTROL.V_TPR, tpr);
          vmcb.write64(VMCB_SAVE.CR2, n === 2 ? 0x5000n : 0n);
          if (n === 2) vmcb.write8(VMCB_CONTROL.TLB_CONTROL, TlbControl.FLUSH_ALL_ASID);
        };
      },
    });
    expect(afterCpuid(on, 1).lean).toBe(false);
    expect(afterCpuid(on, 2).lean).toBe(true);
    expect(on.reports).toEqual([3, 0]);
  });

  test('V_TPR written while KVM left group TPR marked clean: the processor keeps its copy (APM 15.15.3)', () => {
    const { on } = both({
      irqchip: true,
      guest: buildLongModeGuest((a) => {
        a.mov(ecx, 0x1b).rdmsr().or(eax, 0xc00).wrmsr(); // IA32_APIC_BASE: x2APIC on
        a.mov(ecx, 0x80f).mov(eax, 0x1ff).xor(edx, edx).wrmsr(); // SVR: software-enabled
        a.mov(eax, 3).mov(cr8, rax);
        a.xor(eax, eax).cpuid();
        a.xor(eax, eax).cpuid();
        a.mov(rax, cr8);
        report(a);
        a.xor(eax, eax).cpuid();
        a.cli().hlt();
      }),
      beforeVmrun: () => {
        let done = false;
        return (_v, vmcb, n) => {
          if (n !== 2 || done) return;
          done = true;
          vmcb.write32(VMCB_CONTROL.VMCB_CLEAN, vmcb.read32(VMCB_CONTROL.VMCB_CLEAN) | (1 << VmcbCleanBit.TPR));
          vmcb.write8(VMCB_CONTROL.V_TPR, 7);
        };
      },
    });
    expect(on.reports).toEqual([3]);
    expect(afterCpuid(on, 1).lean).toBe(false);
  });

  test('PAUSE under the pause filter (APM 15.14.4) in resumed runs', () => {
    const { on, off } = both({
      guest: buildLongModeGuest((a) => {
        a.mov(r12, 200);
        const l = a.here('l');
        a.pause();
        a.xor(eax, eax).cpuid();
        a.dec(r12);
        a.jnz(l);
        a.cli().hlt();
      }),
    });
    expect(cpuidTrips(on).length).toBe(200);
    expect(on.trips.filter((t) => t.lean).length).toBeGreaterThan(100);
    expect(on.vcpu.exitCounts).toEqual(off.vcpu.exitCounts);
  });
});
