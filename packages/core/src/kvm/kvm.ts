import 'reflect-metadata';
import { container as rootContainer, DependencyContainer } from 'tsyringe';
import { X86Cpu } from '../cpu/x86-cpu';
import { HostMemory } from '../mmu/host-memory';
import { KvmUserspaceMemoryRegion, KVM_MEM_LOG_DIRTY_PAGES, Memslots } from '../mmu/memslot';
import { BackendClass, BackendInfo, getBackendInfo, X86_OPS } from '../ops/backend';
import { bindX86Ops, BoundOps } from '../ops/bind';
import { OpName } from '../ops/table';
import { KvmMemorySlot, KvmReg } from '../ops/types';
import type { X86Ops } from '../ops/x86-ops';
import { KvmCpuidEntry2, supportedCpuid, validateCpuid } from './cpuid';
import { BackendBindError, KvmError } from './errors';
import { KvmIoBus } from './io-bus';
import { KvmRun } from './run';
import { KvmVcpu } from './vcpu';
import * as x86 from './x86';
import { TdpFormat, TdpMmu } from '../mmu/tdp';
import type { IrqSource } from '../irqchip/irq-source';
import { KvmIrqchip } from '../irqchip/irqchip';
import type { KvmIrqRoutingEntry } from '../irqchip/irq-routing';
import { KvmIrqRoutingTable } from '../irqchip/irq-routing';
import { KvmPit, KvmPitState2, KVM_PIT_BASE_ADDRESS, KVM_PIT_MEM_LENGTH, KVM_PIT_SPEAKER_DUMMY, KVM_SPEAKER_BASE_ADDRESS } from '../irqchip/i8254';
import { KvmClock, KvmClockMode } from './clock';

/** KVM_MAX_VCPUS / KVM_MAX_VCPU_ID on x86 (5.8). */
export const KVM_MAX_VCPUS = 288;
export const KVM_MAX_VCPU_ID = 1023;

export interface KvmCreateOptions {
  /** Parent container holding the X86_OPS registration (default: tsyringe's root container). */
  container?: DependencyContainer;
  /** Shortcut: use this backend class instead of the container's X86_OPS registration. */
  backend?: BackendClass;
  /** Cap on host memory (guest RAM + control structures) for this VM, in bytes. */
  hostMemoryLimit?: number;
  /** Guest time: 'virtual' (default; derived from retired instructions, reproducible) or 'host'. */
  clock?: KvmClockMode;
}

/** Counters for `--stats` and the benchmarks. */
export interface KvmStats {
  exits: number;
  cpuidExits: number;
  msrReads: number;
  msrWrites: number;
  pioExits: number;
  mmioExits: number;
  hypercalls: number;
  haltExits: number;
  irqInjections: number;
}

export type TraceSink = (event: string, vcpuId: number, text: string) => void;

/**
 * struct kvm: one VM, with its KVM_* VM ioctls as methods. The vendor backend is resolved from
 * this VM's own child container (X86_OPS), bound and checked against the ops table.
 */
export class Kvm {
  readonly container: DependencyContainer;
  readonly ops: X86Ops;
  readonly backendInfo: BackendInfo;
  /** Hooks the backend provides (optional ones only when implemented). */
  readonly present: ReadonlySet<OpName>;
  readonly hostMemory: HostMemory;
  readonly memslots: Memslots;
  readonly vcpus: KvmVcpu[] = [];
  /** In-kernel port and MMIO buses (kvm->buses[KVM_PIO_BUS / KVM_MMIO_BUS]). */
  readonly pioBus = new KvmIoBus();
  readonly mmioBus = new KvmIoBus();
  /** True once an in-kernel irqchip exists (KVM_CREATE_IRQCHIP). */
  irqchipInKernel = false;
  /** The in-kernel interrupt source (LAPIC/PIC) when there is one. */
  irqSource: IrqSource | null = null;
  /** The in-kernel PIC, IOAPIC and LAPICs (KVM_CREATE_IRQCHIP), or null. */
  irqchip: KvmIrqchip | null = null;
  /** The in-kernel 8254 (KVM_CREATE_PIT2), or null (kvm->arch.vpit). */
  pit: KvmPit | null = null;
  /** Guest time and timers (see kvm/clock.ts). */
  readonly clock: KvmClock = new KvmClock(this);
  /** The vCPU inside KVM_RUN right now (set by the run loop): in-kernel devices act in its context. */
  currentVcpu: KvmVcpu | null = null;
  /** The two-dimensional-paging MMU, when the backend enabled TDP (kvm_mmu with tdp_enabled). */
  mmu: TdpMmu | null = null;
  /** Vendor per-VM state (struct kvm_vmx / kvm_svm), set by the backend's vmInit. */
  vendor: unknown = null;
  /** Host-physical base of the vmSize bytes reserved for the backend's per-VM structures. */
  readonly vendorArea: number;
  readonly stats: KvmStats = { exits: 0, cpuidExits: 0, msrReads: 0, msrWrites: 0, pioExits: 0, mmioExits: 0, hypercalls: 0, haltExits: 0, irqInjections: 0 };
  private traceSink: TraceSink | null = null;
  private traceEvents: ReadonlySet<string> | null = null;
  /** An exit counted by the backend whose kvm_exit line is not written yet (see noteExit). */
  private pendingExitTrace: { vcpu: KvmVcpu; name: string; rip: bigint } | null = null;
  private destroyed = false;

  private constructor(bound: BoundOps, child: DependencyContainer, hostMemoryLimit?: number) {
    this.container = child;
    this.ops = bound.ops;
    this.backendInfo = bound.info;
    this.present = bound.present;
    this.hostMemory = new HostMemory(hostMemoryLimit);
    this.memslots = new Memslots(this.hostMemory);
    const pages = Math.max(1, Math.ceil(this.ops.vmSize / 4096));
    this.vendorArea = this.hostMemory.allocPages(pages, `${bound.info.name} vm area`);
  }

  /** KVM_CREATE_VM. */
  static create(options: KvmCreateOptions = {}): Kvm {
    const parent = options.container ?? rootContainer;
    const child = parent.createChildContainer();
    if (options.backend) child.register(X86_OPS, { useClass: options.backend as never });
    if (!child.isRegistered(X86_OPS, true)) {
      throw new KvmError('ENODEV', 'KVM_CREATE_VM: no backend is registered for X86_OPS (register one with container.register(X86_OPS, { useClass: … }) or pass { backend })');
    }
    let instance: unknown;
    try {
      instance = child.resolve(X86_OPS);
    } catch (e) {
      throw new BackendBindError('?', [], `KVM_CREATE_VM: the X86_OPS registration could not be constructed: ${(e as Error).message}`);
    }
    const info = getBackendInfo((instance as object).constructor);
    if (!info) {
      throw new BackendBindError((instance as object).constructor?.name ?? '?', [], `class ${(instance as object).constructor?.name ?? '?'} is not a tsvisor backend (it lacks the @backend({ name, vendor }) decorator)`);
    }
    const bound = bindX86Ops(instance, info);
    const kvm = new Kvm(bound, child, options.hostMemoryLimit);
    if (options.clock !== undefined) kvm.clock.setMode(options.clock);
    let r = kvm.ops.hardwareEnable();
    if (r !== 0) throw new KvmError('EBUSY', `KVM_CREATE_VM: ${info.name}.hardwareEnable failed (${r})`);
    r = kvm.ops.vmInit(kvm);
    if (r !== 0) throw new KvmError('EINVAL', `KVM_CREATE_VM: ${info.name}.vmInit failed (${r})`);
    return kvm;
  }

  /** kvm_configure_mmu(tdp_enabled): the backend's vmInit turns on two-dimensional paging in its format. */
  enableTdp(format: TdpFormat): TdpMmu {
    this.mmu = new TdpMmu(this.hostMemory, this.memslots, format);
    return this.mmu;
  }

  /** Does the backend implement optional hook `name`? (static_call_cond). */
  has(name: OpName): boolean {
    return this.present.has(name);
  }

  // ---- KVM_SET_USER_MEMORY_REGION

  setUserMemoryRegion(region: KvmUserspaceMemoryRegion): void {
    this.checkAlive();
    if (!region || typeof region.guestPhysAddr !== 'bigint' || typeof region.memorySize !== 'bigint') {
      throw new KvmError('EINVAL', 'KVM_SET_USER_MEMORY_REGION: guestPhysAddr and memorySize must be bigints');
    }
    const before = this.memslots.byId(region.slot);
    const oldFlags = before?.flags ?? 0;
    const { created } = this.memslots.set(region);
    // kvm_arch_commit_memory_region → kvm_mmu_slot_apply_flags
    if (created) {
      const logging = (created.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
      if (logging && !(oldFlags & KVM_MEM_LOG_DIRTY_PAGES)) x86.slotEnableLogDirty(this, created);
      else if (!logging && (oldFlags & KVM_MEM_LOG_DIRTY_PAGES || !before)) x86.slotDisableLogDirty(this, created);
    }
    for (const v of this.vcpus) x86.memslotsChanged(v);
  }

  // ---- KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG

  /** KVM_GET_DIRTY_LOG: a copy of the slot's dirty bitmap, cleared and re-armed (without manual protect). */
  getDirtyLog(slotId: number): Uint32Array {
    this.checkAlive();
    const slot = this.memslots.byId(slotId);
    if (!slot) throw new KvmError('ENOENT', `KVM_GET_DIRTY_LOG: slot ${slotId} does not exist`);
    if (!slot.dirtyBitmap) throw new KvmError('ENOENT', `KVM_GET_DIRTY_LOG: slot ${slotId} does not have KVM_MEM_LOG_DIRTY_PAGES set`);
    return x86.getDirtyLogProtect(this, slot);
  }

  /** Pages of a slot as a list of guest frame numbers — a convenience over getDirtyLog. */
  getDirtyGfns(slotId: number): bigint[] {
    const bm = this.getDirtyLog(slotId);
    const slot = this.memslots.byId(slotId)!;
    const out: bigint[] = [];
    for (let w = 0; w < bm.length; w++) {
      let word = bm[w];
      while (word) {
        const b = 31 - Math.clz32(word & -word);
        out.push(slot.baseGfn + BigInt(w * 32 + b));
        word &= word - 1;
      }
    }
    return out;
  }

  // ---- KVM_CREATE_VCPU

  createVcpu(id: number): KvmVcpu {
    this.checkAlive();
    if (!Number.isInteger(id) || id < 0 || id > KVM_MAX_VCPU_ID) {
      throw new KvmError('EINVAL', `KVM_CREATE_VCPU: vcpu id ${id} is out of range 0..${KVM_MAX_VCPU_ID}`);
    }
    if (this.vcpus.length >= KVM_MAX_VCPUS) throw new KvmError('EINVAL', `KVM_CREATE_VCPU: at most ${KVM_MAX_VCPUS} vCPUs per VM`);
    if (this.vcpus.some((v) => v.vcpuId === id)) throw new KvmError('EEXIST', `KVM_CREATE_VCPU: vcpu id ${id} already exists`);
    const cpu = new X86Cpu(this.hostMemory, this.memslots, { vendor: this.backendInfo.vendor });
    const vcpu = new KvmVcpu(this, id, cpu);
    if (this.vcpus.length > 0) vcpu.arch.apicBase &= ~(1n << 8n); // only the first vCPU is the BSP
    const r = this.ops.vcpuCreate(vcpu);
    if (r !== 0) throw new KvmError('ENOMEM', `KVM_CREATE_VCPU: ${this.backendInfo.name}.vcpuCreate failed (${r})`);
    x86.vcpuReset(vcpu, false);
    vcpu.setCpuid2(this.getSupportedCpuid());
    this.vcpus.push(vcpu);
    this.irqchip?.vcpuCreated(vcpu);
    return vcpu;
  }

  // ---- KVM_CREATE_IRQCHIP / KVM_IRQ_LINE / KVM_SIGNAL_MSI / KVM_SET_GSI_ROUTING

  /**
   * KVM_CREATE_IRQCHIP: the 8259 pair (ports 0x20/0xA0, ELCR 0x4D0), the IOAPIC (0xFEC00000),
   * a LAPIC per vCPU (0xFEE00000 / x2APIC MSRs; APs wait for SIPI) and the PC's default GSI
   * routing. Unlike KVM, vCPUs created earlier get their LAPIC too.
   */
  createIrqchip(): KvmIrqchip {
    this.checkAlive();
    if (this.irqchip) throw new KvmError('EEXIST', 'KVM_CREATE_IRQCHIP: this VM already has an in-kernel irqchip');
    const chip = new KvmIrqchip(this);
    this.irqchip = chip;
    this.irqSource = chip;
    this.irqchipInKernel = true;
    return chip;
  }

  /**
   * KVM_IRQ_LINE: drive GSI `gsi` to `level` through its routes. Returns KVM's status: > 0
   * delivered, 0 masked or coalesced, < 0 not delivered anywhere.
   */
  irqLine(gsi: number, level: boolean | number): number {
    this.checkAlive();
    if (!this.irqchip) throw new KvmError('ENXIO', 'KVM_IRQ_LINE: the VM has no in-kernel irqchip (call createIrqchip() first)');
    return this.irqchip.setIrq(gsi, !!level);
  }

  /** KVM_SIGNAL_MSI: deliver the message (address in 0xFEExxxxx, data) as a device would. */
  signalMsi(address: bigint | number, data: number): number {
    this.checkAlive();
    if (!this.irqchip) throw new KvmError('ENXIO', 'KVM_SIGNAL_MSI: the VM has no in-kernel irqchip (call createIrqchip() first)');
    const addr = BigInt(address);
    const lo = Number(addr & 0xffffffffn);
    if ((lo & 0xfff00000) >>> 0 !== 0xfee00000 || addr < 0n || addr >= 1n << 64n) {
      throw new KvmError('EINVAL', `KVM_SIGNAL_MSI: address 0x${addr.toString(16)} is not in the MSI window 0xFEE00000-0xFEEFFFFF`);
    }
    if (!Number.isInteger(data) || data < 0 || data > 0xffffffff) throw new KvmError('EINVAL', `KVM_SIGNAL_MSI: data ${String(data)} is not a 32-bit value`);
    return this.irqchip.setMsi(lo, Number(addr >> 32n), data);
  }

  /** KVM_SET_GSI_ROUTING: replace the routing table (validated; EINVAL names the bad entry). */
  setGsiRouting(entries: readonly KvmIrqRoutingEntry[]): void {
    this.checkAlive();
    if (!this.irqchip) throw new KvmError('ENXIO', 'KVM_SET_GSI_ROUTING: the VM has no in-kernel irqchip (call createIrqchip() first)');
    this.irqchip.routing = new KvmIrqRoutingTable(entries);
  }

  /** The routing table in force. */
  getGsiRouting(): KvmIrqRoutingEntry[] {
    return this.irqchip?.routing.entries() ?? [];
  }

  // ---- KVM_CREATE_PIT2 / KVM_GET_PIT2 / KVM_SET_PIT2

  /**
   * KVM_CREATE_PIT2: the 8254 at 0x40–0x43 in the kernel, counter 0 driving GSI 0 on the VM
   * clock; with KVM_PIT_SPEAKER_DUMMY also port 0x61. Needs the in-kernel irqchip (ENXIO
   * without one — KVM's API says the call is valid only after KVM_CREATE_IRQCHIP); EEXIST on
   * a second call; EINVAL for flags KVM does not define.
   */
  createPit2(flags = 0): KvmPit {
    this.checkAlive();
    if (this.pit) throw new KvmError('EEXIST', 'KVM_CREATE_PIT2: this VM already has an in-kernel PIT');
    if (!this.irqchip) throw new KvmError('ENXIO', 'KVM_CREATE_PIT2: the VM has no in-kernel irqchip (call createIrqchip() first)');
    if (!Number.isInteger(flags) || flags & ~KVM_PIT_SPEAKER_DUMMY) {
      throw new KvmError('EINVAL', `KVM_CREATE_PIT2: flags 0x${Number(flags).toString(16)} has bits other than KVM_PIT_SPEAKER_DUMMY (1)`);
    }
    const pit = new KvmPit(this, flags);
    this.pioBus.register(KVM_PIT_BASE_ADDRESS, KVM_PIT_MEM_LENGTH, pit.dev);
    // KVM registers 4 ports at 0x61 but answers only 0x61 itself; one port claims the same.
    if (flags & KVM_PIT_SPEAKER_DUMMY) this.pioBus.register(KVM_SPEAKER_BASE_ADDRESS, 1, pit.speakerDev);
    this.pit = pit;
    return pit;
  }

  /** KVM_GET_PIT2. */
  getPit2(): KvmPitState2 {
    this.checkAlive();
    if (!this.pit) throw new KvmError('ENXIO', 'KVM_GET_PIT2: the VM has no in-kernel PIT (call createPit2() first)');
    return this.pit.getState();
  }

  /** KVM_SET_PIT2 (EINVAL names a field out of range). */
  setPit2(state: KvmPitState2): void {
    this.checkAlive();
    if (!this.pit) throw new KvmError('ENXIO', 'KVM_SET_PIT2: the VM has no in-kernel PIT (call createPit2() first)');
    this.pit.setState(state);
  }

  /** KVM_GET_SUPPORTED_CPUID for this VM's backend. */
  getSupportedCpuid(): KvmCpuidEntry2[] {
    return supportedCpuid(this.backendInfo.vendor);
  }

  /** KVM_SET_CPUID2 for one vCPU (validated, then cpuidUpdate as kvm_vcpu_after_set_cpuid). */
  setVcpuCpuid(vcpu: KvmVcpu, entries: readonly KvmCpuidEntry2[]): void {
    validateCpuid(entries);
    vcpu.arch.cpuidEntries = entries.map((e) => ({ ...e }));
    this.ops.cpuidUpdate(vcpu);
  }

  /** KVM_RUN. */
  vcpuRun(vcpu: KvmVcpu): KvmRun {
    this.checkAlive();
    return x86.vcpuRun(vcpu);
  }

  // ---- helpers backends call from their exit handlers (KVM's exported x86.c functions)

  skipEmulatedInstruction(vcpu: KvmVcpu): number {
    return x86.kvmSkipEmulatedInstruction(vcpu);
  }
  queueException(vcpu: KvmVcpu, nr: number, errorCode?: number, payload?: bigint): void {
    x86.kvmQueueException(vcpu, nr, errorCode, payload);
  }

  // ---- tracing (KVM's tracepoints)

  setTrace(events: ReadonlySet<string> | null, sink: TraceSink | null): void {
    this.traceEvents = events;
    this.traceSink = sink;
  }
  tracing(event: string): boolean {
    return this.traceEvents !== null && this.traceEvents.has(event);
  }
  /** Is any tracepoint enabled? (The vendors' exit fastpaths step aside then, so every exit is traced in order.) */
  get traceActive(): boolean {
    return this.traceEvents !== null;
  }
  trace(event: string, vcpu: KvmVcpu, text: string | (() => string)): void {
    if (this.traceEvents === null || !this.traceEvents.has(event) || !this.traceSink) return;
    if (this.pendingExitTrace) {
      // The backend writes its own, richer kvm_exit line: the generic one is dropped.
      if (event === 'kvm_exit' && this.pendingExitTrace.vcpu === vcpu) this.pendingExitTrace = null;
      else this.flushExitTrace();
    }
    this.traceSink(event, vcpu.vcpuId, typeof text === 'function' ? text() : text);
  }
  /**
   * kvm_exit for every backend: vcpu.countExit notes the exit; its line is written before the
   * next traced event (or when the exit is handled) unless the backend traces kvm_exit itself.
   */
  noteExit(vcpu: KvmVcpu, name: string): void {
    if (this.traceEvents === null || !this.traceEvents.has('kvm_exit')) return;
    this.flushExitTrace();
    this.pendingExitTrace = { vcpu, name, rip: vcpu.registerRead(KvmReg.RIP) };
  }
  flushExitTrace(): void {
    const p = this.pendingExitTrace;
    if (!p) return;
    this.pendingExitTrace = null;
    this.traceSink?.('kvm_exit', p.vcpu.vcpuId, `reason ${p.name} rip 0x${p.rip.toString(16)}`);
  }

  /** KVM's kvm_destroy_vm. */
  destroy(): void {
    if (this.destroyed) return;
    for (const v of this.vcpus) this.ops.vcpuFree(v);
    this.ops.vmDestroy?.(this);
    this.ops.hardwareDisable();
    this.ops.hardwareUnsetup();
    this.destroyed = true;
  }

  private checkAlive(): void {
    if (this.destroyed) throw new KvmError('EINVAL', 'the VM has been destroyed');
  }

  /** Slots, for backends and tests. */
  slot(id: number): KvmMemorySlot | null {
    return this.memslots.byId(id);
  }
}
