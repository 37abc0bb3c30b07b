/**
 * AVIC, AMD's APIC virtualization (AMD APM Vol. 2 15.29): a per-vCPU APIC backing page, a
 * per-VM physical APIC ID table (one 64-bit entry per vCPU: backing page address, IsRunning,
 * valid) and logical APIC ID table (one 32-bit entry per logical ID), the doorbell that makes
 * a running vCPU's processor look at its IRR, and two exits: AVIC_INCOMPLETE_IPI (0x401) when
 * an IPI could not be completed by hardware, and AVIC_NOACCEL (0x402) for an APIC access the
 * hardware does not accelerate.
 *
 * AVIC needs an in-kernel LAPIC (KVM_CREATE_IRQCHIP) and the `avic` module parameter, as in
 * KVM. The emulated processor does not accelerate APIC accesses itself, so with AVIC active
 * every access is "unaccelerated" and reaches these handlers; the tables, the IsRunning
 * protocol and the doorbell are kept exactly as the hardware expects them.
 */
import { Kvm, KvmVcpu, KvmReq, kvmEmulateInstruction } from '@tsvisor/core';
import { AVIC_ENABLE_MASK, VMCB_CONTROL, VmcbCleanBit } from './vmcb/layout';
import { svmOf, kvmSvmOf, VcpuSvm } from './vcpu-svm';

/** Physical APIC ID table entry (APM Figure 15-25). */
export const AVIC_PHYSICAL_ID_ENTRY_HOST_PHYSICAL_ID_MASK = 0xffn;
export const AVIC_PHYSICAL_ID_ENTRY_BACKING_PAGE_MASK = ((1n << 52n) - 1n) & ~0xfffn;
export const AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK = 1n << 62n;
export const AVIC_PHYSICAL_ID_ENTRY_VALID_MASK = 1n << 63n;
/** Logical APIC ID table entry: guest physical APIC ID 7:0, valid bit 31. */
export const AVIC_LOGICAL_ID_ENTRY_VALID_MASK = 1 << 31;
export const AVIC_MAX_PHYSICAL_ID = 0xfe;
/** MSR_AMD64_SVM_AVIC_DOORBELL. */
export const MSR_AMD64_SVM_AVIC_DOORBELL = 0xc001011b;

/** AVIC_INCOMPLETE_IPI failure causes (EXITINFO2[63:32], APM Table 15-24). */
export enum AvicIpiFailure {
  INVALID_INT_TYPE = 0,
  TARGET_NOT_RUNNING = 1,
  INVALID_TARGET = 2,
  INVALID_BACKING_PAGE = 3,
}

/** APIC registers whose unaccelerated write is a trap (after the write), APM 15.29.3.1. */
const TRAP_OFFSETS = new Set([0x20 /* ID */, 0xb0 /* EOI */, 0xc0 /* RRR */, 0xd0 /* LDR */, 0xe0 /* DFR */,
  0xf0 /* SPIV */, 0x280 /* ESR */, 0x300 /* ICR */, 0x320, 0x330, 0x340, 0x350, 0x360, 0x370 /* LVTs */,
  0x380 /* TMICT */, 0x3e0 /* TDCR */]);

/** Per-VM AVIC tables (kvm_svm's avic_physical_id_table_page / avic_logical_id_table_page). */
export class AvicTables {
  constructor(readonly kvm: Kvm, readonly physicalTable: number, readonly logicalTable: number) {}
  static alloc(kvm: Kvm): AvicTables {
    return new AvicTables(kvm, kvm.hostMemory.allocPages(1, 'avic physical id table'), kvm.hostMemory.allocPages(1, 'avic logical id table'));
  }
  physEntryAddr(apicId: number): number {
    return this.physicalTable + apicId * 8;
  }
  readPhys(apicId: number): bigint {
    return this.kvm.hostMemory.read64(this.physEntryAddr(apicId));
  }
  writePhys(apicId: number, v: bigint): void {
    this.kvm.hostMemory.write64(this.physEntryAddr(apicId), v);
  }
  setLogical(logicalIndex: number, physId: number, valid: boolean): void {
    this.kvm.hostMemory.write32(this.logicalTable + logicalIndex * 4, valid ? (physId & 0xff) | AVIC_LOGICAL_ID_ENTRY_VALID_MASK : 0);
  }
}

const tablesByVm = new WeakMap<Kvm, AvicTables>();

/** Is AVIC in use for this vCPU (module parameter, in-kernel LAPIC, not inhibited)? */
export function avicActive(vcpu: KvmVcpu): boolean {
  return (svmOf(vcpu).vmcb.read32(VMCB_CONTROL.INT_CTL) & AVIC_ENABLE_MASK) !== 0;
}

export function avicTables(kvm: Kvm): AvicTables {
  let t = tablesByVm.get(kvm);
  if (!t) {
    t = AvicTables.alloc(kvm);
    tablesByVm.set(kvm, t);
  }
  return t;
}

/** avic_init_vcpu + avic_init_vmcb: backing page, table pointers, APIC BAR, and this vCPU's physical-ID entry. */
export function avicInitVcpu(vcpu: KvmVcpu, svm: VcpuSvm): void {
  kvmSvmOf(vcpu.kvm);
  const tables = avicTables(vcpu.kvm);
  if (!svm.avicBackingPage) svm.avicBackingPage = vcpu.kvm.hostMemory.allocPages(1, `avic backing page vcpu${vcpu.vcpuId}`);
  const v = svm.vmcb;
  v.write64(VMCB_CONTROL.AVIC_BACKING_PAGE, BigInt(svm.avicBackingPage));
  v.write64(VMCB_CONTROL.AVIC_LOGICAL_TABLE, BigInt(tables.logicalTable));
  v.write64(VMCB_CONTROL.AVIC_PHYSICAL_TABLE, BigInt(tables.physicalTable) | BigInt(AVIC_MAX_PHYSICAL_ID));
  v.write64(VMCB_CONTROL.AVIC_APIC_BAR, vcpu.arch.apicBase & ~0xfffn);
  v.markDirty(VmcbCleanBit.AVIC);
  tables.writePhys(vcpu.vcpuId, BigInt(svm.avicBackingPage) | AVIC_PHYSICAL_ID_ENTRY_VALID_MASK);
}

/** avic_vcpu_load / avic_vcpu_put / blocking: the IsRunning bit tells senders whether a doorbell suffices. */
export function avicSetRunning(vcpu: KvmVcpu, running: boolean): void {
  if (!avicActive(vcpu)) return;
  const t = avicTables(vcpu.kvm);
  const e = t.readPhys(vcpu.vcpuId);
  t.writePhys(vcpu.vcpuId, running ? e | AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK : e & ~AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK);
}

/**
 * svm_deliver_avic_intr: set the vector in the backing page's IRR; a running target gets the
 * doorbell (its processor stops at the next boundary and re-evaluates), a blocked one is woken.
 * Returns -1 when AVIC is not active, so core injects through EVENTINJ instead.
 */
export function avicDeliverInterrupt(vcpu: KvmVcpu, vector: number): number {
  if (!avicActive(vcpu)) return -1;
  const svm = svmOf(vcpu);
  const irr = svm.avicBackingPage + 0x200 + (vector >>> 5) * 0x10;
  const host = vcpu.kvm.hostMemory;
  host.write32(irr, host.read32(irr) | (1 << (vector & 31)));
  vcpu.makeRequest(KvmReq.EVENT);
  const running = (avicTables(vcpu.kvm).readPhys(vcpu.vcpuId) & AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK) !== 0n;
  if (running) {
    svm.avicDoorbells++;
    vcpu.cpu.kick = true;
  }
  return 0;
}

/** avic_incomplete_ipi_interception: EXITINFO1 = ICR (high:low), EXITINFO2 = cause (63:32) and table index (7:0). */
export function avicIncompleteIpiInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const info1 = svm.vmcb.read64(VMCB_CONTROL.EXITINFO1);
  const info2 = svm.vmcb.read64(VMCB_CONTROL.EXITINFO2);
  const icrl = Number(info1 & 0xffffffffn);
  const icrh = Number(info1 >> 32n);
  const cause = Number(info2 >> 32n);
  const lapic = vcpu.kvm.irqchip?.lapic(vcpu);
  switch (cause) {
    case AvicIpiFailure.INVALID_INT_TYPE:
      // The hardware does not send this IPI type (e.g. NMI, INIT, SIPI): KVM writes the ICR itself.
      if (lapic) {
        lapic.writeRegister(0x310, icrh);
        lapic.writeRegister(0x300, icrl);
      }
      return 1;
    case AvicIpiFailure.TARGET_NOT_RUNNING:
      // The IRR bits are set; wake the targets that are not running.
      for (const v of vcpu.kvm.vcpus) if (v !== vcpu) v.makeRequest(KvmReq.EVENT);
      svm.avicIpiWakeups++;
      return 1;
    default:
      // Invalid target or backing page: a KVM bug in programming the tables; the guest continues.
      vcpu.kvm.trace('kvm_avic_incomplete_ipi', vcpu, () => `cause ${cause} icr 0x${icrh.toString(16)}:${icrl.toString(16)}`);
      return 1;
  }
}

/**
 * avic_unaccelerated_access_interception: EXITINFO1[11:4] the register offset, bit 32 write;
 * trap-like registers are written from the backing page, fault-like ones are emulated.
 */
export function avicUnacceleratedAccessInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const info1 = svm.vmcb.read64(VMCB_CONTROL.EXITINFO1);
  const offset = Number(info1 & 0xff0n);
  const write = ((info1 >> 32n) & 1n) === 1n;
  if (write && TRAP_OFFSETS.has(offset)) {
    const lapic = vcpu.kvm.irqchip?.lapic(vcpu);
    const value = vcpu.kvm.hostMemory.read32(svm.avicBackingPage + offset);
    lapic?.writeRegister(offset, value);
    svm.avicTrapWrites++;
    return 1;
  }
  return kvmEmulateInstruction(vcpu);
}
