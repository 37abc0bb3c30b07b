/**
 * KVM's handlers for the APIC-virtualization exits (arch/x86/kvm/vmx/vmx.c: handle_apic_access,
 * handle_tpr_below_threshold, handle_apic_eoi_induced, handle_apic_write). In KVM the
 * virtual-APIC page *is* the in-kernel LAPIC's register page (apic->regs), so after such an exit
 * the LAPIC already sees what the guest wrote; tsvisor's LAPIC keeps its own registers, so each
 * handler first carries the virtualized state it concerns over to the LAPIC — that copy is the
 * only difference from KVM.
 */
import { APIC_EOI, APIC_ICR, APIC_ICR2, APIC_TASKPRI, KvmLapic, KvmReq, KvmVcpu, kvmEmulateInstruction } from '@tsvisor/core';
import { F } from './vmcs/fields';
import { toVmx } from './vcpu-vmx';
import { vapicRead } from './apicv';

/** Exit qualification of APIC-access exits (SDM Table 28-6): offset 11:0, access type 15:12. */
export const APIC_ACCESS_OFFSET = 0xfff;
export const APIC_ACCESS_TYPE = 0xf000;
/** Access type 1: linear access for a data write during instruction execution. */
export const TYPE_LINEAR_APIC_INST_WRITE = 1 << 12;

function exitQualification(vcpu: KvmVcpu): number {
  return Number(toVmx(vcpu).vmcs.readNat(F.EXIT_QUALIFICATION) & 0xffffffffn);
}

function lapicOf(vcpu: KvmVcpu): KvmLapic | undefined {
  return vcpu.kvm.irqchip?.lapic(vcpu);
}

/**
 * handle_apic_access: a guest's MOV of EOI is completed directly (the value written does not
 * matter, kvm_lapic_set_eoi) and the instruction skipped; anything else is emulated, the
 * emulator reaching the APIC as MMIO.
 */
export function handleApicAccess(vcpu: KvmVcpu): number {
  const q = exitQualification(vcpu);
  const lapic = lapicOf(vcpu);
  if (lapic && (q & APIC_ACCESS_TYPE) === TYPE_LINEAR_APIC_INST_WRITE && (q & APIC_ACCESS_OFFSET) === APIC_EOI) {
    lapic.setEoi();
    return vcpu.kvm.skipEmulatedInstruction(vcpu);
  }
  return kvmEmulateInstruction(vcpu);
}

/**
 * handle_tpr_below_threshold: the guest lowered VTPR below the threshold; with the TPR now in
 * the LAPIC, KVM_REQ_EVENT lets the run loop deliver what the old TPR held back.
 */
export function handleTprBelowThreshold(vcpu: KvmVcpu): number {
  const vtpr = vapicRead(vcpu, APIC_TASKPRI) & 0xff;
  const lapic = lapicOf(vcpu);
  if (lapic) lapic.setTpr(vtpr);
  else vcpu.arch.cr8 = BigInt(vtpr >> 4);
  vcpu.makeRequest(KvmReq.EVENT);
  return 1;
}

/**
 * handle_apic_eoi_induced → kvm_apic_set_eoi_accelerated: the processor already retired the
 * vector from the virtual ISR; the EOI goes to the LAPIC (which broadcasts a level-triggered
 * vector's EOI to the IOAPIC), then KVM_REQ_EVENT.
 */
export function handleApicEoiInduced(vcpu: KvmVcpu): number {
  const vector = exitQualification(vcpu) & 0xff;
  const lapic = lapicOf(vcpu);
  if (lapic) {
    vcpu.kvm.trace('kvm_eoi', vcpu, () => `apicid ${lapic.id} vector ${vector}`);
    if (lapic.isrSet(vector) && lapic.highestIsr() === vector) lapic.setEoi();
    else if (lapic.tmrSet(vector)) lapic.irqchip.ioapic.eoi(vector);
  }
  vcpu.makeRequest(KvmReq.EVENT);
  return 1;
}

/**
 * handle_apic_write → kvm_apic_write_nodecode: the write is done in the virtual-APIC page; the
 * LAPIC performs its side effects with the value found there (for ICR, with ICR high as the
 * guest left it).
 */
export function handleApicWrite(vcpu: KvmVcpu): number {
  // The processor checked and decoded the access; the register is the 16-byte slot it hit.
  const offset = exitQualification(vcpu) & 0xff0;
  const lapic = lapicOf(vcpu);
  if (lapic) {
    if (offset === APIC_ICR) lapic.writeRegister(APIC_ICR2, vapicRead(vcpu, APIC_ICR2));
    lapic.writeRegister(offset, vapicRead(vcpu, offset));
  }
  vcpu.makeRequest(KvmReq.EVENT);
  return 1;
}
