/**
 * Running testkit guests on a backend through core's public KVM API — the smallest userspace
 * VMM: one memslot, one vCPU started in real mode at the guest's CS:IP, port I/O answered by
 * the caller's handlers (COM1 output collected), until the guest halts or stops.
 */
import {
  BackendClass, Kvm, KvmCreateOptions, KvmExitReason, KvmRun, KvmVcpu, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT,
} from '@tsvisor/core';
import type { GuestImage } from '../guests/boot';

export interface PortHandler {
  /** Value for an IN of `size` bytes. Default all-ones (an unclaimed PC port). */
  in?(port: number, size: number): number;
  out?(port: number, size: number, value: number): void;
}

export interface VmBootOptions {
  /** Guest RAM at GPA 0, bytes (default 4 MiB). */
  memory?: number;
  /** Memslot flags for the RAM slot (e.g. KVM_MEM_LOG_DIRTY_PAGES). */
  slotFlags?: number;
  /** Options passed to Kvm.create besides the backend. */
  kvm?: Omit<KvmCreateOptions, 'backend'>;
}

export interface BootedGuest {
  kvm: Kvm;
  vcpu: KvmVcpu;
}

/** Create a VM with `backend`, load `guest` at its load address, and point vCPU 0 at its entry. */
export function bootGuest(backend: BackendClass, guest: GuestImage, opts: VmBootOptions = {}): BootedGuest {
  const memory = opts.memory ?? 4 << 20;
  const kvm = Kvm.create({ ...opts.kvm, backend });
  kvm.setUserMemoryRegion({ slot: 0, flags: opts.slotFlags ?? 0, guestPhysAddr: 0n, memorySize: BigInt(memory) });
  kvm.slot(0)!.userspace.set(guest.image, guest.loadAddress);
  const vcpu = kvm.createVcpu(0);
  const s = vcpu.getSregs();
  vcpu.setSregs({ ...s, cs: { ...s.cs, selector: guest.cs, base: BigInt(guest.cs * 16), limit: 0xffff } });
  vcpu.setRegs({ ...vcpu.getRegs(), rip: BigInt(guest.ip), rflags: 2n });
  return { kvm, vcpu };
}

export interface RunOptions {
  /** Port handlers by port number; COM1 (0x3F8) output is collected into `serial` unless overridden. */
  ports?: Record<number, PortHandler>;
  /** Stop after this many KVM_RUN calls (default 100 000). */
  maxRuns?: number;
  /** Called for every exit before the default handling; return true to stop. */
  onExit?(run: KvmRun, vcpu: KvmVcpu): boolean | void;
}

export interface RunOutcome {
  /** The exit that ended the run (HLT, SHUTDOWN, FAIL_ENTRY, INTERNAL_ERROR, MMIO…). */
  exitReason: KvmExitReason;
  run: KvmRun;
  /** Bytes written to COM1's THR. */
  serial: string;
  runs: number;
}

const COM1 = 0x3f8;
const COM1_LSR = 0x3fd;

/** KVM_RUN until an exit the caller must see; PIO is answered here, INTR resumes. */
export function runUntilStop(vcpu: KvmVcpu, opts: RunOptions = {}): RunOutcome {
  let serial = '';
  const maxRuns = opts.maxRuns ?? 100_000;
  for (let runs = 1; runs <= maxRuns; runs++) {
    const run = vcpu.runVcpu();
    if (opts.onExit?.(run, vcpu)) return { exitReason: run.exitReason, run, serial, runs };
    if (run.exitReason === KvmExitReason.KVM_EXIT_INTR) continue;
    if (run.exitReason !== KvmExitReason.KVM_EXIT_IO) return { exitReason: run.exitReason, run, serial, runs };
    const { port, size, count, direction } = run.io;
    const data = run.ioData;
    const h = opts.ports?.[port];
    for (let i = 0; i < count; i++) {
      if (direction === KVM_EXIT_IO_OUT) {
        let v = 0;
        for (let b = 0; b < size; b++) v |= data[i * size + b] << (8 * b);
        if (h?.out) h.out(port, size, v >>> 0);
        else if (port === COM1) serial += String.fromCharCode(v & 0xff);
      } else if (direction === KVM_EXIT_IO_IN) {
        // COM1's LSR reads "transmitter empty" so polling guests make progress.
        const v = h?.in ? h.in(port, size) : port === COM1_LSR ? 0x60 : 0xffffffff;
        for (let b = 0; b < size; b++) data[i * size + b] = (v >>> (8 * b)) & 0xff;
      }
    }
  }
  throw new Error(`guest did not stop within ${maxRuns} KVM_RUN calls`);
}
