import type { KvmVcpu } from '../kvm/vcpu';

/** What a halted (or waiting-for-SIPI) vCPU's wait came to (vcpu_block's outcome). */
export enum KvmWaitResult {
  /** Nothing can ever wake it: KVM_RUN returns KVM_EXIT_HLT. */
  HALT = 0,
  /** An event it can take is pending: it becomes runnable and the run loop continues. */
  WOKEN = 1,
  /**
   * Not woken yet, but something still may (another vCPU is runnable, a timer elsewhere is
   * armed, or this call's idle slice ran out): KVM_RUN returns KVM_EXIT_INTR so userspace's
   * scheduler runs the others and calls KVM_RUN again.
   */
  YIELD = 2,
}

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
   * A blocked vCPU waits: advance time to the next event that could wake it (virtual clock),
   * sleep for it (host clock), or report that none will come.
   */
  waitForEvent(vcpu: KvmVcpu): KvmWaitResult;
}
