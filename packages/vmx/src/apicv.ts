/**
 * APIC virtualization (SDM Vol. 3C ch. 30): the virtual-APIC page, the guest interrupt status
 * (RVI/SVI), the EOI-exit bitmap and posted-interrupt descriptors (30.6), as KVM's vmx.c
 * drives them.
 */
import { KvmReq, KvmVcpu } from '@tsvisor/core';
import { F } from './vmcs/fields';
import { toVmx } from './vcpu-vmx';
import * as D from './vmx-defs';
import type { VmcsConfig } from './capabilities';

/** The host vector posted-interrupt notifications use (POSTED_INTR_VECTOR). */
export const POSTED_INTR_VECTOR = 0xf2;
/** The wakeup vector armed while a vCPU blocks (POSTED_INTR_WAKEUP_VECTOR). */
export const POSTED_INTR_WAKEUP_VECTOR = 0xf1;
/** enum kvm_apicv_inhibit: the reasons VMX can act on (vmx_check_apicv_inhibit_reasons). */
export const APICV_INHIBIT_REASON_DISABLE = 0;
export const APICV_INHIBIT_REASON_HYPERV = 1;

// Virtual-APIC page offsets (SDM 30.1): TPR, PPR, ISR, IRR (eight 32-bit words, 16-byte stride).
export const APIC_TASKPRI = 0x80;
export const APIC_PROCPRI = 0xa0;
export const APIC_ISR = 0x100;
export const APIC_IRR = 0x200;
/** Posted-interrupt descriptor (SDM 30.6): PIR bits 255:0, then ON (bit 256), SN (257), NV, NDST. */
export const PI_DESC_CONTROL = 32;
const PID_ON = 1;

export function vmxCheckApicvInhibitReasons(bit: number): boolean {
  const supported = (1 << APICV_INHIBIT_REASON_DISABLE) | (1 << APICV_INHIBIT_REASON_HYPERV);
  return ((supported >> bit) & 1) === 1;
}

function page(vcpu: KvmVcpu, hpa: number, len = 4096): { bytes: Uint8Array; offset: number } {
  // The virtual-APIC / posted-interrupt addresses come from the VMCS: no memory there reads as all-ones.
  return { bytes: vcpu.kvm.hostMemory.sliceOrOnes(hpa, len), offset: 0 };
}

/** The virtual-APIC page as 32-bit registers. */
export function vapicRead(vcpu: KvmVcpu, reg: number): number {
  return vcpu.kvm.hostMemory.read32(toVmx(vcpu).virtualApicPage + reg);
}
export function vapicWrite(vcpu: KvmVcpu, reg: number, value: number): void {
  vcpu.kvm.hostMemory.write32(toVmx(vcpu).virtualApicPage + reg, value);
}

/** Whether APICv controls are in use (kvm_vcpu_apicv_active for this vCPU). */
export function vmxApicvActive(vcpu: KvmVcpu): boolean {
  const v = toVmx(vcpu).vmcs;
  return (v.read32(F.PIN_BASED_VM_EXEC_CONTROL) & D.PIN_BASED_POSTED_INTR) !== 0 ||
    (v.read32(F.SECONDARY_VM_EXEC_CONTROL) & D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY) !== 0;
}

/** vmx_refresh_apicv_exec_ctrl: turn the APICv controls on or off together with posted interrupts. */
export function vmxRefreshApicvExecCtrl(vcpu: KvmVcpu, config: VmcsConfig, active = true): void {
  const v = toVmx(vcpu).vmcs;
  const pinCap = config.pinBased & D.PIN_BASED_POSTED_INTR;
  const secCap = config.cpuBased2 & (D.SECONDARY_EXEC_APIC_REGISTER_VIRT | D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY);
  const pin = v.read32(F.PIN_BASED_VM_EXEC_CONTROL);
  const sec = v.read32(F.SECONDARY_VM_EXEC_CONTROL);
  v.write32(F.PIN_BASED_VM_EXEC_CONTROL, active ? pin | pinCap : pin & ~D.PIN_BASED_POSTED_INTR);
  v.write32(F.SECONDARY_VM_EXEC_CONTROL, active ? sec | secCap :
    sec & ~(D.SECONDARY_EXEC_APIC_REGISTER_VIRT | D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY));
}

/** vmx_set_rvi: requesting virtual interrupt, the low byte of the guest interrupt status (SDM 25.4.2). */
export function vmxSetRvi(vcpu: KvmVcpu, vector: number): void {
  const v = toVmx(vcpu).vmcs;
  const rvi = vector < 0 ? 0 : vector & 0xff;
  const st = v.read16(F.GUEST_INTR_STATUS);
  if ((st & 0xff) !== rvi) v.write16(F.GUEST_INTR_STATUS, (st & 0xff00) | rvi);
}

/** vmx_hwapic_isr_update: servicing virtual interrupt, the high byte. */
export function vmxSetSvi(vcpu: KvmVcpu, isr: number): void {
  const v = toVmx(vcpu).vmcs;
  const svi = isr < 0 ? 0 : isr & 0xff;
  const st = v.read16(F.GUEST_INTR_STATUS);
  if (st >> 8 !== svi) v.write16(F.GUEST_INTR_STATUS, (st & 0xff) | (svi << 8));
}

/** vmx_guest_apic_has_interrupt: RVI is above the virtual PPR (SDM 30.2.1). */
export function vmxGuestApicHasInterrupt(vcpu: KvmVcpu): boolean {
  const rvi = toVmx(vcpu).vmcs.read16(F.GUEST_INTR_STATUS) & 0xff;
  const vppr = vapicRead(vcpu, APIC_PROCPRI);
  return (rvi & 0xf0) > (vppr & 0xf0);
}

/** vmx_load_eoi_exitmap: which vectors' EOIs exit (EOI_INDUCED) instead of completing virtually. */
export function vmxLoadEoiExitmap(vcpu: KvmVcpu, bitmap: readonly bigint[]): void {
  const v = toVmx(vcpu).vmcs;
  const fields = [F.EOI_EXIT_BITMAP0, F.EOI_EXIT_BITMAP1, F.EOI_EXIT_BITMAP2, F.EOI_EXIT_BITMAP3];
  for (let i = 0; i < 4; i++) v.write64(fields[i], BigInt.asUintN(64, bitmap[i] ?? 0n));
}

/**
 * vmx_set_virtual_apic_mode: xAPIC mode virtualizes accesses to the APIC page; x2APIC mode
 * virtualizes the x2APIC MSRs instead; a disabled APIC gets neither.
 */
export function vmxSetVirtualApicMode(vcpu: KvmVcpu, config: VmcsConfig): void {
  const v = toVmx(vcpu).vmcs;
  let sec = v.read32(F.SECONDARY_VM_EXEC_CONTROL) & ~(D.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES | D.SECONDARY_EXEC_VIRTUALIZE_X2APIC_MODE);
  const base = vcpu.arch.apicBase;
  const enabled = (base & (1n << 11n)) !== 0n;
  const x2 = (base & (1n << 10n)) !== 0n;
  if (enabled && !x2) sec |= config.cpuBased2 & D.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES;
  else if (enabled && x2) sec |= config.cpuBased2 & D.SECONDARY_EXEC_VIRTUALIZE_X2APIC_MODE;
  v.write32(F.SECONDARY_VM_EXEC_CONTROL, sec);
}

/** The xAPIC's default base (APIC_DEFAULT_PHYS_BASE), where KVM maps the APIC-access page. */
export const APIC_DEFAULT_PHYS_BASE = 0xfee00000;

/**
 * vmx_set_apic_access_page_addr: APIC_ACCESS_ADDR = the host page that backs guest-physical
 * APIC_DEFAULT_PHYS_BASE (gfn_to_page), so EPT translates guest APIC accesses to it and the
 * processor virtualizes them (SDM 29.4). KVM creates that backing itself (a private memslot,
 * kvm_alloc_apic_access_page); tsvisor's core does not yet, so the memslot userspace places at
 * 0xFEE00000 is used, and without one a host page no EPT entry reaches stands in (every APIC
 * access then stays an EPT misconfiguration that the in-kernel LAPIC emulates).
 */
export function vmxSetApicAccessPageAddr(vcpu: KvmVcpu): void {
  const vmx = toVmx(vcpu);
  const backed = vcpu.kvm.memslots.gpaToHpa(APIC_DEFAULT_PHYS_BASE);
  if (backed >= 0) vmx.apicAccessPage = backed;
  else if (vmx.apicAccessPage < 0) vmx.apicAccessPage = vcpu.kvm.hostMemory.allocPages(1, 'vmx apic-access page');
  vmx.vmcs.writeNum(F.APIC_ACCESS_ADDR, vmx.apicAccessPage);
  // The mapping of the page changed: drop the current context's translations (vmx_flush_tlb_current).
  vcpu.makeRequest(KvmReq.TLB_FLUSH_CURRENT);
}

function piControl(vcpu: KvmVcpu): { bytes: Uint8Array; offset: number } {
  return page(vcpu, toVmx(vcpu).piDesc, 64);
}

/** pi_test_and_set_pir / pi_test_and_set_on and the notification (vmx_deliver_posted_interrupt). */
export function vmxDeliverPostedInterrupt(vcpu: KvmVcpu, vector: number): number {
  if (!(toVmx(vcpu).vmcs.read32(F.PIN_BASED_VM_EXEC_CONTROL) & D.PIN_BASED_POSTED_INTR)) return -1;
  const { bytes, offset } = piControl(vcpu);
  const byte = offset + (vector >> 3);
  const bit = 1 << (vector & 7);
  if (bytes[byte] & bit) return 0;
  bytes[byte] |= bit;
  if (bytes[offset + PI_DESC_CONTROL] & PID_ON) return 0;
  bytes[offset + PI_DESC_CONTROL] |= PID_ON;
  // The notification: a running vCPU's processor stops at the next boundary and the PIR is
  // processed at the next entry; a blocked one wakes (kvm_vcpu_kick).
  vcpu.cpu.kick = true;
  vcpu.makeRequest(KvmReq.EVENT);
  return 0;
}

/** vmx_sync_pir_to_irr: move posted vectors into the virtual IRR; returns the highest pending vector. */
export function vmxSyncPirToIrr(vcpu: KvmVcpu): number {
  const { bytes, offset } = piControl(vcpu);
  const host = vcpu.kvm.hostMemory;
  const vapic = toVmx(vcpu).virtualApicPage;
  if (bytes[offset + PI_DESC_CONTROL] & PID_ON) {
    bytes[offset + PI_DESC_CONTROL] &= ~PID_ON;
    for (let w = 0; w < 8; w++) {
      const pir = (bytes[offset + 4 * w] | (bytes[offset + 4 * w + 1] << 8) | (bytes[offset + 4 * w + 2] << 16) | (bytes[offset + 4 * w + 3] << 24)) >>> 0;
      if (!pir) continue;
      bytes.fill(0, offset + 4 * w, offset + 4 * w + 4);
      host.write32(vapic + APIC_IRR + 16 * w, host.read32(vapic + APIC_IRR + 16 * w) | pir);
    }
  }
  let max = -1;
  for (let w = 7; w >= 0 && max < 0; w--) {
    const irr = host.read32(vapic + APIC_IRR + 16 * w);
    if (irr) max = w * 32 + 31 - Math.clz32(irr);
  }
  if (toVmx(vcpu).vmcs.read32(F.SECONDARY_VM_EXEC_CONTROL) & D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY) vmxSetRvi(vcpu, max);
  return max;
}

/** vmx_apicv_post_state_restore: after KVM_SET_LAPIC the PIR starts empty. */
export function vmxApicvPostStateRestore(vcpu: KvmVcpu): void {
  const { bytes, offset } = piControl(vcpu);
  bytes.fill(0, offset, offset + 32);
  bytes[offset + PI_DESC_CONTROL] &= ~PID_ON;
}

/** vmx_dy_apicv_has_pending_interrupt: ON set, or a virtual interrupt above the PPR. */
export function vmxDyApicvHasPendingInterrupt(vcpu: KvmVcpu): boolean {
  const { bytes, offset } = piControl(vcpu);
  return (bytes[offset + PI_DESC_CONTROL] & PID_ON) !== 0 || vmxGuestApicHasInterrupt(vcpu);
}

/** pi_pre_block: notifications go to the wakeup vector while blocked; ON already set means don't block. */
export function vmxPreBlock(vcpu: KvmVcpu): number {
  const vmx = toVmx(vcpu);
  if (!(vmx.vmcs.read32(F.PIN_BASED_VM_EXEC_CONTROL) & D.PIN_BASED_POSTED_INTR)) return 0;
  const { bytes, offset } = piControl(vcpu);
  if (bytes[offset + PI_DESC_CONTROL] & PID_ON) return 1;
  bytes[offset + PI_DESC_CONTROL + 2] = POSTED_INTR_WAKEUP_VECTOR;
  vmx.blocked = true;
  return 0;
}

/** pi_post_block: notifications go back to the running vector. */
export function vmxPostBlock(vcpu: KvmVcpu): void {
  const vmx = toVmx(vcpu);
  if (!vmx.blocked) return;
  const { bytes, offset } = piControl(vcpu);
  bytes[offset + PI_DESC_CONTROL + 2] = POSTED_INTR_VECTOR;
  vmx.blocked = false;
}

/**
 * What the processor does at VM entry with APICv (SDM 30.6 posted-interrupt processing, then
 * 30.2.1 evaluation and 30.2.2 delivery of pending virtual interrupts): a posted notification
 * that arrived while the vCPU was out of guest mode is recognized now; if RVI outranks the
 * virtual PPR and the guest can take interrupts, the virtual interrupt is delivered through
 * the guest IDT without a VM exit. Returns the vector to inject, or -1.
 */
export function vmxVirtualInterruptAtEntry(vcpu: KvmVcpu): number {
  const v = toVmx(vcpu).vmcs;
  const pin = v.read32(F.PIN_BASED_VM_EXEC_CONTROL);
  const sec = v.read32(F.CPU_BASED_VM_EXEC_CONTROL) & D.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS ? v.read32(F.SECONDARY_VM_EXEC_CONTROL) : 0;
  if (!(sec & D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY)) return -1;
  if (pin & D.PIN_BASED_POSTED_INTR) {
    const { bytes, offset } = piControl(vcpu);
    if (bytes[offset + PI_DESC_CONTROL] & PID_ON) vmxSyncPirToIrr(vcpu);
  }
  const st = v.read16(F.GUEST_INTR_STATUS);
  const rvi = st & 0xff;
  const vppr = vapicRead(vcpu, APIC_PROCPRI) & 0xff;
  if ((rvi & 0xf0) <= (vppr & 0xf0) || rvi === 0) return -1;
  if (!(v.readLow(F.GUEST_RFLAGS) & 0x200)) return -1;
  if (v.read32(F.GUEST_INTERRUPTIBILITY_INFO) & (D.GUEST_INTR_STATE_STI | D.GUEST_INTR_STATE_MOV_SS)) return -1;
  // 30.2.2: VISR[vector] = 1, VIRR[vector] = 0, SVI = vector, VPPR = vector & F0H, RVI = next VIRR.
  const host = vcpu.kvm.hostMemory;
  const vapic = toVmx(vcpu).virtualApicPage;
  const w = rvi >> 5;
  const bit = 1 << (rvi & 31);
  host.write32(vapic + APIC_IRR + 16 * w, host.read32(vapic + APIC_IRR + 16 * w) & ~bit);
  host.write32(vapic + APIC_ISR + 16 * w, host.read32(vapic + APIC_ISR + 16 * w) | bit);
  vapicWrite(vcpu, APIC_PROCPRI, rvi & 0xf0);
  let next = 0;
  for (let i = 7; i >= 0 && !next; i--) {
    const irr = host.read32(vapic + APIC_IRR + 16 * i);
    if (irr) next = i * 32 + 31 - Math.clz32(irr);
  }
  v.write16(F.GUEST_INTR_STATUS, (rvi << 8) | next);
  return rvi;
}
