/**
 * AVIC (AMD APM Vol. 2 15.29): the backing page (the LAPIC's register page), the physical and
 * logical APIC ID tables, IsRunning, the doorbell — and, in running guests, the emulated
 * processor's acceleration: register reads and TPR/EOI/ICR writes without exits, CR8 through
 * the backing page's TPR, IPIs through the tables (doorbell to a running target, AVIC_INCOMPLETE_IPI
 * for a target that is not running or an IPI the hardware does not send), and AVIC_NOACCEL for the
 * rest, fault- or trap-like, with what KVM's handlers then do.
 */
import { ExitFastpathCompletion, Kvm, KvmExitReason, KvmMpState, KvmReq, KvmVcpu, KVM_EXIT_IO_OUT } from '@tsvisor/core';
import {
  Assembler, bootGuest, buildLongModeGuest, dword, eax, cr8, rax, rsi, rsp, r15, r15d, emitIdtSetup, emitIdtTable,
  idtLabels,
} from '@tsvisor/testkit';
import { SvmBackend, svmOf, svmModuleParams, VMCB_CONTROL, AVIC_ENABLE_MASK, SvmExit, VmcbCleanBit } from '@tsvisor/svm';

const ExitFastpathNone = ExitFastpathCompletion.EXIT_FASTPATH_NONE;
const APIC = 0xfee00000;
const VALID = 1n << 63n;
const RUNNING = 1n << 62n;

function avicVm() {
  svmModuleParams.avic = true;
  try {
    const kvm = Kvm.create({ backend: SvmBackend });
    kvm.createIrqchip();
    kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n });
    const vcpu = kvm.createVcpu(0);
    // The LAPIC exists once the vCPU is created; the first vcpuLoad (KVM_RUN) maps it as the backing page.
    kvm.ops.vcpuLoad(vcpu, 0);
    kvm.ops.vcpuPut(vcpu);
    return { kvm, vcpu, svm: svmOf(vcpu) };
  } finally {
    svmModuleParams.avic = false;
  }
}

interface SvmExitLog { code: number; info1: bigint; info2: bigint }

/** Every exit's EXITCODE / EXITINFO1 / EXITINFO2 as svm_handle_exit sees them. */
function logExits(kvm: Kvm, vcpu: KvmVcpu): SvmExitLog[] {
  const log: SvmExitLog[] = [];
  const ops = kvm.ops;
  const orig = ops.handleExit.bind(ops);
  ops.handleExit = (v: KvmVcpu, f: ExitFastpathCompletion) => {
    if (v === vcpu) {
      const c = svmOf(v).vmcb;
      log.push({ code: Number(c.read64(VMCB_CONTROL.EXITCODE)), info1: c.read64(VMCB_CONTROL.EXITINFO1), info2: c.read64(VMCB_CONTROL.EXITINFO2) });
    }
    return orig(v, f);
  };
  return log;
}

/** Map GPA 0xFEE00000 at the same linear address (PDPT[3] → a spare PD, 2 MiB page, PCD) and point RSI at it. */
function mapApic(a: Assembler): void {
  a.mov(eax, 0x73000 | 3);
  a.mov(dword(0x71000 + 3 * 8), eax);
  a.mov(eax, (0xfee00000 & ~0x1fffff) | 0x80 | 0x10 | 3);
  a.mov(dword(0x73000 + ((0xfee00000 >>> 21) & 0x1ff) * 8), eax);
  a.mov(rsi, APIC);
}
/** OUT 0x80 of EAX: the test reads the values the guest saw. */
function report(a: Assembler): void {
  a.out(0x80, eax);
}

/**
 * A long-mode guest with the in-kernel irqchip, AVIC enabled (avic=1, as refreshed when the
 * irqchip appears) and `vcpus` vCPUs started at the same entry.
 */
function avicGuest(body: (a: Assembler) => void, vcpus = 1, avic = true) {
  const guest = buildLongModeGuest(body);
  svmModuleParams.avic = avic;
  try {
    const { kvm, vcpu } = bootGuest(SvmBackend, guest, { memory: 4 << 20 });
    const all = [vcpu];
    for (let i = 1; i < vcpus; i++) {
      const v = kvm.createVcpu(i);
      const s = v.getSregs();
      v.setSregs({ ...s, cs: { ...s.cs, selector: guest.cs, base: BigInt(guest.cs * 16), limit: 0xffff } });
      v.setRegs({ ...v.getRegs(), rip: BigInt(guest.ip), rflags: 2n });
      all.push(v);
    }
    kvm.createIrqchip();
    for (const v of all) {
      v.setMpState(KvmMpState.RUNNABLE);
      if (avic) kvm.ops.refreshApicvExecCtrl(v);
      v.runBudget = 2_000_000;
    }
    return { kvm, vcpus: all, lapic: (v: KvmVcpu) => kvm.irqchip!.lapic(v)! };
  } finally {
    svmModuleParams.avic = false;
  }
}

/** KVM_RUN until an OUT (returns its port and EAX) or another stop (returns null and the reason). */
function runToOut(v: KvmVcpu): { port: number; value: number } | KvmExitReason {
  for (let i = 0; i < 1000; i++) {
    const run = v.runVcpu();
    if (run.exitReason === KvmExitReason.KVM_EXIT_INTR) {
      if (v.getMpState() === KvmMpState.HALTED) return run.exitReason;
      continue;
    }
    if (run.exitReason === KvmExitReason.KVM_EXIT_IO && run.io.direction === KVM_EXIT_IO_OUT) {
      return { port: run.io.port, value: new DataView(run.ioData.buffer, run.ioData.byteOffset).getUint32(0, true) };
    }
    return run.exitReason;
  }
  throw new Error('guest did not stop');
}
/** The values a guest reports on port 0x80 until it halts. */
function reports(v: KvmVcpu): number[] {
  const out: number[] = [];
  for (;;) {
    const r = runToOut(v);
    if (typeof r === 'number') {
      expect(KvmExitReason[r]).toBe('KVM_EXIT_HLT');
      return out;
    }
    out.push(r.value >>> 0);
  }
}
const count = (v: KvmVcpu, name: string) => v.exitCounts.get(name) ?? 0;

describe('AVIC: KVM side (tables, IsRunning, doorbell, exit handlers)', () => {
  test('off by default (avic=0): AVIC_ENABLE clear, posted delivery refused', () => {
    const kvm = Kvm.create({ backend: SvmBackend });
    kvm.createIrqchip();
    const vcpu = kvm.createVcpu(0);
    expect(svmOf(vcpu).vmcb.read32(VMCB_CONTROL.INT_CTL) & AVIC_ENABLE_MASK).toBe(0);
    expect(kvm.ops.deliverPostedInterrupt(vcpu, 0x40)).toBe(-1);
  });

  test('avic=1 with an in-kernel LAPIC: the backing page is the LAPIC register page; tables and APIC BAR in the VMCB', () => {
    const { kvm, vcpu, svm } = avicVm();
    const v = svm.vmcb;
    expect(v.read32(VMCB_CONTROL.INT_CTL) & AVIC_ENABLE_MASK).not.toBe(0);
    expect(v.read64(VMCB_CONTROL.AVIC_BACKING_PAGE)).toBe(BigInt(svm.avicBackingPage));
    expect(v.read64(VMCB_CONTROL.AVIC_APIC_BAR)).toBe(0xfee00000n);
    const phys = Number(v.read64(VMCB_CONTROL.AVIC_PHYSICAL_TABLE) & ~0xfffn);
    expect(Number(v.read64(VMCB_CONTROL.AVIC_PHYSICAL_TABLE) & 0xffn)).toBe(0xfe);
    const entry = kvm.hostMemory.read64(phys);
    expect(entry & VALID).toBe(VALID);
    expect(entry & ((1n << 52n) - 4096n)).toBe(BigInt(svm.avicBackingPage));
    // avic_get_backing_page_address = __pa(apic->regs): the same bytes.
    const lapic = kvm.irqchip!.lapic(vcpu)!;
    expect(kvm.hostMemory.read32(svm.avicBackingPage + 0x30)).toBe(lapic.getReg(0x30));
    lapic.setReg(0x280, 0x1234);
    expect(kvm.hostMemory.read32(svm.avicBackingPage + 0x280)).toBe(0x1234);
    // CR8 writes do not exit with AVIC (init_vmcb).
    expect(v.read32(VMCB_CONTROL.INTERCEPT_CR) & (1 << 24)).toBe(0);
  });

  test('IsRunning and the host APIC ID follow vcpuLoad/vcpuPut and blocking; the doorbell rings only for a running vCPU', () => {
    const { kvm, vcpu, svm } = avicVm();
    const phys = Number(svm.vmcb.read64(VMCB_CONTROL.AVIC_PHYSICAL_TABLE) & ~0xfffn);
    kvm.ops.vcpuLoad(vcpu, 0);
    expect(kvm.hostMemory.read64(phys) & RUNNING).toBe(RUNNING);
    expect(kvm.ops.deliverPostedInterrupt(vcpu, 0x41)).toBe(0);
    // IRR of vector 0x41: register 0x200 + 2*0x10, bit 1 — the LAPIC's own IRR.
    expect(kvm.hostMemory.read32(svm.avicBackingPage + 0x220) & 2).toBe(2);
    expect(kvm.irqchip!.lapic(vcpu)!.highestIrr()).toBe(0x41);
    expect(svm.avicDoorbells).toBe(1);
    expect(svm.hw.avic.doorbellsReceived).toBe(1);
    kvm.ops.vcpuBlocking!(vcpu);
    expect(kvm.hostMemory.read64(phys) & RUNNING).toBe(0n);
    kvm.ops.deliverPostedInterrupt(vcpu, 0x42);
    expect(svm.avicDoorbells).toBe(1);
    expect(vcpu.requests & KvmReq.EVENT).toBeTruthy();
    kvm.ops.vcpuUnblocking!(vcpu);
    kvm.ops.vcpuPut(vcpu);
    expect(kvm.hostMemory.read64(phys) & RUNNING).toBe(0n);
  });

  test('AVIC_INCOMPLETE_IPI (0x401) handler: an IPI type AVIC does not send is emulated; "not running" wakes the matching targets', () => {
    const { kvm, vcpu, svm } = avicVm();
    const v = svm.vmcb;
    v.write64(VMCB_CONTROL.EXITCODE, BigInt(SvmExit.AVIC_INCOMPLETE_IPI));
    v.write64(VMCB_CONTROL.EXITINFO1, (0x01000000n << 32n) | 0x00004500n); // INIT to APIC 1
    v.write64(VMCB_CONTROL.EXITINFO2, 0n << 32n);
    expect(kvm.ops.handleExit(vcpu, ExitFastpathNone)).toBe(1);
    expect(kvm.irqchip!.lapic(vcpu)!.getReg(0x310)).toBe(0x01000000);
    expect(vcpu.exitCounts.get('avic_incomplete_ipi')).toBe(1);
    v.write64(VMCB_CONTROL.EXITINFO1, 0x00040041n); // self, vector 0x41
    v.write64(VMCB_CONTROL.EXITINFO2, 1n << 32n); // target not running
    expect(kvm.ops.handleExit(vcpu, ExitFastpathNone)).toBe(1);
    expect(svm.avicIpiWakeups).toBe(1);
  });

  test('AVIC_NOACCEL (0x402) handler: a trap-like write is taken from the backing page into the LAPIC; LDR updates the logical ID table', () => {
    const { kvm, vcpu, svm } = avicVm();
    const v = svm.vmcb;
    kvm.hostMemory.write32(svm.avicBackingPage + 0xd0, 0x04000000); // LDR (the hardware's trap-like write): flat logical ID bit 2
    v.write64(VMCB_CONTROL.EXITCODE, BigInt(SvmExit.AVIC_UNACCELERATED_ACCESS));
    v.write64(VMCB_CONTROL.EXITINFO1, (1n << 32n) | 0xd0n);
    v.write64(VMCB_CONTROL.EXITINFO2, 0n);
    expect(kvm.ops.handleExit(vcpu, ExitFastpathNone)).toBe(1);
    expect(kvm.irqchip!.lapic(vcpu)!.getReg(0xd0)).toBe(0x04000000);
    expect(svm.avicTrapWrites).toBe(1);
    expect(vcpu.exitCounts.get('avic_unaccelerated_access')).toBe(1);
    const logical = Number(v.read64(VMCB_CONTROL.AVIC_LOGICAL_TABLE));
    expect(kvm.hostMemory.read32(logical + 2 * 4) >>> 0).toBe(((1 << 31) | 0) >>> 0);
  });
});

describe('AVIC in a running guest (the processor accelerates)', () => {
  test('register reads, TPR writes and CR8 go to the backing page without an exit', () => {
    const { vcpus: [vcpu], lapic } = avicGuest((a) => {
      mapApic(a);
      a.mov(eax, dword(rsi, 0x30)); report(a); // version
      a.mov(dword(rsi, 0x80), 0x20); // TPR
      a.mov(eax, dword(rsi, 0x80)); report(a);
      a.mov(rax, cr8); report(a);
      a.mov(eax, 3);
      a.mov(cr8, rax);
      a.mov(eax, dword(rsi, 0x80)); report(a);
      a.mov(eax, dword(rsi, 0x20)); report(a); // APIC ID
      a.hlt();
    });
    const lvr = lapic(vcpu).getReg(0x30);
    expect(reports(vcpu)).toEqual([lvr, 0x20, 2, 0x30, 0]);
    expect(count(vcpu, 'avic_unaccelerated_access')).toBe(0);
    expect(count(vcpu, 'npf')).toBeLessThan(10); // the boot stub's; none for the APIC page
    expect(count(vcpu, 'write_cr8')).toBe(0);
    // KVM's view: TPR in the LAPIC (the same page) and CR8 through V_TPR.
    expect(lapic(vcpu).getReg(0x80)).toBe(0x30);
    expect(vcpu.getSregs().cr8).toBe(3n);
  });

  test('unaccelerated registers: trap-like writes (SPIV, LDR, TDCR, TMICT) and a fault-like read (TMCCT) give the results of a run without AVIC', () => {
    const body = (a: Assembler) => {
      mapApic(a);
      a.mov(dword(rsi, 0xf0), 0x1ff); // SPIV: software enable (trap)
      a.mov(eax, dword(rsi, 0xf0)); report(a);
      a.mov(dword(rsi, 0xd0), 0x0a123456); // LDR (trap; KVM keeps bits 31:24)
      a.mov(eax, dword(rsi, 0xd0)); report(a);
      a.mov(dword(rsi, 0x3e0), 0xb); // TDCR: divide by 1 (trap)
      a.mov(dword(rsi, 0x380), 1_000_000); // TMICT (trap): KVM's LAPIC starts the timer
      a.mov(eax, dword(rsi, 0x380)); report(a);
      a.mov(eax, dword(rsi, 0x390)); report(a); // TMCCT: not held in the backing page (fault, emulated)
      a.mov(dword(rsi, 0x200), 0xffff); // IRR is read-only: a fault, emulated (ignored)
      a.mov(eax, dword(rsi, 0x200)); report(a);
      a.hlt();
    };
    const avic = avicGuest(body);
    const log = logExits(avic.kvm, avic.vcpus[0]);
    const withAvic = reports(avic.vcpus[0]);
    const plain = avicGuest(body, 1, false);
    const without = reports(plain.vcpus[0]);
    expect(count(plain.vcpus[0], 'avic_unaccelerated_access')).toBe(0);
    expect(withAvic.length).toBe(5);
    expect([withAvic[0], withAvic[1], withAvic[2], withAvic[4]]).toEqual([without[0], without[1], without[2], without[4]]);
    expect(withAvic.slice(0, 3)).toEqual([0x1ff, 0x0a000000, 1_000_000]);
    // The current count is KVM's, computed at the read: running down from the initial count.
    expect(withAvic[3]).toBeGreaterThan(0);
    expect(withAvic[3]).toBeLessThan(1_000_000);
    const noaccel = log.filter((e) => e.code === SvmExit.AVIC_UNACCELERATED_ACCESS);
    // EXITINFO1 = offset | write (bit 32): four trap-like writes, the TMCCT read and the IRR write (faults).
    expect(noaccel.map((e) => e.info1)).toEqual([0xf0n | (1n << 32n), 0xd0n | (1n << 32n), 0x3e0n | (1n << 32n),
      0x380n | (1n << 32n), 0x390n, 0x200n | (1n << 32n)]);
    expect(svmOf(avic.vcpus[0]).avicTrapWrites).toBe(4);
  });

  test('a self-IPI through ICR is accelerated; the accelerated EOI retires the in-service vector', () => {
    const g = avicGuest((a) => {
      const handler = a.label('handler');
      const t = idtLabels(a);
      mapApic(a);
      a.xor(r15, r15);
      emitIdtSetup(a, 0x40, handler, t);
      a.mov(dword(rsi, 0xf0), 0x1ff);
      a.sti();
      a.mov(dword(rsi, 0x300), 0x40040); // self, fixed, edge, vector 0x40
      a.nop();
      a.mov(eax, r15d); report(a);
      a.mov(eax, dword(rsi, 0x100 + 0x20)); report(a); // ISR word of vector 0x40 after the EOI
      a.cli();
      a.hlt();
      a.bind(handler);
      a.inc(r15);
      a.mov(eax, dword(rsi, 0x100 + 0x20)); report(a); // ISR word while in service
      a.mov(dword(rsi, 0xb0), 0); // EOI (accelerated: edge-triggered)
      a.iretq();
      emitIdtTable(a, t);
    });
    const [vcpu] = g.vcpus;
    const log = logExits(g.kvm, vcpu);
    expect(reports(vcpu)).toEqual([1, 1, 0]);
    expect(count(vcpu, 'avic_incomplete_ipi')).toBe(0);
    expect(log.filter((e) => e.code === SvmExit.AVIC_UNACCELERATED_ACCESS).length).toBe(1); // SPIV only
    expect(svmOf(vcpu).hw.avic.ipisAccelerated).toBe(1);
    expect(g.lapic(vcpu).highestIsr()).toBe(-1);
  });

  test('a level-triggered IPI is not sent by AVIC (AVIC_INCOMPLETE_IPI, invalid type): KVM sends it; its EOI is a trap-like AVIC_NOACCEL', () => {
    const g = avicGuest((a) => {
      const handler = a.label('handler');
      const t = idtLabels(a);
      mapApic(a);
      a.xor(r15, r15);
      emitIdtSetup(a, 0x50, handler, t);
      a.mov(dword(rsi, 0xf0), 0x1ff);
      a.sti();
      a.mov(dword(rsi, 0x300), 0x4c050); // self, fixed, level, assert, vector 0x50
      a.nop();
      a.mov(eax, r15d); report(a);
      a.cli();
      a.hlt();
      a.bind(handler);
      a.inc(r15);
      a.mov(dword(rsi, 0xb0), 0); // EOI of a level-triggered vector
      a.iretq();
      emitIdtTable(a, t);
    });
    const [vcpu] = g.vcpus;
    const log = logExits(g.kvm, vcpu);
    expect(reports(vcpu)).toEqual([1]);
    const ipi = log.filter((e) => e.code === SvmExit.AVIC_INCOMPLETE_IPI);
    expect(ipi).toEqual([{ code: SvmExit.AVIC_INCOMPLETE_IPI, info1: 0x4c050n, info2: 0n }]);
    const eoi = log.filter((e) => e.code === SvmExit.AVIC_UNACCELERATED_ACCESS && (e.info1 & 0xff0n) === 0xb0n);
    // Trap-like write of EOI; EXITINFO2 names the vector being retired.
    expect(eoi).toEqual([{ code: SvmExit.AVIC_UNACCELERATED_ACCESS, info1: 0xb0n | (1n << 32n), info2: 0x50n }]);
    expect(g.lapic(vcpu).highestIsr()).toBe(-1);
    expect(g.lapic(vcpu).tmrSet(0x50)).toBe(true);
  });

  /** Two vCPUs: the BSP sends vector 0x41 to APIC 1; the AP counts it in R15 and reports it on port 0x81. */
  function ipiGuest(logical = false) {
    return avicGuest((a) => {
      const handler = a.label('handler');
      const ap = a.label('ap');
      const wait = a.label('wait');
      const done = a.label('done');
      const t = idtLabels(a);
      mapApic(a);
      a.xor(r15, r15);
      emitIdtSetup(a, 0x41, handler, t);
      a.mov(dword(rsi, 0xf0), 0x1ff);
      a.mov(eax, dword(rsi, 0x20)); // APIC ID (accelerated read)
      a.shr(eax, 24);
      a.test(eax, eax);
      a.jnz(ap);
      // BSP
      if (logical) {
        a.mov(dword(rsi, 0x310), 0x02000000); // ICR high: logical (flat) destination bit 1
        a.mov(dword(rsi, 0x300), 0x841); // fixed, logical, vector 0x41
      } else {
        a.mov(dword(rsi, 0x310), 0x01000000); // ICR high: APIC 1
        a.mov(dword(rsi, 0x300), 0x41); // fixed, physical, vector 0x41
      }
      a.mov(eax, 0x5e47);
      a.out(0x82, eax);
      a.cli();
      a.hlt();
      // AP
      a.bind(ap);
      a.mov(rsp, 0x60000);
      if (logical) a.mov(dword(rsi, 0xd0), 0x02000000); // LDR: flat logical ID bit 1 (trap: KVM fills the logical table)
      a.sti();
      a.out(0x83, eax);
      a.bind(wait);
      a.test(r15, r15);
      a.jnz(done);
      a.hlt();
      a.jmp(wait);
      a.bind(done);
      a.mov(eax, r15d);
      a.out(0x81, eax);
      a.cli();
      a.hlt();
      a.bind(handler);
      a.inc(r15);
      a.mov(dword(rsi, 0xb0), 0);
      a.iretq();
      emitIdtTable(a, t);
    }, 2);
  }

  test('an IPI to a running vCPU is accelerated: IRR set in its backing page and a doorbell, no exit on the sender', () => {
    const g = ipiGuest();
    const [bsp, ap] = g.vcpus;
    expect(runToOut(ap)).toEqual({ port: 0x83, value: expect.any(Number) });
    // The AP is loaded on its own processor (in KVM_RUN between exits): IsRunning is set.
    g.kvm.ops.vcpuLoad(ap, 1);
    const log = logExits(g.kvm, bsp);
    expect(runToOut(bsp)).toEqual({ port: 0x82, value: 0x5e47 });
    expect(log.filter((e) => e.code === SvmExit.AVIC_INCOMPLETE_IPI || e.code === SvmExit.AVIC_UNACCELERATED_ACCESS)
      .map((e) => e.info1)).toEqual([0xf0n | (1n << 32n)]); // only SPIV
    expect(svmOf(bsp).hw.avic.ipisAccelerated).toBe(1);
    expect(svmOf(ap).hw.avic.doorbellsReceived).toBe(1);
    expect(g.lapic(ap).irrPending(0x41)).toBe(true);
    g.kvm.ops.vcpuPut(ap);
    expect(runToOut(ap)).toEqual({ port: 0x81, value: 1 });
  });

  test('a logical (flat) IPI goes through the logical APIC ID table KVM filled from the LDR write', () => {
    const g = ipiGuest(true);
    const [bsp, ap] = g.vcpus;
    expect(runToOut(ap)).toEqual({ port: 0x83, value: expect.any(Number) });
    const logical = Number(svmOf(ap).vmcb.read64(VMCB_CONTROL.AVIC_LOGICAL_TABLE));
    expect(g.kvm.hostMemory.read32(logical + 1 * 4) >>> 0).toBe(((1 << 31) | 1) >>> 0);
    g.kvm.ops.vcpuLoad(ap, 1);
    expect(runToOut(bsp)).toEqual({ port: 0x82, value: 0x5e47 });
    expect(count(bsp, 'avic_incomplete_ipi')).toBe(0);
    expect(svmOf(ap).hw.avic.doorbellsReceived).toBe(1);
    g.kvm.ops.vcpuPut(ap);
    expect(runToOut(ap)).toEqual({ port: 0x81, value: 1 });
  });

  test('with the CR8 write trap set, MOV CR8 still goes to the backing page TPR and then exits (0x98)', () => {
    const g = avicGuest((a) => {
      mapApic(a);
      a.mov(eax, 7);
      a.mov(cr8, rax);
      a.mov(eax, dword(rsi, 0x80)); report(a);
      a.hlt();
    });
    const [vcpu] = g.vcpus;
    const v = svmOf(vcpu).vmcb;
    v.setBit32(VMCB_CONTROL.INTERCEPT_MISC2, 16 + 8, true);
    v.markDirty(VmcbCleanBit.I);
    const log = logExits(g.kvm, vcpu);
    expect(reports(vcpu)).toEqual([0x70]);
    expect(log.filter((e) => e.code === SvmExit.CR8_WRITE_TRAP)).toEqual([{ code: SvmExit.CR8_WRITE_TRAP, info1: 7n, info2: 0n }]);
    expect(vcpu.getSregs().cr8).toBe(7n);
  });

  test('an IPI to a halted vCPU ends in AVIC_INCOMPLETE_IPI (target not running); KVM wakes the target, which takes it', () => {
    const g = ipiGuest();
    const [bsp, ap] = g.vcpus;
    expect(runToOut(ap)).toEqual({ port: 0x83, value: expect.any(Number) });
    // The AP halts: blocked, not running.
    expect(runToOut(ap)).toBe(KvmExitReason.KVM_EXIT_INTR);
    expect(ap.getMpState()).toBe(KvmMpState.HALTED);
    const log = logExits(g.kvm, bsp);
    expect(runToOut(bsp)).toEqual({ port: 0x82, value: 0x5e47 });
    // EXITINFO1 = ICR (high:low); EXITINFO2 = cause 1 (target not running) << 32 | physical ID 1.
    expect(log.filter((e) => e.code === SvmExit.AVIC_INCOMPLETE_IPI)).toEqual([
      { code: SvmExit.AVIC_INCOMPLETE_IPI, info1: (0x01000000n << 32n) | 0x41n, info2: (1n << 32n) | 1n },
    ]);
    expect(svmOf(bsp).avicIpiWakeups).toBe(1);
    expect(g.lapic(ap).irrPending(0x41)).toBe(true);
    expect(ap.requests & KvmReq.EVENT).toBeTruthy();
    expect(runToOut(ap)).toEqual({ port: 0x81, value: 1 });
  });

  test('an IPI to an APIC ID with no valid physical-table entry: AVIC_INCOMPLETE_IPI (invalid target), KVM emulates it', () => {
    const g = avicGuest((a) => {
      mapApic(a);
      a.mov(dword(rsi, 0xf0), 0x1ff);
      a.mov(dword(rsi, 0x310), 0x07000000); // APIC 7: no such vCPU
      a.mov(dword(rsi, 0x300), 0x41);
      a.mov(eax, dword(rsi, 0x300)); report(a);
      a.hlt();
    });
    const [vcpu] = g.vcpus;
    const log = logExits(g.kvm, vcpu);
    expect(reports(vcpu)).toEqual([0x41]);
    expect(log.filter((e) => e.code === SvmExit.AVIC_INCOMPLETE_IPI)).toEqual([
      { code: SvmExit.AVIC_INCOMPLETE_IPI, info1: (0x07000000n << 32n) | 0x41n, info2: (2n << 32n) | 7n },
    ]);
  });
});
