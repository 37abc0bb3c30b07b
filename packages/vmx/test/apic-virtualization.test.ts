/**
 * APIC virtualization in VMX non-root operation (SDM Vol. 3C ch. 29) through a running guest:
 * virtualized reads of the APIC-access page, TPR virtualization and TPR-below-threshold exits
 * (reason 43), EOI virtualization with the EOI-exit bitmap (45), APIC-write exits (56),
 * APIC-access exits (44) with their qualification, and MOV CR8 with a TPR shadow — each with
 * what KVM's handler then does.
 */
import { ExitFastpathCompletion, Kvm, KvmExitReason, KvmVcpu } from '@tsvisor/core';
import { F, VmxBackend, DEFAULT_VMX_PARAMS, toVmx, VcpuVmx } from '@tsvisor/vmx';
import * as D from '@tsvisor/vmx';
import { bootGuest, buildLongModeGuest, buildProtectedModeGuest, byte, dword, eax, ebx, cr8, rax, rbx, Assembler } from '@tsvisor/testkit';
import { VMX } from './helpers';

const APIC = 0xfee00000;

interface ExitLog { reason: number; qualification: bigint }

/** Record every exit's basic reason and qualification as vmx_handle_exit sees them. */
function traceExits(kvm: Kvm, vcpu: KvmVcpu): ExitLog[] {
  const log: ExitLog[] = [];
  const ops = kvm.ops;
  const orig = ops.handleExit.bind(ops);
  ops.handleExit = (v: KvmVcpu, f: ExitFastpathCompletion) => {
    const vmx = toVmx(vcpu);
    log.push({ reason: vmx.exitReason & 0xffff, qualification: vmx.vmcs.readNat(F.EXIT_QUALIFICATION) });
    return orig(v, f);
  };
  return log;
}

function apicReasons(log: ExitLog[]): ExitLog[] {
  const E = D.ExitReason;
  return log.filter((e) => [E.APIC_ACCESS, E.TPR_BELOW_THRESHOLD, E.EOI_INDUCED, E.APIC_WRITE].includes(e.reason));
}

/** A flat 32-bit guest (paging off) with an in-kernel irqchip and the APIC-access page backing GPA 0xFEE00000. */
function apicGuest(body: (a: Assembler) => void, long = false) {
  const guest = long ? buildLongModeGuest(body) : buildProtectedModeGuest(body);
  const { kvm, vcpu } = bootGuest(VMX, guest, { memory: 4 << 20 });
  kvm.createIrqchip();
  // KVM's private APIC-access memslot (kvm_alloc_apic_access_page), placed by userspace here.
  kvm.setUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: BigInt(APIC), memorySize: 4096n });
  kvm.ops.setApicAccessPageAddr!(vcpu);
  vcpu.runBudget = 2_000_000;
  const vmx = toVmx(vcpu);
  const log = traceExits(kvm, vcpu);
  const lapic = kvm.irqchip!.lapic(vcpu)!;
  const vapic = (off: number) => kvm.hostMemory.read32(vmx.virtualApicPage + off) >>> 0;
  const setVapic = (off: number, v: number) => kvm.hostMemory.write32(vmx.virtualApicPage + off, v);
  const io = (): number => {
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    return new DataView(run.ioData.buffer, run.ioData.byteOffset).getUint32(0, true);
  };
  return { kvm, vcpu, vmx, log, lapic, vapic, setVapic, io };
}

function setSecondary(vmx: VcpuVmx, set: number, clear: number): void {
  const v = vmx.vmcs;
  v.write32(F.SECONDARY_VM_EXEC_CONTROL, (v.read32(F.SECONDARY_VM_EXEC_CONTROL) | set) & ~clear);
  // Posted-interrupt processing needs virtual-interrupt delivery (SDM 26.2.1.1).
  if (clear & D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY) v.write32(F.PIN_BASED_VM_EXEC_CONTROL, v.read32(F.PIN_BASED_VM_EXEC_CONTROL) & ~D.PIN_BASED_POSTED_INTR);
}

describe('APIC virtualization (SDM ch. 29)', () => {
  const saved = VmxBackend.moduleParams;
  beforeAll(() => { VmxBackend.moduleParams = { ...DEFAULT_VMX_PARAMS, apicv: true }; });
  afterAll(() => { VmxBackend.moduleParams = saved; });

  it('APIC-register virtualization: a read of a virtualized register comes from the virtual-APIC page, without an exit', () => {
    const g = apicGuest((a) => {
      a.mov(eax, dword(APIC + 0x30)); // version
      a.out(0x80, eax);
      a.mov(eax, dword(APIC + 0x280)); // ESR
      a.out(0x80, eax);
    });
    expect(g.vmx.vmcs.readNum(F.APIC_ACCESS_ADDR)).toBe(g.kvm.memslots.gpaToHpa(APIC));
    g.setVapic(0x30, 0x12345678);
    g.setVapic(0x280, 0xcafe);
    expect(g.io()).toBe(0x12345678);
    expect(g.io()).toBe(0xcafe);
    expect(apicReasons(g.log)).toEqual([]);
  });

  it('a VTPR write below the TPR threshold exits (43, trap-like) and KVM moves the TPR into the LAPIC', () => {
    const g = apicGuest((a) => {
      a.mov(dword(APIC + 0x80), 0x31);
      a.mov(eax, dword(APIC + 0x80));
      a.out(0x80, eax);
      a.mov(dword(APIC + 0x80), 0x72); // at the threshold: no exit
      a.out(0x80, eax);
    });
    setSecondary(g.vmx, 0, D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY);
    g.kvm.ops.updateCr8Intercept!(g.vcpu, 6, 5); // TPR threshold 5
    expect(g.vmx.vmcs.read32(F.TPR_THRESHOLD)).toBe(5);
    expect(g.io()).toBe(0x31); // the instruction completed, then the exit; the guest reads its VTPR back
    expect(apicReasons(g.log)).toEqual([{ reason: D.ExitReason.TPR_BELOW_THRESHOLD, qualification: 0n }]);
    expect(g.lapic.getReg(0x80)).toBe(0x31);
    expect(g.vcpu.arch.cr8).toBe(3n);
    g.io();
    expect(apicReasons(g.log)).toHaveLength(1);
    expect(g.vapic(0x80)).toBe(0x72);
  });

  it('MOV CR8 with a TPR shadow reads and writes VTPR[7:4]; below the threshold it exits (43)', () => {
    const g = apicGuest((a) => {
      a.mov(rax, 9);
      a.mov(cr8, rax);
      a.mov(rbx, cr8);
      a.mov(eax, ebx);
      a.out(0x80, eax);
      a.mov(rax, 2);
      a.mov(cr8, rax);
      a.out(0x80, eax);
    }, true);
    setSecondary(g.vmx, 0, D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY);
    g.kvm.ops.updateCr8Intercept!(g.vcpu, 6, 4); // threshold 4
    expect(g.io()).toBe(9);
    expect(g.vapic(0x80)).toBe(0x90);
    expect(apicReasons(g.log)).toEqual([]);
    g.io();
    expect(apicReasons(g.log)).toEqual([{ reason: D.ExitReason.TPR_BELOW_THRESHOLD, qualification: 0n }]);
    expect(g.vapic(0x80)).toBe(0x20);
    expect(g.lapic.getReg(0x80)).toBe(0x20);
  });

  it('EOI of a vector in the EOI-exit bitmap: EOI virtualization, then an EOI-induced exit (45) with the vector', () => {
    const g = apicGuest((a) => {
      a.mov(dword(APIC + 0xb0), 0);
      a.out(0x80, eax);
      a.mov(dword(APIC + 0xb0), 0);
      a.out(0x80, eax);
    });
    // Vectors 0x41 and 0x22 in service (SVI 0x41); only 0x41's EOI exits.
    g.setVapic(0x100 + 16 * 2, 1 << 1);
    g.setVapic(0x100 + 16 * 1, 1 << 2);
    g.vmx.vmcs.write16(F.GUEST_INTR_STATUS, 0x4100);
    g.kvm.ops.loadEoiExitmap!(g.vcpu, [0n, 1n << 1n, 0n, 0n]);
    g.io();
    expect(apicReasons(g.log)).toEqual([{ reason: D.ExitReason.EOI_INDUCED, qualification: 0x41n }]);
    expect(g.vapic(0x100 + 16 * 2)).toBe(0); // VISR[0x41] cleared
    expect(g.vmx.vmcs.read16(F.GUEST_INTR_STATUS) >> 8).toBe(0x22); // SVI = the next in service
    expect(g.vapic(0xa0)).toBe(0x20); // VPPR
    g.io();
    expect(apicReasons(g.log)).toHaveLength(1); // 0x22's EOI is virtualized without an exit
    expect(g.vmx.vmcs.read16(F.GUEST_INTR_STATUS) >> 8).toBe(0);
  });

  it('a virtualized write to a register without emulation in the processor exits (56) with its offset; KVM writes the LAPIC', () => {
    const g = apicGuest((a) => {
      a.mov(dword(APIC + 0xd0), 0x03000000); // LDR
      a.out(0x80, eax);
      a.mov(byte(APIC + 0xe3), 0x00); // DFR bits 31:24 (cluster model): a 1-byte write
      a.out(0x80, eax);
    });
    g.setVapic(0xe0, 0xffffffff);
    g.io();
    expect(apicReasons(g.log)).toEqual([{ reason: D.ExitReason.APIC_WRITE, qualification: 0xd0n }]);
    expect(g.vapic(0xd0)).toBe(0x03000000);
    expect(g.lapic.getReg(0xd0)).toBe(0x03000000);
    g.io();
    // The qualification is the write's own offset (SDM 28.2.1); the register keeps its other bytes.
    expect(apicReasons(g.log)[1]).toEqual({ reason: D.ExitReason.APIC_WRITE, qualification: 0xe3n });
    expect(g.vapic(0xe0)).toBe(0x00ffffff);
    expect(g.lapic.getReg(0xe0) >>> 28).toBe(0);
  });

  it('ICR low with virtual-interrupt delivery: a self-IPI is virtualized (VIRR, RVI); any other IPI exits (56) for KVM to send', () => {
    const g = apicGuest((a) => {
      a.cli();
      a.mov(dword(APIC + 0x300), 0x00040051); // shorthand self, fixed, edge, vector 0x51
      a.out(0x80, eax);
      a.mov(dword(APIC + 0x310), 0); // destination APIC ID 0 (this vCPU)
      a.mov(dword(APIC + 0x300), 0x00000062); // no shorthand, fixed, vector 0x62
      a.out(0x80, eax);
    });
    g.lapic.writeRegister(0xf0, 0x1ff); // the LAPIC software-enabled, so it accepts the fixed IPI
    g.io();
    expect(apicReasons(g.log)).toEqual([]);
    expect(g.vapic(0x200 + 16 * 2) & (1 << 0x11)).toBe(1 << 0x11); // VIRR[0x51]
    expect(g.vmx.vmcs.read16(F.GUEST_INTR_STATUS) & 0xff).toBe(0x51); // RVI
    g.io();
    // ICR high has no emulation in the processor either: both writes are APIC-write exits.
    expect(apicReasons(g.log)).toEqual([
      { reason: D.ExitReason.APIC_WRITE, qualification: 0x310n },
      { reason: D.ExitReason.APIC_WRITE, qualification: 0x300n },
    ]);
    expect(g.lapic.irrPending(0x62)).toBe(true); // KVM's LAPIC sent it
  });

  it('without APIC-register virtualization, other offsets exit (44) with offset and access type; KVM emulates them on the LAPIC', () => {
    const g = apicGuest((a) => {
      a.mov(eax, dword(APIC + 0x30)); // read: type 0
      a.out(0x80, eax);
      a.mov(dword(APIC + 0xd0), 0x05000000); // write: type 1
      a.mov(eax, dword(APIC + 0x80)); // TPR: still virtualized (29.4.2)
      a.out(0x80, eax);
      a.mov(ebx, dword(APIC + 0x7e)); // not within the low 4 bytes of a register: exits
      a.out(0x80, eax);
    });
    setSecondary(g.vmx, 0, D.SECONDARY_EXEC_APIC_REGISTER_VIRT | D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY);
    g.setVapic(0x80, 0x40);
    expect(g.io()).toBe(g.lapic.getReg(0x30)); // the emulated read reached the LAPIC's version register
    expect(g.lapic.getReg(0x30)).not.toBe(0);
    expect(g.io()).toBe(0x40);
    expect(g.lapic.getReg(0xd0)).toBe(0x05000000);
    g.io();
    expect(apicReasons(g.log)).toEqual([
      { reason: D.ExitReason.APIC_ACCESS, qualification: 0x030n },
      { reason: D.ExitReason.APIC_ACCESS, qualification: 0x10d0n },
      { reason: D.ExitReason.APIC_ACCESS, qualification: 0x07en },
    ]);
  });

  it('an EOI write that exits (no TPR shadow for it to virtualize) takes KVM\'s fast path', () => {
    const g = apicGuest((a) => {
      a.mov(dword(APIC + 0xb0), 0);
      a.out(0x80, eax);
    });
    // Without "use TPR shadow" every access to the APIC-access page exits (SDM 29.4.1).
    const v = g.vmx.vmcs;
    v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) & ~D.CPU_BASED_TPR_SHADOW);
    setSecondary(g.vmx, 0, D.SECONDARY_EXEC_APIC_REGISTER_VIRT | D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY);
    g.kvm.irqchip!.lapic(g.vcpu)!.setReg(0x100 + 16 * 1, 1 << 17); // vector 0x31 in service
    g.io();
    expect(apicReasons(g.log)).toEqual([{ reason: D.ExitReason.APIC_ACCESS, qualification: 0x10b0n }]);
    expect(g.lapic.isrSet(0x31)).toBe(false);
  });
});
