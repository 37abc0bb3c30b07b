/**
 * The conformance suite is strong: deliberately broken variants of the real VMX and SVM
 * backends — a required hook removed, a hook returning a wrong value, an intercept ignored —
 * each make the scenarios that should catch them throw. Every variant is a subclass of a real
 * backend that changes one thing; the test runs all scenarios against it (as
 * describeBackendConformance would) and asserts which ones fail.
 */
import {
  BackendClass, ExitFastpathCompletion, GuestExitKind, InterceptInsn, KvmMemorySlot, KvmReg, KvmSegment, KvmVcpu,
  MsrData, VcpuSreg, Kvm,
} from '@tsvisor/core';
import { VmxBackend } from '@tsvisor/vmx';
import { SvmBackend } from '@tsvisor/svm';
import { conformanceScenarios, scenarioSkipReason, SuiteOptions } from '@tsvisor/testkit';
import { SVM_CONFORMANCE, VMX_CONFORMANCE } from './conformance-options';

/** Both backends, typed as one class with every hook a method (the variants override methods). */
type Ctor = new () => SvmBackend;

const S = {
  binds: 'binds: every required hook present, vendor and optional hooks as stated',
  cpuid: 'CPUID exits are answered from the guest CPUID table, and skipped',
  msr: 'MSRs: guest and host accesses meet in the backend, intercepted or passed through',
  segments: 'segments, CPL, descriptor tables, control registers, EFER, RFLAGS and debug registers round-trip through the hooks',
  irq: 'external interrupts wait for RFLAGS.IF and the STI shadow, then go through the IDT',
  shadow: 'an interrupt shadow set through setInterruptShadow holds off injection for exactly one instruction',
  nmi: 'NMIs are delivered through vector 2 and blocked until IRET',
  nmiMask: 'NMI masking set through setNmiMask holds NMIs off until the guest executes IRET',
  tlb: 'TLB: a stale translation is used until a flush hook runs, and not after (each flush hook)',
  dirty: 'dirty logging: exactly the pages written, round after round',
  regs: 'registers and RFLAGS set by userspace reach the guest and come back (register cache)',
  skip: 'skipEmulatedInstruction advances RIP by the length of each exiting instruction',
  timer: 'the hypervisor timer (setHvTimer) exits at its deadline, and cancelHvTimer disarms it',
  failEntry: 'a failed VM entry reports the hardware reason (long mode with CS.L and CS.D set)',
} as const;

interface Variant {
  what: string;
  /** Build the broken subclass of a real backend. */
  make(base: Ctor): Ctor;
  /** Scenarios that must throw. */
  mustFail: readonly string[];
  /** Only for these backends (default both). */
  only?: 'vmx' | 'svm';
}

/** The exit the processor reported for the last run (core's vendor-neutral description). */
function lastExit(vcpu: KvmVcpu) {
  return vcpu.cpu.exit;
}

const VARIANTS: Variant[] = [
  {
    what: 'a required hook removed (getRflags)',
    make: (B) => class extends B {
      constructor() {
        super();
        (this as unknown as Record<string, unknown>).getRflags = undefined;
      }
    },
    mustFail: [S.binds, S.cpuid, S.segments],
  },
  {
    what: 'getRflags flips RFLAGS.DF',
    make: (B) => class extends B {
      override getRflags(vcpu: KvmVcpu): bigint { return super.getRflags(vcpu) ^ 0x400n; }
    },
    mustFail: [S.segments, S.regs],
  },
  {
    what: 'getSegment loses the segment base',
    make: (B) => class extends B {
      override getSegment(vcpu: KvmVcpu, out: KvmSegment, seg: VcpuSreg): void { super.getSegment(vcpu, out, seg); out.base = 0n; }
    },
    mustFail: [S.segments, S.msr],
  },
  {
    what: 'getCpl always answers 0',
    make: (B) => class extends B {
      override getCpl(): number { return 0; }
    },
    mustFail: [S.segments],
  },
  {
    what: 'a CPUID exit answered from the supported table instead of the guest CPUID table (intercept ignored)',
    make: (B) => class extends B {
      // No exit fastpath (the vendors complete CPUID there): every CPUID reaches this handleExit.
      override exitHandlersFastpath(): ExitFastpathCompletion {
        return ExitFastpathCompletion.EXIT_FASTPATH_NONE;
      }
      override handleExit(vcpu: KvmVcpu, fastpath: ExitFastpathCompletion): number {
        const ex = lastExit(vcpu);
        if (ex.kind === GuestExitKind.INSTRUCTION && ex.insn === InterceptInsn.CPUID) {
          const fn = Number(vcpu.registerRead(KvmReg.RAX) & 0xffffffffn);
          const e = vcpu.kvm.getSupportedCpuid().find((c) => c.function === fn);
          vcpu.registerWrite(KvmReg.RAX, BigInt(e?.eax ?? 0));
          vcpu.registerWrite(KvmReg.RBX, BigInt(e?.ebx ?? 0));
          vcpu.registerWrite(KvmReg.RCX, BigInt(e?.ecx ?? 0));
          vcpu.registerWrite(KvmReg.RDX, BigInt(e?.edx ?? 0));
          return this.skipEmulatedInstruction(vcpu);
        }
        return super.handleExit(vcpu, fastpath);
      }
    },
    mustFail: [S.cpuid],
  },
  {
    what: 'a WRMSR intercept dropped (the write is skipped, never reaching setMsr)',
    make: (B) => class extends B {
      override handleExit(vcpu: KvmVcpu, fastpath: ExitFastpathCompletion): number {
        if (lastExit(vcpu).kind === GuestExitKind.MSR_WRITE) {
          vcpu.countExit('dropped');
          return this.skipEmulatedInstruction(vcpu);
        }
        return super.handleExit(vcpu, fastpath);
      }
    },
    mustFail: [S.msr],
  },
  {
    what: 'setMsr ignores host-initiated writes',
    make: (B) => class extends B {
      override setMsr(vcpu: KvmVcpu, msr: MsrData): number { return msr.hostInitiated ? 0 : super.setMsr(vcpu, msr); }
    },
    mustFail: [S.msr],
  },
  {
    what: 'the TLB flush hooks are no-ops',
    make: (B) => class extends B {
      override tlbFlushGuest(): void { return; }
      override tlbFlushCurrent(): void { return; }
      override tlbFlushAll(): void { return; }
      override tlbFlushGva(): void { return; }
    },
    mustFail: [S.tlb],
  },
  {
    what: 'dirty logging drops pages (PML: collected pages are never re-armed)',
    only: 'vmx',
    make: (B) => class extends B {
      constructor() {
        super();
        (this as unknown as { enableLogDirtyPtMasked: (kvm: Kvm, slot: KvmMemorySlot, o: bigint, m: bigint) => void })
          .enableLogDirtyPtMasked = () => undefined;
      }
    },
    mustFail: [S.dirty],
  },
  {
    what: 'dirty logging drops pages (write protection: the TLB keeps the writable translation)',
    only: 'svm',
    make: (B) => class extends B {
      override tlbFlushAll(): void { return; }
      override tlbFlushCurrent(): void { return; }
    },
    mustFail: [S.dirty],
  },
  {
    what: 'skipEmulatedInstruction keeps the interrupt shadow',
    make: (B) => class extends B {
      override skipEmulatedInstruction(vcpu: KvmVcpu): number {
        const shadow = this.getInterruptShadow(vcpu);
        const r = super.skipEmulatedInstruction(vcpu);
        this.setInterruptShadow(vcpu, shadow);
        return r;
      }
    },
    mustFail: [S.irq],
  },
  {
    what: 'skipEmulatedInstruction advances one byte too far',
    make: (B) => class extends B {
      override skipEmulatedInstruction(vcpu: KvmVcpu): number {
        const r = super.skipEmulatedInstruction(vcpu);
        vcpu.registerWrite(KvmReg.RIP, vcpu.registerRead(KvmReg.RIP) + 1n);
        return r;
      }
    },
    mustFail: [S.skip, S.cpuid],
  },
  {
    what: 'setInterruptShadow ignored',
    make: (B) => class extends B {
      override setInterruptShadow(): void { return; }
    },
    mustFail: [S.shadow, S.segments],
  },
  {
    what: 'setIrq injects nothing',
    make: (B) => class extends B {
      override setIrq(): void { return; }
    },
    mustFail: [S.irq],
  },
  {
    what: 'NMI masking not kept (getNmiMask false, setNmiMask ignored)',
    make: (B) => class extends B {
      override getNmiMask(): boolean { return false; }
      override setNmiMask(): void { return; }
    },
    mustFail: [S.nmi, S.nmiMask, S.segments],
  },
  {
    what: 'setHvTimer arms nothing',
    only: 'vmx',
    make: (B) => class extends B {
      constructor() {
        super();
        (this as unknown as { setHvTimer: () => { result: number; expired: boolean } }).setHvTimer = () => ({ result: 0, expired: false });
      }
    },
    mustFail: [S.timer],
  },
  {
    what: 'a failed entry reported as an internal error',
    make: (B) => class extends B {
      override handleExit(vcpu: KvmVcpu, fastpath: ExitFastpathCompletion): number {
        const r = super.handleExit(vcpu, fastpath);
        if (vcpu.run.exitReason === 9 /* KVM_EXIT_FAIL_ENTRY */) vcpu.run.exitReason = 17; // KVM_EXIT_INTERNAL_ERROR
        return r;
      }
    },
    mustFail: [S.failEntry],
  },
];

/** Run every applicable scenario; the names of those that threw, with their first message line. */
function failures(backend: BackendClass, options: SuiteOptions): Map<string, string> {
  const failed = new Map<string, string>();
  for (const s of conformanceScenarios()) {
    if (scenarioSkipReason(s, options) !== undefined) continue;
    try {
      s.run(backend, options);
    } catch (e) {
      failed.set(s.name, String((e as Error).message ?? e).split('\n')[0]);
    }
  }
  return failed;
}

const BACKENDS: ['vmx' | 'svm', Ctor, SuiteOptions][] = [
  ['vmx', VmxBackend as unknown as Ctor, VMX_CONFORMANCE],
  ['svm', SvmBackend as unknown as Ctor, SVM_CONFORMANCE],
];

describe.each(BACKENDS)('the conformance suite rejects broken variants of %s', (name, Base, options) => {
  it('passes the unbroken backend (every applicable scenario)', () => {
    expect([...failures(Base as unknown as BackendClass, options)]).toEqual([]);
  });
  const variants = VARIANTS.filter((v) => !v.only || v.only === name);
  it.each(variants.map((v) => [v.what, v] as const))('%s', (_what, v) => {
    const Broken = v.make(Base);
    Object.defineProperty(Broken, 'name', { value: `Broken${Base.name}` });
    const failed = failures(Broken as unknown as BackendClass, options);
    expect(failed.size).toBeGreaterThan(0);
    for (const s of v.mustFail) {
      expect({ scenario: s, failed: failed.has(s) }).toEqual({ scenario: s, failed: true });
    }
    if (v.what.startsWith('a required hook removed')) {
      expect(failed.get(S.binds)).toMatch(/missing required hook: getRflags/);
    }
  });
});
