/** Figures over repeated runs: median with min and max (and the samples, for the JSON). */
export interface Stat {
  median: number;
  min: number;
  max: number;
  samples: number[];
}

export function stat(samples: readonly number[]): Stat {
  if (!samples.length) return { median: NaN, min: NaN, max: NaN, samples: [] };
  const s = [...samples].sort((a, b) => a - b);
  const m = s.length >> 1;
  const median = s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  return { median, min: s[0], max: s[s.length - 1], samples: [...samples] };
}

/** Apply f to every figure (unit changes). Min/max stay in the same order for increasing f. */
export function mapStat(x: Stat, f: (v: number) => number): Stat {
  const a = f(x.min);
  const b = f(x.max);
  return { median: f(x.median), min: Math.min(a, b), max: Math.max(a, b), samples: x.samples.map(f) };
}

/** Round for output: 3 significant digits above 1, more below. */
export function round(v: number, digits = 3): number {
  if (!Number.isFinite(v) || v === 0) return v;
  const mag = Math.floor(Math.log10(Math.abs(v)));
  const p = 10 ** Math.max(0, digits - 1 - mag);
  return Math.round(v * p) / p;
}

export function roundStat(x: Stat, digits = 3): Stat {
  return { median: round(x.median, digits), min: round(x.min, digits), max: round(x.max, digits), samples: x.samples.map((v) => round(v, digits)) };
}
