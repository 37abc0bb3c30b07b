/** AVIC (APM 15.29): backing page, physical/logical APIC ID tables, IsRunning, doorbell, AVIC exits. */
import { ExitFastpathCompletion, Kvm, KvmReq } from '@tsvisor/core';
import { SvmBackend, svmOf, svmModuleParams, VMCB_CONTROL, AVIC_ENABLE_MASK, SvmExit } from '@tsvisor/svm';

const ExitFastpathNone = ExitFastpathCompletion.EXIT_FASTPATH_NONE;

function avicVm() {
  svmModuleParams.avic = true;
  try {
    const kvm = Kvm.create({ backend: SvmBackend });
    kvm.createIrqchip();
    kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n });
    const vcpu = kvm.createVcpu(0);
    return { kvm, vcpu, svm: svmOf(vcpu) };
  } finally {
    svmModuleParams.avic = false;
  }
}

const VALID = 1n << 63n;
const RUNNING = 1n << 62n;

describe('AVIC', () => {
  test('off by default (avic=0): AVIC_ENABLE clear, posted delivery refused', () => {
    const kvm = Kvm.create({ backend: SvmBackend });
    kvm.createIrqchip();
    const vcpu = kvm.createVcpu(0);
    expect(svmOf(vcpu).vmcb.read32(VMCB_CONTROL.INT_CTL) & AVIC_ENABLE_MASK).toBe(0);
    expect(kvm.ops.deliverPostedInterrupt(vcpu, 0x40)).toBe(-1);
  });

  test('with avic=1 and an in-kernel LAPIC: backing page, tables and APIC BAR in the VMCB; a valid physical-ID entry', () => {
    const { kvm, svm } = avicVm();
    const v = svm.vmcb;
    expect(v.read32(VMCB_CONTROL.INT_CTL) & AVIC_ENABLE_MASK).not.toBe(0);
    expect(v.read64(VMCB_CONTROL.AVIC_BACKING_PAGE)).toBe(BigInt(svm.avicBackingPage));
    expect(v.read64(VMCB_CONTROL.AVIC_APIC_BAR)).toBe(0xfee00000n);
    const phys = Number(v.read64(VMCB_CONTROL.AVIC_PHYSICAL_TABLE) & ~0xfffn);
    expect(Number(v.read64(VMCB_CONTROL.AVIC_PHYSICAL_TABLE) & 0xffn)).toBe(0xfe);
    const entry = kvm.hostMemory.read64(phys);
    expect(entry & VALID).toBe(VALID);
    expect(entry & ((1n << 52n) - 4096n)).toBe(BigInt(svm.avicBackingPage));
  });

  test('IsRunning follows vcpuLoad/vcpuPut and blocking; the doorbell rings only for a running vCPU', () => {
    const { kvm, vcpu, svm } = avicVm();
    const phys = Number(svm.vmcb.read64(VMCB_CONTROL.AVIC_PHYSICAL_TABLE) & ~0xfffn);
    kvm.ops.vcpuLoad(vcpu, 0);
    expect(kvm.hostMemory.read64(phys) & RUNNING).toBe(RUNNING);
    expect(kvm.ops.deliverPostedInterrupt(vcpu, 0x41)).toBe(0);
    // IRR of vector 0x41: register 0x200 + 2*0x10, bit 1.
    expect(kvm.hostMemory.read32(svm.avicBackingPage + 0x220) & 2).toBe(2);
    expect(svm.avicDoorbells).toBe(1);
    expect(vcpu.cpu.kick).toBe(true);
    vcpu.cpu.kick = false;
    kvm.ops.vcpuBlocking!(vcpu);
    expect(kvm.hostMemory.read64(phys) & RUNNING).toBe(0n);
    kvm.ops.deliverPostedInterrupt(vcpu, 0x42);
    expect(svm.avicDoorbells).toBe(1);
    expect(vcpu.requests & KvmReq.EVENT).toBeTruthy();
    kvm.ops.vcpuUnblocking!(vcpu);
    kvm.ops.vcpuPut(vcpu);
    expect(kvm.hostMemory.read64(phys) & RUNNING).toBe(0n);
  });

  test('AVIC_INCOMPLETE_IPI (0x401) with an unsupported IPI type: KVM writes the ICR itself', () => {
    const { kvm, vcpu, svm } = avicVm();
    const v = svm.vmcb;
    v.write64(VMCB_CONTROL.EXITCODE, BigInt(SvmExit.AVIC_INCOMPLETE_IPI));
    v.write64(VMCB_CONTROL.EXITINFO1, (0x01000000n << 32n) | 0x000c4500n); // INIT to APIC 1 (dest in ICR2)
    v.write64(VMCB_CONTROL.EXITINFO2, 0n << 32n);
    expect(kvm.ops.handleExit(vcpu, ExitFastpathNone)).toBe(1);
    expect(kvm.irqchip!.lapic(vcpu)!.getReg(0x310)).toBe(0x01000000);
    expect(vcpu.exitCounts.get('avic_incomplete_ipi')).toBe(1);
    v.write64(VMCB_CONTROL.EXITINFO2, 1n << 32n); // target not running
    expect(kvm.ops.handleExit(vcpu, ExitFastpathNone)).toBe(1);
    expect(svm.avicIpiWakeups).toBe(1);
  });

  test('AVIC_NOACCEL (0x402): a trap-like write is taken from the backing page into the LAPIC', () => {
    const { kvm, vcpu, svm } = avicVm();
    const v = svm.vmcb;
    kvm.hostMemory.write32(svm.avicBackingPage + 0xd0, 0x05000000); // LDR
    v.write64(VMCB_CONTROL.EXITCODE, BigInt(SvmExit.AVIC_UNACCELERATED_ACCESS));
    v.write64(VMCB_CONTROL.EXITINFO1, (1n << 32n) | 0xd0n);
    v.write64(VMCB_CONTROL.EXITINFO2, 0n);
    expect(kvm.ops.handleExit(vcpu, ExitFastpathNone)).toBe(1);
    expect(kvm.irqchip!.lapic(vcpu)!.getReg(0xd0)).toBe(0x05000000);
    expect(svm.avicTrapWrites).toBe(1);
    expect(vcpu.exitCounts.get('avic_unaccelerated_access')).toBe(1);
  });
});
