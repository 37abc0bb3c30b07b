/**
 * The Intel architectural PMU (SDM Vol. 3B ch. 20; KVM's pmu_intel.c): general-purpose
 * counters programmed through IA32_PERFEVTSELx, fixed counters through
 * IA32_FIXED_CTR_CTRL, all gated by IA32_PERF_GLOBAL_CTRL. Counting is exact: a running
 * counter is its value at the last (re)programming plus the processor's retired-instruction
 * or cycle count since then (this processor retires one instruction per cycle of its TSC),
 * restricted to the privilege levels it counts at: IA32_PERFEVTSELx USR (bit 16, CPL 1-3) and
 * OS (bit 17, CPL 0), IA32_FIXED_CTR_CTRL's per-counter enable (1 OS, 2 USR, 3 both; SDM Vol.
 * 3B 20.2.1.1, 20.2.2), from the processor's per-CPL counts.
 */
import { kvmFindCpuidEntry, KvmPmc, KvmPmuOps, KvmVcpu, MsrData } from '@tsvisor/core';

export const MSR_IA32_PERFCTR0 = 0xc1;
export const MSR_IA32_PMC0 = 0x4c1;
export const MSR_P6_EVNTSEL0 = 0x186;
export const MSR_CORE_PERF_FIXED_CTR0 = 0x309;
export const MSR_CORE_PERF_FIXED_CTR_CTRL = 0x38d;
export const MSR_CORE_PERF_GLOBAL_STATUS = 0x38e;
export const MSR_CORE_PERF_GLOBAL_CTRL = 0x38f;
export const MSR_CORE_PERF_GLOBAL_OVF_CTRL = 0x390;
export const INTEL_PMC_IDX_FIXED = 32;
export const ARCH_PERFMON_EVENTSEL_USR = 1n << 16n;
export const ARCH_PERFMON_EVENTSEL_OS = 1n << 17n;
export const ARCH_PERFMON_EVENTSEL_ENABLE = 1n << 22n;

/** What a counter counts. */
export enum PmuSource { NONE, INSTRUCTIONS, CYCLES }

/** The architectural events this PMU implements (SDM Vol. 3B Table 20-1): event select, umask. */
export const INTEL_ARCH_EVENTS: readonly { event: number; umask: number; source: PmuSource; name: string }[] = [
  { event: 0x3c, umask: 0x00, source: PmuSource.CYCLES, name: 'UnHalted Core Cycles' },
  { event: 0xc0, umask: 0x00, source: PmuSource.INSTRUCTIONS, name: 'Instructions Retired' },
  { event: 0x3c, umask: 0x01, source: PmuSource.CYCLES, name: 'UnHalted Reference Cycles' },
];
/** Privilege levels a counter counts at: OS (CPL 0), USR (CPL > 0), both. */
export const PMU_RING_OS = 1;
export const PMU_RING_USR = 2;
export const PMU_RING_ALL = 3;

/** Fixed counter i counts: 0 instructions retired, 1 core cycles, 2 reference cycles. */
const FIXED_SOURCES = [PmuSource.INSTRUCTIONS, PmuSource.CYCLES, PmuSource.CYCLES];

/** struct kvm_pmc with the bookkeeping for exact lazy counting. */
export class IntelPmc implements KvmPmc {
  eventsel = 0n;
  /** Value at the last reprogram. */
  private value = 0n;
  private base = 0;
  private source = PmuSource.NONE;
  private rings = PMU_RING_ALL;
  constructor(readonly idx: number, private readonly vcpu: KvmVcpu, private readonly width: number) {}

  private now(src: PmuSource): number {
    const cpu = this.vcpu.cpu;
    const s = cpu.state;
    const all = src === PmuSource.INSTRUCTIONS ? s.instructionsRetired : Number(s.tsc);
    if (this.rings === PMU_RING_ALL) return all;
    const user = src === PmuSource.INSTRUCTIONS ? cpu.userInstructionsRetired() : cpu.userCyclesElapsed();
    return this.rings === PMU_RING_USR ? user : all - user;
  }
  get counter(): bigint {
    const v = this.source === PmuSource.NONE ? this.value : this.value + BigInt(this.now(this.source) - this.base);
    return BigInt.asUintN(this.width, v);
  }
  set counter(v: bigint) {
    this.value = BigInt.asUintN(this.width, v);
    if (this.source !== PmuSource.NONE) this.base = this.now(this.source);
  }
  /** reprogram_counter: fold what has been counted, then start or stop counting `src` at `rings`. */
  reprogram(src: PmuSource, rings = PMU_RING_ALL): void {
    this.value = this.counter;
    this.source = src;
    this.rings = rings;
    if (src !== PmuSource.NONE) this.base = this.now(src);
  }
  get running(): boolean {
    return this.source !== PmuSource.NONE;
  }
}

/** struct kvm_pmu. */
export class IntelPmu {
  version = 0;
  nrGp = 0;
  nrFixed = 0;
  gpWidth = 48;
  fixedWidth = 48;
  globalCtrl = 0n;
  globalStatus = 0n;
  fixedCtrCtrl = 0n;
  gp: IntelPmc[] = [];
  fixed: IntelPmc[] = [];
  constructor(readonly vcpu: KvmVcpu) {}

  /** Recompute which counters count (reprogram_gp_counter / reprogram_fixed_counter). */
  reprogramAll(): void {
    for (const pmc of this.gp) {
      let src = PmuSource.NONE;
      const sel = pmc.eventsel;
      const rings = (sel & ARCH_PERFMON_EVENTSEL_OS ? PMU_RING_OS : 0) | (sel & ARCH_PERFMON_EVENTSEL_USR ? PMU_RING_USR : 0);
      if (sel & ARCH_PERFMON_EVENTSEL_ENABLE && sel & (ARCH_PERFMON_EVENTSEL_OS | ARCH_PERFMON_EVENTSEL_USR) &&
        (this.globalCtrl >> BigInt(pmc.idx)) & 1n) {
        const ev = Number(sel & 0xffn);
        const umask = Number((sel >> 8n) & 0xffn);
        src = INTEL_ARCH_EVENTS.find((e) => e.event === ev && e.umask === umask)?.source ?? PmuSource.NONE;
      }
      pmc.reprogram(src, rings);
    }
    for (const pmc of this.fixed) {
      const i = pmc.idx - INTEL_PMC_IDX_FIXED;
      // IA32_FIXED_CTR_CTRL bits 4i+1:4i: 0 off, 1 OS, 2 USR, 3 all rings (the same encoding as PMU_RING_*).
      const ctl = Number((this.fixedCtrCtrl >> BigInt(4 * i)) & 3n);
      const on = ctl !== 0 && ((this.globalCtrl >> BigInt(pmc.idx)) & 1n) === 1n;
      pmc.reprogram(on ? FIXED_SOURCES[i] : PmuSource.NONE, ctl);
    }
  }
}

const pmus = new WeakMap<KvmVcpu, IntelPmu>();
export function vcpuToPmu(vcpu: KvmVcpu): IntelPmu {
  let p = pmus.get(vcpu);
  if (!p) pmus.set(vcpu, (p = new IntelPmu(vcpu)));
  return p;
}

function gpMsrIndex(pmu: IntelPmu, msr: number, base: number): number {
  const i = msr - base;
  return i >= 0 && i < pmu.nrGp ? i : -1;
}

/** intel_pmu_ops. */
export const intelPmuOps: KvmPmuOps = {
  pmcIsEnabled(pmc: KvmPmc): boolean {
    return (pmc as IntelPmc).running;
  },
  pmcIdxToPmc(vcpu: KvmVcpu, pmcIdx: number): KvmPmc | null {
    const pmu = vcpuToPmu(vcpu);
    if (pmcIdx < INTEL_PMC_IDX_FIXED) return pmu.gp[pmcIdx] ?? null;
    return pmu.fixed[pmcIdx - INTEL_PMC_IDX_FIXED] ?? null;
  },
  rdpmcEcxToPmc(vcpu: KvmVcpu, idx: number): { pmc: KvmPmc; mask: bigint } | null {
    const pmu = vcpuToPmu(vcpu);
    const fixed = (idx & (1 << 30)) !== 0;
    const fast = (idx & (1 << 31)) !== 0;
    const i = idx & ~(3 << 30);
    const list = fixed ? pmu.fixed : pmu.gp;
    if (i >= list.length) return null;
    const width = fixed ? pmu.fixedWidth : pmu.gpWidth;
    return { pmc: list[i], mask: fast ? 0xffffffffn : (1n << BigInt(width)) - 1n };
  },
  msrIdxToPmc(vcpu: KvmVcpu, msr: number): KvmPmc | null {
    const pmu = vcpuToPmu(vcpu);
    let i = gpMsrIndex(pmu, msr, MSR_IA32_PERFCTR0);
    if (i >= 0) return pmu.gp[i];
    i = gpMsrIndex(pmu, msr, MSR_IA32_PMC0);
    if (i >= 0) return pmu.gp[i];
    i = gpMsrIndex(pmu, msr, MSR_P6_EVNTSEL0);
    if (i >= 0) return pmu.gp[i];
    const f = msr - MSR_CORE_PERF_FIXED_CTR0;
    return f >= 0 && f < pmu.nrFixed ? pmu.fixed[f] : null;
  },
  isValidRdpmcEcx(vcpu: KvmVcpu, idx: number): boolean {
    const pmu = vcpuToPmu(vcpu);
    const i = idx & ~(3 << 30);
    return idx & (1 << 30) ? i < pmu.nrFixed : i < pmu.nrGp;
  },
  isValidMsr(vcpu: KvmVcpu, msr: number): boolean {
    const pmu = vcpuToPmu(vcpu);
    switch (msr) {
      case MSR_CORE_PERF_FIXED_CTR_CTRL: case MSR_CORE_PERF_GLOBAL_STATUS: case MSR_CORE_PERF_GLOBAL_CTRL:
      case MSR_CORE_PERF_GLOBAL_OVF_CTRL:
        return pmu.version > 1;
      default:
        return intelPmuOps.msrIdxToPmc(vcpu, msr) !== null;
    }
  },
  getMsr(vcpu: KvmVcpu, msr: MsrData): number {
    const pmu = vcpuToPmu(vcpu);
    switch (msr.index) {
      case MSR_CORE_PERF_FIXED_CTR_CTRL: msr.data = pmu.fixedCtrCtrl; return 0;
      case MSR_CORE_PERF_GLOBAL_STATUS: msr.data = pmu.globalStatus; return 0;
      case MSR_CORE_PERF_GLOBAL_CTRL: msr.data = pmu.globalCtrl; return 0;
      case MSR_CORE_PERF_GLOBAL_OVF_CTRL: msr.data = 0n; return 0;
    }
    let i = gpMsrIndex(pmu, msr.index, MSR_P6_EVNTSEL0);
    if (i >= 0) { msr.data = pmu.gp[i].eventsel; return 0; }
    i = gpMsrIndex(pmu, msr.index, MSR_IA32_PERFCTR0);
    if (i < 0) i = gpMsrIndex(pmu, msr.index, MSR_IA32_PMC0);
    if (i >= 0) { msr.data = pmu.gp[i].counter; return 0; }
    const f = msr.index - MSR_CORE_PERF_FIXED_CTR0;
    if (f >= 0 && f < pmu.nrFixed) { msr.data = pmu.fixed[f].counter; return 0; }
    return 1;
  },
  setMsr(vcpu: KvmVcpu, msr: MsrData): number {
    const pmu = vcpuToPmu(vcpu);
    const d = msr.data;
    const gpBits = (1n << BigInt(pmu.nrGp)) - 1n;
    const fixedBits = ((1n << BigInt(pmu.nrFixed)) - 1n) << 32n;
    switch (msr.index) {
      case MSR_CORE_PERF_FIXED_CTR_CTRL:
        // Four bits per fixed counter, bit 2 (AnyThread) reserved here.
        if (d & ~((1n << BigInt(4 * pmu.nrFixed)) - 1n) || d & 0x444n) return 1;
        pmu.fixedCtrCtrl = d;
        pmu.reprogramAll();
        return 0;
      case MSR_CORE_PERF_GLOBAL_STATUS:
        if (!msr.hostInitiated) return 1;
        pmu.globalStatus = d;
        return 0;
      case MSR_CORE_PERF_GLOBAL_CTRL:
        if (d & ~(gpBits | fixedBits)) return 1;
        pmu.globalCtrl = d;
        pmu.reprogramAll();
        return 0;
      case MSR_CORE_PERF_GLOBAL_OVF_CTRL:
        if (d & ~(gpBits | fixedBits | (3n << 62n))) return 1;
        if (!msr.hostInitiated) pmu.globalStatus &= ~d;
        return 0;
    }
    let i = gpMsrIndex(pmu, msr.index, MSR_P6_EVNTSEL0);
    if (i >= 0) {
      // Reserved: bits 63:32 and 21 (SDM 20.2.1.1).
      if (d >> 32n || d & (1n << 21n)) return 1;
      pmu.gp[i].eventsel = d;
      pmu.reprogramAll();
      return 0;
    }
    i = gpMsrIndex(pmu, msr.index, MSR_IA32_PERFCTR0);
    if (i >= 0) {
      // Legacy counter MSRs take 32 bits sign-extended (SDM 20.2.2).
      pmu.gp[i].counter = BigInt.asIntN(32, d);
      return 0;
    }
    i = gpMsrIndex(pmu, msr.index, MSR_IA32_PMC0);
    if (i >= 0) { pmu.gp[i].counter = d; return 0; }
    const f = msr.index - MSR_CORE_PERF_FIXED_CTR0;
    if (f >= 0 && f < pmu.nrFixed) { pmu.fixed[f].counter = d; return 0; }
    return 1;
  },
  /** intel_pmu_refresh: the PMU the guest's CPUID leaf 0AH describes. */
  refresh(vcpu: KvmVcpu): void {
    const pmu = vcpuToPmu(vcpu);
    const e = kvmFindCpuidEntry(vcpu, 0xa, 0);
    pmu.version = e ? e.eax & 0xff : 0;
    pmu.nrGp = pmu.version ? Math.min((e!.eax >> 8) & 0xff, 8) : 0;
    pmu.gpWidth = pmu.version ? Math.min((e!.eax >> 16) & 0xff, 48) || 48 : 48;
    pmu.nrFixed = pmu.version > 1 ? Math.min(e!.edx & 0x1f, 3) : 0;
    pmu.fixedWidth = pmu.version > 1 ? Math.min((e!.edx >> 5) & 0xff, 48) || 48 : 48;
    pmu.gp = Array.from({ length: pmu.nrGp }, (_, i) => new IntelPmc(i, vcpu, pmu.gpWidth));
    pmu.fixed = Array.from({ length: pmu.nrFixed }, (_, i) => new IntelPmc(INTEL_PMC_IDX_FIXED + i, vcpu, pmu.fixedWidth));
    pmu.globalCtrl = 0n;
    pmu.fixedCtrCtrl = 0n;
    pmu.globalStatus = 0n;
  },
  init(vcpu: KvmVcpu): void {
    vcpuToPmu(vcpu);
  },
  reset(vcpu: KvmVcpu): void {
    const pmu = vcpuToPmu(vcpu);
    for (const p of [...pmu.gp, ...pmu.fixed]) {
      p.eventsel = 0n;
      p.reprogram(PmuSource.NONE);
      p.counter = 0n;
    }
    pmu.globalCtrl = 0n;
    pmu.globalStatus = 0n;
    pmu.fixedCtrCtrl = 0n;
  },
};
