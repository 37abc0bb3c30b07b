import {
  Assembler, buildCpuBench32, buildCpuBench64, buildExitLoop, buildMemWalkBench, buildStringBench, cpuBenchExpected,
  disassemble, eax, SIEVE_PRIMES, texts,
} from '../src';

describe('benchmark guests', () => {
  it('assemble, and the 64-bit CPU workload ends with its checksum report and HLT', () => {
    const g = buildCpuBench64({ sieveRounds: 1, xorshiftIterations: 10 });
    const lines = texts(disassemble(g.image.subarray(g.symbols.xorshift - g.loadAddress), 64, g.symbols.xorshift));
    expect(lines.slice(0, 3)).toEqual(['mov rdx, rax', 'shl rdx, 0xd', 'xor rax, rdx']);
    expect(lines).toContain('hlt');
    for (const b of [buildCpuBench32(), buildMemWalkBench(), buildStringBench(), buildExitLoop('cpuid', 10), buildExitLoop('pio-kernel', 10)]) {
      expect(b.image.length).toBeGreaterThan(0);
    }
  });

  it('computes the reference checksums on the host', () => {
    const [primes, x] = cpuBenchExpected({ xorshiftIterations: 1 });
    expect(primes).toBe(SIEVE_PRIMES);
    // One xorshift64 step from Marsaglia's seed, computed independently.
    let s = 88172645463325252n;
    const M = (1n << 64n) - 1n;
    s ^= (s << 13n) & M; s ^= s >> 7n; s ^= (s << 17n) & M;
    expect(x).toBe(Number(s & 0xffffffffn));
    // Count primes below 131072 with a plain sieve.
    const sieve = new Uint8Array(131072).fill(1);
    let n = 0;
    for (let i = 2; i < sieve.length; i++) if (sieve[i]) { n++; for (let j = i * i; j < sieve.length; j += i) sieve[j] = 0; }
    expect(n).toBe(SIEVE_PRIMES);
  });

  it('refuses an immediate port above 0xff instead of truncating it', () => {
    const a = new Assembler(64, 0x1000);
    expect(() => a.out(0x510, eax)).toThrow(/immediate port 0x510 is not 0..0xff/);
    expect(() => a.in(eax, 0x3f8)).toThrow(/immediate port 0x3f8/);
  });
});
