import { Kvm, KvmVcpu, kvmEmulateHalt, kvmGetMsrCommon, kvmSetMsrCommon, MsrData, KvmClockMode } from '../../src';
import { makeFakeBackend } from '../fake-backend';

/**
 * A scripted stand-in for a backend and its guest, enough to drive core's run loop: each entry
 * "retires" as many instructions as the entry budget allows (what a real backend passes to the
 * processor), the guest halts when it reaches `haltAt`, and injected interrupts are recorded
 * with the vCPU time they arrived at (then handled by `onIrq`, the guest's handler).
 */
export class FakeGuest {
  /** RFLAGS.IF. */
  if = true;
  /** Retired-instruction count at which the guest executes HLT. */
  haltAt = Infinity;
  readonly injected: { vector: number; at: number }[] = [];
  onIrq: ((vector: number) => void) | null = null;
  halting = false;
  entries = 0;
}

const guests = new WeakMap<KvmVcpu, FakeGuest>();
export function guest(v: KvmVcpu): FakeGuest {
  let g = guests.get(v);
  if (!g) guests.set(v, (g = new FakeGuest()));
  return g;
}

export function irqVm(opts: { vcpus?: number; clock?: KvmClockMode; irqchip?: boolean } = {}) {
  const Fake = makeFakeBackend([], 'irq-fake');
  const p = Fake.prototype as unknown as Record<string, unknown>;
  p.interruptAllowed = (v: KvmVcpu) => (guest(v).if ? 1 : 0);
  p.nmiAllowed = () => 1;
  p.skipEmulatedInstruction = () => 1;
  p.writeL1TscOffset = (_v: KvmVcpu, off: bigint) => off;
  p.getMsr = (v: KvmVcpu, m: MsrData) => kvmGetMsrCommon(v, m);
  p.setMsr = (v: KvmVcpu, m: MsrData) => kvmSetMsrCommon(v, m);
  p.setIrq = (v: KvmVcpu) => {
    const g = guest(v);
    const vec = v.arch.interrupt.nr;
    v.arch.interrupt.injected = false; // delivered at once
    g.injected.push({ vector: vec, at: v.kvm.clock.nowNs(v) });
    g.onIrq?.(vec);
  };
  p.run = (v: KvmVcpu) => {
    const g = guest(v);
    g.entries++;
    const s = v.cpu.state;
    const toHalt = g.haltAt - s.instructionsRetired;
    const n = Math.max(0, Math.min(v.kvm.clock.entryBudget(v), toHalt));
    s.instructionsRetired += n;
    s.tsc += BigInt(n);
    g.halting = n === toHalt;
    return 0;
  };
  p.handleExit = (v: KvmVcpu) => {
    const g = guest(v);
    if (g.halting) {
      g.halting = false;
      g.haltAt = Infinity;
      return kvmEmulateHalt(v);
    }
    return 1;
  };
  const kvm = Kvm.create({ backend: Fake as never, hostMemoryLimit: 64 * 2 ** 20, clock: opts.clock });
  kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n });
  const vcpus: KvmVcpu[] = [];
  if (opts.irqchip !== false) kvm.createIrqchip();
  for (let i = 0; i < (opts.vcpus ?? 1); i++) vcpus.push(kvm.createVcpu(i));
  for (const v of vcpus) v.runBudget = 10_000_000;
  return { kvm, vcpus, backend: Fake };
}

/** Run `fn` as if in `vcpu`'s context (the emulator calls the buses inside KVM_RUN). */
export function inVcpu<T>(v: KvmVcpu, fn: () => T): T {
  const prev = v.kvm.currentVcpu;
  v.kvm.currentVcpu = v;
  try {
    return fn();
  } finally {
    v.kvm.currentVcpu = prev;
  }
}

export function mmioRead32(v: KvmVcpu, addr: number): number {
  const d = new Uint8Array(4);
  if (!inVcpu(v, () => v.kvm.mmioBus.read(addr, 4, d))) throw new Error(`MMIO read 0x${addr.toString(16)} not claimed`);
  return (d[0] | (d[1] << 8) | (d[2] << 16) | (d[3] << 24)) >>> 0;
}
export function mmioWrite32(v: KvmVcpu, addr: number, val: number): void {
  const d = new Uint8Array([val & 0xff, (val >>> 8) & 0xff, (val >>> 16) & 0xff, (val >>> 24) & 0xff]);
  if (!inVcpu(v, () => v.kvm.mmioBus.write(addr, 4, d))) throw new Error(`MMIO write 0x${addr.toString(16)} not claimed`);
}

export const APIC = 0xfee00000;
export const apicRead = (v: KvmVcpu, off: number) => mmioRead32(v, APIC + off);
export const apicWrite = (v: KvmVcpu, off: number, val: number) => mmioWrite32(v, APIC + off, val);

export function outb(kvm: Kvm, port: number, val: number): void {
  if (!kvm.pioBus.write(port, 1, new Uint8Array([val]))) throw new Error(`port 0x${port.toString(16)} not claimed`);
}
export function inb(kvm: Kvm, port: number): number {
  const d = new Uint8Array(1);
  if (!kvm.pioBus.read(port, 1, d)) throw new Error(`port 0x${port.toString(16)} not claimed`);
  return d[0];
}

/** A guest-initiated WRMSR / RDMSR through core's common MSR code: 0 ok, 1 #GP. */
export function wrmsr(v: KvmVcpu, index: number, data: bigint): number {
  return kvmSetMsrCommon(v, { hostInitiated: false, index, data });
}
export function rdmsr(v: KvmVcpu, index: number): bigint | '#GP' {
  const m = { hostInitiated: false, index, data: 0n };
  return kvmGetMsrCommon(v, m) === 0 ? m.data : '#GP';
}

/** Software-enable the LAPIC (SVR bit 8, spurious vector 0xFF). */
export function swEnable(v: KvmVcpu): void {
  apicWrite(v, 0xf0, 0x1ff);
}

/** Give the guest CPUID.1:ECX.TSC_DEADLINE (bit 24). */
/** Guest CPUID without CPUID.1:ECX.TSC_DEADLINE[bit 24] (the supported table has it). */
export function withoutTscDeadline(v: KvmVcpu): void {
  const c = v.getCpuid2().map((e) => (e.function === 1 ? { ...e, ecx: (e.ecx & ~(1 << 24)) >>> 0 } : e));
  v.setCpuid2(c);
}

export function withTscDeadline(v: KvmVcpu): void {
  const c = v.getCpuid2().map((e) => (e.function === 1 ? { ...e, ecx: (e.ecx | (1 << 24)) >>> 0 } : e));
  v.setCpuid2(c);
}
