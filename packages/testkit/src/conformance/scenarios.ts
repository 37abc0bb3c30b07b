/**
 * The backend conformance scenarios: behaviour every correct kvm_x86_ops backend shows
 * through core's public API, with testkit-built guests. Each scenario is a plain function
 * that throws on a violation, so the suite runs under any test runner (see suite.ts) and the
 * project can run it against deliberately broken backends.
 */
import {
  BackendClass, emptySegment, Kvm, KvmExitReason, KvmReg, KvmVcpu, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT,
  KVM_MEM_LOG_DIRTY_PAGES, MSR, VcpuSreg,
} from '@tsvisor/core';
import {
  Assembler, eax, ebx, ecx, edx, rax, rbx, rcx, rsi, rdi, al, ax, qword, dword, byte,
} from '../asm';
import { buildLongModeGuest, BootOptions, GuestImage } from '../guests/boot';
import { bootGuest, RunOutcome, runUntilStop } from '../run/runner';
import { loadScenarioIdt, writeIdtGate, writeU64, readU64 } from './guest-helpers';

/** What a backend states about itself where the vendors' manuals differ. */
export interface ConformanceOptions {
  /** The CPUID vendor string guests see by default. */
  cpuVendor: 'GenuineIntel' | 'AuthenticAMD' | string;
  /** The backend's native hypercall instruction. */
  hypercall: 'vmcall' | 'vmmcall';
  /** Exit-reason names in the backend's own vocabulary, as counted in vcpu.exitCounts. */
  exitNames: { cpuid: string; hlt: string; io: string; msrRead: string; msrWrite: string; hypercall: string };
  /** run.failEntry.hardwareEntryFailureReason for an invalid guest state. */
  failEntryReason: bigint;
  /** Dirty logging mechanism: hardware page-modification logging or write protection. */
  dirtyLog: 'pml' | 'write-protect';
}

export interface Scenario {
  name: string;
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

/** Collect 32-bit OUTs to REPORT as a list, answering SYNC with `onSync`. */
function runReporting(vcpu: KvmVcpu, onSync?: (n: number) => void, inValues: Record<number, number> = {}): { out: RunOutcome; reports: number[]; ports: number[] } {
  const reports: number[] = [];
  const ports: number[] = [];
  let syncs = 0;
  const out = runUntilStop(vcpu, {
    maxRuns: 20_000,
    onExit(run) {
      if (run.exitReason !== KvmExitReason.KVM_EXIT_IO) return false;
      const { port, size, direction } = run.io;
      ports.push(port);
      if (direction === KVM_EXIT_IO_OUT) {
        let v = 0;
        for (let b = 0; b < size; b++) v |= run.ioData[b] << (8 * b);
        if (port === REPORT) reports.push(v >>> 0);
        if (port === SYNC) onSync?.(syncs++);
      } else if (direction === KVM_EXIT_IO_IN && port in inValues) {
        for (let b = 0; b < size; b++) run.ioData[b] = (inValues[port] >>> (8 * b)) & 0xff;
        return false;
      }
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

export const SCENARIOS: Scenario[] = [
  {
    name: 'binds: every required hook present, vendor as stated',
    run(backend, o) {
      const kvm = Kvm.create({ backend });
      const vendor = kvm.backendInfo.vendor === 'intel' ? 'GenuineIntel' : 'AuthenticAMD';
      eq(vendor, o.cpuVendor, this.name, 'backend vendor');
      kvm.destroy();
    },
  },
  {
    name: 'CPUID exits are answered from the guest CPUID table, and skipped',
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
      check((vcpu.exitCounts.get(o.exitNames.cpuid) ?? 0) >= 2, this.name, `exit count '${o.exitNames.cpuid}' < 2 (${[...vcpu.exitCounts.keys()].join(', ')})`);
      check((vcpu.exitCounts.get(o.exitNames.hlt) ?? 0) === 1, this.name, `exit count '${o.exitNames.hlt}' != 1`);
    },
  },
  {
    name: 'port I/O: each size and direction, IN merging into AL/AX and zero-extending EAX',
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
      check((vcpu.exitCounts.get(o.exitNames.io) ?? 0) === 6, this.name, `exit count '${o.exitNames.io}' != 6`);
    },
  },
  {
    name: 'MSRs: guest writes reach getMsr, host writes reach the guest, unknown MSRs #GP',
    run(backend, o) {
      const g = guest((a) => {
        loadScenarioIdt(a);
        a.mov(ecx, MSR.FS_BASE).mov(eax, 0x1000).mov(edx, 0x7e57).wrmsr();
        a.mov(ecx, MSR.KERNEL_GS_BASE).mov(eax, 0x2000).mov(edx, 0x1234).wrmsr();
        a.mov(ecx, MSR.IA32_SYSENTER_CS).rdmsr();
        rep(a, eax);
        a.mov(ecx, MSR.EFER).rdmsr();
        rep(a, eax);
        a.mov(ecx, 0x4b564dff).rdmsr(); // no such MSR: #GP(0)
        a.hlt();
        const gp = a.here('gp_handler');
        a.pop(rax); // error code
        rep(a, eax);
        a.mov(eax, 13);
        rep(a, eax);
        a.hlt();
        void gp;
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      writeIdtGate(kvm, 13, g.symbols.gp_handler);
      vcpu.setMsr(MSR.IA32_SYSENTER_CS, 0x10n);
      const { out, reports } = runReporting(vcpu);
      halted(this.name, out);
      eq(vcpu.getMsr(MSR.FS_BASE), 0x7e5700001000n, this.name, 'FS_BASE through getMsr');
      eq(vcpu.getMsr(MSR.KERNEL_GS_BASE), 0x123400002000n, this.name, 'KERNEL_GS_BASE through getMsr');
      eq(reports[0], 0x10, this.name, 'SYSENTER_CS set by the host, read by the guest');
      eq(reports[1] & 0x500, 0x500, this.name, 'EFER.LME|LMA read by the guest');
      eq(reports.slice(2).join(','), '0,13', this.name, '#GP(0) delivered for an unknown MSR');
      check((vcpu.exitCounts.get(o.exitNames.msrRead) ?? 0) >= 1, this.name, `no '${o.exitNames.msrRead}' exit`);
      check((vcpu.exitCounts.get(o.exitNames.msrWrite) ?? 0) >= 1, this.name, `no '${o.exitNames.msrWrite}' exit (EFER)`);
    },
  },
  {
    name: 'segments, CPL, descriptor tables, control registers and RFLAGS round-trip through the hooks',
    run(backend) {
      const kvm = Kvm.create({ backend });
      kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 1n << 20n });
      const vcpu = kvm.createVcpu(0);
      const s = vcpu.getSregs();
      const ds = { ...emptySegment(), base: 0x12345000n, limit: 0xfffff, selector: 0x2b, type: 3, present: 1, dpl: 3, db: 1, s: 1, g: 1, unusable: 0 };
      const ss = { ...ds, selector: 0x33, base: 0n, limit: 0xffffffff };
      const cs = { ...ds, selector: 0x23, type: 0xb, base: 0n, limit: 0xffffffff };
      const tr = { ...emptySegment(), selector: 0x40, base: 0xfffff000n, limit: 0x67, type: 0xb, present: 1, s: 0, unusable: 0 };
      vcpu.setSregs({ ...s, cs, ds, ss, tr, gdt: { size: 0x7f, address: 0x9000n }, idt: { size: 0xfff, address: 0xa000n }, cr0: 0x11n });
      const t = vcpu.getSregs();
      const seg = (x: typeof ds) => `${x.selector}:${x.base}:${x.limit}:${x.type}:${x.present}:${x.dpl}:${x.db}:${x.s}:${x.g}:${x.l}`;
      eq(seg(t.ds), seg(ds), this.name, 'DS');
      eq(seg(t.cs), seg(cs), this.name, 'CS');
      eq(seg(t.tr), seg(tr), this.name, 'TR');
      eq(t.gdt.address, 0x9000n, this.name, 'GDTR base');
      eq(t.idt.size, 0xfff, this.name, 'IDTR limit');
      eq(t.cr0 & 0x11n, 0x11n, this.name, 'CR0.PE|ET');
      eq(kvm.ops.getCpl(vcpu), 3, this.name, 'CPL after loading DPL-3 CS and SS');
      eq(kvm.ops.getSegmentBase(vcpu, VcpuSreg.DS), 0x12345000n, this.name, 'getSegmentBase(DS)');
      vcpu.setRegs({ ...vcpu.getRegs(), rflags: 0x246n });
      eq(vcpu.getRegs().rflags, 0x246n, this.name, 'RFLAGS');
      eq(kvm.ops.getRflags(vcpu), 0x246n, this.name, 'getRflags');
      kvm.ops.setInterruptShadow(vcpu, 1);
      check(kvm.ops.getInterruptShadow(vcpu) !== 0, this.name, 'interrupt shadow set');
      kvm.ops.setInterruptShadow(vcpu, 0);
      eq(kvm.ops.getInterruptShadow(vcpu), 0, this.name, 'interrupt shadow cleared');
      kvm.ops.setNmiMask(vcpu, true);
      eq(kvm.ops.getNmiMask(vcpu), true, this.name, 'NMI mask set');
      kvm.ops.setNmiMask(vcpu, false);
      eq(kvm.ops.getNmiMask(vcpu), false, this.name, 'NMI mask cleared');
    },
  },
  {
    name: 'hypercalls with the native instruction return KVM results in RAX',
    run(backend, o) {
      const g = guest((a) => {
        a.mov(eax, 1);
        if (o.hypercall === 'vmcall') a.vmcall(); else a.vmmcall();
        a.mov(rbx, rax);
        a.mov(eax, 0x7777);
        if (o.hypercall === 'vmcall') a.vmcall(); else a.vmmcall();
        a.hlt();
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      const out = runUntilStop(vcpu);
      halted(this.name, out);
      const r = vcpu.getRegs();
      eq(r.rbx, 0n, this.name, 'KVM_HC_VAPIC_POLL_IRQ result');
      eq(r.rax, KVM_ENOSYS, this.name, 'unknown hypercall result (-KVM_ENOSYS)');
      eq(kvm.stats.hypercalls, 2, this.name, 'hypercalls handled');
      check((vcpu.exitCounts.get(o.exitNames.hypercall) ?? 0) === 2, this.name, `exit count '${o.exitNames.hypercall}' != 2`);
    },
  },
  {
    name: 'external interrupts wait for RFLAGS.IF and the STI shadow, then go through the IDT',
    run(backend) {
      const g = guest((a) => {
        loadScenarioIdt(a);
        a.cli();
        sync(a); // host queues vector 0x41 here, with IF=0
        a.mov(eax, 0x1f);
        rep(a, eax); // still IF=0: the interrupt must not arrive before this
        a.sti();
        a.out(SHADOW_MARK, al); // in the STI shadow: executes before the interrupt
        a.hlt();
        a.here('irq_handler');
        a.mov(eax, 0x41);
        rep(a, eax);
        a.iretq();
      });
      const { kvm, vcpu } = bootGuest(backend, g);
      writeIdtGate(kvm, 0x41, g.symbols.irq_handler);
      const { out, reports, ports } = runReporting(vcpu, () => vcpu.interrupt(0x41));
      halted(this.name, out);
      eq(reports.join(','), '31,65', this.name, 'reports (0x1f before the interrupt, then the handler)');
      const order = ports.filter((p) => p !== SYNC).map((p) => p.toString(16)).join(',');
      eq(order, [REPORT, SHADOW_MARK, REPORT].map((p) => p.toString(16)).join(','), this.name, 'port order (STI shadow)');
      eq(kvm.stats.irqInjections, 1, this.name, 'injections');
    },
  },
  {
    name: 'the interrupt window opens only when the guest can take an interrupt',
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
      check(ifAtWindow, this.name, 'kvm_run.if_flag / ready_for_interrupt_injection at the window');
    },
  },
  {
    name: 'NMIs are delivered through vector 2 and blocked until IRET',
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
    },
  },
  {
    name: 'TLB: a stale translation is used until the flush hook runs, and not after',
    run(backend) {
      // 4 KiB paging: the PT at 0x73000 maps 0-2 MiB; PTE for 0x100000 is entry 0x100.
      const pte = 0x73000 + 0x100 * 8;
      const g = guest((a) => {
        a.mov(rbx, 0x100000);
        a.mov(rax, qword(rbx));
        rep(a, eax);
        sync(a); // host retargets the PTE without flushing
        a.mov(rax, qword(rbx));
        rep(a, eax);
        sync(a); // host runs the flush hook
        a.mov(rax, qword(rbx));
        rep(a, eax);
        a.hlt();
      }, { paging: '4k' });
      const { kvm, vcpu } = bootGuest(backend, g);
      writeU64(kvm, 0x100000, 0xaaaan);
      writeU64(kvm, 0x101000, 0xbbbbn);
      const { out, reports } = runReporting(vcpu, (n) => {
        if (n === 0) writeU64(kvm, pte, (readU64(kvm, pte) & ~0xfffff000n) | 0x101000n);
        if (n === 1) kvm.ops.tlbFlushGuest(vcpu);
      });
      halted(this.name, out);
      eq(reports.map((r) => r.toString(16)).join(','), 'aaaa,aaaa,bbbb', this.name, 'reads before, between and after');
    },
  },
  {
    name: 'dirty logging: exactly the pages written, round after round',
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
      const rounds = [[0, 5, 17, 255], [1, 5, 200], [17], [0, 31, 32, 33, 63, 64, 100, 101, 102]];
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
    name: 'registers set by userspace reach the guest and come back (register cache)',
    run(backend) {
      const g = guest((a) => {
        sync(a);
        a.add(rax, rbx);
        a.add(rcx, rdi);
        a.hlt();
      });
      const { vcpu } = bootGuest(backend, g);
      const out = runUntilStop(vcpu, {
        onExit(run) {
          if (run.exitReason === KvmExitReason.KVM_EXIT_IO && run.io.port === SYNC) {
            vcpu.setRegs({ ...vcpu.getRegs(), rax: 40n, rbx: 2n, rcx: 1n << 40n, rdi: 5n });
          }
          return false;
        },
      });
      halted(this.name, out);
      const r = vcpu.getRegs();
      eq(r.rax, 42n, this.name, 'RAX');
      eq(r.rcx, (1n << 40n) + 5n, this.name, 'RCX');
      eq(vcpu.registerRead(KvmReg.RAX), 42n, this.name, 'kvm_register_read(RAX)');
    },
  },
];
