/**
 * The AMD PMU (kvm_pmu_ops for SVM, arch/x86/kvm/pmu_amd.c): four legacy counters,
 * PERF_CTL0–3 (MSR C001_0000h–C001_0003h) selecting the event and PERF_CTR0–3
 * (C001_0004h–C001_0007h) holding 48-bit counts (APM Vol. 2 13.2). The events this processor
 * counts exactly are "retired instructions" (event 0xC0) and "CPU cycles not halted"
 * (event 0x76, one cycle per TSC tick of the emulated processor); other events read 0.
 */
import type { KvmPmc, KvmPmuOps, KvmVcpu, MsrData } from '@tsvisor/core';
import { svmOf } from './vcpu-svm';

export const MSR_K7_EVNTSEL0 = 0xc0010000;
export const MSR_K7_PERFCTR0 = 0xc0010004;
export const AMD64_NUM_COUNTERS = 4;
const COUNTER_MASK = (1n << 48n) - 1n;
const EVENTSEL_EN = 1n << 22n;
/** PerfEvtSel bits that exist (event 7:0 and 35:32, umask, USR, OS, E, INT, EN, INV, CNT_MASK, Host/Guest). */
const EVENTSEL_RESERVED = ~((0xffn) | (0xfn << 32n) | (0xffn << 8n) | (1n << 16n) | (1n << 17n) | (1n << 18n) |
  (1n << 20n) | (1n << 22n) | (1n << 23n) | (0xffn << 24n) | (3n << 40n)) & ((1n << 64n) - 1n);
export const AMD_EVENT_RETIRED_INSTRUCTIONS = 0xc0n;
export const AMD_EVENT_CYCLES = 0x76n;

function eventOf(sel: bigint): bigint {
  return (sel & 0xffn) | (((sel >> 32n) & 0xfn) << 8n);
}

/** The running value source of an event: retired instructions or cycles; null for events not modelled. */
function source(vcpu: KvmVcpu, sel: bigint): bigint | null {
  const ev = eventOf(sel);
  if (ev === AMD_EVENT_RETIRED_INSTRUCTIONS) return BigInt(vcpu.cpu.state.instructionsRetired);
  if (ev === AMD_EVENT_CYCLES) return vcpu.cpu.state.tsc;
  return null;
}

function counterValue(vcpu: KvmVcpu, i: number): bigint {
  const svm = svmOf(vcpu);
  const sel = svm.perfCtl[i];
  let v = svm.perfCtrBase[i];
  if (sel & EVENTSEL_EN) {
    const now = source(vcpu, sel);
    if (now !== null) v += now - svm.perfCtrStart[i];
  }
  return v & COUNTER_MASK;
}

/** Re-base a counter so its accumulated value is kept across a change of its selector. */
function rebase(vcpu: KvmVcpu, i: number, newSel: bigint): void {
  const svm = svmOf(vcpu);
  svm.perfCtrBase[i] = counterValue(vcpu, i);
  svm.perfCtl[i] = newSel;
  svm.perfCtrStart[i] = source(vcpu, newSel) ?? 0n;
}

function indexOf(msr: number): { kind: 'ctl' | 'ctr'; i: number } | null {
  if (msr >= MSR_K7_EVNTSEL0 && msr < MSR_K7_EVNTSEL0 + AMD64_NUM_COUNTERS) return { kind: 'ctl', i: msr - MSR_K7_EVNTSEL0 };
  if (msr >= MSR_K7_PERFCTR0 && msr < MSR_K7_PERFCTR0 + AMD64_NUM_COUNTERS) return { kind: 'ctr', i: msr - MSR_K7_PERFCTR0 };
  return null;
}

export function createAmdPmuOps(): KvmPmuOps {
  const pmc = (vcpu: KvmVcpu, i: number): KvmPmc => ({ idx: i, counter: counterValue(vcpu, i), eventsel: svmOf(vcpu).perfCtl[i] });
  return {
    pmcIsEnabled: (p) => (p.eventsel & EVENTSEL_EN) !== 0n,
    pmcIdxToPmc: (vcpu, idx) => (idx >= 0 && idx < AMD64_NUM_COUNTERS ? pmc(vcpu, idx) : null),
    // RDPMC ECX 0–3 select the legacy counters; no fixed counters on AMD.
    rdpmcEcxToPmc: (vcpu, idx) => {
      const i = idx & ~(3 << 30);
      return i >= 0 && i < AMD64_NUM_COUNTERS ? { pmc: pmc(vcpu, i), mask: COUNTER_MASK } : null;
    },
    msrIdxToPmc: (vcpu, msr) => {
      const x = indexOf(msr);
      return x ? pmc(vcpu, x.i) : null;
    },
    isValidRdpmcEcx: (_vcpu, idx) => (idx & ~(3 << 30)) < AMD64_NUM_COUNTERS,
    isValidMsr: (_vcpu, msr) => indexOf(msr) !== null,
    getMsr: (vcpu, m: MsrData) => {
      const x = indexOf(m.index);
      if (!x) return 1;
      m.data = x.kind === 'ctl' ? svmOf(vcpu).perfCtl[x.i] : counterValue(vcpu, x.i);
      return 0;
    },
    setMsr: (vcpu, m: MsrData) => {
      const x = indexOf(m.index);
      if (!x) return 1;
      const svm = svmOf(vcpu);
      if (x.kind === 'ctl') {
        if (m.data & EVENTSEL_RESERVED) return 1;
        rebase(vcpu, x.i, m.data);
      } else {
        svm.perfCtrBase[x.i] = m.data & COUNTER_MASK;
        svm.perfCtrStart[x.i] = source(vcpu, svm.perfCtl[x.i]) ?? 0n;
      }
      return 0;
    },
    refresh: () => undefined,
    init: (vcpu) => {
      const svm = svmOf(vcpu);
      for (let i = 0; i < AMD64_NUM_COUNTERS; i++) { svm.perfCtl[i] = 0n; svm.perfCtrBase[i] = 0n; svm.perfCtrStart[i] = 0n; }
    },
    reset: (vcpu) => {
      const svm = svmOf(vcpu);
      for (let i = 0; i < AMD64_NUM_COUNTERS; i++) { svm.perfCtl[i] = 0n; svm.perfCtrBase[i] = 0n; svm.perfCtrStart[i] = 0n; }
    },
  };
}
