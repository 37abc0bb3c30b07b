/**
 * Guest fuzzing in CI (issue #9): seeded programs in real, protected and long mode on both
 * backends over the full platform: 54 programs (every mode × variant three times) each. Longer
 * runs: TSVISOR_FUZZ_PROGRAMS=5000 (and TSVISOR_FUZZ_SEED).
 */
import { BackendClass } from '@tsvisor/core';
import { VmxBackend } from '@tsvisor/vmx';
import { SvmBackend } from '@tsvisor/svm';
import { buildCpuBench64, buildDemoGuest, fuzzGuests } from '@tsvisor/testkit';

const programs = Number(process.env.TSVISOR_FUZZ_PROGRAMS ?? 54);
const seed = Number(process.env.TSVISOR_FUZZ_SEED ?? 20261125);
const corpus = [buildDemoGuest().image, buildCpuBench64({ sieveRounds: 1, xorshiftIterations: 100 }).image];

describe.each([
  ['vmx', VmxBackend],
  ['svm', SvmBackend],
])('guest fuzzing on %s', (name, backend) => {
  it(`runs ${programs} seeded programs (seed ${seed}) with no host error`, () => {
    const r = fuzzGuests({ backend: backend as unknown as BackendClass, seed, programs, corpus, maxInstructions: 10_000 });
    // eslint-disable-next-line no-console
    console.log(`fuzz ${name}: ${r.programs} programs, ${r.instructions} instructions, endings ${JSON.stringify(r.endings)}, exits ${JSON.stringify(r.exits)}`);
    expect(r.hostErrors).toEqual([]);
    expect(r.programs).toBe(programs);
    expect(r.instructions).toBeGreaterThan(programs);
  });
});
