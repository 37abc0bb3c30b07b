/**
 * Seeded, reproducible randomness for the differential tests: xoshiro128** over 32-bit
 * integers (fast in V8, no BigInt on the hot path), seeded through splitmix32 from a
 * run seed and a per-form label so each form's cases are reproducible on their own.
 */

// Module-level aliases: under jest, code runs in a vm context whose global lookups go
// through interceptors and cost ~50x more than a closure variable on this hot path.
const imul = Math.imul;
const floor = Math.floor;
const big = BigInt;
const U64Array = BigUint64Array;
const U8Array = Uint8Array;
const M = Math;
const asUintN = BigInt.asUintN;

/** FNV-1a over a string, for deriving per-form seeds. */
export function hashString(s: string, h = 0x811c9dc5): number {
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = imul(h, 0x01000193);
  }
  return h >>> 0;
}

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = imul(z ^ (z >>> 16), 0x85ebca6b);
  z = imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, label = '') {
    const st = { s: (seed ^ hashString(label)) | 0 };
    // Keep the state in int32 range (| 0) so V8 stores the fields as small integers.
    this.a = splitmix32(st) | 0;
    this.b = splitmix32(st) | 0;
    this.c = splitmix32(st) | 0;
    this.d = splitmix32(st) | 0;
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    const result = imul(rotl(imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform integer in [0, n) for n <= 2^32. */
  below(n: number): number {
    return floor((this.u32() / 4294967296) * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }

  /** Uniform 64-bit unsigned integer. */
  u64(): bigint {
    return (big(this.u32()) << 32n) | big(this.u32());
  }

  /** Uniform unsigned integer of `bits` bits (1..64). */
  bits(bits: number): bigint {
    return asUintN(bits, this.u64());
  }

  bytes(n: number): Uint8Array {
    const out = new U8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (v >>> (8 * j)) & 0xff;
    }
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
