/**
 * describeBackendConformance: register the conformance scenarios as tests in whatever runner
 * is present (jest, vitest with globals, mocha — anything with global describe/it), and
 * report which of the backend's hooks the run exercised.
 */
import { BackendClass, getBackendInfo, KVM_X86_OPS, OpName } from '@tsvisor/core';
import { ConformanceOptions, SCENARIOS, Scenario } from './scenarios';

type Describe = (name: string, fn: () => void) => void;
type It = (name: string, fn: () => void | Promise<void>, timeout?: number) => void;
type AfterAll = (fn: () => void) => void;

function findRunner(): { describe: Describe; it: It; afterAll?: AfterAll } {
  const g = globalThis as Record<string, unknown>;
  if (typeof g.describe === 'function' && typeof g.it === 'function') {
    return { describe: g.describe as Describe, it: g.it as It, afterAll: (g.afterAll ?? g.after) as AfterAll | undefined };
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const j = require('@jest/globals') as { describe: Describe; it: It; afterAll: AfterAll };
    return j;
  } catch {
    throw new Error(
      'describeBackendConformance needs a test runner: run it under jest (or vitest with globals: true, or mocha); ' +
      'no global describe/it was found and @jest/globals is not installed',
    );
  }
}

/** Which hooks a conformance run called, per backend class. */
export interface ExerciseReport {
  backend: string;
  exercised: OpName[];
  notExercised: OpName[];
}

/**
 * A subclass of `backend` that records every hook call, so the suite can report coverage. It
 * inherits the @backend metadata; behaviour is unchanged.
 */
export function recordingBackend(backend: BackendClass, calls: Set<OpName>): BackendClass {
  const Recorded = class extends (backend as unknown as new () => object) {} as unknown as BackendClass;
  const proto = Recorded.prototype as unknown as Record<string, unknown>;
  for (const e of KVM_X86_OPS) {
    if (e.kind === 'value') continue;
    const orig = (backend.prototype as unknown as Record<string, unknown>)[e.name];
    if (typeof orig !== 'function') continue;
    const name = e.name;
    proto[name] = function (this: unknown, ...args: unknown[]) {
      calls.add(name);
      return (orig as (...a: unknown[]) => unknown).apply(this, args);
    };
  }
  Object.defineProperty(Recorded, 'name', { value: `Recorded${(backend as { name?: string }).name ?? ''}` });
  return Recorded;
}

export function exerciseReport(backend: BackendClass, calls: ReadonlySet<OpName>): ExerciseReport {
  const present = KVM_X86_OPS.filter((e) => e.kind !== 'value' && typeof (backend.prototype as unknown as Record<string, unknown>)[e.name] === 'function');
  return {
    backend: getBackendInfo(backend)?.name ?? '?',
    exercised: present.filter((e) => calls.has(e.name)).map((e) => e.name),
    notExercised: present.filter((e) => !calls.has(e.name)).map((e) => e.name),
  };
}

export interface SuiteOptions extends ConformanceOptions {
  /** Scenario names to leave out (with a reason the report prints). */
  skip?: Record<string, string>;
  /** Called once at the end with the hooks exercised (default: printed with console.log). */
  onReport?(report: ExerciseReport): void;
}

/** The scenarios for a backend, ready to run outside a test runner. */
export function conformanceScenarios(): readonly Scenario[] {
  return SCENARIOS;
}

/**
 * Register the conformance suite for `backend`: one test per scenario, and a report of the
 * hooks the run exercised.
 */
export function describeBackendConformance(backend: BackendClass, options: SuiteOptions): void {
  const info = getBackendInfo(backend);
  const { describe, it, afterAll } = findRunner();
  const calls = new Set<OpName>();
  const recorded = recordingBackend(backend, calls);
  describe(`tsvisor backend conformance: ${info?.name ?? (backend as { name?: string }).name ?? 'backend'}`, () => {
    for (const s of SCENARIOS) {
      const reason = options.skip?.[s.name];
      if (reason !== undefined) continue;
      it(s.name, () => s.run(recorded, options), 60_000);
    }
    afterAll?.(() => {
      const report = exerciseReport(backend, calls);
      if (options.onReport) options.onReport(report);
      else {
        // eslint-disable-next-line no-console
        console.log(`conformance: ${report.backend} exercised ${report.exercised.length}/${report.exercised.length + report.notExercised.length} hooks; not exercised: ${report.notExercised.join(', ') || 'none'}`);
      }
    });
  });
}
