/**
 * Forms where the emulated processor is known to disagree with the host today. A matching
 * form runs as `it.failing`: it stays green while the bug is there and turns red the moment
 * the processor is fixed — then delete the entry. Every entry names a minimal example
 * (reproduce with the seed and TSVISOR_DIFF_FORMS printed by a normal failure).
 *
 * Last updated from a full default run (seed 8281877, 1,000 cases per form) on an AMD Zen host.
 */
export interface KnownMismatch {
  /** Matched against form ids such as "Shl_rm32_CL/reg". */
  forms: RegExp;
  reason: string;
}

export const KNOWN_MISMATCHES: readonly KnownMismatch[] = [
  // None: every form the harness generates matches the host (last full run: seed 8281877).
];

export function knownMismatch(formId: string): string | undefined {
  return KNOWN_MISMATCHES.find((k) => k.forms.test(formId))?.reason;
}
