/**
 * Forms where the emulated processor is known to disagree with the host today. Each entry
 * runs as `it.failing`: it keeps failing while the bug is there, and turns red the moment
 * the processor is fixed — then delete the entry. Keys are form ids ("Code/reg" or
 * "Code/mem") or bare iced Code names (both forms). Every entry carries a minimal example.
 */
export const KNOWN_MISMATCHES: Record<string, string> = {};

export function knownMismatch(formId: string, codeName: string): string | undefined {
  return KNOWN_MISMATCHES[formId] ?? KNOWN_MISMATCHES[codeName];
}
