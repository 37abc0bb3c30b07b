/**
 * Dirty logging with the page-modification log (SDM Vol. 3C 29.3.6; KVM's PML support in
 * vmx.c): the processor logs each GPA whose EPT dirty flag it sets; KVM drains the log into
 * the memslot dirty bitmaps at every exit and before userspace reads the log.
 */
import { Kvm, KvmMemorySlot, KvmVcpu, slotBaseGfn } from '@tsvisor/core';
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
  // The log is one 4 KiB page of 64-bit GPAs, read as 32-bit halves.
  const region = host.find(vmx.pmlPage);
  const words = region?.words;
  let slot: KvmMemorySlot | null = null;
  let slotBase = 0;
  for (let i = index; i < PML_ENTITY_NUM; i++) {
    let lo: number, hi: number;
    if (region && words) {
      const w = (vmx.pmlPage - region.base + i * 8) >>> 2;
      lo = words[w]; hi = words[w + 1];
    } else {
      lo = host.read32(vmx.pmlPage + i * 8); hi = host.read32(vmx.pmlPage + i * 8 + 4);
    }
    const gfn = (lo >>> 12) + (hi & 0xf_ffff) * 0x10_0000;
    // Consecutive entries are nearly always in the same slot: skip the search then.
    if (slot === null || gfn < slotBase || gfn >= slotBase + slot.npages) {
      slot = slots.find(gfn);
      if (slot === null) continue;
      slotBase = slotBaseGfn(slot);
    }
    slots.markPageDirty(slot, gfn);
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

/** vmx_enable_log_dirty_pt_masked: re-arm the pages userspace just collected (a 64-page bitmap word). */
export function vmxEnableLogDirtyPtMasked(kvm: Kvm, slot: KvmMemorySlot, gfnOffset: bigint, mask: bigint): void {
  if (mask === ALL_PAGES_MASK) {
    kvm.mmu?.clearDirtyPtMasked(slot, Number(gfnOffset), 0xffffffff, 0xffffffff);
  } else {
    kvm.mmu?.clearDirtyPtMasked(slot, Number(gfnOffset), Number(BigInt.asUintN(32, mask)), Number(BigInt.asUintN(32, mask >> 32n)));
  }
}
const ALL_PAGES_MASK = 0xffff_ffff_ffff_ffffn;
