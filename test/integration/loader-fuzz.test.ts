/**
 * Malformed kernel files (issue #9): mutated, truncated and oversized ELF and Multiboot images
 * either load or are refused with a GuestLoadError / MachineConfigError naming the problem —
 * never another exception, never a load outside guest RAM.
 */
import { BackendClass, GuestLoadError, Machine } from '@tsvisor/core';
import { SvmBackend } from '@tsvisor/svm';
import { buildMultibootKernel, haltLoop, Prng } from '@tsvisor/testkit';

function elf64(): Uint8Array {
  // A minimal valid ELF64 executable: one PT_LOAD of 16 bytes at 0x200000 (HLT loop).
  const b = new Uint8Array(0x100);
  const dv = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  dv.setUint16(16, 2, true); // ET_EXEC
  dv.setUint16(18, 62, true); // EM_X86_64
  dv.setUint32(20, 1, true);
  dv.setBigUint64(24, 0x200000n, true); // e_entry
  dv.setBigUint64(32, 64n, true); // e_phoff
  dv.setUint16(52, 64, true); // e_ehsize
  dv.setUint16(54, 56, true); // e_phentsize
  dv.setUint16(56, 1, true); // e_phnum
  dv.setUint32(64, 1, true); // PT_LOAD
  dv.setUint32(68, 5, true); // R+X
  dv.setBigUint64(72, 0x80n, true); // p_offset
  dv.setBigUint64(80, 0x200000n, true); // p_vaddr
  dv.setBigUint64(88, 0x200000n, true); // p_paddr
  dv.setBigUint64(96, 16n, true); // p_filesz
  dv.setBigUint64(104, 16n, true); // p_memsz
  b.set([0xf4, 0xeb, 0xfd], 0x80);
  return b;
}

const seeds = { elf: elf64(), multiboot: buildMultibootKernel((a) => haltLoop(a)).image };

function attempt(data: Uint8Array): 'loaded' | 'refused' {
  let m: Machine | null = null;
  try {
    m = Machine.create({ backend: SvmBackend as unknown as BackendClass, memory: 8 << 20, kernel: { name: 'fuzz.bin', data }, format: 'auto', maxInstructions: 1000, serial: null });
    return 'loaded';
  } catch (e) {
    if (e instanceof GuestLoadError || (e as Error).name === 'MachineConfigError') {
      expect((e as Error).message).toMatch(/fuzz\.bin|kernel|memory|entry|segment|header|ELF|Multiboot/i);
      expect((e as Error).message.split('\n')).toHaveLength(1);
      return 'refused';
    }
    throw new Error(`unexpected ${(e as Error).name}: ${(e as Error).stack}`);
  } finally {
    m?.destroy();
  }
}

describe.each(Object.entries(seeds))('mutated %s kernels', (kind, seed) => {
  it('load or are refused with one clear line', () => {
    const r = new Prng(kind === 'elf' ? 7 : 11);
    const tally = { loaded: 0, refused: 0 };
    for (let i = 0; i < 120; i++) {
      let data = seed.slice();
      switch (i % 4) {
        case 0: for (let k = 0; k < 1 + r.below(6); k++) data[r.below(Math.min(data.length, 0x100))] = r.next() & 0xff; break;
        case 1: data = data.slice(0, r.below(data.length)); break;
        case 2: { const big = new Uint8Array(data.length + r.below(1 << 16)); big.set(data); data = big; break; }
        default: for (let k = 0; k < 4; k++) data[r.below(data.length)] ^= 1 << r.below(8);
      }
      tally[attempt(data)]++;
    }
    expect(tally.loaded + tally.refused).toBe(120);
    expect(tally.refused).toBeGreaterThan(0);
  });
});

it('the unmutated seeds load', () => {
  expect(attempt(seeds.elf)).toBe('loaded');
  expect(attempt(seeds.multiboot)).toBe('loaded');
});

it('zero, negative and oversized memory sizes are refused', () => {
  for (const memory of [0, -4096, 2 ** 50, 12345]) {
    expect(() => Machine.create({ backend: SvmBackend as unknown as BackendClass, memory, kernel: { name: 'k.bin', data: seeds.elf } })).toThrow(/memory/i);
  }
});
