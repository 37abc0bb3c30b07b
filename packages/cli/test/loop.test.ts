/**
 * The VMM loop's handling of each exit, driven with scripted KVM_RUN results (no processor
 * needed): which exits continue, which end the run, and with which status and message.
 */
import { KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KvmExitReason, KvmInternalError, KvmRun, KvmSystemEventType, KvmVcpu } from '@tsvisor/core';
import type { RunOptions } from '../src/args';
import { PortIo, SerialConsole } from '../src/ports';
import { vcpuLoop } from '../src/run';
import { ExitStatus } from '../src/status';

type Step = (run: KvmRun, cpu: { instructionsRetired: number }) => void;

const baseOptions: RunOptions = {
  guest: null, backend: 'vmx', memory: 2 ** 24, loadAddress: 0x7c00, entry: 0x7c00, mode: 'real',
  maxInstructions: null, timeoutMs: null, dumpControlBlock: false,
};

/** A stand-in vCPU whose KVM_RUN plays back `steps`, then keeps returning KVM_EXIT_INTR. */
function scriptedVcpu(steps: Step[]) {
  const run = new KvmRun();
  const state = { instructionsRetired: 0 };
  const budgets: number[] = [];
  const vcpu = {
    runBudget: 50_000_000,
    cpu: { state },
    getRegs: () => ({ rip: 0x7c05n }),
    runVcpu(): KvmRun {
      budgets.push(this.runBudget);
      const step = steps.shift();
      if (step) step(run, state);
      else {
        state.instructionsRetired += this.runBudget;
        run.exitReason = KvmExitReason.KVM_EXIT_INTR;
      }
      return run;
    },
  };
  return { vcpu: vcpu as unknown as KvmVcpu, budgets };
}

async function loop(steps: Step[], opts: Partial<RunOptions> = {}) {
  const out: number[] = [];
  const ports = new PortIo(new SerialConsole((b) => out.push(b)));
  const { vcpu, budgets } = scriptedVcpu(steps);
  const outcome = await vcpuLoop(vcpu, ports, { flush: () => undefined }, { ...baseOptions, ...opts });
  return { outcome, serial: Buffer.from(out).toString('latin1'), budgets };
}

const exit = (reason: KvmExitReason, more: (run: KvmRun) => void = () => undefined): Step => (run) => {
  run.exitReason = reason;
  more(run);
};
const outb = (port: number, byte: number): Step => exit(KvmExitReason.KVM_EXIT_IO, (run) => {
  Object.assign(run.io, { direction: KVM_EXIT_IO_OUT, port, size: 1, count: 1 });
  run.ioData[0] = byte;
});

describe('the KVM_RUN loop', () => {
  it('answers port I/O and ends with status 0 at HLT', async () => {
    let lsr = -1;
    const r = await loop([
      outb(0x3f8, 0x4f),
      outb(0x3f8, 0x4b),
      exit(KvmExitReason.KVM_EXIT_IO, (run) => Object.assign(run.io, { direction: KVM_EXIT_IO_IN, port: 0x3fd, size: 1, count: 1 })),
      (run) => {
        lsr = run.ioData[0];
        run.exitReason = KvmExitReason.KVM_EXIT_HLT;
      },
    ]);
    expect(r.serial).toBe('OK');
    expect(lsr).toBe(0x60);
    expect(r.outcome).toEqual({ status: ExitStatus.OK, how: 'guest halted (KVM_EXIT_HLT)' });
  });

  it('keeps going after KVM_EXIT_INTR and MMIO (reads all-ones)', async () => {
    let mmio: number[] = [];
    const r = await loop([
      exit(KvmExitReason.KVM_EXIT_INTR),
      exit(KvmExitReason.KVM_EXIT_MMIO, (run) => Object.assign(run.mmio, { physAddr: 0xfee00000n, len: 4, isWrite: false })),
      (run) => {
        mmio = [...run.mmio.data.subarray(0, 4)];
        run.exitReason = KvmExitReason.KVM_EXIT_HLT;
      },
    ]);
    expect(mmio).toEqual([0xff, 0xff, 0xff, 0xff]);
    expect(r.outcome.status).toBe(ExitStatus.OK);
  });

  it('KVM_EXIT_SHUTDOWN → status 3', async () => {
    const r = await loop([exit(KvmExitReason.KVM_EXIT_SHUTDOWN)]);
    expect(r.outcome.status).toBe(ExitStatus.SHUTDOWN);
    expect(r.outcome.error).toBe('guest shut down (triple fault, KVM_EXIT_SHUTDOWN) at RIP 0x0000000000007c05');
  });

  it('KVM_EXIT_FAIL_ENTRY → status 4, with the hardware reason and the backend message', async () => {
    const r = await loop([exit(KvmExitReason.KVM_EXIT_FAIL_ENTRY, (run) => {
      run.failEntry.hardwareEntryFailureReason = 0x80000021n;
      run.internalMessage = 'invalid guest state: CS.L and CS.D both set';
    })]);
    expect(r.outcome.status).toBe(ExitStatus.FAIL_ENTRY);
    expect(r.outcome.error).toBe(
      'VM entry failed (KVM_EXIT_FAIL_ENTRY): hardware entry failure reason 0x80000021: invalid guest state: CS.L and CS.D both set (--dump-control-block shows the control block)',
    );
  });

  it('KVM_EXIT_INTERNAL_ERROR → status 5, with the suberror and message', async () => {
    const r = await loop([exit(KvmExitReason.KVM_EXIT_INTERNAL_ERROR, (run) => {
      run.internal.suberror = KvmInternalError.KVM_INTERNAL_ERROR_EMULATION;
      run.internalMessage = 'cannot emulate 0f 0b';
    })]);
    expect(r.outcome.status).toBe(ExitStatus.INTERNAL_ERROR);
    expect(r.outcome.error).toBe('internal error (KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_EMULATION) at RIP 0x0000000000007c05: cannot emulate 0f 0b');
  });

  it('system events: power-off → 0, reset → 3', async () => {
    const off = await loop([exit(KvmExitReason.KVM_EXIT_SYSTEM_EVENT, (run) => (run.systemEvent.type = KvmSystemEventType.KVM_SYSTEM_EVENT_SHUTDOWN))]);
    expect(off.outcome.status).toBe(ExitStatus.OK);
    const reset = await loop([exit(KvmExitReason.KVM_EXIT_SYSTEM_EVENT, (run) => (run.systemEvent.type = KvmSystemEventType.KVM_SYSTEM_EVENT_RESET))]);
    expect(reset.outcome.status).toBe(ExitStatus.SHUTDOWN);
  });

  it('an exit the VMM has no handler for → status 5 naming it', async () => {
    const r = await loop([exit(KvmExitReason.KVM_EXIT_DEBUG)]);
    expect(r.outcome.status).toBe(ExitStatus.INTERNAL_ERROR);
    expect(r.outcome.error).toContain('unhandled exit KVM_EXIT_DEBUG');
  });

  it('KVM_RUN throwing → status 5', async () => {
    const r = await loop([() => { throw new Error('EFAULT: KVM_RUN: the VM has no memory'); }]);
    expect(r.outcome.status).toBe(ExitStatus.INTERNAL_ERROR);
    expect(r.outcome.error).toBe('KVM_RUN failed: EFAULT: KVM_RUN: the VM has no memory');
  });

  it('--max-instructions caps each KVM_RUN at what is left, then stops with status 6', async () => {
    const r = await loop([], { maxInstructions: 120_000_000 });
    expect(r.budgets).toEqual([50_000_000, 50_000_000, 20_000_000]);
    expect(r.outcome.status).toBe(ExitStatus.TIMEOUT);
    expect(r.outcome.error).toBe('stopped after 120000000 instructions (--max-instructions 120000000) before the guest halted');
  });

  it('--timeout stops with status 6 after a time slice', async () => {
    const r = await loop([], { timeoutMs: 1 });
    expect(r.outcome.status).toBe(ExitStatus.TIMEOUT);
    expect(r.outcome.error).toContain('(--timeout)');
    expect(r.budgets[0]).toBeLessThan(50_000_000);
  });
});
