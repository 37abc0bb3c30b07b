/**
 * The tracepoints tsvisor emits (`kvm.setTrace(events, sink)`), named as KVM's
 * (arch/x86/kvm/trace.h, virt/kvm): what `tsvisor run --trace` accepts. Each line a sink
 * receives is the event's text in KVM's spirit, not its exact format.
 */
export const KVM_TRACEPOINTS = {
  kvm_entry: 'each VM entry (core run loop, vcpu_enter_guest)',
  kvm_exit: 'each exit the backend takes, by its own exit-reason name, with RIP (SVM adds EXITINFO1/2)',
  kvm_userspace_exit: 'KVM_RUN returning to the VMM, by KVM_EXIT_* name',
  kvm_pio: 'port I/O that exits (port, size, direction)',
  kvm_mmio: 'MMIO reaching userspace (address, length, direction)',
  kvm_msr: 'RDMSR/WRMSR handled by core (MSR, value)',
  kvm_cpuid: 'CPUID emulated (leaf, subleaf, result)',
  kvm_inj_virq: 'an external interrupt injected at VM entry (vector)',
  kvm_page_fault: 'a two-dimensional-paging fault handled by the MMU (EPT violation, #NPF)',
  kvm_apic: 'local APIC register reads and writes, INIT, SIPI, timer expiry',
  kvm_apic_ipi: 'an IPI sent through the ICR',
  kvm_apic_accept_irq: 'an interrupt accepted into a LAPIC IRR',
  kvm_msi_set_irq: 'an MSI (or IOAPIC message) delivered',
  kvm_set_irq: 'an interrupt line driven by a platform device (KVM_IRQ_LINE)',
  kvm_hypercall: 'VMCALL/VMMCALL handled (number, result; SVM: instruction patched)',
  kvm_ple_window_update: 'pause-loop exiting window grown (SVM)',
  kvm_avic_incomplete_ipi: 'AVIC incomplete-IPI exit (SVM)',
  kvm_task_switch: 'a task switch after a task-switch exit: the vendor handler\'s raw exit fields (VMX qualification and IDT-vectoring information; SVM EXITINFO1/2 and EXITINTINFO), then core\'s selector, reason and error code',
} as const;

export type KvmTracepoint = keyof typeof KVM_TRACEPOINTS;

export const KVM_TRACEPOINT_NAMES = Object.keys(KVM_TRACEPOINTS) as KvmTracepoint[];

export function isKvmTracepoint(name: string): name is KvmTracepoint {
  return Object.prototype.hasOwnProperty.call(KVM_TRACEPOINTS, name);
}
