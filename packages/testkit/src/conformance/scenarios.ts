/**
 * The backend conformance scenarios: behaviour every correct kvm_x86_ops backend shows
 * through core's public API, with testkit-built guests. Each scenario is a plain function
 * that throws on a violation, so the suite runs under any test runner (see suite.ts) and the
 * project can run it against deliberately broken backends.
 */
import {
  BackendClass, emptySegment, Kvm, KvmExitReason, KvmReg, KvmSegment, KvmVcpu, KVM_EXIT_IO_OUT,
  KVM_MEM_LOG_DIRTY_PAGES, MSR, OpName, VcpuSreg,
} from '@tsvisor/core';
import {
  Assembler, eax, ebx, ecx, edx, rax, rbx, rcx, rdx, rsi, rdi, rsp, r15, al, ax, dx, fs, mem, qword, dword, byte,
} from '../asm';
import { buildLongModeGuest, BootOptions, GuestImage } from '../guests/boot';
import { bootGuest, RunOutcome, runUntilStop } from '../run/runner';
import { loadScenarioIdt, writeIdtGate, writeU64, readU64 } from './guest-helpers';

/**
 * What a backend states about itself where the vendors' manuals differ. Everything else the
 * scenarios check holds for any correct backend.
 */
export interface ConformanceOptions {
  /** The CPUID vendor string guests see by default (GenuineIntel for `vendor: 'intel'`, AuthenticAMD for 'amd'). */
  cpuVendor: 'GenuineIntel' | 'AuthenticAMD' | string;
  /** The backend's native hypercall instruction. */
  hypercall: 'vmcall' | 'vmmcall';
  /**
   * The other vendor's hypercall instruction is trapped (#UD) and rewritten in guest memory to
   * the native one through patchHypercall, then executed (KVM's handle_ud → fix_hypercall).
   * Default false: the scenario is left out.
   */
  patchesForeignHypercall?: boolean;
  /** Exit-reason names in the backend's own vocabulary, as counted in vcpu.exitCounts. */
  exitNames: { cpuid: string; hlt: string; io: string; msrRead: string; msrWrite: string; hypercall: string };
  /** run.failEntry.hardwareEntryFailureReason for an invalid guest state (VMX: 0x80000021; SVM: 0xffffffff). */
  failEntryReason: bigint;
  /**
   * Dirty logging mechanism: 'pml' (hardware logging: the backend has the optional
   * slotEnableLogDirty/slotDisableLogDirty/flushLogDirty/enableLogDirtyPtMasked hooks) or
   * 'write-protect' (it has none of them; core write-protects logged slots).
   */
  dirtyLog: 'pml' | 'write-protect';
  /**
   * How guest translations live across a VM exit and re-entry: 'tagged' (VPID/ASID — they
   * survive until a flush hook drops them; the default) or 'flushed-on-entry' (every entry
   * starts with an empty TLB, as VMX without VPID). With 'tagged' the TLB scenario also
   * proves that a stale translation is really used until the flush.
   */
  tlb?: 'tagged' | 'flushed-on-entry';
  /**
   * The hypervisor timer behind setHvTimer/cancelHvTimer (VMX: the VMX-preemption timer) and the
   * name its expiry exit is counted under. Leave it out when the backend has no such timer
   * (then the backend must not have setHvTimer either).
   */
  hvTimer?: { exitName: string };
}

export interface Scenario {
  name: string;
  /** The hook categories of issue #7 the scenario covers (for the report and the docs). */
  covers: readonly string[];
  /** Whether the scenario applies to a backend with these options (default: always). */
  appliesTo?(options: ConformanceOptions): boolean;
  run(backend: BackendClass, options: ConformanceOptions): void;
}

export class ConformanceError extends Error {
  constructor(scenario: string, message: string) {
    super(`${scenario}: ${message}`);
    this.name = 'ConformanceError';
  }
}

function check(cond: unknown, scenario: string, message: string): asserts cond {
  if (!cond) throw new ConformanceError(scenario, message);
}
function eq<T>(actual: T, expected: T, scenario: string, what: string): void {
  const fmt = (v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : JSON.stringify(v));
  if (actual !== expected) throw new ConformanceError(scenario, `${what}: expected ${fmt(expected)}, got ${fmt(actual)}`);
}

/** Ports the scenario guests use (8-bit immediates; no device claims them without a platform). */
const REPORT = 0x50;
const SYNC = 0x51;
const SHADOW_MARK = 0x52;

/**
 * Collect 32-bit OUTs to REPORT as a list, calling `onSync` at each OUT to SYNC (return true
 * from it to stop the run there). Other ports are answered by runUntilStop's defaults.
 */
function runReporting(vcpu: KvmVcpu, onSync?: (n: number) => boolean | void): { out: RunOutcome; reports: number[]; ports: number[] } {
  const reports: number[] = [];
  const ports: number[] = [];
  let syncs = 0;
  const out = runUntilStop(vcpu, {
    maxRuns: 20_000,
    onExit(run) {
      if (run.exitReason !== KvmExitReason.KVM_EXIT_IO) return false;
      const { port, size, direction } = run.io;
      ports.push(port);
      if (direction !== KVM_EXIT_IO_OUT) return false;
      let v = 0;
      for (let b = 0; b < size; b++) v |= run.ioData[b] << (8 * b);
      if (port === REPORT) reports.push(v >>> 0);
      if (port === SYNC) return onSync?.(syncs++) === true;
      return false;
    },
  });
  return { out, reports, ports };
}

function guest(body: (a: Assembler) => void, opts?: BootOptions): GuestImage {
  return buildLongModeGuest((a) => body(a), opts);
}

function halted(name: string, out: RunOutcome): void {
  eq(KvmExitReason[out.exitReason], 'KVM_EXIT_HLT', name, `final exit (${out.run.internalMessage || 'no message'})`);
}

/** Report a 32-bit register to the host. */
function rep(a: Assembler, r: typeof eax): void {
  if (r !== eax) a.mov(eax, r);
  a.out(REPORT, eax);
}
function sync(a: Assembler): void {
  a.out(SYNC, al);
}

const KVM_ENOSYS = (1n << 64n) - 1000n;

/** The bytes of each vendor's hypercall instruction. */
const HYPERCALL_BYTES = { vmcall: [0x0f, 0x01, 0xc1], vmmcall: [0x0f, 0x01, 0xd9] } as const;
/** KVM_X86_SHADOW_INT_STI. */
const SHADOW_INT_STI = 2;
const PML_HOOKS: readonly OpName[] = ['slotEnableLogDirty', 'slotDisableLogDirty', 'flushLogDirty', 'enableLogDirtyPtMasked'];

function hypercall(a: Assembler, which: 'vmcall' | 'vmmcall'): void {
  if (which === 'vmcall') a.vmcall(); else a.vmmcall();
}

function exitCount(vcpu: KvmVcpu, name: string): number {
  return vcpu.exitCounts.get(name) ?? 0;
}
function counted(vcpu: KvmVcpu): string {
  return [...vcpu.exitCounts].map(([k, v]) => `${k}=${v}`).join(', ');
}
const segString = (x: KvmSegment) =>
  `sel=${x.selector.toString(16)} base=${x.base.toString(16)} limit=${x.limit.toString(16)} type=${x.type} p=${x.present} dpl=${x.dpl} db=${x.db} s=${x.s} g=${x.g} l=${x.l}`;

export const SCENARIOS: Scenario[] = [
  {
    name: 'binds: every required hook present, vendor and optional hooks as stated',
    covers: ['binding'],
    run(backend, o) {
      const kvm = Kvm.create({ backend });
      const vendor = kvm.backendInfo.vendor === 'intel' ? 'GenuineIntel' : 'AuthenticAMD';
      eq(vendor, o.cpuVendor, this.name, 'backend vendor');
      for (const h of PML_HOOKS) {
        eq(kvm.has(h), o.dirtyLog === 'pml', this.name, `optional hook ${h} present (dirtyLog: '${o.dirtyLog}')`);
      }
      eq(kvm.has('setHvTimer'), o.hvTimer !== undefined, this.name, `optional hook setHvTimer present (hvTimer ${o.hvTimer ? 'declared' : 'not declared'})`);
      eq(kvm.has('cancelHvTimer'), o.hvTimer !== undefined, this.name, 'optional hook cancelHvTimer present');
      kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 1n << 20n });
      kvm.createVcpu(0);
      kvm.destroy();
    },
  },
  {
    name: 'CPUID exits are answered from the guest CPUID table, and skipped',
    covers: ['exits and their handling', 'skipEmulatedInstruction'],
    run(backend, o) {
      const g = guest((a) => {
        a.mov(eax, 0).cpuid();
        rep(a, ebx); rep(a, edx); rep(a, ecx);
        a.mov(eax, 0x40000001).mov(ecx, 0).cpuid();
        rep(a, eax);
        a.hlt();
        a.here('after_hlt');
      });
      const { vcpu } = bootGuest(backend, g);
      // A marker only this table has: a processor answering CPUID itself would not know it.
      const entries = vcpu.getCpuid2().map((e) => (e.function === 0x40000001 ? { ...e, eax: 0x7e57c0de } : e));
      vcpu.setCpuid2(entries);
      const { out, reports } = runReporting(vcpu);
      halted(this.name, out);
      const vendor = Buffer.alloc(12);
      reports.slice(0, 3).forEach((v, i) => vendor.writeUInt32LE(v, i * 4));
      eq(vendor.toString('latin1'), o.cpuVendor, this.name, 'vendor string from CPUID leaf 0');
      eq(reports[3], 0x7e57c0de, this.name, 'CPUID 0x40000001.EAX from KVM_SET_CPUID2');
      eq(vcpu.getRegs().rip, BigInt(g.symbols.after_hlt), this.name, 'RIP after the HLT exit');
      check(exitCount(vcpu, o.exitNames.cpuid) >= 2, this.name, `exit count '${o.exitNames.cpuid}' < 2 (${counted(vcpu)})`);
      check(exitCount(vcpu, o.exitNames.hlt) === 1, this.name, `exit count '${o.exitNames.hlt}' != 1 (${counted(vcpu)})`);
    },
  },
  {
    name: 'port I/O: each size and direction, IN merging into AL/AX and zero-extending EAX',
    covers: ['exits and their handling'],
    run(backend, o) {
      const g = guest((a) => {
        a.mov(eax, 0x11223344);
        a.out(0x54, al).out(0x56, ax).out(0x58, eax);
        a.mov(rax, -1).in(al, 0x5a).mov(rbx, rax);
        a.mov(rax, -1).in(ax, 0x5c).mov(rcx, rax);
        a.mov(rax, -1).in(eax, 0x5e);
        a.hlt();
      });
      const { vcpu, kvm } = bootGuest(backend, g);
      const outs: string[] = [];
      const record = (p: number, sz: number, v: number) => outs.push(`${p.toString(16)}/${sz}/${v.toString(16)}`);
      const out = runUntilStop(vcpu, {
        ports: {
          0x54: { out: record },
          0x56: { out: record },
          0x58: { out: record },
          0x5a: { in: () => 0x5a },
          0x5c: { in: () => 0xbeef },
          0x5e: { in: () => 0xdeadbeef },
        },
      });
      halted(this.name, out);
      eq(outs.join(' '), '54/1/44 56/2/3344 58/4/11223344', this.name, 'OUT data');
      const r = vcpu.getRegs();
      eq(r.rbx, 0xffffffffffffff5an, this.name, 'IN AL merges');
      eq(r.rcx, 0xffffffffffffbeefn, this.name, 'IN AX merges');
      eq(r.rax, 0xdeadbeefn, this.name, 'IN EAX zero-extends');
      eq(kvm.stats.pioExits, 6, this.name, 'PIO exits');
      check(exitCount(vcpu, o.exitNames.io) === 6, this.name, `exit count '${o.exitNames.io}' != 6 (${counted(vcpu)})`);
    },
  },
  {
    name: 'MSRs: guest and host accesses meet in the backend, intercepted or passed through',
    covers: ['MSR reads/writes with intercepts', 'segments'],
    run(backend, o) {
      const FS_AREA = 0x91000;
      const g = guest((a) => {
        sync(a); // host sets FS_BASE, SYSENTER_CS and KERNEL_GS_BASE here
        a.mov(rbx, 0x10);
        a.mov(eax, dword({ base: rbx, seg: fs })); // through the FS base the host set
        rep(a, eax);
        a.mov(ecx, MSR.FS_BASE).rdmsr();
        rep(a, eax);
        a.mov(ecx, MSR.IA32_SYSENTER_CS).rdmsr();
        rep(a, eax);
        a.mov(ecx, MSR.KERNEL_GS_BASE).rdmsr();
        rep(a, edx);
        // EFER is intercepted by every vendor: set SCE and read it back.
        a.mov(ecx, MSR.EFER).rdmsr();
        a.or(eax, 1).wrmsr();
        a.mov(eax, 0).rdmsr();
        rep(a, eax);
        a.mov(ecx, MSR.FS_BASE).mov(eax, 0x1000).mov(edx, 0x7e57).wrmsr();
        a.mov(ecx, MSR.KERNEL_GS_BASE).mov(eax, 0x2000).mov(edx, 0x1234).wrmsr();
        a.mov(ecx, MSR.IA32_SYSENTER_EIP).mov(eax, 0x5eeeeee5).mov(edx, 0).wrmsr();
        a.mov(ecx, MSR.IA32_CR_PAT).mov(eax, 0x00070406).mov(edx, 0x00070106).wrmsr();
        a.mov(eax, 0).mov(edx, 0).rdmsr();
        rep(a, eax); rep(a, edx);
        a.hlt();
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      writeU64(kvm, FS_AREA + 0x10, 0xf5f5f5f5n);
      const { out, reports } = runReporting(vcpu, () => {
        vcpu.setMsr(MSR.FS_BASE, BigInt(FS_AREA));
        vcpu.setMsr(MSR.IA32_SYSENTER_CS, 0x10n);
        vcpu.setMsr(MSR.KERNEL_GS_BASE, 0x7bcd00000000n);
      });
      halted(this.name, out);
      eq(reports[0], 0xf5f5f5f5, this.name, 'guest load through the FS base set with KVM_SET_MSRS');
      eq(reports[1], FS_AREA, this.name, 'FS_BASE set by the host, read by the guest');
      eq(reports[2], 0x10, this.name, 'SYSENTER_CS set by the host, read by the guest');
      eq(reports[3], 0x7bcd, this.name, 'KERNEL_GS_BASE[63:32] set by the host, read by the guest');
      eq(reports[4] & 0x501, 0x501, this.name, 'EFER.SCE written and EFER.LME|LMA read by the guest');
      eq(reports.slice(5).map((r) => r.toString(16)).join(','), '70406,70106', this.name, 'PAT written and read back by the guest');
      eq(vcpu.getMsr(MSR.FS_BASE), 0x7e5700001000n, this.name, 'FS_BASE through getMsr');
      eq(kvm.ops.getSegmentBase(vcpu, VcpuSreg.FS), 0x7e5700001000n, this.name, 'getSegmentBase(FS) after WRMSR FS_BASE');
      eq(vcpu.getSregs().fs.base, 0x7e5700001000n, this.name, 'KVM_GET_SREGS fs.base after WRMSR FS_BASE');
      eq(vcpu.getMsr(MSR.KERNEL_GS_BASE), 0x123400002000n, this.name, 'KERNEL_GS_BASE through getMsr');
      eq(vcpu.getMsr(MSR.IA32_SYSENTER_EIP), 0x5eeeeee5n, this.name, 'SYSENTER_EIP through getMsr');
      eq(vcpu.getMsr(MSR.EFER) & 1n, 1n, this.name, 'EFER.SCE through getMsr');
      eq(vcpu.getMsr(MSR.IA32_CR_PAT), 0x0007010600070406n, this.name, 'PAT through getMsr');
      check(exitCount(vcpu, o.exitNames.msrRead) >= 1, this.name, `no '${o.exitNames.msrRead}' exit (${counted(vcpu)})`);
      check(exitCount(vcpu, o.exitNames.msrWrite) >= 1, this.name, `no '${o.exitNames.msrWrite}' exit (EFER) (${counted(vcpu)})`);
    },
  },
  {
    name: 'unknown MSRs: RDMSR and WRMSR raise #GP(0) with its error code, at the faulting instruction',
    covers: ['MSR reads/writes with intercepts', 'event injection'],
    run(backend) {
      const g = guest((a) => {
        loadScenarioIdt(a);
        a.mov(ecx, 0x4b564dff).rdmsr(); // no such MSR: #GP(0)
        a.mov(eax, 0x77);
        rep(a, eax);
        a.mov(ecx, 0x4b564dff).mov(eax, 1).mov(edx, 0).wrmsr();
        a.mov(eax, 0x88);
        rep(a, eax);
        a.hlt();
        a.here('gp_handler');
        // With the error code pushed the frame is [error code, RIP, CS, RFLAGS, RSP, SS].
        a.mov(rax, qword(rsp, 16));
        rep(a, eax);
        a.cmp(eax, 0x18);
        const bad = a.label('bad_frame');
        a.jne(bad);
        a.pop(rax); // error code
        rep(a, eax);
        a.add(qword(rsp), 2); // resume after the 2-byte RDMSR/WRMSR
        a.iretq();
        a.bind(bad);
        a.hlt();
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      writeIdtGate(kvm, 13, g.symbols.gp_handler);
      const { out, reports } = runReporting(vcpu);
      check(reports[0] === 0x18, this.name,
        `#GP frame: CS expected at [RSP+16] (after the error code and RIP), found 0x${(reports[0] ?? -1).toString(16)} — the exception was delivered without its error code`);
      halted(this.name, out);
      eq(reports.map((r) => r.toString(16)).join(','), '18,0,77,18,0,88', this.name,
        'reports (frame CS and error code 0 for RDMSR, then for WRMSR, each followed by the next instruction)');
      eq(vcpu.getRegs().rip, BigInt(g.symbols.gp_handler), this.name, 'RIP after the final HLT');
    },
  },
  {
    name: 'segments, CPL, descriptor tables, control registers, EFER, RFLAGS and debug registers round-trip through the hooks',
    covers: ['segment round trips', 'control-register round trips', 'CPL', 'RFLAGS', 'interrupt shadow', 'NMI masking'],
    run(backend) {
      const kvm = Kvm.create({ backend });
      kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 1n << 20n });
      const vcpu = kvm.createVcpu(0);
      const ops = kvm.ops;
      const s = vcpu.getSregs();
      // Granularity-consistent values: G=1 with a page-granular limit, G=0 with a byte limit
      // below 1 MiB. (AMD derives G from the limit, svm_get_segment; Intel keeps the AR bit.)
      const ds = { ...emptySegment(), base: 0x12345000n, limit: 0xffffffff, selector: 0x2b, type: 3, present: 1, dpl: 3, db: 1, s: 1, g: 1, unusable: 0 };
      const es = { ...ds, selector: 0x3b, base: 0xb8000n, limit: 0xffff, g: 0, db: 0 };
      const fsg = { ...ds, selector: 0x43, base: 0x7f0012345000n };
      const ss = { ...ds, selector: 0x33, base: 0n };
      const cs = { ...ds, selector: 0x23, type: 0xb, base: 0n };
      const tr = { ...emptySegment(), selector: 0x40, base: 0xfffff000n, limit: 0x67, type: 0xb, present: 1, s: 0, unusable: 0 };
      const ldt = { ...emptySegment(), selector: 0x50, base: 0x8000n, limit: 0xfff, type: 2, present: 1, s: 0, unusable: 0 };
      vcpu.setSregs({
        ...s, cs, ds, es, fs: fsg, ss, tr, ldt, gdt: { size: 0x7f, address: 0x9000n }, idt: { size: 0xfff, address: 0xa000n },
        cr0: 0x31n, cr2: 0x1234n, cr3: 0x5000n, cr4: 0x620n, efer: 0x1n,
      });
      const t = vcpu.getSregs();
      eq(segString(t.ds), segString(ds), this.name, 'DS');
      eq(segString(t.es), segString(es), this.name, 'ES (byte-granular)');
      eq(segString(t.fs), segString(fsg), this.name, 'FS (64-bit base)');
      eq(segString(t.cs), segString(cs), this.name, 'CS');
      eq(segString(t.ss), segString(ss), this.name, 'SS');
      eq(segString(t.tr), segString(tr), this.name, 'TR');
      eq(segString(t.ldt), segString(ldt), this.name, 'LDTR');
      const gdt = { size: 0, address: 0n };
      const idt = { size: 0, address: 0n };
      ops.getGdt(vcpu, gdt);
      ops.getIdt(vcpu, idt);
      eq(`${t.gdt.address}/${t.gdt.size} ${gdt.address}/${gdt.size}`, '36864/127 36864/127', this.name, 'GDTR (sregs, getGdt)');
      eq(`${t.idt.address}/${t.idt.size} ${idt.address}/${idt.size}`, '40960/4095 40960/4095', this.name, 'IDTR (sregs, getIdt)');
      eq(t.cr0 & 0x31n, 0x31n, this.name, 'CR0.PE|ET|NE');
      eq(t.cr2, 0x1234n, this.name, 'CR2');
      eq(t.cr3, 0x5000n, this.name, 'CR3');
      eq(t.cr4, 0x620n, this.name, 'CR4');
      eq(t.efer, 0x1n, this.name, 'EFER');
      eq(ops.getCpl(vcpu), 3, this.name, 'CPL after loading DPL-3 CS and SS');
      const dbl = ops.getCsDbLBits(vcpu);
      eq(`${dbl.db},${dbl.l}`, '1,0', this.name, 'getCsDbLBits for a 32-bit CS');
      eq(ops.getSegmentBase(vcpu, VcpuSreg.DS), 0x12345000n, this.name, 'getSegmentBase(DS)');
      eq(ops.getSegmentBase(vcpu, VcpuSreg.FS), 0x7f0012345000n, this.name, 'getSegmentBase(FS)');
      const out = emptySegment();
      ops.getSegment(vcpu, out, VcpuSreg.ES);
      eq(segString(out), segString(es), this.name, 'getSegment(ES)');
      // Back to ring 0 with a 64-bit code segment (long mode is not required to set it).
      ops.setSegment(vcpu, { ...cs, dpl: 0, selector: 0x18, l: 1, db: 0 }, VcpuSreg.CS);
      ops.setSegment(vcpu, { ...ss, dpl: 0, selector: 0x20 }, VcpuSreg.SS);
      eq(ops.getCpl(vcpu), 0, this.name, 'CPL after loading DPL-0 CS and SS');
      const dbl2 = ops.getCsDbLBits(vcpu);
      eq(`${dbl2.db},${dbl2.l}`, '0,1', this.name, 'getCsDbLBits for a 64-bit CS');
      vcpu.setRegs({ ...vcpu.getRegs(), rflags: 0x246n });
      eq(vcpu.getRegs().rflags, 0x246n, this.name, 'RFLAGS (KVM_SET/GET_REGS)');
      eq(ops.getRflags(vcpu), 0x246n, this.name, 'getRflags');
      ops.setRflags(vcpu, 0xc03n);
      eq(ops.getRflags(vcpu), 0xc03n, this.name, 'setRflags → getRflags');
      eq(vcpu.getRegs().rflags, 0xc03n, this.name, 'setRflags → KVM_GET_REGS');
      ops.setInterruptShadow(vcpu, SHADOW_INT_STI);
      check(ops.getInterruptShadow(vcpu) !== 0, this.name, 'interrupt shadow set');
      ops.setInterruptShadow(vcpu, 0);
      eq(ops.getInterruptShadow(vcpu), 0, this.name, 'interrupt shadow cleared');
      ops.setNmiMask(vcpu, true);
      eq(ops.getNmiMask(vcpu), true, this.name, 'NMI mask set');
      ops.setNmiMask(vcpu, false);
      eq(ops.getNmiMask(vcpu), false, this.name, 'NMI mask cleared');
      ops.setDr7(vcpu, 0x455n);
      vcpu.arch.dr7 = 0x400n;
      ops.syncDirtyDebugRegs(vcpu);
      eq(vcpu.arch.dr7, 0x455n, this.name, 'setDr7 → syncDirtyDebugRegs → DR7');
      kvm.destroy();
    },
  },
  {
    name: 'hypercalls with the native instruction return KVM results in RAX; patchHypercall writes the native instruction',
    covers: ['exits and their handling', 'skipEmulatedInstruction'],
    run(backend, o) {
      const g = guest((a) => {
        a.mov(eax, 1);
        hypercall(a, o.hypercall);
        a.mov(rbx, rax);
        a.mov(eax, 0x7777);
        hypercall(a, o.hypercall);
        a.hlt();
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      const out = runUntilStop(vcpu);
      halted(this.name, out);
      const r = vcpu.getRegs();
      eq(r.rbx, 0n, this.name, 'KVM_HC_VAPIC_POLL_IRQ result');
      eq(r.rax, KVM_ENOSYS, this.name, 'unknown hypercall result (-KVM_ENOSYS)');
      eq(kvm.stats.hypercalls, 2, this.name, 'hypercalls handled');
      check(exitCount(vcpu, o.exitNames.hypercall) === 2, this.name, `exit count '${o.exitNames.hypercall}' != 2 (${counted(vcpu)})`);
      const buf = new Uint8Array(3);
      kvm.ops.patchHypercall(vcpu, buf);
      eq([...buf].join(','), HYPERCALL_BYTES[o.hypercall].join(','), this.name, 'patchHypercall bytes');
    },
  },
  {
    name: "the other vendor's hypercall instruction is patched to the native one and executed",
    covers: ['exits and their handling'],
    appliesTo: (o) => o.patchesForeignHypercall === true,
    run(backend, o) {
      const foreign = o.hypercall === 'vmcall' ? 'vmmcall' : 'vmcall';
      const g = guest((a) => {
        a.mov(eax, 1);
        a.here('call_site');
        hypercall(a, foreign);
        a.mov(rbx, rax);
        a.hlt();
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      vcpu.setRegs({ ...vcpu.getRegs(), rbx: 0xbadn });
      const out = runUntilStop(vcpu);
      halted(this.name, out);
      eq(vcpu.getRegs().rbx, 0n, this.name, 'KVM_HC_VAPIC_POLL_IRQ result through the patched instruction');
      const at = g.symbols.call_site;
      const bytes = [...kvm.slot(0)!.userspace.subarray(at, at + 3)];
      eq(bytes.join(','), HYPERCALL_BYTES[o.hypercall].join(','), this.name, 'guest memory at the call site after patching');
    },
  },
  {
    name: 'external interrupts wait for RFLAGS.IF and the STI shadow, then go through the IDT',
    covers: ['event injection', 'interrupt shadow', 'skipEmulatedInstruction'],
    run(backend) {
      const g = guest((a) => {
        loadScenarioIdt(a);
        a.cli();
        sync(a); // host queues vector 0x41 here, with IF=0
        a.mov(eax, 0x1f);
        rep(a, eax); // still IF=0: the interrupt must not arrive before this
        a.mov(eax, 0);
        a.sti();
        // CPUID exits inside the STI shadow; skipping it ends the shadow (KVM's
        // skip_emulated_instruction clears the interruptibility state), so the interrupt
        // arrives right after it, before the OUT below.
        a.cpuid();
        a.out(SHADOW_MARK, al);
        a.hlt();
        a.here('irq_handler');
        a.mov(eax, 0x41);
        rep(a, eax);
        a.iretq();
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      writeIdtGate(kvm, 0x41, g.symbols.irq_handler);
      const { out, reports, ports } = runReporting(vcpu, () => vcpu.interrupt(0x41));
      check(out.exitReason === KvmExitReason.KVM_EXIT_HLT, this.name, `final exit ${KvmExitReason[out.exitReason]}`);
      eq(reports.join(','), '31,65', this.name, 'reports (0x1f before the interrupt, then the handler)');
      const order = ports.filter((p) => p !== SYNC).map((p) => p.toString(16)).join(',');
      eq(order, [REPORT, REPORT, SHADOW_MARK].map((p) => p.toString(16)).join(','), this.name,
        'port order (the interrupt is taken after the shadowed, skipped CPUID and before the next instruction)');
      eq(kvm.stats.irqInjections, 1, this.name, 'injections');
    },
  },
  {
    name: 'an interrupt shadow set through setInterruptShadow holds off injection for exactly one instruction',
    covers: ['interrupt shadow', 'event injection'],
    run(backend) {
      const g = guest((a) => {
        loadScenarioIdt(a);
        a.sti();
        a.nop();
        // HLT exits to userspace with RIP already past it (kvm_emulate_halt skips before
        // exiting); there the host sets the shadow and queues vector 0x42.
        a.hlt();
        a.out(SHADOW_MARK, al); // in the shadow
        a.out(SHADOW_MARK + 1, al);
        a.hlt();
        a.here('irq_handler');
        a.mov(eax, 0x42);
        rep(a, eax);
        a.iretq();
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      writeIdtGate(kvm, 0x42, g.symbols.irq_handler);
      halted(this.name, runReporting(vcpu).out);
      kvm.ops.setInterruptShadow(vcpu, SHADOW_INT_STI);
      vcpu.interrupt(0x42);
      const { out, ports } = runReporting(vcpu);
      halted(this.name, out);
      const order = ports.map((p) => p.toString(16)).join(',');
      eq(order, [SHADOW_MARK, REPORT, SHADOW_MARK + 1].map((p) => p.toString(16)).join(','), this.name,
        'port order (one instruction in the shadow, then the interrupt)');
    },
  },
  {
    name: 'the interrupt window opens only when the guest can take an interrupt',
    covers: ['event windows'],
    run(backend) {
      const g = guest((a) => {
        a.cli();
        sync(a);
        a.mov(ecx, 100);
        const l = a.here('spin');
        a.dec(ecx);
        a.jnz(l);
        a.sti();
        a.nop();
        a.here('window');
        a.nop();
        a.hlt();
      });
      const { vcpu } = bootGuest(backend, g);
      let window = -1n;
      let ifAtWindow = false;
      runUntilStop(vcpu, {
        onExit(run) {
          if (run.exitReason === KvmExitReason.KVM_EXIT_IO && run.io.port === SYNC) run.requestInterruptWindow = true;
          if (run.exitReason === KvmExitReason.KVM_EXIT_IRQ_WINDOW_OPEN) {
            window = vcpu.getRegs().rip;
            ifAtWindow = run.ifFlag && run.readyForInterruptInjection;
            run.requestInterruptWindow = false;
            return true;
          }
          return false;
        },
      });
      check(window >= BigInt(g.symbols.window), this.name, `window opened at 0x${window.toString(16)}, before STI and its shadow (0x${g.symbols.window.toString(16)})`);
      check(window <= BigInt(g.symbols.window) + 1n, this.name, `window opened late, at 0x${window.toString(16)} (expected 0x${g.symbols.window.toString(16)})`);
      check(ifAtWindow, this.name, 'kvm_run.if_flag / ready_for_interrupt_injection at the window');
    },
  },
  {
    name: 'NMIs are delivered through vector 2 and blocked until IRET',
    covers: ['event injection', 'event windows', 'NMI masking'],
    run(backend) {
      const g = guest((a) => {
        loadScenarioIdt(a);
        sync(a); // #0: host queues an NMI
        a.mov(eax, 0x99);
        rep(a, eax);
        a.hlt();
        a.here('nmi_handler');
        a.mov(eax, 2);
        rep(a, eax);
        sync(a); // #1 (first NMI): host queues a second NMI, which must wait for IRET
        a.mov(eax, 3);
        rep(a, eax);
        a.iretq();
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      writeIdtGate(kvm, 2, g.symbols.nmi_handler);
      let maskedInHandler = false;
      const { out, reports } = runReporting(vcpu, (n) => {
        if (n === 0 || n === 1) vcpu.nmi();
        if (n === 1) maskedInHandler = kvm.ops.getNmiMask(vcpu);
      });
      halted(this.name, out);
      eq(reports.join(','), '2,3,2,3,153', this.name, 'reports (handler, nested NMI only after IRET, then main)');
      check(maskedInHandler, this.name, 'getNmiMask inside the NMI handler');
      eq(kvm.ops.getNmiMask(vcpu), false, this.name, 'getNmiMask after the last IRET');
    },
  },
  {
    name: 'NMI masking set through setNmiMask holds NMIs off until the guest executes IRET',
    covers: ['NMI masking', 'event windows'],
    run(backend) {
      const g = guest((a) => {
        loadScenarioIdt(a);
        sync(a); // host: NMI mask on, NMI queued
        a.mov(eax, 0x10);
        rep(a, eax); // masked: no NMI yet
        // An IRET (to the next instruction) unmasks NMIs.
        const afterIret = a.label('after_iret');
        a.mov(rax, rsp);
        a.push(0x20); // SS (the boot stub's data selector)
        a.push(rax);
        a.pushf();
        a.push(0x18); // CS (the boot stub's 64-bit code selector)
        a.lea(rax, mem(afterIret));
        a.push(rax);
        a.iretq();
        a.bind(afterIret);
        a.mov(eax, 0x11);
        rep(a, eax);
        a.hlt();
        a.here('nmi_handler');
        a.mov(eax, 2);
        rep(a, eax);
        a.iretq();
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      writeIdtGate(kvm, 2, g.symbols.nmi_handler);
      const { out, reports } = runReporting(vcpu, () => {
        kvm.ops.setNmiMask(vcpu, true);
        vcpu.nmi();
      });
      halted(this.name, out);
      eq(reports.map((r) => r.toString(16)).join(','), '10,2,11', this.name, 'reports (masked until the IRET, then the NMI)');
    },
  },
  {
    name: 'TLB: a stale translation is used until a flush hook runs, and not after (each flush hook)',
    covers: ['TLB flush staleness'],
    run(backend, o) {
      // 4 KiB paging: the PT at 0x73000 maps 0-2 MiB; the PTE for 0x100000 is entry 0x100.
      const pte = 0x73000 + 0x100 * 8;
      const flushes: [string, (kvm: Kvm, vcpu: KvmVcpu) => void][] = [
        ['tlbFlushGuest', (kvm, vcpu) => kvm.ops.tlbFlushGuest(vcpu)],
        ['tlbFlushCurrent', (kvm, vcpu) => kvm.ops.tlbFlushCurrent(vcpu)],
        ['tlbFlushAll', (kvm, vcpu) => kvm.ops.tlbFlushAll(vcpu)],
        ['tlbFlushGva', (kvm, vcpu) => kvm.ops.tlbFlushGva(vcpu, 0x100000n)],
      ];
      const g = guest((a) => {
        a.mov(rbx, 0x100000);
        const top = a.here('round');
        a.mov(rax, qword(rbx));
        rep(a, eax);
        sync(a); // host retargets the PTE without flushing
        a.mov(rax, qword(rbx));
        rep(a, eax);
        sync(a); // host runs the flush hook
        a.mov(rax, qword(rbx));
        rep(a, eax);
        sync(a); // next round
        a.jmp(top);
      }, { paging: '4k' });
      const { kvm, vcpu } = bootGuest(backend, g);
      const frames = [0x100000, 0x101000, 0x102000, 0x103000, 0x104000];
      frames.forEach((f, i) => writeU64(kvm, f, BigInt(0xa000 + i)));
      let frame = 0;
      const { reports } = runReporting(vcpu, (n) => {
        const round = Math.floor(n / 3);
        if (n % 3 === 0) writeU64(kvm, pte, (readU64(kvm, pte) & ~0xfffff000n) | BigInt(frames[++frame]));
        else if (n % 3 === 1) flushes[round][1](kvm, vcpu);
        else if (round === flushes.length - 1) return true;
        return false;
      });
      const stale = o.tlb !== 'flushed-on-entry';
      for (let i = 0; i < flushes.length; i++) {
        const [before, between, after] = reports.slice(3 * i, 3 * i + 3).map((r) => r.toString(16));
        const want = [0xa000 + i, stale ? 0xa000 + i : 0xa001 + i, 0xa001 + i].map((r) => r.toString(16));
        eq(`${before},${between},${after}`, want.join(','), this.name,
          `${flushes[i][0]}: reads before the PTE change, after it${stale ? ' (stale: tagged TLB)' : ''}, after the flush`);
      }
    },
  },
  {
    name: 'dirty logging: exactly the pages written, round after round',
    covers: ['dirty-log rounds'],
    run(backend, o) {
      const LIST = 0x90000;
      const DATA = 0x400000; // slot 1, 1 MiB, logged
      const g = guest((a) => {
        const top = a.here('round');
        a.mov(rsi, LIST);
        a.mov(rcx, qword(rsi));
        a.add(rsi, 8);
        const l = a.here('write');
        a.mov(rdi, qword(rsi));
        a.mov(byte(rdi), 1);
        a.add(rsi, 8);
        a.dec(rcx);
        a.jnz(l);
        sync(a);
        a.jmp(top);
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      kvm.setUserMemoryRegion({ slot: 1, flags: KVM_MEM_LOG_DIRTY_PAGES, guestPhysAddr: BigInt(DATA), memorySize: 1n << 20n });
      const rounds = [[0, 5, 17, 255], [1, 5, 200], [17], [5], [0, 31, 32, 33, 63, 64, 100, 101, 102], [255]];
      const setRound = (pages: number[]) => {
        writeU64(kvm, LIST, BigInt(pages.length));
        pages.forEach((p, i) => writeU64(kvm, LIST + 8 + i * 8, BigInt(DATA + p * 4096 + 8 * i)));
      };
      setRound(rounds[0]);
      kvm.getDirtyLog(1); // start clean
      let round = 0;
      runUntilStop(vcpu, {
        onExit(run) {
          if (run.exitReason !== KvmExitReason.KVM_EXIT_IO || run.io.port !== SYNC) return false;
          const got = kvm.getDirtyGfns(1).map((gfn) => Number(gfn) - DATA / 4096);
          eq(got.join(','), [...rounds[round]].sort((x, y) => x - y).join(','), 'dirty logging', `round ${round} (${o.dirtyLog})`);
          round++;
          if (round === rounds.length) return true;
          setRound(rounds[round]);
          return false;
        },
      });
      eq(round, rounds.length, this.name, 'rounds completed');
    },
  },
  {
    name: 'a failed VM entry reports the hardware reason (long mode with CS.L and CS.D set)',
    covers: ['failed entry'],
    run(backend, o) {
      const g = guest((a) => {
        sync(a);
        a.hlt();
      });
      const { vcpu } = bootGuest(backend, g);
      const out = runUntilStop(vcpu, {
        onExit(run) {
          if (run.exitReason === KvmExitReason.KVM_EXIT_IO && run.io.port === SYNC) {
            const s = vcpu.getSregs();
            vcpu.setSregs({ ...s, cs: { ...s.cs, db: 1, l: 1 } });
          }
          return false;
        },
      });
      eq(KvmExitReason[out.exitReason], 'KVM_EXIT_FAIL_ENTRY', this.name, 'exit');
      eq(out.run.failEntry.hardwareEntryFailureReason, o.failEntryReason, this.name, 'hardware_entry_failure_reason');
    },
  },
  {
    name: 'a triple fault ends in KVM_EXIT_SHUTDOWN',
    covers: ['exits and their handling'],
    run(backend) {
      const g = guest((a) => {
        a.ud2(); // the stub's IDT is empty: #UD → #GP → #DF → triple fault
        a.hlt();
      });
      const { vcpu } = bootGuest(backend, g);
      const out = runUntilStop(vcpu);
      eq(KvmExitReason[out.exitReason], 'KVM_EXIT_SHUTDOWN', this.name, 'exit');
    },
  },
  {
    name: 'registers and RFLAGS set by userspace reach the guest and come back (register cache)',
    covers: ['RFLAGS', 'register cache'],
    run(backend) {
      const g = guest((a) => {
        sync(a); // #0: host sets GPRs and RFLAGS.DF
        a.add(rax, rbx);
        a.add(rcx, rdi);
        a.pushf();
        a.pop(rdx);
        a.cld();
        a.std();
        sync(a); // #1: host reads RFLAGS.DF through getRflags
        a.cld();
        a.hlt();
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      let dfAtSync = -1n;
      let syncs = 0;
      const out = runUntilStop(vcpu, {
        onExit(run) {
          if (run.exitReason !== KvmExitReason.KVM_EXIT_IO || run.io.port !== SYNC) return false;
          if (syncs++ === 0) {
            vcpu.setRegs({ ...vcpu.getRegs(), rax: 40n, rbx: 2n, rcx: 1n << 40n, rdi: 5n, rflags: vcpu.getRegs().rflags | 0x400n });
          } else {
            dfAtSync = kvm.ops.getRflags(vcpu) & 0x400n;
          }
          return false;
        },
      });
      halted(this.name, out);
      const r = vcpu.getRegs();
      eq(r.rax, 42n, this.name, 'RAX');
      eq(r.rcx, (1n << 40n) + 5n, this.name, 'RCX');
      eq(vcpu.registerRead(KvmReg.RAX), 42n, this.name, 'kvm_register_read(RAX)');
      eq(r.rdx & 0x400n, 0x400n, this.name, 'RFLAGS.DF set by KVM_SET_REGS, seen by the guest (PUSHF)');
      eq(dfAtSync, 0x400n, this.name, 'RFLAGS.DF set by the guest (STD), seen through getRflags');
      eq(r.rflags & 0x400n, 0n, this.name, 'RFLAGS.DF cleared by the guest (CLD)');
    },
  },
  {
    name: 'skipEmulatedInstruction advances RIP by the length of each exiting instruction',
    covers: ['skipEmulatedInstruction', 'exits and their handling'],
    run(backend, o) {
      const g = guest((a) => {
        a.xor(r15, r15);
        a.mov(edx, 0x57);
        const step = () => a.inc(r15);
        a.mov(eax, 0).cpuid(); step(); // 0F A2
        a.mov(ecx, MSR.EFER).rdmsr(); step(); // 0F 32
        a.wrmsr(); step(); // 0F 30
        a.mov(edx, 0x57);
        a.out(dx, al); step(); // EE
        a.out(dx, ax); step(); // 66 EF
        a.out(0x57, eax); step(); // E7 ib
        a.in(eax, dx); step(); // ED
        a.mov(eax, 1);
        hypercall(a, o.hypercall); step(); // 0F 01 C1 / D9
        a.hlt();
        a.here('after_hlt');
      });
      const { vcpu } = bootGuest(backend, g);
      const out = runUntilStop(vcpu, { ports: { 0x57: { in: () => 0, out: () => undefined } } });
      halted(this.name, out);
      const r = vcpu.getRegs();
      eq(r.r15, 8n, this.name, 'instructions after the exits (each exactly once)');
      eq(r.rip, BigInt(g.symbols.after_hlt), this.name, 'RIP after HLT');
    },
  },
  {
    name: 'the hypervisor timer (setHvTimer) exits at its deadline, and cancelHvTimer disarms it',
    covers: ['timers'],
    appliesTo: (o) => o.hvTimer !== undefined,
    run(backend, o) {
      const g = guest((a) => {
        const top = a.here('round');
        sync(a);
        a.mov(ecx, 20_000);
        const l = a.here('spin');
        a.dec(ecx);
        a.jnz(l);
        a.jmp(top);
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      const name = o.hvTimer!.exitName;
      const setHvTimer = kvm.ops.setHvTimer!.bind(kvm.ops);
      const cancelHvTimer = kvm.ops.cancelHvTimer!.bind(kvm.ops);
      const counts: number[] = [];
      const tscs: bigint[] = [];
      let armed = { result: -1, expired: false };
      runReporting(vcpu, (n) => {
        counts.push(exitCount(vcpu, name));
        tscs.push(vcpu.getMsr(MSR.IA32_TSC));
        if (n === 1) {
          // Round 1: a deadline a quarter of the way into the spin (calibrated on round 0).
          const span = tscs[1] - tscs[0];
          armed = setHvTimer(vcpu, tscs[1] + span / 4n);
        }
        if (n === 2) {
          // Round 2: armed, then cancelled.
          setHvTimer(vcpu, tscs[2] + (tscs[1] - tscs[0]) / 4n);
          cancelHvTimer(vcpu);
        }
        if (n === 3) {
          // Round 3: a deadline far beyond the round.
          setHvTimer(vcpu, tscs[3] + (tscs[1] - tscs[0]) * 1000n);
        }
        return n === 4;
      });
      eq(armed.result, 0, this.name, 'setHvTimer result for a near deadline');
      eq(counts[0], 0, this.name, `'${name}' exits before arming`);
      eq(counts[2] - counts[1], 1, this.name, `'${name}' exits in the armed round`);
      eq(counts[3] - counts[2], 0, this.name, `'${name}' exits after cancelHvTimer`);
      eq(counts[4] - counts[3], 0, this.name, `'${name}' exits with a deadline beyond the round`);
      cancelHvTimer(vcpu);
    },
  },
];
