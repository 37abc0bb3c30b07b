/**
 * The vendor contract as one list, in the order of `struct kvm_x86_ops` (the seed,
 * ../shared/seed/kvm_x86_ops.members.txt), after arch/x86/include/asm/kvm-x86-ops.h:
 * each line is a member and its kind. The `X86Ops` type (x86-ops.ts) and the bind-time
 * check (bind.ts) are derived from this table; nothing else lists the hooks.
 *
 * kinds:
 *   required       KVM_X86_OP: every vendor provides it; binding without it is an error.
 *   optional       KVM_X86_OP_OPTIONAL: core calls it only if present (static_call_cond).
 *   optional_ret0  KVM_X86_OP_OPTIONAL_RET0: absent means "returns 0".
 *   value          a data member (vm_size) or a sub-table (pmu_ops, nested_ops).
 */
export const KVM_X86_OPS = [
  // hardware: module-wide enable/disable of the virtualization extension
  { seed: 'hardware_enable', name: 'hardwareEnable', kind: 'required', group: 'hardware' },
  { seed: 'hardware_disable', name: 'hardwareDisable', kind: 'required', group: 'hardware' },
  { seed: 'hardware_unsetup', name: 'hardwareUnsetup', kind: 'required', group: 'hardware' },
  { seed: 'cpu_has_accelerated_tpr', name: 'cpuHasAcceleratedTpr', kind: 'required', group: 'hardware' },
  { seed: 'has_emulated_msr', name: 'hasEmulatedMsr', kind: 'required', group: 'msr' },
  { seed: 'cpuid_update', name: 'cpuidUpdate', kind: 'required', group: 'cpuid' },
  // vm: per-VM vendor state
  { seed: 'vm_size', name: 'vmSize', kind: 'value', group: 'vm' },
  { seed: 'vm_init', name: 'vmInit', kind: 'required', group: 'vm' },
  { seed: 'vm_destroy', name: 'vmDestroy', kind: 'optional', group: 'vm' },
  // vcpu: lifecycle and scheduling onto a physical CPU
  { seed: 'vcpu_create', name: 'vcpuCreate', kind: 'required', group: 'vcpu' },
  { seed: 'vcpu_free', name: 'vcpuFree', kind: 'required', group: 'vcpu' },
  { seed: 'vcpu_reset', name: 'vcpuReset', kind: 'required', group: 'vcpu' },
  { seed: 'prepare_guest_switch', name: 'prepareGuestSwitch', kind: 'required', group: 'vcpu' },
  { seed: 'vcpu_load', name: 'vcpuLoad', kind: 'required', group: 'vcpu' },
  { seed: 'vcpu_put', name: 'vcpuPut', kind: 'required', group: 'vcpu' },
  { seed: 'update_bp_intercept', name: 'updateBpIntercept', kind: 'required', group: 'debug' },
  // msr: guest MSR state kept in the control block or vendor structures
  { seed: 'get_msr', name: 'getMsr', kind: 'required', group: 'msr' },
  { seed: 'set_msr', name: 'setMsr', kind: 'required', group: 'msr' },
  // segments and privilege
  { seed: 'get_segment_base', name: 'getSegmentBase', kind: 'required', group: 'segments' },
  { seed: 'get_segment', name: 'getSegment', kind: 'required', group: 'segments' },
  { seed: 'get_cpl', name: 'getCpl', kind: 'required', group: 'segments' },
  { seed: 'set_segment', name: 'setSegment', kind: 'required', group: 'segments' },
  { seed: 'get_cs_db_l_bits', name: 'getCsDbLBits', kind: 'required', group: 'segments' },
  // control registers and EFER
  { seed: 'set_cr0', name: 'setCr0', kind: 'required', group: 'control-registers' },
  { seed: 'set_cr4', name: 'setCr4', kind: 'required', group: 'control-registers' },
  { seed: 'set_efer', name: 'setEfer', kind: 'required', group: 'control-registers' },
  // descriptor tables
  { seed: 'get_idt', name: 'getIdt', kind: 'required', group: 'descriptor-tables' },
  { seed: 'set_idt', name: 'setIdt', kind: 'required', group: 'descriptor-tables' },
  { seed: 'get_gdt', name: 'getGdt', kind: 'required', group: 'descriptor-tables' },
  { seed: 'set_gdt', name: 'setGdt', kind: 'required', group: 'descriptor-tables' },
  // debug registers
  { seed: 'sync_dirty_debug_regs', name: 'syncDirtyDebugRegs', kind: 'required', group: 'debug' },
  { seed: 'set_dr7', name: 'setDr7', kind: 'required', group: 'debug' },
  // register cache and RFLAGS
  { seed: 'cache_reg', name: 'cacheReg', kind: 'required', group: 'registers' },
  { seed: 'get_rflags', name: 'getRflags', kind: 'required', group: 'registers' },
  { seed: 'set_rflags', name: 'setRflags', kind: 'required', group: 'registers' },
  // tlb: VPID/ASID-tagged flushes
  { seed: 'tlb_flush_all', name: 'tlbFlushAll', kind: 'required', group: 'tlb' },
  { seed: 'tlb_flush_current', name: 'tlbFlushCurrent', kind: 'required', group: 'tlb' },
  { seed: 'tlb_remote_flush', name: 'tlbRemoteFlush', kind: 'optional', group: 'tlb' },
  { seed: 'tlb_remote_flush_with_range', name: 'tlbRemoteFlushWithRange', kind: 'optional', group: 'tlb' },
  { seed: 'tlb_flush_gva', name: 'tlbFlushGva', kind: 'required', group: 'tlb' },
  { seed: 'tlb_flush_guest', name: 'tlbFlushGuest', kind: 'required', group: 'tlb' },
  // run: VM entry, VM exit and the exit handler table
  { seed: 'run', name: 'run', kind: 'required', group: 'run' },
  { seed: 'handle_exit', name: 'handleExit', kind: 'required', group: 'run' },
  { seed: 'skip_emulated_instruction', name: 'skipEmulatedInstruction', kind: 'required', group: 'emulation' },
  { seed: 'update_emulated_instruction', name: 'updateEmulatedInstruction', kind: 'optional', group: 'emulation' },
  { seed: 'set_interrupt_shadow', name: 'setInterruptShadow', kind: 'required', group: 'events' },
  { seed: 'get_interrupt_shadow', name: 'getInterruptShadow', kind: 'required', group: 'events' },
  { seed: 'patch_hypercall', name: 'patchHypercall', kind: 'required', group: 'emulation' },
  // events: injection and windows
  { seed: 'set_irq', name: 'setIrq', kind: 'required', group: 'events' },
  { seed: 'set_nmi', name: 'setNmi', kind: 'required', group: 'events' },
  { seed: 'queue_exception', name: 'queueException', kind: 'required', group: 'events' },
  { seed: 'cancel_injection', name: 'cancelInjection', kind: 'required', group: 'events' },
  { seed: 'interrupt_allowed', name: 'interruptAllowed', kind: 'required', group: 'events' },
  { seed: 'nmi_allowed', name: 'nmiAllowed', kind: 'required', group: 'events' },
  { seed: 'get_nmi_mask', name: 'getNmiMask', kind: 'required', group: 'events' },
  { seed: 'set_nmi_mask', name: 'setNmiMask', kind: 'required', group: 'events' },
  { seed: 'enable_nmi_window', name: 'enableNmiWindow', kind: 'required', group: 'events' },
  { seed: 'enable_irq_window', name: 'enableIrqWindow', kind: 'required', group: 'events' },
  { seed: 'update_cr8_intercept', name: 'updateCr8Intercept', kind: 'optional', group: 'events' },
  // apicv: APIC virtualization (VMX APICv, SVM AVIC)
  { seed: 'check_apicv_inhibit_reasons', name: 'checkApicvInhibitReasons', kind: 'required', group: 'apicv' },
  { seed: 'pre_update_apicv_exec_ctrl', name: 'preUpdateApicvExecCtrl', kind: 'optional', group: 'apicv' },
  { seed: 'refresh_apicv_exec_ctrl', name: 'refreshApicvExecCtrl', kind: 'required', group: 'apicv' },
  { seed: 'hwapic_irr_update', name: 'hwapicIrrUpdate', kind: 'optional', group: 'apicv' },
  { seed: 'hwapic_isr_update', name: 'hwapicIsrUpdate', kind: 'optional', group: 'apicv' },
  { seed: 'guest_apic_has_interrupt', name: 'guestApicHasInterrupt', kind: 'optional', group: 'apicv' },
  { seed: 'load_eoi_exitmap', name: 'loadEoiExitmap', kind: 'optional', group: 'apicv' },
  { seed: 'set_virtual_apic_mode', name: 'setVirtualApicMode', kind: 'optional', group: 'apicv' },
  { seed: 'set_apic_access_page_addr', name: 'setApicAccessPageAddr', kind: 'optional', group: 'apicv' },
  { seed: 'deliver_posted_interrupt', name: 'deliverPostedInterrupt', kind: 'required', group: 'apicv' },
  { seed: 'sync_pir_to_irr', name: 'syncPirToIrr', kind: 'optional', group: 'apicv' },
  // vm-wide real-mode helpers (VMX's TSS and identity map for unrestricted-guest-less CPUs)
  { seed: 'set_tss_addr', name: 'setTssAddr', kind: 'optional_ret0', group: 'vm' },
  { seed: 'set_identity_map_addr', name: 'setIdentityMapAddr', kind: 'optional_ret0', group: 'vm' },
  // mmu: two-dimensional paging
  { seed: 'get_tdp_level', name: 'getTdpLevel', kind: 'required', group: 'mmu' },
  { seed: 'get_mt_mask', name: 'getMtMask', kind: 'optional_ret0', group: 'mmu' },
  { seed: 'load_mmu_pgd', name: 'loadMmuPgd', kind: 'required', group: 'mmu' },
  { seed: 'has_wbinvd_exit', name: 'hasWbinvdExit', kind: 'required', group: 'hardware' },
  // tsc
  { seed: 'write_l1_tsc_offset', name: 'writeL1TscOffset', kind: 'required', group: 'tsc' },
  // exits and emulation
  { seed: 'get_exit_info', name: 'getExitInfo', kind: 'required', group: 'run' },
  { seed: 'check_intercept', name: 'checkIntercept', kind: 'required', group: 'emulation' },
  { seed: 'handle_exit_irqoff', name: 'handleExitIrqoff', kind: 'required', group: 'run' },
  { seed: 'request_immediate_exit', name: 'requestImmediateExit', kind: 'required', group: 'run' },
  { seed: 'sched_in', name: 'schedIn', kind: 'required', group: 'vcpu' },
  // dirty-log: hardware-accelerated dirty logging (PML on VMX only)
  { seed: 'slot_enable_log_dirty', name: 'slotEnableLogDirty', kind: 'optional', group: 'dirty-log' },
  { seed: 'slot_disable_log_dirty', name: 'slotDisableLogDirty', kind: 'optional', group: 'dirty-log' },
  { seed: 'flush_log_dirty', name: 'flushLogDirty', kind: 'optional', group: 'dirty-log' },
  { seed: 'enable_log_dirty_pt_masked', name: 'enableLogDirtyPtMasked', kind: 'optional', group: 'dirty-log' },
  { seed: 'write_log_dirty', name: 'writeLogDirty', kind: 'optional', group: 'dirty-log' },
  // sub-tables
  { seed: 'pmu_ops', name: 'pmuOps', kind: 'value', group: 'pmu' },
  { seed: 'nested_ops', name: 'nestedOps', kind: 'value', group: 'nested' },
  // blocking: HLT and posted interrupts
  { seed: 'pre_block', name: 'preBlock', kind: 'optional', group: 'blocking' },
  { seed: 'post_block', name: 'postBlock', kind: 'optional', group: 'blocking' },
  { seed: 'vcpu_blocking', name: 'vcpuBlocking', kind: 'optional', group: 'blocking' },
  { seed: 'vcpu_unblocking', name: 'vcpuUnblocking', kind: 'optional', group: 'blocking' },
  { seed: 'update_pi_irte', name: 'updatePiIrte', kind: 'optional', group: 'apicv' },
  { seed: 'apicv_post_state_restore', name: 'apicvPostStateRestore', kind: 'optional', group: 'apicv' },
  { seed: 'dy_apicv_has_pending_interrupt', name: 'dyApicvHasPendingInterrupt', kind: 'optional_ret0', group: 'apicv' },
  // timers: the VMX-preemption timer behind the LAPIC timer
  { seed: 'set_hv_timer', name: 'setHvTimer', kind: 'optional', group: 'timers' },
  { seed: 'cancel_hv_timer', name: 'cancelHvTimer', kind: 'optional', group: 'timers' },
  { seed: 'setup_mce', name: 'setupMce', kind: 'required', group: 'msr' },
  // smm
  { seed: 'smi_allowed', name: 'smiAllowed', kind: 'required', group: 'smm' },
  { seed: 'pre_enter_smm', name: 'preEnterSmm', kind: 'required', group: 'smm' },
  { seed: 'pre_leave_smm', name: 'preLeaveSmm', kind: 'required', group: 'smm' },
  { seed: 'enable_smi_window', name: 'enableSmiWindow', kind: 'required', group: 'smm' },
  // sev: memory encryption (AMD only)
  { seed: 'mem_enc_op', name: 'memEncOp', kind: 'optional', group: 'sev' },
  { seed: 'mem_enc_reg_region', name: 'memEncRegRegion', kind: 'optional', group: 'sev' },
  { seed: 'mem_enc_unreg_region', name: 'memEncUnregRegion', kind: 'optional', group: 'sev' },
  { seed: 'get_msr_feature', name: 'getMsrFeature', kind: 'required', group: 'msr' },
  { seed: 'need_emulation_on_page_fault', name: 'needEmulationOnPageFault', kind: 'required', group: 'mmu' },
  { seed: 'apic_init_signal_blocked', name: 'apicInitSignalBlocked', kind: 'required', group: 'events' },
  { seed: 'enable_direct_tlbflush', name: 'enableDirectTlbflush', kind: 'optional', group: 'tlb' },
  { seed: 'migrate_timers', name: 'migrateTimers', kind: 'optional', group: 'timers' },
] as const;

export type OpsTableEntry = (typeof KVM_X86_OPS)[number];
export type OpKind = OpsTableEntry['kind'];
export type OpName = OpsTableEntry['name'];
export type RequiredOpName = Extract<OpsTableEntry, { kind: 'required' | 'value' }>['name'];
export type OptionalOpName = Extract<OpsTableEntry, { kind: 'optional' | 'optional_ret0' }>['name'];

/** Look-up by camelCase name. */
export const OPS_BY_NAME: ReadonlyMap<OpName, OpsTableEntry> = new Map(KVM_X86_OPS.map((e) => [e.name, e]));
