/**
 * Tests of the differential-testing harness itself: the native runner against results known
 * from the manuals, and case generation (reproducible, encodes what it claims, covers the
 * edges). These need no emulated processor.
 */
import { Code, Decoder, DecoderOptions } from 'iced-x86';
import { AF, CF, COMPARED_FLAGS, DF, DiffCase, OF, PF, SF, ZF, generateCases } from './harness/cases';
import { enumerateForms, formsOfFamily, missingFeature } from './harness/forms';
import { CODE_ADDR, DATA_ADDR, DiffInput, NativeRunner, ensureNativeRunner } from './harness/native';
import { Prng } from './harness/prng';

const native = ensureNativeRunner();
if (!native.ok) console.warn(`[tsvisor diff] native oracle unavailable, skipping its tests: ${native.reason}`);
const describeNative = native.ok ? describe : describe.skip;

function input(bytes: number[], regs: Record<number, bigint> = {}, rflags = 0x2, mem?: { off: number; bytes: number[] }): DiffInput {
  const r = new BigUint64Array(16);
  for (const [i, v] of Object.entries(regs)) r[Number(i)] = BigInt.asUintN(64, v);
  return { bytes: Uint8Array.from(bytes), regs: r, rflags, memOff: mem?.off ?? 0, mem: Uint8Array.from(mem?.bytes ?? []) };
}

describeNative('native runner', () => {
  let runner: NativeRunner;
  beforeAll(() => { runner = new NativeRunner(native.binary!); });
  afterAll(() => runner.close());

  it('ADD 1+1 = 2 sets no carry, no zero, no sign', async () => {
    const [o] = await runner.run([input([0x48, 0x01, 0xd8], { 0: 1n, 3: 1n }, 0x2 | CF | ZF)]); // add rax, rbx
    expect(o.vector).toBe(-1);
    expect(o.regs[0]).toBe(2n);
    expect(o.rflags & COMPARED_FLAGS).toBe(0);
  });

  it('ADD 0xffffffff + 1 (32-bit) gives 0 with CF ZF PF AF and zero-extends', async () => {
    const [o] = await runner.run([input([0x01, 0xd8], { 0: 0xdead_beef_ffff_ffffn, 3: 1n })]); // add eax, ebx
    expect(o.regs[0]).toBe(0n);
    expect(o.rflags & COMPARED_FLAGS).toBe(CF | ZF | PF | AF);
  });

  it('SUB 0x80 - 1 (8-bit, AH) overflows into 0x7f and keeps the other bytes', async () => {
    const [o] = await runner.run([input([0x80, 0xec, 0x01], { 4: 0n, 0: 0x1122_3344_5566_80aan })]); // sub ah, 1
    expect(o.regs[0]).toBe(0x1122_3344_5566_7faan);
    expect(o.rflags & (OF | CF | SF | ZF)).toBe(OF);
  });

  it('every register, RSP included, and the flags (with DF) pass through a NOP unchanged', async () => {
    const regs: Record<number, bigint> = {};
    for (let i = 0; i < 16; i++) regs[i] = 0x0101_0101_0101_0101n * BigInt(i + 1);
    const [o] = await runner.run([input([0x90], regs, 0x2 | COMPARED_FLAGS)]);
    expect(o.vector).toBe(-1);
    for (let i = 0; i < 16; i++) expect(o.regs[i]).toBe(regs[i]);
    expect(o.rflags & COMPARED_FLAGS).toBe(COMPARED_FLAGS);
  });

  it('DIV by zero reports #DE (vector 0) with registers unchanged', async () => {
    const [o] = await runner.run([input([0x48, 0xf7, 0xf1], { 0: 5n, 1: 0n, 2: 0n, 4: 0x1234n })]); // div rcx
    expect(o.vector).toBe(0);
    expect(o.regs[0]).toBe(5n);
    expect(o.regs[4]).toBe(0x1234n);
  });

  it('divide overflow (quotient too large) also reports #DE', async () => {
    const [o] = await runner.run([input([0xf6, 0xf1], { 0: 0x0200n, 1: 1n })]); // div cl: 0x200/1 > 0xff
    expect(o.vector).toBe(0);
  });

  it('UD2 reports #UD (vector 6); a privileged instruction #GP (13)', async () => {
    const [a, b] = await runner.run([input([0x0f, 0x0b]), input([0xf4])]); // ud2; hlt
    expect(a.vector).toBe(6);
    expect(b.vector).toBe(13);
  });

  it('memory operands: ADD [abs], reg writes the window back, guard bytes intact', async () => {
    // add dword [0x30000800], ebx
    const addr = DATA_ADDR + 0x800;
    const bytes = [0x01, 0x1c, 0x25, addr & 0xff, (addr >>> 8) & 0xff, (addr >>> 16) & 0xff, addr >>> 24];
    const [o] = await runner.run([input(bytes, { 3: 0x10n }, 0x2, { off: 0x7fc, bytes: [9, 9, 9, 9, 0xf0, 0, 0, 0, 7, 7, 7, 7] })]);
    expect(Array.from(o.mem)).toEqual([9, 9, 9, 9, 0x00, 1, 0, 0, 7, 7, 7, 7]);
  });

  it('runs many cases per batch and many batches per process', async () => {
    const batch = Array.from({ length: 5000 }, (_, i) => input([0x48, 0x01, 0xd8], { 0: BigInt(i), 3: 1n }));
    for (let round = 0; round < 3; round++) {
      const out = await runner.run(batch);
      expect(out).toHaveLength(5000);
      expect(out[4999].regs[0]).toBe(5000n);
    }
  });
});

describe('case generation', () => {
  it('is reproducible from the seed and differs across seeds', () => {
    const form = formsOfFamily('add-sub').find((f) => f.id === 'Adc_rm32_r32/reg')!;
    const a = generateCases(form, 50, 1234);
    const b = generateCases(form, 50, 1234);
    const c = generateCases(form, 50, 1235);
    expect(a.map((x) => [Array.from(x.bytes), Array.from(x.regs), x.rflags])).toEqual(b.map((x) => [Array.from(x.bytes), Array.from(x.regs), x.rflags]));
    expect(a.map((x) => Array.from(x.regs))).not.toEqual(c.map((x) => Array.from(x.regs)));
  });

  it('every form encodes to an instruction that decodes back to its iced Code', () => {
    const forms = enumerateForms();
    expect(forms.length).toBeGreaterThan(900);
    const bad: string[] = [];
    for (const form of forms) {
      for (const c of generateCases(form, 20, 99)) {
        const d = new Decoder(64, c.bytes, DecoderOptions.None);
        d.ip = BigInt(CODE_ADDR);
        const ins = d.decode();
        const code = ins.code;
        const len = ins.length;
        ins.free();
        d.free();
        // XCHG of the accumulator with itself encodes as (66) 90, which decodes as NOP: in
        // 64-bit mode `xchg eax, eax` (90) is a NOP that does not zero-extend RAX.
        const decoded = form.mnemonic === 'Xchg' && Code[code].startsWith('Nop') ? form.codeName : Code[code];
        if (decoded !== form.codeName || len !== c.bytes.length) bad.push(`${form.id}: decodes as ${Code[code]}, ${len} of ${c.bytes.length} bytes`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('covers edge values and shift counts', () => {
    const add = enumerateForms().find((f) => f.id === 'Add_rm64_r64/reg')!;
    const seen = new Set(generateCases(add, 1000, 7).flatMap((c) => c.opVals.map((v) => v.toString(16))));
    for (const e of ['0', '1', 'ffffffffffffffff', '7fffffffffffffff', '8000000000000000']) expect(seen.has(e)).toBe(true);
    const shl = enumerateForms().find((f) => f.id === 'Shl_rm32_CL/reg')!;
    const counts = new Set(generateCases(shl, 1000, 7).map((c) => Number(c.opVals[1])));
    for (const n of [0, 1, 31, 32, 33, 64, 255]) expect(counts.has(n)).toBe(true);
  });

  it('masks count-dependent undefined flags per case', () => {
    const shl = enumerateForms().find((f) => f.id === 'Shl_rm32_CL/reg')!;
    for (const c of generateCases(shl, 300, 5)) {
      const n = Number(c.opVals[1] & 31n);
      if (n === 0) expect(c.undefinedFlags).toBe(0);
      else if (n === 1) expect(c.undefinedFlags).toBe(AF);
      else expect(c.undefinedFlags).toBe(AF | OF);
    }
  });

  it('the PRNG is uniform enough and deterministic', () => {
    const p = new Prng(42, 'x');
    const q = new Prng(42, 'x');
    let ones = 0;
    let same = 0;
    for (let i = 0; i < 10000; i++) {
      const v = p.u32();
      if (v === q.u32()) same++;
      ones += v & 1;
    }
    expect(same).toBe(10000);
    expect(ones).toBeGreaterThan(4700);
    expect(ones).toBeLessThan(5300);
  });
});

/** A reference model of the ALU group, to check the native pipeline end to end. */
function refAlu(mn: string, a: bigint, b: bigint, cf: number, w: number): { res: bigint; flags: number; writes: boolean; mask: number } {
  const m = (1n << BigInt(w)) - 1n;
  let r: bigint;
  let flags = 0;
  const logic = mn === 'And' || mn === 'Or' || mn === 'Xor';
  if (mn === 'Add' || mn === 'Adc') {
    const full = a + b + (mn === 'Adc' ? BigInt(cf) : 0n);
    r = full & m;
    if (full > m) flags |= CF;
    if ((((a ^ r) & (b ^ r)) >> BigInt(w - 1)) & 1n) flags |= OF;
  } else if (mn === 'Sub' || mn === 'Sbb' || mn === 'Cmp') {
    const full = a - b - (mn === 'Sbb' ? BigInt(cf) : 0n);
    r = full & m;
    if (full < 0n) flags |= CF;
    if ((((a ^ b) & (a ^ r)) >> BigInt(w - 1)) & 1n) flags |= OF;
  } else {
    r = mn === 'And' ? a & b : mn === 'Or' ? a | b : a ^ b;
  }
  if (!logic && ((a ^ b ^ r) & 0x10n)) flags |= AF;
  if (r === 0n) flags |= ZF;
  if ((r >> BigInt(w - 1)) & 1n) flags |= SF;
  let p = Number(r & 0xffn);
  p ^= p >> 4; p ^= p >> 2; p ^= p >> 1;
  if (!(p & 1)) flags |= PF;
  return { res: r, flags, writes: mn !== 'Cmp', mask: logic ? COMPARED_FLAGS & ~AF & ~DF : COMPARED_FLAGS & ~DF };
}

describeNative('native runner against a reference ALU model', () => {
  let runner: NativeRunner;
  beforeAll(() => { runner = new NativeRunner(native.binary!); });
  afterAll(() => runner.close());

  const forms = enumerateForms().filter((f) => ['Add', 'Adc', 'Sub', 'Sbb', 'Cmp', 'And', 'Or', 'Xor'].includes(f.mnemonic) && !missingFeature(f.mnemonic));
  it(`agrees on ${forms.length} ALU forms (register, memory, immediate; all sizes; AH..BH)`, async () => {
    let checked = 0;
    const bad: string[] = [];
    for (const form of forms) {
      const cases: DiffCase[] = generateCases(form, 200, 31);
      const out = await runner.run(cases);
      cases.forEach((c, i) => {
        const o = out[i];
        const w = form.size;
        const m = (1n << BigInt(w)) - 1n;
        // Sign-extended immediates: the source is the immediate extended to the operand size.
        const srcLoc = c.locations[1];
        const src = srcLoc.type === 'imm' && srcLoc.size < w ? BigInt.asUintN(w, BigInt.asIntN(srcLoc.size, c.opVals[1])) : c.opVals[1] & m;
        const ref = refAlu(form.mnemonic, c.opVals[0], src, c.rflags & CF, w);
        const ctx = `${form.id} #${i}`;
        if (o.vector !== -1) { bad.push(`${ctx}: vector ${o.vector}`); return; }
        if ((o.rflags & ref.mask) !== ref.flags) bad.push(`${ctx}: flags ${(o.rflags & ref.mask).toString(16)}, expected ${ref.flags.toString(16)}`);
        const dest = c.locations[0];
        if (ref.writes) {
          let got: bigint;
          if (dest.type === 'reg') {
            got = (o.regs[dest.gpr] >> BigInt(dest.shift)) & m;
            if (w === 32 && o.regs[dest.gpr] >> 32n !== 0n) bad.push(`${ctx}: 32-bit result not zero-extended`);
          } else {
            const off = 0x800 - c.memOff;
            got = 0n;
            for (let k = w / 8 - 1; k >= 0; k--) got = (got << 8n) | BigInt(o.mem[off + k]);
          }
          if (got !== ref.res) bad.push(`${ctx}: result ${got.toString(16)}, expected ${ref.res.toString(16)}`);
        }
        checked++;
      });
    }
    expect(bad.slice(0, 10)).toEqual([]);
    expect(checked).toBe(forms.length * 200);
  });
});
