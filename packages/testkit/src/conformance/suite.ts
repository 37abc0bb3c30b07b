/**
 * describeBackendConformance: register the conformance scenarios as tests in whatever runner
 * is present (jest, vitest with globals, mocha — anything with global describe/it), and
 * report which of the backend's hooks the run exercised.
 */
import { BackendClass, getBackendInfo, KVM_X86_OPS, OpName } from '@tsvisor/core';
import { ConformanceOptions, SCENARIOS, Scenario } from './scenarios';

type Describe = (name: string, fn: () => void) => void;
type It = ((name: string, fn: () => void | Promise<void>, timeout?: number) => void) & { skip?: (name: string, fn: () => void) => void };
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
  /** Hooks the backend has (required ones and the optional ones it declares), in table order. */
  present: OpName[];
  exercised: OpName[];
  notExercised: OpName[];
  /** Scenarios left out, with the reason (options.skip, or not applicable to the options). */
  skipped: { scenario: string; reason: string }[];
}

/** Records hook calls and which hooks the backend instances had. */
export interface HookRecorder {
  readonly calls: Set<OpName>;
  readonly present: Set<OpName>;
}

export function hookRecorder(): HookRecorder {
  return { calls: new Set(), present: new Set() };
}

/**
 * A subclass of `backend` that records every hook call, so the suite can report coverage. It
 * inherits the @backend metadata; behaviour is unchanged. Hooks are wrapped per instance, after
 * the backend's constructor ran, so hooks a backend installs in its constructor (optional ones
 * it enables by feature, like VMX's PML and preemption-timer hooks) are recorded too.
 */
export function recordingBackend(backend: BackendClass, recorder: HookRecorder | Set<OpName>): BackendClass {
  const rec: HookRecorder = recorder instanceof Set ? { calls: recorder, present: new Set() } : recorder;
  const Base = backend as unknown as new (...args: unknown[]) => object;
  const Recorded = class extends Base {
    constructor(...args: unknown[]) {
      super(...args);
      const self = this as unknown as Record<string, unknown>;
      for (const e of KVM_X86_OPS) {
        if (e.kind === 'value') continue;
        const orig = self[e.name];
        if (typeof orig !== 'function') continue;
        const name = e.name;
        rec.present.add(name);
        self[name] = function (this: unknown, ...a: unknown[]) {
          rec.calls.add(name);
          return (orig as (...x: unknown[]) => unknown).apply(this, a);
        };
      }
    }
  };
  Object.defineProperty(Recorded, 'name', { value: `Recorded${(backend as { name?: string }).name ?? ''}` });
  return Recorded as unknown as BackendClass;
}

export function exerciseReport(backend: BackendClass, recorder: HookRecorder, skipped: ExerciseReport['skipped'] = []): ExerciseReport {
  const present = KVM_X86_OPS.filter((e) => e.kind !== 'value' && recorder.present.has(e.name)).map((e) => e.name);
  return {
    backend: getBackendInfo(backend)?.name ?? (backend as { name?: string }).name ?? '?',
    present,
    exercised: present.filter((n) => recorder.calls.has(n)),
    notExercised: present.filter((n) => !recorder.calls.has(n)),
    skipped,
  };
}

/** The report as the suite prints it. */
export function formatExerciseReport(r: ExerciseReport): string {
  const lines = [
    `conformance: ${r.backend} exercised ${r.exercised.length}/${r.present.length} hooks`,
    `  exercised: ${r.exercised.join(', ') || 'none'}`,
    `  not exercised: ${r.notExercised.join(', ') || 'none'}`,
  ];
  for (const s of r.skipped) lines.push(`  skipped: ${s.scenario} — ${s.reason}`);
  return lines.join('\n');
}

export interface SuiteOptions extends ConformanceOptions {
  /** Scenario names to leave out, each with the reason (printed in the report and the test name). */
  skip?: Record<string, string>;
  /** Called once at the end with the hooks exercised (default: printed with console.log). */
  onReport?(report: ExerciseReport): void;
}

/** The scenarios, ready to run outside a test runner: `for (const s of conformanceScenarios()) s.run(Backend, options)`. */
export function conformanceScenarios(): readonly Scenario[] {
  return SCENARIOS;
}

/** Why a scenario does not run for these options, or undefined when it runs. */
export function scenarioSkipReason(s: Scenario, options: SuiteOptions): string | undefined {
  const reason = options.skip?.[s.name];
  if (reason !== undefined) return reason;
  if (s.appliesTo && !s.appliesTo(options)) return 'not applicable to the options the backend states';
  return undefined;
}

/**
 * Register the conformance suite for `backend`: one test per scenario, and a report of the
 * hooks the run exercised.
 */
export function describeBackendConformance(backend: BackendClass, options: SuiteOptions): void {
  const info = getBackendInfo(backend);
  const { describe, it, afterAll } = findRunner();
  const unknown = Object.keys(options.skip ?? {}).filter((n) => !SCENARIOS.some((s) => s.name === n));
  if (unknown.length) {
    throw new Error(`describeBackendConformance: options.skip names no scenario: ${unknown.map((n) => JSON.stringify(n)).join(', ')}`);
  }
  const recorder = hookRecorder();
  const recorded = recordingBackend(backend, recorder);
  const skipped: ExerciseReport['skipped'] = [];
  describe(`tsvisor backend conformance: ${info?.name ?? (backend as { name?: string }).name ?? 'backend'}`, () => {
    for (const s of SCENARIOS) {
      const reason = scenarioSkipReason(s, options);
      if (reason !== undefined) {
        skipped.push({ scenario: s.name, reason });
        if (options.skip?.[s.name] !== undefined && it.skip) it.skip(`${s.name} (skipped: ${reason})`, () => undefined);
        continue;
      }
      it(s.name, () => s.run(recorded, options), 60_000);
    }
    afterAll?.(() => {
      const report = exerciseReport(backend, recorder, skipped);
      if (options.onReport) options.onReport(report);
      // eslint-disable-next-line no-console
      else console.log(formatExerciseReport(report));
    });
  });
}
