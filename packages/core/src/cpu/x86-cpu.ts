import type { HostMemory } from '../mmu/host-memory';
import { CpuState } from './state';
import { EventType, GuestExit, GuestExitKind, GuestModeRules, PendingInjection } from './guest-mode';

/** Guest-physical to host-physical without TDP: core's memslots. -1: not backed (MMIO). */
export interface GuestPhysMap {
  gpaToHpa(gpa: number): number;
}

/**
 * Where core's emulation of one instruction sends accesses that hit no RAM (MMIO).
 * `read` returns false when userspace must supply the value (KVM_EXIT_MMIO); the
 * instruction is then abandoned without side effects and re-executed on the next entry,
 * when `read` can answer from the completed exit (KVM's mmio read cache).
 */
export interface MmioBus {
  read(gpa: bigint, size: number, out: Uint8Array): boolean;
  write(gpa: bigint, size: number, data: Uint8Array): void;
}

/** Port I/O the emulated platform answers when guest mode does not intercept it. */
export interface PortBus {
  in(port: number, size: number): number;
  out(port: number, size: number, value: number): void;
}

export enum EmulationResult {
  /** The instruction completed (RIP advanced, state committed). */
  DONE = 0,
  /** An MMIO read needs userspace: nothing was committed; re-run after the exit completes. */
  NEEDS_USERSPACE_READ = 1,
  /** The instruction raised an exception (queued into `injection`). */
  EXCEPTION = 2,
  /** The instruction cannot be emulated (core reports KVM_INTERNAL_ERROR_EMULATION). */
  UNHANDLEABLE = 3,
}

export type CpuVendor = 'intel' | 'amd';

export interface X86CpuOptions {
  /** The emulated hardware's vendor: what its own CPUID says and where Intel and AMD behave differently. */
  vendor: CpuVendor;
}

/**
 * The emulated x86-64 processor: the hardware every backend virtualizes.
 * See docs/architecture.md ("The processor") for its tiers, TLB and invalidation rules.
 */
export class X86Cpu {
  readonly state = new CpuState();
  readonly exit = new GuestExit();
  /** The event to deliver at the next entry (set by the backend from its control block). */
  readonly injection: PendingInjection = {
    valid: false, type: EventType.EXTERNAL_INTERRUPT, vector: 0, hasErrorCode: false, errorCode: 0, insnLength: 0,
  };
  /** Set from another context (a kick) to make runGuest stop at the next boundary with EXTERNAL_INTERRUPT. */
  kick = false;

  constructor(
    readonly host: HostMemory,
    readonly phys: GuestPhysMap,
    readonly options: X86CpuOptions,
  ) {}

  /**
   * Execute in guest mode under `rules` until an exit or until `budget` instructions have
   * retired. Delivers `injection` first if valid. Returns `exit.kind`.
   */
  runGuest(_rules: GuestModeRules, _budget: number): GuestExitKind {
    throw new Error('X86Cpu.runGuest: the processor is not built yet');
  }
}
