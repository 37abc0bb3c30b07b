/**
 * Dirty logging with the page-modification log (SDM Vol. 3C 29.3.6; KVM's PML support in
 * vmx.c): the processor logs each GPA whose EPT dirty flag it sets; KVM drains the log into
 * the memslot dirty bitmaps at every exit and before userspace reads the log.
 */
import { Kvm, KvmMemorySlot, KvmVcpu } from '@tsvisor/core';
import { F } from './vmcs/fields';
import { toVmx } from './vcpu-vmx';
import { PML_ENTITY_NUM, SECONDARY_EXEC_ENABLE_PML } from './vmx-defs';

/** vmx_flush_pml_buffer: log entries from the last written one up to 511, then reset the index. */
export function vmxFlushPmlBuffer(vcpu: KvmVcpu): void {
  const vmx = toVmx(vcpu);
  const v = vmx.vmcs;
  let index = v.read16(F.GUEST_PML_INDEX);
  if (index === PML_ENTITY_NUM - 1) return;
  // After a full log the index has wrapped past 0 (0xFFFF): every entry is valid.
  index = index >= PML_ENTITY_NUM ? 0 : index + 1;
  const host = vcpu.kvm.hostMemory;
  const slots = vcpu.kvm.memslots;
  for (let i = index; i < PML_ENTITY_NUM; i++) {
    const gpa = host.read64(vmx.pmlPage + i * 8);
    const gfn = Number(gpa >> 12n);
    const slot = slots.find(gfn);
    if (slot) slots.markPageDirty(slot, gfn);
  }
  v.write16(F.GUEST_PML_INDEX, PML_ENTITY_NUM - 1);
}

/** vmx_flush_log_dirty → kvm_flush_pml_buffers: every vCPU's log. */
export function vmxFlushLogDirty(kvm: Kvm): void {
  for (const vcpu of kvm.vcpus) {
    const v = toVmx(vcpu).vmcs;
    if (v.read32(F.SECONDARY_VM_EXEC_CONTROL) & SECONDARY_EXEC_ENABLE_PML) vmxFlushPmlBuffer(vcpu);
  }
}

/** vmx_slot_enable_log_dirty: start with every D bit clear so the first write logs. */
export function vmxSlotEnableLogDirty(kvm: Kvm, slot: KvmMemorySlot): void {
  kvm.mmu?.slotLeafClearDirty(slot);
}

/** vmx_slot_disable_log_dirty: set D everywhere so the hardware stops logging this slot. */
export function vmxSlotDisableLogDirty(kvm: Kvm, slot: KvmMemorySlot): void {
  kvm.mmu?.slotSetDirty(slot);
}

/** vmx_enable_log_dirty_pt_masked: re-arm the pages userspace just collected. */
export function vmxEnableLogDirtyPtMasked(kvm: Kvm, slot: KvmMemorySlot, gfnOffset: bigint, mask: bigint): void {
  kvm.mmu?.clearDirtyPtMasked(slot, Number(gfnOffset), Number(mask & 0xffffffffn));
}
