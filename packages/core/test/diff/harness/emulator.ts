/**
 * The emulated side: a minimal 64-bit user-mode environment set up directly in CpuState
 * (CS.L=1 at CPL 3, 4-level paging over a small guest RAM in HostMemory), the same code and
 * data addresses as the native runner, and guest-mode rules under which every exception
 * exits. Each case runs exactly one instruction (`runGuest(rules, 1)`); the instruction is
 * followed by UD2, which raises #UD if the processor ran past its budget (and, being a
 * control transfer, ends the processor's decoded block right after the instruction).
 *
 * The processor caches decoded code per guest-physical page, and the harness writes guest
 * RAM behind its back; so all instructions of a chunk are laid out first (one 32-byte slot
 * per case in a 64 KiB code region) and a fresh processor runs the chunk.
 */
import { HostMemory } from '../../../src/mmu/host-memory';
import { X86Cpu, GuestPhysMap } from '../../../src/cpu/x86-cpu';
import { GuestExitKind, GuestModeRules, passthroughRules } from '../../../src/cpu/guest-mode';
import { VcpuSreg } from '../../../src/ops/types';
import { CODE_ADDR, DATA_ADDR, DiffInput, DiffOutput, PAGE_SIZE } from './native';
import { hostCpuVendor } from './forms';

// Module-level aliases of globals: under jest, code runs in a vm context where each global
// lookup goes through interceptors and costs far more than a closure variable.
const big = BigInt;
const asUintN = BigInt.asUintN;
const asIntN = BigInt.asIntN;
const num = Number;
const U64Array = BigUint64Array;
const I32Array = Int32Array;
const U8Array = Uint8Array;
const M = Math;

export const SLOT_SIZE = 32;
const CODE_PAGES = 16;
export const SLOTS_PER_CHUNK = (CODE_PAGES * PAGE_SIZE) / SLOT_SIZE;

// Guest-physical layout.
const GPA_PML4 = 0x0000;
const GPA_PDPT = 0x1000;
const GPA_PD = 0x2000;
const GPA_PT_CODE = 0x3000;
const GPA_PT_DATA = 0x4000;
const GPA_CODE = 0x10000;
const GPA_DATA = GPA_CODE + CODE_PAGES * PAGE_SIZE;
const RAM_SIZE = GPA_DATA + PAGE_SIZE;

const PTE_P = 1, PTE_RW = 2, PTE_US = 4;

/** Rules of a guest that intercepts nothing but wants every exception as an exit. */
export function exceptionExitRules(): GuestModeRules {
  return {
    ...passthroughRules(),
    exceptionExits: () => true,
    ioExits: () => true,
    msrExits: () => true,
    shutdownExits: true,
  };
}

export class EmulatorEnv {
  readonly host = new HostMemory();
  readonly ram = new U8Array(RAM_SIZE);
  private readonly ramHpa: number;
  private readonly view: DataView;
  readonly phys: GuestPhysMap;
  readonly rules = exceptionExitRules();
  cpu: X86Cpu | null = null;
  private chunk: readonly DiffInput[] = [];

  constructor() {
    this.ramHpa = this.host.map(this.ram, 'diff-guest-ram');
    this.view = new DataView(this.ram.buffer);
    const base = this.ramHpa;
    this.phys = { gpaToHpa: (gpa: number) => (gpa >= 0 && gpa < RAM_SIZE ? base + gpa : -1) };
    const pte = (at: number, target: number) => this.view.setBigUint64(at, big(target | PTE_P | PTE_RW | PTE_US), true);
    pte(GPA_PML4 + 8 * 0, GPA_PDPT);
    pte(GPA_PDPT + 8 * 0, GPA_PD);
    pte(GPA_PD + 8 * ((CODE_ADDR >>> 21) & 511), GPA_PT_CODE);
    pte(GPA_PD + 8 * ((DATA_ADDR >>> 21) & 511), GPA_PT_DATA);
    for (let i = 0; i < CODE_PAGES; i++) pte(GPA_PT_CODE + 8 * (((CODE_ADDR >>> 12) + i) & 511), GPA_CODE + i * PAGE_SIZE);
    pte(GPA_PT_DATA + 8 * ((DATA_ADDR >>> 12) & 511), GPA_DATA);
  }

  /** Lay out a chunk of at most SLOTS_PER_CHUNK cases and start a fresh processor for it. */
  load(chunk: readonly DiffInput[]): void {
    if (chunk.length > SLOTS_PER_CHUNK) throw new Error(`chunk of ${chunk.length} cases exceeds ${SLOTS_PER_CHUNK}`);
    this.chunk = chunk;
    // Every slot: the instruction, then UD2 (0F 0B) repeated.
    const code = this.ram.subarray(GPA_CODE, GPA_CODE + CODE_PAGES * PAGE_SIZE);
    for (let i = 0; i < code.length; i += 2) { code[i] = 0x0f; code[i + 1] = 0x0b; }
    chunk.forEach((c, i) => {
      const at = GPA_CODE + i * SLOT_SIZE;
      this.ram.set(c.bytes, at);
      this.ram[at + c.bytes.length] = 0x0f;
      this.ram[at + c.bytes.length + 1] = 0x0b;
    });
    this.cpu = new X86Cpu(this.host, this.phys, { vendor: hostCpuVendor() });
    this.setupLongMode(this.cpu);
  }

  private setupLongMode(cpu: X86Cpu): void {
    const s = cpu.state;
    s.cr0 = 0x80050033n; // PG AM WP NE ET MP PE
    s.cr4 = 0x6a0n; // PAE PGE OSFXSR OSXMMEXCPT
    s.cr3 = big(GPA_PML4);
    s.efer = 0xd01n; // SCE LME LMA NXE
    s.cpl = 3;
    const flat = (selector: number, type: number, l: number, db: number, dpl = 3) => ({
      selector, base: 0n, limit: 0xffffffff, type, s: 1, dpl, present: 1, avl: 0, l, db, g: 1, unusable: 0,
    });
    s.setSegment(VcpuSreg.CS, flat(0x33, 0xb, 1, 0));
    for (const seg of [VcpuSreg.SS, VcpuSreg.DS, VcpuSreg.ES, VcpuSreg.FS, VcpuSreg.GS]) s.setSegment(seg, flat(0x2b, 0x3, 0, 1));
    s.setSegment(VcpuSreg.TR, { selector: 0x40, base: 0n, limit: 0x67, type: 0xb, s: 0, dpl: 0, present: 1, avl: 0, l: 0, db: 0, g: 0, unusable: 0 });
    s.setSegment(VcpuSreg.LDTR, { selector: 0, base: 0n, limit: 0, type: 0x2, s: 0, dpl: 0, present: 0, avl: 0, l: 0, db: 0, g: 0, unusable: 1 });
    s.gdtrBase = 0n;
    s.gdtrLimit = 0x7f;
    s.idtrBase = 0n;
    s.idtrLimit = 0xfff;
  }

  /** Run case `slot` of the loaded chunk for one instruction. */
  run(slot: number): DiffOutput & { rip: bigint } {
    const c = this.chunk[slot];
    const cpu = this.cpu!;
    const s = cpu.state;
    // Registers as 32-bit halves straight from the case's u64 array (no BigInt arithmetic).
    const halves = new I32Array(c.regs.buffer, c.regs.byteOffset, 32);
    for (let i = 0; i < 16; i++) {
      s.gprLo[i] = halves[2 * i];
      s.gprHi[i] = halves[2 * i + 1];
    }
    s.rflags = (c.rflags & 0xcd5) | 0x202; // arithmetic flags + DF from the case; IF=1 as in user mode
    s.rip = big(CODE_ADDR + slot * SLOT_SIZE);
    s.activity = 0;
    s.stiShadow = false;
    s.movSsShadow = false;
    cpu.injection.valid = false;
    if (c.mem.length) {
      this.ram.fill(0xcc, GPA_DATA, GPA_DATA + PAGE_SIZE);
      this.ram.set(c.mem, GPA_DATA + c.memOff);
    }

    let vector = -1;
    let note: string | undefined;
    try {
      const kind = cpu.runGuest(this.rules, 1);
      if (kind === GuestExitKind.EXCEPTION) vector = cpu.exit.vector;
      else if (kind !== GuestExitKind.BUDGET) {
        vector = -2;
        // runGuest turns a host error (a processor bug) into a SHUTDOWN exit and keeps it.
        const hostError = (cpu as unknown as { hostError?: Error | null }).hostError;
        note = `unexpected exit ${GuestExitKind[kind]}${hostError ? `: processor error: ${hostError.message}` : ''}`;
        if (hostError) (cpu as unknown as { hostError: Error | null }).hostError = null;
      }
    } catch (e) {
      vector = -3;
      note = `runGuest threw: ${(e as Error).message}`;
    }
    const regs = new U64Array(16);
    const out = new I32Array(regs.buffer);
    for (let i = 0; i < 16; i++) {
      out[2 * i] = s.gprLo[i];
      out[2 * i + 1] = s.gprHi[i];
    }
    const mem = this.ram.slice(GPA_DATA + c.memOff, GPA_DATA + c.memOff + c.mem.length);
    return { vector, regs, rflags: s.rflags, mem, note, rip: s.rip };
  }
}
