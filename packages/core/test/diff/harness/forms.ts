/**
 * Instruction forms under differential test, enumerated from iced-x86's opcode tables: every
 * `Code` whose mnemonic belongs to a family below, that exists in 64-bit mode, is a
 * general-purpose (legacy or VEX) encoding and runs at CPL 3. A `Code` with an r/m operand
 * yields two forms: register and memory.
 *
 * Left out on purpose (and why):
 * - AAA AAS AAD AAM DAA DAS (BCD adjusts), INTO, and the 0x82 aliases of the group-1
 *   instructions: invalid in 64-bit mode (#UD), so there is nothing to compare in user mode
 *   of a 64-bit host. They are covered by guest-level tests in 16/32-bit modes instead.
 * - INC/DEC r16/r32 (0x40-0x4F): those bytes are REX prefixes in 64-bit mode.
 * - CMPXCHG486 (0F A6/A7): an encoding of early 486 steppings only.
 * - XOP BEXTR (AMD TBM) and the KNC (Knights Corner) VEX encodings of POPCNT/LZCNT/TZCNT:
 *   not general-purpose x86-64 ISA on current processors.
 * - BSWAP r16: its result is undefined in both vendors' manuals.
 */
import { Code, CodeExt, EncodingKind, Mnemonic, OpCodeOperandKind } from 'iced-x86';
import * as fs from 'fs';

export type OperandKind = 'reg' | 'rm' | 'mem' | 'imm';

export interface OperandSpec {
  kind: OperandKind;
  /** Size in bits of the operand (8/16/32/64). */
  size: number;
  /** For implicit register operands (AL/AX/EAX/RAX/CL): the GPR index (KVM order). */
  fixed?: number;
  /** Immediates: sign-extended encodings (imm8sex*, imm32sex64). */
  signed?: boolean;
  /** The constant-1 shift count of the D0/D1 forms. */
  const1?: boolean;
}

export interface Form {
  code: Code;
  /** iced's Code name, e.g. "Add_rm32_r32". */
  codeName: string;
  mnemonic: string;
  family: string;
  /** Operand size label used in reports (8/16/32/64). */
  size: number;
  /** True: the r/m operand is memory (or the form only has a memory operand). */
  memory: boolean;
  ops: OperandSpec[];
  /** Unique, human-readable form id, e.g. "Add_rm32_r32/mem". */
  id: string;
}

/** Families: one describe each. Mnemonics are iced's names. */
export const FAMILIES: Record<string, readonly string[]> = {
  'add-sub': ['Add', 'Adc', 'Sub', 'Sbb', 'Cmp', 'Neg'],
  logic: ['And', 'Or', 'Xor', 'Test', 'Not'],
  'inc-dec': ['Inc', 'Dec'],
  mul: ['Mul', 'Imul'],
  div: ['Div', 'Idiv'],
  shift: ['Shl', 'Sal', 'Shr', 'Sar'],
  rotate: ['Rol', 'Ror', 'Rcl', 'Rcr'],
  'double-shift': ['Shld', 'Shrd'],
  'bit-test': ['Bt', 'Bts', 'Btr', 'Btc'],
  'bit-scan': ['Bsf', 'Bsr', 'Lzcnt', 'Tzcnt', 'Popcnt'],
  'move-extend': ['Movzx', 'Movsx', 'Movsxd', 'Bswap', 'Movbe'],
  exchange: ['Xchg', 'Xadd', 'Cmpxchg'],
  cmov: ['Cmovo', 'Cmovno', 'Cmovb', 'Cmovae', 'Cmove', 'Cmovne', 'Cmovbe', 'Cmova', 'Cmovs', 'Cmovns', 'Cmovp', 'Cmovnp', 'Cmovl', 'Cmovge', 'Cmovle', 'Cmovg'],
  setcc: ['Seto', 'Setno', 'Setb', 'Setae', 'Sete', 'Setne', 'Setbe', 'Seta', 'Sets', 'Setns', 'Setp', 'Setnp', 'Setl', 'Setge', 'Setle', 'Setg'],
  'flags-convert': ['Lahf', 'Sahf', 'Cbw', 'Cwde', 'Cdqe', 'Cwd', 'Cdq', 'Cqo'],
  bmi1: ['Andn', 'Bextr', 'Blsi', 'Blsmsk', 'Blsr', 'Tzcnt'],
  bmi2: ['Bzhi', 'Mulx', 'Pdep', 'Pext', 'Rorx', 'Sarx', 'Shlx', 'Shrx'],
  adx: ['Adcx', 'Adox'],
  crc32: ['Crc32'],
};

/** /proc/cpuinfo feature flag each mnemonic needs (others are baseline x86-64). */
const FEATURE: Record<string, string> = {
  Andn: 'bmi1', Bextr: 'bmi1', Blsi: 'bmi1', Blsmsk: 'bmi1', Blsr: 'bmi1', Tzcnt: 'bmi1',
  Bzhi: 'bmi2', Mulx: 'bmi2', Pdep: 'bmi2', Pext: 'bmi2', Rorx: 'bmi2', Sarx: 'bmi2', Shlx: 'bmi2', Shrx: 'bmi2',
  Lzcnt: 'abm', Popcnt: 'popcnt', Movbe: 'movbe', Crc32: 'sse4_2', Adcx: 'adx', Adox: 'adx',
  Lahf: 'lahf_lm', Sahf: 'lahf_lm',
};

const SKIP_CODES = new Set<string>(['Bswap_r16']);

let hostFlags: Set<string> | null = null;
let hostVendor: 'intel' | 'amd' | null = null;

function readCpuinfo(): void {
  let text = '';
  try { text = fs.readFileSync('/proc/cpuinfo', 'utf8'); } catch { /* not Linux */ }
  const flags = /^flags\s*:\s*(.*)$/m.exec(text)?.[1] ?? '';
  hostFlags = new Set(flags.split(/\s+/).filter(Boolean));
  hostVendor = /^vendor_id\s*:\s*AuthenticAMD/m.test(text) || /^vendor_id\s*:\s*HygonGenuine/m.test(text) ? 'amd' : 'intel';
}

export function hostCpuFlags(): Set<string> {
  if (!hostFlags) readCpuinfo();
  return hostFlags!;
}

export function hostCpuVendor(): 'intel' | 'amd' {
  if (!hostVendor) readCpuinfo();
  return hostVendor!;
}

/** The feature a mnemonic needs, if the host lacks it (such forms are skipped and reported). */
export function missingFeature(mnemonic: string): string | null {
  const f = FEATURE[mnemonic];
  if (!f) return null;
  // LZCNT is "abm" on both vendors in Linux's flag names; some kernels also print "lzcnt".
  if (f === 'abm' && hostCpuFlags().has('lzcnt')) return null;
  return hostCpuFlags().has(f) ? null : f;
}

function regSize(k: OpCodeOperandKind): number {
  const n = OpCodeOperandKind[k];
  if (n.startsWith('r8')) return 8;
  if (n.startsWith('r16')) return 16;
  if (n.startsWith('r32')) return 32;
  return 64;
}

function operandOf(k: OpCodeOperandKind, opSize: number): OperandSpec | null {
  switch (k) {
    case OpCodeOperandKind.r8_or_mem: case OpCodeOperandKind.r16_or_mem:
    case OpCodeOperandKind.r32_or_mem: case OpCodeOperandKind.r64_or_mem:
      return { kind: 'rm', size: regSize(k) };
    case OpCodeOperandKind.r8_reg: case OpCodeOperandKind.r8_opcode:
    case OpCodeOperandKind.r16_reg: case OpCodeOperandKind.r16_opcode:
    case OpCodeOperandKind.r32_reg: case OpCodeOperandKind.r32_opcode: case OpCodeOperandKind.r32_vvvv:
    case OpCodeOperandKind.r64_reg: case OpCodeOperandKind.r64_opcode: case OpCodeOperandKind.r64_vvvv:
      return { kind: 'reg', size: regSize(k) };
    case OpCodeOperandKind.mem: return { kind: 'mem', size: opSize };
    case OpCodeOperandKind.al: return { kind: 'reg', size: 8, fixed: 0 };
    case OpCodeOperandKind.ax: return { kind: 'reg', size: 16, fixed: 0 };
    case OpCodeOperandKind.eax: return { kind: 'reg', size: 32, fixed: 0 };
    case OpCodeOperandKind.rax: return { kind: 'reg', size: 64, fixed: 0 };
    case OpCodeOperandKind.cl: return { kind: 'reg', size: 8, fixed: 1 };
    case OpCodeOperandKind.imm8: return { kind: 'imm', size: 8 };
    case OpCodeOperandKind.imm8_const_1: return { kind: 'imm', size: 8, const1: true };
    case OpCodeOperandKind.imm8sex16: case OpCodeOperandKind.imm8sex32: case OpCodeOperandKind.imm8sex64:
      return { kind: 'imm', size: 8, signed: true };
    case OpCodeOperandKind.imm16: return { kind: 'imm', size: 16 };
    case OpCodeOperandKind.imm32: return { kind: 'imm', size: 32 };
    case OpCodeOperandKind.imm32sex64: return { kind: 'imm', size: 32, signed: true };
    default: return null;
  }
}

let allForms: Form[] | null = null;

/** Every form of every family (before host-feature filtering). */
export function enumerateForms(): Form[] {
  if (allForms) return allForms;
  const familyOf = new Map<string, string>();
  for (const [fam, mns] of Object.entries(FAMILIES)) for (const m of mns) if (!familyOf.has(m)) familyOf.set(m, fam);
  const forms: Form[] = [];
  for (const [name, value] of Object.entries(Code)) {
    if (typeof value !== 'number') continue;
    const oc = CodeExt.opCode(value as Code);
    try {
      const mnemonic = Mnemonic[oc.mnemonic];
      let family = familyOf.get(mnemonic);
      if (!family) continue;
      if (!oc.mode64 || !oc.cpl3) continue;
      if (oc.encoding !== EncodingKind.Legacy && oc.encoding !== EncodingKind.VEX) continue;
      if (name.includes('KNC') || SKIP_CODES.has(name)) continue;
      if (mnemonic === 'Tzcnt' && oc.encoding === EncodingKind.Legacy) family = 'bit-scan';
      if (mnemonic === 'Tzcnt' && oc.encoding !== EncodingKind.Legacy) continue;
      const ops: OperandSpec[] = [];
      let ok = true;
      const kinds: OpCodeOperandKind[] = [];
      for (let i = 0; i < oc.opCount; i++) kinds.push(oc.opKind(i));
      // Size of a bare `mem` operand: that of the register operand next to it.
      const regKind = kinds.find((k) => operandOf(k, 0)?.kind === 'reg');
      const memSize = regKind !== undefined ? regSize(regKind) : oc.operandSize;
      for (const k of kinds) {
        const spec = operandOf(k, memSize);
        if (!spec) { ok = false; break; }
        ops.push(spec);
      }
      if (!ok) continue;
      const first = ops.find((o) => o.kind !== 'imm');
      const size = first ? first.size : mnemonic === 'Lahf' || mnemonic === 'Sahf' ? 8 : oc.operandSize;
      const hasRm = ops.some((o) => o.kind === 'rm');
      const hasMem = ops.some((o) => o.kind === 'mem');
      const variants = hasMem ? [true] : hasRm ? [false, true] : [false];
      for (const memory of variants) {
        forms.push({ code: value as Code, codeName: name, mnemonic, family, size, memory, ops, id: `${name}/${memory ? 'mem' : 'reg'}` });
      }
    } finally {
      oc.free();
    }
  }
  return (allForms = forms);
}

export function formsOfFamily(family: string): Form[] {
  return enumerateForms().filter((f) => f.family === family);
}
