/**
 * `describeFamily`: the jest side of the differential tests. One describe per family, one
 * test per form; one native runner process per test file.
 *
 * Environment:
 *   TSVISOR_DIFF_LONG=1        100,000 cases per form instead of 1,000
 *   TSVISOR_DIFF_CASES=n       exactly n cases per form
 *   TSVISOR_DIFF_SEED=n|random the run seed (default fixed, so CI runs are reproducible)
 *   TSVISOR_DIFF_FORMS=regex   only forms whose id ("Add_rm32_r32/mem") matches
 *   TSVISOR_DIFF_REPORT=dir    write one JSON summary per family into dir
 */
import * as fs from 'fs';
import * as path from 'path';
import { DiffCase, generateCases } from './cases';
import { compareCase, describeMismatch } from './compare';
import { EmulatorEnv, SLOTS_PER_CHUNK } from './emulator';
import { Form, formsOfFamily, missingFeature } from './forms';
import { knownMismatch } from './known-mismatches';
import { NativeRunner, ensureNativeRunner } from './native';

export const DEFAULT_SEED = 0x7e5f15;

export function runSeed(): number {
  const s = process.env.TSVISOR_DIFF_SEED;
  if (!s) return DEFAULT_SEED;
  if (s === 'random') {
    const r = (Date.now() ^ (process.pid << 16)) >>> 0;
    return r;
  }
  const n = Number(s);
  if (!Number.isInteger(n)) throw new Error(`TSVISOR_DIFF_SEED=${s} is not an integer`);
  return n >>> 0;
}

export function casesPerForm(): number {
  if (process.env.TSVISOR_DIFF_CASES) return Math.max(1, Number(process.env.TSVISOR_DIFF_CASES) | 0);
  return process.env.TSVISOR_DIFF_LONG === '1' ? 100_000 : 1_000;
}

export interface FormResult {
  form: string;
  mnemonic: string;
  family: string;
  size: number;
  cases: number;
  hostExceptions: number;
  mismatches: number;
  status: 'pass' | 'mismatch' | 'skipped';
  note?: string;
  example?: string;
}

/** Differences found in one form, with up to `keep` described examples. */
export async function runForm(
  form: Form, count: number, seed: number, native: NativeRunner, env: EmulatorEnv, keep = 3,
): Promise<FormResult & { examples: string[] }> {
  const examples: string[] = [];
  let mismatches = 0;
  let hostExceptions = 0;
  for (let first = 0; first < count; first += SLOTS_PER_CHUNK) {
    const n = Math.min(SLOTS_PER_CHUNK, count - first);
    const cases: DiffCase[] = generateCases(form, n, seed, first);
    const host = await native.run(cases);
    env.load(cases);
    for (let i = 0; i < n; i++) {
      const emu = env.run(i);
      if (host[i].vector !== -1) hostExceptions++;
      const diffs = compareCase(cases[i], i, host[i], emu);
      if (diffs.length) {
        mismatches++;
        if (examples.length < keep) examples.push(describeMismatch(cases[i], seed, host[i], emu, diffs));
      }
    }
  }
  return {
    form: form.id, mnemonic: form.mnemonic, family: form.family, size: form.size, cases: count, hostExceptions, mismatches,
    status: mismatches ? 'mismatch' : 'pass', examples, example: examples[0],
  };
}

export function describeFamily(family: string): void {
  const filter = process.env.TSVISOR_DIFF_FORMS ? new RegExp(process.env.TSVISOR_DIFF_FORMS) : null;
  const forms = formsOfFamily(family).filter((f) => !filter || filter.test(f.id));
  const seed = runSeed();
  const count = casesPerForm();
  const results: FormResult[] = [];

  describe(`differential: ${family}`, () => {
    if (forms.length === 0) {
      it.skip(`no ${family} forms selected`, () => undefined);
      return;
    }
    const native = ensureNativeRunner();
    if (!native.ok) {
      // No oracle on this machine: say so loudly, and skip instead of failing.
      console.warn(`[tsvisor diff] skipping ${family}: ${native.reason}`);
      it.skip(`${family}: native oracle unavailable (${native.reason})`, () => undefined);
      return;
    }
    let runner: NativeRunner;
    let env: EmulatorEnv;
    beforeAll(() => {
      runner = new NativeRunner(native.binary!);
      env = new EmulatorEnv();
    });
    afterAll(async () => {
      await runner?.close();
      const dir = process.env.TSVISOR_DIFF_REPORT;
      if (dir) {
        fs.mkdirSync(dir, { recursive: true });
        fs.writeFileSync(path.join(dir, `${family}.json`), JSON.stringify({ seed, count, results }, null, 1));
      }
    });

    for (const form of forms) {
      const feature = missingFeature(form.mnemonic);
      if (feature) {
        results.push({ form: form.id, mnemonic: form.mnemonic, family, size: form.size, cases: 0, hostExceptions: 0, mismatches: 0, status: 'skipped', note: `host lacks ${feature}` });
        it.skip(`${form.id} (${form.size}-bit): host CPU lacks ${feature}`, () => undefined);
        continue;
      }
      const known = knownMismatch(form.id);
      const title = `${form.id} (${form.size}-bit)${known ? ` — known mismatch: ${known}` : ''}`;
      (known ? it.failing : it)(title, async () => {
        const r = await runForm(form, count, seed, runner, env);
        const { examples, ...summary } = r;
        results.push(summary);
        if (r.mismatches) {
          throw new Error(
            `${r.mismatches} of ${r.cases} cases differ from the host CPU (seed ${seed}):\n\n${examples.join('\n\n')}`,
          );
        }
      }, 60_000 + count * 2);
    }
  });
}
