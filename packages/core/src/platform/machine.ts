/**
 * `Machine`: a PC built as a userspace VMM on core's KVM-shaped API, the way kvmtool drives
 * /dev/kvm. It creates the VM (KVM_CREATE_VM with the given backend), guest RAM as memslots
 * (q35 layout: see memory.ts), the in-kernel irqchip and 8254 PIT, the platform
 * devices on a userspace port bus and MMIO bus, the built-in firmware, the guest image, and
 * N vCPUs; then it runs them.
 *
 * The run loop is a deterministic round-robin scheduler: each vCPU in id order runs for a
 * slice of `sliceInstructions` retired instructions (KVM_RUN with vcpu.runBudget), its
 * KVM_EXIT_IO / KVM_EXIT_MMIO exits answered by the devices in between. The run ends on
 * isa-debug-exit, a guest power-off or reset request, a triple fault (KVM_EXIT_SHUTDOWN), a
 * failed entry or internal error, every vCPU halted with nothing able to wake it,
 * `maxInstructions`, or `timeoutMs` of wall-clock time.
 *
 * Options mirror `tsvisor run` (issue 6): memory (-m), smp, append, initrd, loadAddr/entry/
 * mode, serial/debugcon sinks, clock, maxInstructions, timeoutMs, trace.
 */
import type { DependencyContainer } from 'tsyringe';
import { Kvm, TraceSink } from '../kvm/kvm';
import { KvmPit, KVM_PIT_SPEAKER_DUMMY } from '../irqchip/i8254';
import { KvmExitReason, KvmInternalError, KvmSystemEventType, exitReasonName } from '../kvm/run';
import { KvmMpState, KvmVcpu } from '../kvm/vcpu';
import type { BackendClass } from '../ops/backend';
import { KvmPlatformClock, PlatformClock } from './clock';
import { AcpiPm } from './devices/acpi-pm';
import { DebugCon } from './devices/debugcon';
import { DebugExit, qemuDebugExitStatus } from './devices/debug-exit';
import { FwCfg, FW_CFG_MAX_CPUS, FW_CFG_NB_CPUS, FW_CFG_RAM_SIZE } from './devices/fw-cfg';
import { Hpet } from './devices/hpet';
import { PciBus, q35HostBridge } from './devices/pci';
import { PciTestdev } from './devices/pci-testdev';
import { PcTestdev } from './devices/pc-testdev';
import { RtcCmos, RTC_IRQ } from './devices/rtc-cmos';
import { SystemControl } from './devices/system-control';
import { COM1_IRQ, Uart16550 } from './devices/uart16550';
import { FirmwareInfo, initPics, installFirmware } from './firmware';
import { IrqLine, IrqPin } from './irq';
import { applyBootState, StartMode, START_MODES, writeBootStructures } from './loaders/boot-state';
import { isElf, loadElf } from './loaders/elf';
import { GuestLoadError } from './loaders/errors';
import { LoadedImage, loadFlat } from './loaders/flat';
import { findMultibootHeader, loadMultiboot } from './loaders/multiboot';
import { e820Map, FOUR_GIB, GuestRam, ramLayout } from './memory';
import { MmioRegionBus } from './mmio-bus';
import { IoPortBus } from './port-bus';

export const DEFAULT_MEMORY = 256 * 2 ** 20;
export const MIN_MEMORY = 2 * 2 ** 20;
/** The most guest RAM a Machine takes (core's host-memory limit for one VM). */
export const MAX_MEMORY = 64 * 2 ** 30;
/** RAM above 4 GiB is split into memslots of at most this size (a typed array holds at most 4 GiB). */
const HIGH_SLOT_SIZE = 2 * 2 ** 30;
export const DEFAULT_SLICE = 10_000;
export const DEFAULT_FLAT_LOAD_ADDR = 0x7c00;
/** Where pci-testdev's BARs are put by the firmware (the guest may move them). */
export const PCI_TESTDEV_SLOT = 3;
export const PCI_TESTDEV_MMIO_BAR = 0xfebf0000;
export const PCI_TESTDEV_IO_BAR = 0xc000;
/** Cap on captured serial/debugcon bytes (a flooding guest cannot grow host memory without bound). */
export const DEFAULT_CAPTURE_LIMIT = 16 * 2 ** 20;

/**
 * Exit statuses: those of `tsvisor run`, which adds 1 (a bug in tsvisor) and 2 (a user
 * error) — one table, in docs/platform.md and packages/cli/README.md. A debug-exit write ends
 * with status = the value written (issue 6; the CLI's process status is its low 8 bits);
 * `qemuStatus` in the result carries QEMU's (value << 1) | 1.
 */
export enum MachineExitStatus {
  OK = 0,
  TRIPLE_FAULT = 3,
  FAIL_ENTRY = 4,
  INTERNAL_ERROR = 5,
  TIMEOUT = 6,
  RESET = 7,
  /** `interrupt()` (the CLI's Ctrl-C): 128 + SIGINT, as a shell reports a process killed by it. */
  INTERRUPTED = 130,
}

export type MachineExitReason =
  | 'debug-exit' | 'halted' | 'poweroff' | 'reset' | 'triple-fault' | 'fail-entry'
  | 'internal-error' | 'max-instructions' | 'timeout' | 'interrupted';

/**
 * The row of the exit-time table that takes the time of a KVM_RUN during which the backend
 * took no exit at all (the run ended because its time slice ran out).
 */
export const NO_EXIT = '(no exit: time slice)';

export type GuestFormat = 'auto' | 'flat' | 'elf' | 'multiboot';

export interface GuestFile {
  /** For messages, and the first word of a Multiboot command line (as QEMU passes it). */
  name: string;
  data: Uint8Array;
}

export interface MachineOptions {
  /** The backend class (KVM_CREATE_VM's vendor module); or register X86_OPS in `container`. */
  backend?: BackendClass;
  container?: DependencyContainer;
  /** Guest RAM in bytes (-m); default 256 MiB, a multiple of 4 KiB, at least 2 MiB. */
  memory?: number;
  /** Number of vCPUs (--smp); default 1. */
  smp?: number;
  kernel: GuestFile;
  /** How to read `kernel`; 'auto' (default): Multiboot header → Multiboot, ELF magic → ELF, else flat. */
  format?: GuestFormat;
  /** Kernel command line (--append). */
  append?: string;
  /** Multiboot modules (--initrd …). */
  initrd?: readonly GuestFile[];
  /** Flat binaries (and overrides for ELF): --load-addr, --entry, --mode. */
  loadAddr?: number;
  entry?: number;
  mode?: StartMode;
  /** Where COM1's output goes (--serial); it is also captured in the result. */
  serial?: ((byte: number) => void) | null;
  /** Bytes queued for COM1's receiver before the run (more with `machine.uart.receive`). */
  serialInput?: Uint8Array;
  /** Where port 0xE9 output goes (--debugcon); nowhere by default, as in QEMU. */
  debugcon?: ((byte: number) => void) | null;
  /** --clock: 'virtual' (default, reproducible) or 'host'. */
  clock?: 'virtual' | 'host';
  maxInstructions?: number;
  timeoutMs?: number;
  /** --trace: KVM tracepoint names and where their lines go. */
  trace?: { events: Iterable<string>; sink: TraceSink };
  /** Instructions per vCPU turn in the scheduler (default 10,000). */
  sliceInstructions?: number;
  /** What the RTC shows at guest time 0 (default 2024-01-01T00:00:00Z under the virtual clock, now under the host clock). */
  rtcDate?: Date;
  /** Replace the interrupt line (tests); default KVM_IRQ_LINE when the VM has an irqchip. */
  irqLine?: IrqLine;
  /** Cap on captured serial and debugcon bytes each. */
  captureLimit?: number;
  /**
   * Measure wall time per exit reason (--stats): performance.now() at each KVM_RUN return;
   * the time of the KVM_RUN is charged to the backend exit that ended it (see VcpuStats.exitTimeMs).
   */
  exitTiming?: boolean;
}

export interface VcpuStats {
  id: number;
  instructions: number;
  /** Exits by the backend's own exit-reason names (vcpu.exitCounts). */
  exits: Record<string, number>;
  /** Exits that reached this VMM, by KVM_EXIT_* name. */
  userspaceExits: Record<string, number>;
  /**
   * With `exitTiming`: wall ms by backend exit-reason name. Each KVM_RUN's time (guest execution
   * and in-kernel exit handling) plus the VMM's handling of its userspace exit is charged to
   * the last exit the backend took in it; a KVM_RUN with no exit goes to NO_EXIT. Empty
   * without `exitTiming`.
   */
  exitTimeMs: Record<string, number>;
  mpState: string;
}

export interface MachineResult {
  status: number;
  reason: MachineExitReason;
  /** One line saying how the run ended. */
  message: string;
  /** Set when the guest wrote isa-debug-exit: the value written (up to 32 bits). */
  debugExitValue?: number;
  /** QEMU's exit status for that write: (value << 1) | 1. */
  qemuStatus?: number;
  serialOutput: string;
  debugconOutput: string;
  instructions: number;
  guestTimeNs: number;
  wallMs: number;
  vcpus: VcpuStats[];
}

/** A bad machine configuration (memory size, vCPU count, …): the option and what was expected. */
export class MachineConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MachineConfigError';
  }
}

interface Stop {
  reason: MachineExitReason;
  status: number;
  message: string;
  debugExitValue?: number;
}

class Capture {
  private chunks: number[] = [];
  private dropped = 0;
  constructor(private readonly limit: number) {}
  push(b: number): void {
    if (this.chunks.length < this.limit) this.chunks.push(b);
    else this.dropped++;
  }
  text(): string {
    const s = Buffer.from(this.chunks).toString('latin1');
    return this.dropped ? `${s}\n[tsvisor: ${this.dropped} more bytes not captured]` : s;
  }
}

interface VcpuRunState {
  vcpu: KvmVcpu;
  /** Returned KVM_EXIT_HLT: in kernel it blocked with nothing to wake it. */
  idle: boolean;
  /** Without an in-kernel irqchip a halted vCPU, or an AP waiting for SIPI, never runs again. */
  parked: boolean;
  userspaceExits: Map<string, number>;
  /** exitTiming: ms by backend exit name. */
  exitTime: Map<string, number>;
}

export class Machine {
  readonly kvm: Kvm;
  readonly ram = new GuestRam();
  readonly ports = new IoPortBus();
  readonly mmio = new MmioRegionBus();
  readonly clock: PlatformClock;
  readonly irqLine: IrqLine;
  readonly irqchip: boolean;
  readonly uart: Uart16550;
  /** The in-kernel 8254, with port 0x61 (KVM_CREATE_PIT2 with KVM_PIT_SPEAKER_DUMMY). */
  readonly pit: KvmPit;
  readonly rtc: RtcCmos;
  readonly hpet: Hpet;
  readonly pm: AcpiPm;
  readonly fwCfg = new FwCfg();
  readonly pci: PciBus;
  readonly pciTestdev = new PciTestdev();
  readonly pcTestdev: PcTestdev;
  readonly systemControl: SystemControl;
  readonly firmware: FirmwareInfo;
  readonly image: LoadedImage;
  readonly vcpus: VcpuRunState[] = [];
  private readonly serialOut: Capture;
  private readonly debugconOut: Capture;
  private stop: Stop | null = null;
  private readonly slice: number;
  private idleRounds = 0;
  private destroyed = false;

  private constructor(readonly options: MachineOptions) {
    const memory = options.memory ?? DEFAULT_MEMORY;
    const smp = options.smp ?? 1;
    validate(options, memory, smp);
    this.slice = options.sliceInstructions ?? DEFAULT_SLICE;
    const limit = options.captureLimit ?? DEFAULT_CAPTURE_LIMIT;
    this.serialOut = new Capture(limit);
    this.debugconOut = new Capture(limit);

    const mode = options.clock ?? 'virtual';
    this.kvm = Kvm.create({ backend: options.backend, container: options.container, clock: mode });
    try {
      // RAM: slot 0 below the PCI hole, slots 1… from 4 GiB.
      const layout = ramLayout(memory);
      const low = allocRam(layout.belowFourG, memory);
      this.kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: BigInt(low.length), userspace: low });
      this.ram.add(0, low);
      for (let off = 0, slot = 1; off < layout.aboveFourG; off += HIGH_SLOT_SIZE, slot++) {
        const high = allocRam(Math.min(HIGH_SLOT_SIZE, layout.aboveFourG - off), memory);
        this.kvm.setUserMemoryRegion({ slot, flags: 0, guestPhysAddr: BigInt(FOUR_GIB + off), memorySize: BigInt(high.length), userspace: high });
        this.ram.add(FOUR_GIB + off, high);
      }

      // KVM_CREATE_IRQCHIP before the vCPUs, as KVM requires.
      this.kvm.createIrqchip();
      this.irqchip = true;
      this.irqLine = options.irqLine ?? {
        setIrq: (gsi: number, level: boolean) => {
          // KVM's kvm_set_irq tracepoint (virt/kvm/irqchip.c), for lines the VMM drives with KVM_IRQ_LINE.
          const ctx = this.kvm.currentVcpu ?? this.kvm.vcpus[0];
          if (ctx) this.kvm.trace('kvm_set_irq', ctx, () => `gsi ${gsi} level ${level ? 1 : 0} source 0`);
          this.kvm.irqLine(gsi, level);
        },
      };

      for (let i = 0; i < smp; i++) {
        const vcpu = this.kvm.createVcpu(i);
        setVcpuTopology(vcpu, smp);
        this.vcpus.push({ vcpu, idle: false, parked: false, userspaceExits: new Map(), exitTime: new Map() });
      }

      // Guest time: the VM's clock (kvm.clock), whose timers fire in core's run loop.
      this.clock = new KvmPlatformClock(this.kvm.clock);

      // Devices.
      const pin = (gsi: number) => new IrqPin(this.irqLine, gsi);
      this.uart = new Uart16550((b) => {
        this.serialOut.push(b);
        options.serial?.(b);
      }, pin(COM1_IRQ));
      this.uart.attach(this.ports);
      if (options.serialInput) this.uart.receive(options.serialInput);
      new DebugCon((b) => {
        this.debugconOut.push(b);
        options.debugcon?.(b);
      }).attach(this.ports);
      new DebugExit((v) => this.requestStop({
        reason: 'debug-exit', status: v, debugExitValue: v,
        message: `guest wrote 0x${v.toString(16)} to isa-debug-exit (QEMU would exit with ${qemuDebugExitStatus(v)})`,
      })).attach(this.ports);
      // The 8254 (0x40–0x43) and port 0x61 are in the kernel: no KVM_EXIT_IO reaches the platform for them.
      this.pit = this.kvm.createPit2(KVM_PIT_SPEAKER_DUMMY);
      const rtcDate = options.rtcDate ?? (mode === 'host' ? new Date() : new Date(Date.UTC(2024, 0, 1)));
      this.rtc = new RtcCmos(this.clock, pin(RTC_IRQ), rtcDate, { ...layout, cpus: smp });
      this.rtc.attach(this.ports);
      this.systemControl = new SystemControl((kind, why) => this.requestStop(kind === 'reset'
        ? { reason: 'reset', status: MachineExitStatus.RESET, message: `guest requested a reset: ${why}` }
        : { reason: 'poweroff', status: MachineExitStatus.OK, message: `guest powered off: ${why}` }));
      this.systemControl.attach(this.ports);
      this.pm = new AcpiPm(this.clock, (why) => this.requestStop({ reason: 'poweroff', status: MachineExitStatus.OK, message: `guest powered off: ${why}` }));
      this.pm.attach(this.ports);
      this.hpet = new Hpet(this.clock, this.irqLine);
      this.hpet.attach(this.mmio);
      this.pcTestdev = new PcTestdev(this.irqLine);
      this.pcTestdev.attach(this.ports, this.mmio);
      this.pci = new PciBus(this.ports, this.mmio);
      this.pci.attach();
      this.pci.plug(q35HostBridge(), 0);
      this.pci.plug(this.pciTestdev, PCI_TESTDEV_SLOT);
      this.pciTestdev.setBar(0, PCI_TESTDEV_MMIO_BAR);
      this.pciTestdev.setBar(1, PCI_TESTDEV_IO_BAR);
      this.pciTestdev.writeConfig(4, 2, 0x0003); // I/O and memory decoding on, as firmware leaves it

      // fw_cfg.
      const e820 = e820Map(layout);
      this.fwCfg.setU64(FW_CFG_RAM_SIZE, BigInt(memory));
      this.fwCfg.setU16(FW_CFG_NB_CPUS, smp);
      this.fwCfg.setU16(FW_CFG_MAX_CPUS, smp);
      this.fwCfg.setE820(e820);
      this.fwCfg.setCmdline(options.append ?? '');
      this.fwCfg.attach(this.ports);

      // Firmware, then the guest on top of it.
      this.firmware = installFirmware(this.ram, {
        apicIds: this.vcpus.map((v) => v.vcpu.vcpuId),
        hpetBlockId: Number(this.hpet.capabilities() & 0xffffffffn),
      });
      if (this.irqchip) initPics(this.kvm);
      this.image = this.loadGuest(e820);
      writeBootStructures(this.ram, this.image.boot.mode);
      applyBootState(this.vcpus[0].vcpu, this.image.boot);

      // Application processors wait for INIT/SIPI (KVM_SET_MP_STATE INIT_RECEIVED with an in-kernel LAPIC).
      for (const s of this.vcpus.slice(1)) {
        if (this.irqchip) s.vcpu.setMpState(KvmMpState.INIT_RECEIVED);
        else s.parked = true;
      }
      if (options.trace) this.kvm.setTrace(new Set(options.trace.events), options.trace.sink);
    } catch (e) {
      this.kvm.destroy();
      throw e;
    }
  }

  /** Build the machine and load the guest. Throws MachineConfigError, GuestLoadError or KvmError. */
  static create(options: MachineOptions): Machine {
    return new Machine(options);
  }

  private loadGuest(e820: ReturnType<typeof e820Map>): LoadedImage {
    const o = this.options;
    const { name, data } = o.kernel;
    let format = o.format ?? 'auto';
    if (format === 'auto') {
      if (o.mode !== undefined || o.loadAddr !== undefined) format = isElf(data) ? 'elf' : 'flat';
      else format = findMultibootHeader(name, data) ? 'multiboot' : isElf(data) ? 'elf' : 'flat';
    }
    if (o.initrd?.length && format !== 'multiboot') {
      throw new GuestLoadError(name, `--initrd needs a Multiboot kernel, but this is loaded as ${format === 'elf' ? 'a plain ELF executable' : 'a flat binary'}`);
    }
    switch (format) {
      case 'multiboot':
        return loadMultiboot(this.ram, name, data, {
          cmdline: o.append !== undefined ? `${name} ${o.append}` : name,
          modules: o.initrd?.map((m) => ({ name: m.name, data: m.data })),
          e820,
        });
      case 'elf':
        return loadElf(this.ram, name, data, { mode: o.mode, entry: o.entry });
      default:
        return loadFlat(this.ram, name, data, { loadAddr: o.loadAddr ?? DEFAULT_FLAT_LOAD_ADDR, entry: o.entry, mode: o.mode });
    }
  }

  /** Instructions retired by all vCPUs. */
  instructions(): number {
    let n = 0;
    for (const s of this.vcpus) n += s.vcpu.cpu.state.instructionsRetired;
    return n;
  }

  /** Devices call this; the loop ends after the current exit. The first reason wins. */
  requestStop(s: Stop): void {
    if (!this.stop) this.stop = s;
  }

  /** Exits the backend has taken on every vCPU (in-kernel and userspace ones). */
  exits(): number {
    let n = 0;
    for (const s of this.vcpus) n += s.vcpu.exitTotal;
    return n;
  }

  /**
   * Run to the end, yielding to the event loop at least every 20 ms of wall time so the host
   * stays responsive: a signal handler (Ctrl-C → `interrupt()`), timers, output streams.
   */
  async run(): Promise<MachineResult> {
    const started = Date.now();
    let lastYield = started;
    for (;;) {
      const r = this.round(started);
      if (r) return r;
      if (Date.now() - lastYield > 20) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        lastYield = Date.now();
      }
    }
  }

  /** Run to the end without yielding (tests, scripts). */
  runSync(): MachineResult {
    const started = Date.now();
    for (;;) {
      const r = this.round(started);
      if (r) return r;
    }
  }

  /** Ask the run to stop (Ctrl-C): it ends after the current exit with reason 'interrupted', status 130. */
  interrupt(why = 'interrupted'): void {
    this.requestStop({ reason: 'interrupted', status: MachineExitStatus.INTERRUPTED, message: why });
  }

  /** One scheduler round over every vCPU; a result when the run is over. */
  private round(started: number): MachineResult | null {
    const o = this.options;
    let progressed = false;
    for (const s of this.vcpus) {
      if (s.parked) continue;
      const before = s.vcpu.cpu.state.instructionsRetired;
      this.turn(s, started);
      if (s.vcpu.cpu.state.instructionsRetired !== before) progressed = true;
      if (this.stop) return this.finish(started);
    }
    if (o.maxInstructions !== undefined && this.instructions() >= o.maxInstructions) {
      this.requestStop({ reason: 'max-instructions', status: MachineExitStatus.TIMEOUT, message: `stopped after ${this.instructions()} instructions (maxInstructions ${o.maxInstructions})` });
      return this.finish(started);
    }
    if (o.timeoutMs !== undefined && Date.now() - started >= o.timeoutMs) {
      this.requestStop({ reason: 'timeout', status: MachineExitStatus.TIMEOUT, message: `stopped after ${o.timeoutMs} ms (timeout) and ${this.instructions()} instructions` });
      return this.finish(started);
    }
    if (this.vcpus.some((s) => !s.parked && !s.idle)) return null;
    // Every vCPU returned KVM_EXIT_HLT: core's in-kernel HLT found nothing that can wake it (a
    // vCPU with an armed timer yields with KVM_EXIT_INTR instead, and kvm.clock skips idle time).
    // One vCPU's last instructions may still have woken another after that one's turn (an IPI):
    // go round once more before calling it done.
    if (progressed) {
      for (const s of this.vcpus) s.idle = false;
      return null;
    }
    this.requestStop({ reason: 'halted', status: MachineExitStatus.OK, message: 'all vCPUs halted with nothing to wake them' });
    return this.finish(started);
  }

  /** Run one vCPU for up to a slice of instructions, answering its exits. */
  private turn(s: VcpuRunState, started: number): void {
    const v = s.vcpu;
    const o = this.options;
    const timing = o.exitTiming === true;
    const sliceEnd = v.cpu.state.instructionsRetired + this.slice;
    let last = timing ? performance.now() : 0;
    s.idle = false;
    for (let exits = 0; ; exits++) {
      let budget = sliceEnd - v.cpu.state.instructionsRetired;
      if (budget <= 0) return;
      if (o.maxInstructions !== undefined) {
        const left = o.maxInstructions - this.instructions();
        if (left <= 0) return;
        budget = Math.min(budget, left);
      }
      v.runBudget = Math.max(1, budget);
      const exitsBefore = v.exitTotal;
      let run;
      try {
        run = v.runVcpu();
      } catch (e) {
        this.requestStop({ reason: 'internal-error', status: MachineExitStatus.INTERNAL_ERROR, message: `vCPU ${v.vcpuId}: KVM_RUN failed: ${(e as Error).message}` });
        return;
      }
      const name = exitReasonName(run.exitReason);
      s.userspaceExits.set(name, (s.userspaceExits.get(name) ?? 0) + 1);
      this.kvm.trace('kvm_userspace_exit', v, () => `reason ${name} (${run.exitReason})`);
      const done = this.handleUserspaceExit(s, run);
      if (timing) {
        const now = performance.now();
        const charged = v.exitTotal !== exitsBefore ? v.lastExit : NO_EXIT;
        s.exitTime.set(charged, (s.exitTime.get(charged) ?? 0) + (now - last));
        last = now;
      }
      if (done || this.stop) return;
      // A guest flooding exits still sees the wall-clock timeout.
      if (o.timeoutMs !== undefined && (exits & 0x3ff) === 0x3ff && Date.now() - started >= o.timeoutMs) return;
    }
  }

  /** Answer one KVM_RUN return; true when this vCPU's turn is over. */
  private handleUserspaceExit(s: VcpuRunState, run: KvmVcpu['run']): boolean {
    const v = s.vcpu;
    switch (run.exitReason) {
      case KvmExitReason.KVM_EXIT_IO:
        this.ports.handleExit(run);
        return false;
      case KvmExitReason.KVM_EXIT_MMIO:
        this.mmio.handleExit(run);
        return false;
      case KvmExitReason.KVM_EXIT_IRQ_WINDOW_OPEN:
        return false;
      case KvmExitReason.KVM_EXIT_INTR:
        // The slice ran out, or a blocked vCPU yields so others can run (wait for SIPI, a timer).
        return true;
      case KvmExitReason.KVM_EXIT_HLT:
        s.idle = true;
        if (!this.irqchip) s.parked = true; // HLT was skipped and nothing can interrupt it
        return true;
      case KvmExitReason.KVM_EXIT_SHUTDOWN:
        this.requestStop({ reason: 'triple-fault', status: MachineExitStatus.TRIPLE_FAULT, message: `vCPU ${v.vcpuId}: triple fault (KVM_EXIT_SHUTDOWN) at RIP ${rip(v)}` });
        return true;
      case KvmExitReason.KVM_EXIT_FAIL_ENTRY:
        this.requestStop({
          reason: 'fail-entry', status: MachineExitStatus.FAIL_ENTRY,
          message: `vCPU ${v.vcpuId}: VM entry failed (KVM_EXIT_FAIL_ENTRY, reason 0x${run.failEntry.hardwareEntryFailureReason.toString(16)})${run.internalMessage ? `: ${firstLine(run.internalMessage)}` : ''}`,
        });
        return true;
      case KvmExitReason.KVM_EXIT_INTERNAL_ERROR:
        this.requestStop({
          reason: 'internal-error', status: MachineExitStatus.INTERNAL_ERROR,
          message: `vCPU ${v.vcpuId}: internal error (${KvmInternalError[run.internal.suberror] ?? run.internal.suberror}) at RIP ${rip(v)}${run.internalMessage ? `: ${firstLine(run.internalMessage)}` : ''}`,
        });
        return true;
      case KvmExitReason.KVM_EXIT_SYSTEM_EVENT:
        if (run.systemEvent.type === KvmSystemEventType.KVM_SYSTEM_EVENT_RESET) {
          this.requestStop({ reason: 'reset', status: MachineExitStatus.RESET, message: `vCPU ${v.vcpuId}: guest requested a reset (KVM_EXIT_SYSTEM_EVENT)` });
        } else if (run.systemEvent.type === KvmSystemEventType.KVM_SYSTEM_EVENT_SHUTDOWN) {
          this.requestStop({ reason: 'poweroff', status: MachineExitStatus.OK, message: `vCPU ${v.vcpuId}: guest powered off (KVM_EXIT_SYSTEM_EVENT)` });
        } else {
          this.requestStop({ reason: 'internal-error', status: MachineExitStatus.INTERNAL_ERROR, message: `vCPU ${v.vcpuId}: guest crashed (KVM_EXIT_SYSTEM_EVENT type ${run.systemEvent.type})` });
        }
        return true;
      default:
        this.requestStop({ reason: 'internal-error', status: MachineExitStatus.INTERNAL_ERROR, message: `vCPU ${v.vcpuId}: unhandled exit ${exitReasonName(run.exitReason)} at RIP ${rip(v)}` });
        return true;
    }
  }

  private finish(started: number): MachineResult {
    const s = this.stop!;
    return {
      status: s.status,
      reason: s.reason,
      message: s.message,
      ...(s.debugExitValue !== undefined ? { debugExitValue: s.debugExitValue, qemuStatus: qemuDebugExitStatus(s.debugExitValue) } : {}),
      serialOutput: this.serialOut.text(),
      debugconOutput: this.debugconOut.text(),
      instructions: this.instructions(),
      guestTimeNs: this.clock.now(),
      wallMs: Date.now() - started,
      vcpus: this.vcpus.map((x) => ({
        id: x.vcpu.vcpuId,
        instructions: x.vcpu.cpu.state.instructionsRetired,
        exits: Object.fromEntries(x.vcpu.exitCounts),
        userspaceExits: Object.fromEntries(x.userspaceExits),
        exitTimeMs: Object.fromEntries(x.exitTime),
        mpState: KvmMpState[x.vcpu.getMpState()] ?? String(x.vcpu.getMpState()),
      })),
    };
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.kvm.destroy();
  }
}

/**
 * KVM_SET_CPUID2 with this vCPU's identity, as QEMU does for each vCPU: KVM_GET_SUPPORTED_CPUID
 * leaves the APIC ids to userspace. Leaf 1 EBX[31:24] = initial APIC id (= vCPU id, as in the
 * MADT), EBX[23:16] = logical processors; leaves 0xB/0x1F EDX = x2APIC id.
 */
function setVcpuTopology(vcpu: KvmVcpu, smp: number): void {
  const entries = vcpu.getCpuid2();
  for (const e of entries) {
    if (e.function === 1) {
      e.ebx = ((e.ebx & 0x0000ffff) | ((Math.min(smp, 255) & 0xff) << 16) | ((vcpu.vcpuId & 0xff) << 24)) >>> 0;
      if (smp > 1) e.edx = (e.edx | (1 << 28)) >>> 0; // HTT: the EBX[23:16] count is valid
    } else if (e.function === 0xb || e.function === 0x1f) {
      e.edx = vcpu.vcpuId >>> 0;
    }
  }
  vcpu.setCpuid2(entries);
}

/** The backends append a full control-block dump to their messages: the result's message is one line. */
function firstLine(text: string): string {
  const i = text.indexOf('\n');
  return i < 0 ? text : text.slice(0, i);
}

/** Guest RAM, or a MachineConfigError saying this host cannot give that much. */
function allocRam(bytes: number, total: number): Uint8Array {
  try {
    return new Uint8Array(bytes);
  } catch (e) {
    throw new MachineConfigError(`memory: cannot allocate ${total} bytes of guest RAM on this host (${(e as Error).message})`);
  }
}

function rip(v: KvmVcpu): string {
  try {
    return `0x${v.getRegs().rip.toString(16)}`;
  } catch {
    return '(unavailable)';
  }
}

function validate(o: MachineOptions, memory: number, smp: number): void {
  if (!o || typeof o !== 'object') throw new MachineConfigError('machine options must be an object');
  if (!o.kernel || !(o.kernel.data instanceof Uint8Array)) throw new MachineConfigError('kernel: a { name, data: Uint8Array } guest file is required');
  if (!Number.isSafeInteger(memory) || memory <= 0) throw new MachineConfigError(`memory: ${String(memory)} is not a positive number of bytes`);
  if (memory % 4096) throw new MachineConfigError(`memory: ${memory} bytes is not a multiple of 4 KiB`);
  if (memory < MIN_MEMORY) throw new MachineConfigError(`memory: ${memory} bytes is below the minimum of 2 MiB (the BIOS area and a kernel at 1 MiB need it)`);
  if (memory > MAX_MEMORY) throw new MachineConfigError(`memory: ${memory} bytes is above the maximum of 64 GiB`);
  if (!Number.isInteger(smp) || smp < 1 || smp > 255) throw new MachineConfigError(`smp: ${String(smp)} is not a vCPU count in 1..255 (xAPIC ids are 8 bits)`);
  if (o.mode !== undefined && !START_MODES.includes(o.mode)) throw new MachineConfigError(`mode: '${String(o.mode)}' is not one of ${START_MODES.join(', ')}`);
  if (o.format !== undefined && !['auto', 'flat', 'elf', 'multiboot'].includes(o.format)) throw new MachineConfigError(`format: '${String(o.format)}' is not auto, flat, elf or multiboot`);
  if (o.clock !== undefined && o.clock !== 'virtual' && o.clock !== 'host') throw new MachineConfigError(`clock: '${String(o.clock)}' is not virtual or host`);
  if (o.maxInstructions !== undefined && (!Number.isSafeInteger(o.maxInstructions) || o.maxInstructions <= 0)) throw new MachineConfigError(`maxInstructions: ${String(o.maxInstructions)} is not a positive integer`);
  if (o.timeoutMs !== undefined && (!Number.isFinite(o.timeoutMs) || o.timeoutMs <= 0)) throw new MachineConfigError(`timeoutMs: ${String(o.timeoutMs)} is not a positive number`);
  if (o.sliceInstructions !== undefined && (!Number.isSafeInteger(o.sliceInstructions) || o.sliceInstructions <= 0)) throw new MachineConfigError(`sliceInstructions: ${String(o.sliceInstructions)} is not a positive integer`);
}
