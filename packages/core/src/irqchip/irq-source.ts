import type { KvmVcpu } from '../kvm/vcpu';

/**
 * The in-kernel interrupt controller as the run loop sees it (kvm_cpu_has_interrupt /
 * kvm_cpu_get_interrupt / the wake-up side of kvm_vcpu_block).
 */
export interface IrqSource {
  /** An interrupt is pending that the vCPU could take (ignoring RFLAGS.IF). */
  hasInterrupt(vcpu: KvmVcpu): boolean;
  /** Acknowledge the highest-priority pending interrupt: returns its vector, or -1. */
  acknowledge(vcpu: KvmVcpu): number;
  /**
   * A halted vCPU waits: advance time to the next event that could wake it (virtual clock) or
   * report that none will come. Returns true when something is now pending.
   */
  waitForEvent(vcpu: KvmVcpu): boolean;
}
