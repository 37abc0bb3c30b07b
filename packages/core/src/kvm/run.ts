/** uapi exit reasons (include/uapi/linux/kvm.h). */
export enum KvmExitReason {
  KVM_EXIT_UNKNOWN = 0,
  KVM_EXIT_EXCEPTION = 1,
  KVM_EXIT_IO = 2,
  KVM_EXIT_HYPERCALL = 3,
  KVM_EXIT_DEBUG = 4,
  KVM_EXIT_HLT = 5,
  KVM_EXIT_MMIO = 6,
  KVM_EXIT_IRQ_WINDOW_OPEN = 7,
  KVM_EXIT_SHUTDOWN = 8,
  KVM_EXIT_FAIL_ENTRY = 9,
  KVM_EXIT_INTR = 10,
  KVM_EXIT_SET_TPR = 11,
  KVM_EXIT_TPR_ACCESS = 12,
  KVM_EXIT_NMI = 16,
  KVM_EXIT_INTERNAL_ERROR = 17,
  KVM_EXIT_SYSTEM_EVENT = 24,
  KVM_EXIT_IOAPIC_EOI = 26,
  KVM_EXIT_X86_RDMSR = 29,
  KVM_EXIT_X86_WRMSR = 30,
}

export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

export enum KvmInternalError {
  KVM_INTERNAL_ERROR_EMULATION = 1,
  KVM_INTERNAL_ERROR_SIMUL_EX = 2,
  KVM_INTERNAL_ERROR_DELIVERY_EV = 3,
  KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4,
}

export enum KvmSystemEventType {
  KVM_SYSTEM_EVENT_SHUTDOWN = 1,
  KVM_SYSTEM_EVENT_RESET = 2,
  KVM_SYSTEM_EVENT_CRASH = 3,
}

/** Size of the page shared with userspace; PIO data lives in it at `io.dataOffset`. */
export const KVM_RUN_PAGE_SIZE = 4096;
export const KVM_PIO_PAGE_OFFSET = 1024;

/**
 * struct kvm_run: what KVM_RUN reports. One object per vCPU, rewritten on each exit; the
 * member for `exitReason` is the one that is current. Userspace fills the `in` direction of
 * IO and MMIO reads before the next run().
 */
export class KvmRun {
  /** In: return at once with KVM_EXIT_INTR before entering the guest. */
  immediateExit = false;
  /** In: exit with KVM_EXIT_IRQ_WINDOW_OPEN when an interrupt can be injected (no in-kernel irqchip). */
  requestInterruptWindow = false;

  exitReason: KvmExitReason = KvmExitReason.KVM_EXIT_UNKNOWN;
  readyForInterruptInjection = false;
  ifFlag = false;
  cr8 = 0n;
  apicBase = 0n;

  /** The shared page; PIO data is at io.dataOffset. */
  readonly page = new Uint8Array(KVM_RUN_PAGE_SIZE);

  readonly io = { direction: KVM_EXIT_IO_IN, size: 0, port: 0, count: 0, dataOffset: KVM_PIO_PAGE_OFFSET };
  readonly mmio = { physAddr: 0n, data: new Uint8Array(8), len: 0, isWrite: false };
  readonly failEntry = { hardwareEntryFailureReason: 0n, cpu: 0 };
  readonly internal = { suberror: 0, data: [] as bigint[] };
  /** tsvisor addition: a human-readable account of an INTERNAL_ERROR or FAIL_ENTRY. */
  internalMessage = '';
  /**
   * tsvisor addition: set when a JavaScript exception reached KVM_RUN (a host bug, never a
   * guest's doing); the vCPU is then dead. Empty otherwise.
   */
  hostError = '';
  readonly systemEvent = { type: 0, flags: 0n };
  readonly debug = { exception: 0, pc: 0n, dr6: 0n, dr7: 0n };
  readonly hypercall = { nr: 0n, args: [0n, 0n, 0n, 0n, 0n, 0n], ret: 0n };
  readonly msr = { index: 0, data: 0n, error: 0, reason: 0 };
  readonly ex = { exception: 0, errorCode: 0 };

  /** The PIO bytes of the current KVM_EXIT_IO. */
  get ioData(): Uint8Array {
    return this.page.subarray(this.io.dataOffset, this.io.dataOffset + this.io.size * this.io.count);
  }
}

export function exitReasonName(r: KvmExitReason): string {
  return KvmExitReason[r] ?? `KVM_EXIT_${r}`;
}
