/**
 * AVIC, AMD's APIC virtualization (AMD APM Vol. 2 15.29), KVM's side (arch/x86/kvm/svm/avic.c):
 * a per-vCPU APIC backing page, a per-VM physical APIC ID table (one 64-bit entry per vCPU:
 * backing page address, host physical APIC ID, IsRunning, valid) and logical APIC ID table (one
 * 32-bit entry per logical ID), the doorbell, and the handlers of the two exits:
 * AVIC_INCOMPLETE_IPI (0x401) and AVIC_NOACCEL (0x402). The processor side — which accesses are
 * accelerated, how IPIs go through the tables — is the emulated hardware in avic-hardware.ts.
 *
 * As in KVM, the backing page is the in-kernel LAPIC's own register page (apic->regs), so what
 * the hardware reads and writes there is the LAPIC core's irqchip works with. AVIC needs an
 * in-kernel LAPIC (KVM_CREATE_IRQCHIP) and the `avic` module parameter.
 */
import {
  Kvm, KvmVcpu, KvmReq, kvmEmulateInstruction, APIC_DFR, APIC_DFR_FLAT, APIC_LDR, APIC_RRR, APIC_ICR, APIC_ICR2,
  APIC_SHORT_MASK, APIC_DEST_LOGICAL,
} from '@tsvisor/core';
import { AVIC_ENABLE_MASK, VMCB_CONTROL, VmcbCleanBit } from './vmcb/layout';
import { svmOf, kvmSvmOf, VcpuSvm } from './vcpu-svm';
import {
  AvicIpiFailure, avicDoorbells, AVIC_LOGICAL_ID_ENTRY_GUEST_PHYSICAL_ID_MASK, AVIC_LOGICAL_ID_ENTRY_VALID_MASK,
  AVIC_PHYSICAL_ID_ENTRY_BACKING_PAGE_MASK, AVIC_PHYSICAL_ID_ENTRY_HOST_PHYSICAL_ID_MASK,
  AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK, AVIC_PHYSICAL_ID_ENTRY_VALID_MASK, AVIC_UNACCEL_ACCESS_OFFSET_MASK,
} from './avic-hardware';

export {
  AvicIpiFailure, AVIC_PHYSICAL_ID_ENTRY_HOST_PHYSICAL_ID_MASK, AVIC_PHYSICAL_ID_ENTRY_BACKING_PAGE_MASK,
  AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK, AVIC_PHYSICAL_ID_ENTRY_VALID_MASK, AVIC_LOGICAL_ID_ENTRY_VALID_MASK,
};
export const AVIC_MAX_PHYSICAL_ID = 0xfe;
/** MSR_AMD64_SVM_AVIC_DOORBELL. */
export const MSR_AMD64_SVM_AVIC_DOORBELL = 0xc001011b;

/** Registers whose unaccelerated write is a trap (after the write): KVM's is_avic_unaccelerated_access_trap. */
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
  readLogical(index: number): number {
    return this.kvm.hostMemory.read32(this.logicalTable + index * 4);
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

/**
 * avic_init_backing_page: the backing page is the LAPIC's register page. Core creates the LAPIC
 * after the vendor's first reset, so this runs again at vcpuLoad until the LAPIC exists.
 * Returns false while there is no LAPIC yet.
 */
function avicInitBackingPage(vcpu: KvmVcpu, svm: VcpuSvm): boolean {
  const lapic = vcpu.kvm.irqchip?.lapic(vcpu);
  if (!lapic) return false;
  if (svm.avicBackingRegs === lapic.regs) return true;
  const host = vcpu.kvm.hostMemory;
  if (svm.avicBackingPage) host.unmap(svm.avicBackingPage);
  svm.avicBackingPage = host.map(new Uint8Array(lapic.regs.buffer, lapic.regs.byteOffset, 4096), `avic backing page (apic->regs) vcpu${vcpu.vcpuId}`);
  svm.avicBackingRegs = lapic.regs;
  const tables = avicTables(vcpu.kvm);
  const old = tables.readPhys(vcpu.vcpuId);
  tables.writePhys(vcpu.vcpuId, BigInt(svm.avicBackingPage) | AVIC_PHYSICAL_ID_ENTRY_VALID_MASK |
    (old & (AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK | AVIC_PHYSICAL_ID_ENTRY_HOST_PHYSICAL_ID_MASK)));
  svm.vmcb.write64(VMCB_CONTROL.AVIC_BACKING_PAGE, BigInt(svm.avicBackingPage));
  svm.vmcb.markDirty(VmcbCleanBit.AVIC);
  svm.avicDfrReg = APIC_DFR_FLAT * 0x10000000 + 0x0fffffff;
  svm.avicLdrReg = 0;
  return true;
}

/** avic_init_vcpu + avic_init_vmcb: backing page, table pointers, APIC BAR, the doorbell wiring. */
export function avicInitVcpu(vcpu: KvmVcpu, svm: VcpuSvm): void {
  kvmSvmOf(vcpu.kvm);
  const tables = avicTables(vcpu.kvm);
  const v = svm.vmcb;
  v.write64(VMCB_CONTROL.AVIC_LOGICAL_TABLE, BigInt(tables.logicalTable));
  v.write64(VMCB_CONTROL.AVIC_PHYSICAL_TABLE, BigInt(tables.physicalTable) | BigInt(AVIC_MAX_PHYSICAL_ID));
  v.write64(VMCB_CONTROL.AVIC_APIC_BAR, vcpu.arch.apicBase & ~0xfffn);
  v.markDirty(VmcbCleanBit.AVIC);
  // Each vCPU runs on its own emulated processor; its host physical APIC ID is the vCPU id.
  const hw = svm.hw.avic;
  avicDoorbells(vcpu.kvm.hostMemory).set(hostApicId(vcpu), hw);
  hw.onInterruptPending = () => vcpu.makeRequest(KvmReq.EVENT);
  avicInitBackingPage(vcpu, svm);
}

function hostApicId(vcpu: KvmVcpu): number {
  return vcpu.vcpuId & 0xff;
}

/**
 * avic_vcpu_load / avic_vcpu_put / blocking: the physical-ID entry names the host processor and
 * carries IsRunning, which tells a sender whether a doorbell suffices.
 */
export function avicSetRunning(vcpu: KvmVcpu, running: boolean): void {
  if (!avicActive(vcpu)) return;
  const svm = svmOf(vcpu);
  if (running) avicInitBackingPage(vcpu, svm);
  const t = avicTables(vcpu.kvm);
  let e = t.readPhys(vcpu.vcpuId) & ~AVIC_PHYSICAL_ID_ENTRY_HOST_PHYSICAL_ID_MASK;
  e |= BigInt(hostApicId(vcpu));
  t.writePhys(vcpu.vcpuId, running ? e | AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK : e & ~AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK);
}

/**
 * svm_deliver_avic_intr: set the vector in the backing page's IRR; a running target gets the
 * doorbell (MSR_AMD64_SVM_AVIC_DOORBELL at its host APIC ID), a blocked one is woken.
 * Returns -1 when AVIC is not active, so core injects through EVENTINJ instead.
 */
export function avicDeliverInterrupt(vcpu: KvmVcpu, vector: number): number {
  if (!avicActive(vcpu)) return -1;
  const svm = svmOf(vcpu);
  if (!avicInitBackingPage(vcpu, svm)) return -1;
  const irr = svm.avicBackingPage + 0x200 + (vector >>> 5) * 0x10;
  const host = vcpu.kvm.hostMemory;
  host.write32(irr, host.read32(irr) | (1 << (vector & 31)));
  vcpu.makeRequest(KvmReq.EVENT);
  const e = avicTables(vcpu.kvm).readPhys(vcpu.vcpuId);
  if ((e & AVIC_PHYSICAL_ID_ENTRY_IS_RUNNING_MASK) !== 0n) {
    svm.avicDoorbells++;
    avicDoorbells(host).get(Number(e & AVIC_PHYSICAL_ID_ENTRY_HOST_PHYSICAL_ID_MASK))?.doorbell();
  }
  return 0;
}

/**
 * avic_kick_target_vcpus: the hardware already set the IRR bits of the targets that were not
 * running; make each matching vCPU evaluate them (svm_complete_interrupt_delivery → wake up).
 */
function avicKickTargetVcpus(vcpu: KvmVcpu, icrl: number, icrh: number): number {
  const chip = vcpu.kvm.irqchip;
  const source = chip?.lapic(vcpu);
  if (!chip || !source) return 0;
  const dest = source.x2apicMode ? icrh >>> 0 : (icrh >>> 24) & 0xff;
  let kicked = 0;
  for (const v of vcpu.kvm.vcpus) {
    const target = chip.lapic(v);
    if (target && target.matchDest(source, icrl & APIC_SHORT_MASK, dest, (icrl & APIC_DEST_LOGICAL) !== 0)) {
      v.makeRequest(KvmReq.EVENT);
      kicked++;
    }
  }
  return kicked;
}

/**
 * avic_incomplete_ipi_interception: EXITINFO1 = ICR (high:low), EXITINFO2 = cause (63:32) and
 * table index (8:0). The exit is a trap: the ICR holds the value and RIP is past the store.
 */
export function avicIncompleteIpiInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const info1 = svm.vmcb.read64(VMCB_CONTROL.EXITINFO1);
  const info2 = svm.vmcb.read64(VMCB_CONTROL.EXITINFO2);
  const icrl = Number(info1 & 0xffffffffn);
  const icrh = Number(info1 >> 32n);
  const cause = Number(info2 >> 32n);
  const index = Number(info2 & 0x1ffn);
  vcpu.kvm.trace('kvm_avic_incomplete_ipi', vcpu, () => `icr 0x${icrh.toString(16)}:${icrl.toString(16)} id ${cause} index ${index}`);
  const lapic = vcpu.kvm.irqchip?.lapic(vcpu);
  switch (cause) {
    case AvicIpiFailure.INVALID_TARGET:
    case AvicIpiFailure.INVALID_INT_TYPE:
      // Not a fixed edge-triggered IPI to valid targets: KVM emulates the ICR write (kvm_apic_write_nodecode).
      if (lapic) {
        lapic.writeRegister(APIC_ICR2, icrh);
        lapic.writeRegister(APIC_ICR, icrl);
      }
      return 1;
    case AvicIpiFailure.TARGET_NOT_RUNNING:
      svm.avicIpiWakeups += avicKickTargetVcpus(vcpu, icrl, icrh);
      return 1;
    case AvicIpiFailure.INVALID_BACKING_PAGE:
      // KVM: WARN_ONCE("Invalid backing page") — a bug in programming the tables; the guest continues.
      return 1;
    case AvicIpiFailure.INVALID_IPI_VECTOR:
      // A vector below 16: nothing is delivered.
      return 1;
    default:
      vcpu.kvm.trace('kvm_avic_incomplete_ipi', vcpu, () => `unknown cause ${cause}`);
      return 1;
  }
}

/** avic_get_logical_id_entry: the logical table index an xAPIC LDR names (flat: bit 0–7; cluster: cluster*4 + bit), or -1. */
function logicalIdIndex(ldr: number, flat: boolean): number {
  let id = ldr >>> 24;
  let cluster = 0;
  if (!flat) {
    cluster = id >>> 4;
    if (cluster >= 0xf) return -1;
    id &= 0xf;
  }
  if (!id || (id & (id - 1))) return -1;
  const index = 31 - Math.clz32(id);
  if (index > 7) return -1;
  return index + cluster * 4;
}

/** avic_invalidate_logical_id_entry. */
function avicInvalidateLogicalIdEntry(vcpu: KvmVcpu, svm: VcpuSvm): void {
  const i = logicalIdIndex(svm.avicLdrReg, (svm.avicDfrReg >>> 28) === APIC_DFR_FLAT);
  if (i < 0) return;
  const t = avicTables(vcpu.kvm);
  t.kvm.hostMemory.write32(t.logicalTable + i * 4, t.readLogical(i) & ~AVIC_LOGICAL_ID_ENTRY_VALID_MASK);
}

/** avic_handle_ldr_update: point the new LDR's logical entry at this vCPU's physical ID. */
function avicHandleLdrUpdate(vcpu: KvmVcpu, svm: VcpuSvm, ldr: number): void {
  if (ldr === svm.avicLdrReg) return;
  avicInvalidateLogicalIdEntry(vcpu, svm);
  svm.avicLdrReg = ldr;
  const i = logicalIdIndex(ldr, (svm.avicDfrReg >>> 28) === APIC_DFR_FLAT);
  if (i >= 0) avicTables(vcpu.kvm).setLogical(i, vcpu.vcpuId & AVIC_LOGICAL_ID_ENTRY_GUEST_PHYSICAL_ID_MASK, true);
}

/** avic_handle_dfr_update. */
function avicHandleDfrUpdate(vcpu: KvmVcpu, svm: VcpuSvm, dfr: number): void {
  if (dfr === svm.avicDfrReg) return;
  avicInvalidateLogicalIdEntry(vcpu, svm);
  svm.avicDfrReg = dfr;
}

/**
 * avic_unaccelerated_access_interception: EXITINFO1[11:4] the register offset, bit 32 write.
 * A trap-like write already landed in the backing page (the LAPIC's registers): KVM performs
 * the register's side effects (kvm_apic_write_nodecode) and keeps the logical ID table in step
 * with LDR/DFR. A fault-like access is emulated; the emulator reaches the in-kernel LAPIC.
 */
export function avicUnacceleratedAccessInterception(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const info1 = svm.vmcb.read64(VMCB_CONTROL.EXITINFO1);
  const offset = Number(info1 & BigInt(AVIC_UNACCEL_ACCESS_OFFSET_MASK));
  const write = ((info1 >> 32n) & 1n) === 1n;
  const trap = TRAP_OFFSETS.has(offset);
  vcpu.kvm.trace('kvm_avic_unaccelerated_access', vcpu, () => `offset 0x${offset.toString(16)} ${trap ? 'trap' : 'fault'} ${write ? 'write' : 'read'} vec ${svm.vmcb.read64(VMCB_CONTROL.EXITINFO2) & 0xffffffffn}`);
  if (!trap) return kvmEmulateInstruction(vcpu);
  // avic_unaccel_trap_write. RRR is read-only: the write is ignored.
  if (offset === APIC_RRR) return 1;
  const lapic = vcpu.kvm.irqchip?.lapic(vcpu);
  if (!lapic) return 1;
  lapic.writeRegister(offset, lapic.getReg(offset));
  svm.avicTrapWrites++;
  if (offset === APIC_LDR && !lapic.x2apicMode) avicHandleLdrUpdate(vcpu, svm, lapic.getReg(APIC_LDR));
  if (offset === APIC_DFR) avicHandleDfrUpdate(vcpu, svm, lapic.getReg(APIC_DFR));
  return 1;
}
