/**
 * PAE paging's PDPTE registers (SDM Vol. 3A 4.4.1): loaded by MOV to CR3 / CR0 / CR4 (and at
 * entry), checked for reserved bits there (#GP(0), register unchanged), and used by the walk
 * instead of the PDPT in memory.
 */
import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { loadPdptrs } from '../../src/cpu/pdptr';
import { hex, load, machine, Machine, protMode, reg, w32, w64 } from './harness';

/**
 * PDPT at 0x10000: PDPTE0 → PD 0x11000 (2 MiB page at 0: identity for the code), PDPTE1 →
 * PD 0x12000 (linear 0x40000000 → physical 0). PD 0x13000 maps linear 1 GiB → physical
 * 0x200000. Markers: phys 0x300 = 0x11111111, phys 0x200300 = 0x22222222.
 */
function paeTables(m: Machine): void {
  w64(m, 0x10000, 0x11001n);
  w64(m, 0x10008, 0x12001n);
  w64(m, 0x11000, 0x000083n);
  w64(m, 0x12000, 0x000083n);
  w64(m, 0x13000, 0x200083n);
  w32(m, 0x300, 0x11111111);
  w32(m, 0x200300, 0x22222222);
}

/** 32-bit protected mode with PAE paging on (CR3 = 0x10000). */
function paeMode(m: Machine): void {
  protMode(m, 0x1000);
  paeTables(m);
  const s = m.cpu.state;
  s.cr4 = 0x20n;
  s.cr3 = 0x10000n;
  s.cr0 = 0x80000011n | 0x60000000n;
}

describe('PAE PDPTE registers (SDM 4.4.1)', () => {
  it.each(['intel', 'amd'] as const)('%s: a write to the PDPT has no effect until CR3 is reloaded', (vendor) => {
    const m = machine(vendor);
    paeMode(m);
    // mov eax,[0x40000300]; mov dword [0x10008],0x13001 (PDPTE1 → PD 0x13000 in memory);
    // invlpg [0x40000300]; mov ebx,[0x40000300]; mov ecx,cr3; mov cr3,ecx; mov edx,[0x40000300]; hlt
    load(m, 0x1000, hex('a1 00 03 00 40 c7 05 08 00 01 00 01 30 01 00 0f 01 3d 00 03 00 40 8b 1d 00 03 00 40 0f 20 d9 0f 22 d9 8b 15 00 03 00 40 f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.hostError).toBeNull();
    expect(reg(m, 0)).toBe(0x11111111n);
    // The TLB entry was invalidated, but the walk starts from the PDPTE register: still PD 0x12000.
    expect(reg(m, 3)).toBe(0x11111111n);
    // MOV to CR3 reloaded the registers from memory.
    expect(reg(m, 2)).toBe(0x22222222n);
    expect(m.cpu.state.getPdptr(1)).toBe(0x13001n);
    expect(m.cpu.state.getPdptr(0)).toBe(0x11001n);
  });

  it.each([
    ['R/W (bit 1)', 0x11003n],
    ['bit 5', 0x11021n],
    ['bit 8', 0x11101n],
    ['bit 52 (above MAXPHYADDR)', 0x11001n | (1n << 52n)],
    ['bit 63 (no XD in a PDPTE)', 0x11001n | (1n << 63n)],
  ])('MOV to CR3 with a present PDPTE setting %s raises #GP(0) and leaves CR3 and the registers unchanged', (_name, bad) => {
    const m = machine();
    paeMode(m);
    // A second PDPT at 0x14000: PDPTE0 fine, PDPTE2 present with a reserved bit, PDPTE3 not present with junk.
    w64(m, 0x14000, 0x11001n);
    w64(m, 0x14010, bad);
    w64(m, 0x14018, 0xfffffffffffffffen);
    // mov eax,0x14000; mov cr3,eax; hlt
    load(m, 0x1000, hex('b8 00 40 01 00 0f 22 d8 f4'));
    m.rules.excExit.add(13);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(13);
    expect(m.cpu.exit.errorCode).toBe(0);
    expect(m.cpu.state.rip).toBe(0x1005n);
    expect(m.cpu.state.cr3).toBe(0x10000n);
    expect(m.cpu.state.getPdptr(1)).toBe(0x12001n);
    expect(m.cpu.state.getPdptr(2)).toBe(0n);
  });

  it('a not-present PDPTE may hold any value: MOV to CR3 loads it', () => {
    const m = machine();
    paeMode(m);
    w64(m, 0x14000, 0x11001n);
    w64(m, 0x14018, 0xfffffffffffffffen);
    load(m, 0x1000, hex('b8 00 40 01 00 0f 22 d8 f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.state.cr3).toBe(0x14000n);
    expect(m.cpu.state.getPdptr(3)).toBe(0xfffffffffffffffen);
  });

  it('enabling PAE paging with MOV to CR0 loads the registers (a later PDPT write is ignored)', () => {
    const m = machine();
    protMode(m, 0x1000);
    paeTables(m);
    m.cpu.state.cr4 = 0x20n;
    m.cpu.state.cr3 = 0x10000n;
    // mov eax,cr0; or eax,0x80000000; mov cr0,eax; mov dword [0x10008],0x13001; mov ebx,[0x40000300]; hlt
    load(m, 0x1000, hex('0f 20 c0 0d 00 00 00 80 0f 22 c0 c7 05 08 00 01 00 01 30 01 00 8b 1d 00 03 00 40 f4'));
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(m.cpu.state.cr0 & 0x80000000n).toBe(0x80000000n);
    expect(reg(m, 3)).toBe(0x11111111n);
    expect(m.cpu.state.getPdptr(1)).toBe(0x12001n);
  });

  it('MOV to CR0 setting PG with a reserved-bit PDPTE raises #GP(0) and leaves CR0 unchanged', () => {
    const m = machine();
    protMode(m, 0x1000);
    paeTables(m);
    w64(m, 0x10018, 0x11081n); // PDPTE3: present, PS (bit 7) is reserved in a PAE PDPTE
    m.cpu.state.cr4 = 0x20n;
    m.cpu.state.cr3 = 0x10000n;
    load(m, 0x1000, hex('0f 20 c0 0d 00 00 00 80 0f 22 c0 c7 05 08 00 01 00 01 30 01 00 8b 1d 00 03 00 40 f4'));
    m.rules.excExit.add(13);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(m.cpu.exit.vector).toBe(13);
    expect(m.cpu.state.rip).toBe(0x1008n);
    expect(m.cpu.state.cr0 & 0x80000000n).toBe(0n);
  });

  it('MOV to CR4 changing PGE under PAE paging reloads the registers', () => {
    const m = machine();
    paeMode(m);
    // mov eax,cr4; or eax,0x80; mov cr4,eax; mov ebx,[0x40000300]; hlt — with PDPTE1 rewritten before entry
    load(m, 0x1000, hex('0f 20 e0 0d 80 00 00 00 0f 22 e0 8b 1d 00 03 00 40 f4'));
    // The backend supplied registers that are stale against memory (PDPTE1 → PD 0x13000 there).
    m.rules.pdptrsLoaded = true;
    m.cpu.state.setPdptr(0, 0x11001n);
    m.cpu.state.setPdptr(1, 0x12001n);
    w64(m, 0x10008, 0x13001n);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 3)).toBe(0x22222222n);
    expect(m.cpu.state.getPdptr(1)).toBe(0x13001n);
  });

  it('the backend-supplied registers (pdptrsLoaded) are used as given, not reloaded from CR3 at entry', () => {
    const m = machine();
    paeMode(m);
    // mov ebx,[0x40000300]; hlt
    load(m, 0x1000, hex('8b 1d 00 03 00 40 f4'));
    m.cpu.state.setPdptr(0, 0x11001n);
    m.cpu.state.setPdptr(1, 0x13001n); // differs from the PDPT in memory (PDPTE1 → 0x12000)
    m.rules.pdptrsLoaded = true;
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(reg(m, 3)).toBe(0x22222222n);
    // Without the rule, entry loads them from CR3.
    const m2 = machine();
    paeMode(m2);
    load(m2, 0x1000, hex('8b 1d 00 03 00 40 f4'));
    m2.cpu.state.setPdptr(1, 0x13001n);
    expect(m2.cpu.runGuest(m2.rules, 100)).toBe(GuestExitKind.HALTED);
    expect(reg(m2, 3)).toBe(0x11111111n);
  });

  it.each([
    ['intel', 0x11111111n, 13],
    ['amd', 0x22222222n, 14],
  ] as const)('with two-dimensional paging, %s: PDPTEs cached (Intel EPT) or read from guest memory on each walk (AMD NPT)', (vendor, seen, faultVec) => {
    const m = machine(vendor);
    paeMode(m);
    m.rules.tdp = { translate: (gpa: number) => m.base + gpa, rootTag: 1 };
    // Same as the first test up to the stale read, then MOV CR3 to a PDPT with a reserved bit.
    // mov eax,[0x40000300]; mov dword [0x10008],0x13001; invlpg [0x40000300]; mov ebx,[0x40000300];
    // mov eax,0x14000; mov cr3,eax; mov ecx,[0x40000300]; hlt
    load(m, 0x1000, hex('a1 00 03 00 40 c7 05 08 00 01 00 01 30 01 00 0f 01 3d 00 03 00 40 8b 1d 00 03 00 40 b8 00 40 01 00 0f 22 d8 8b 0d 00 03 00 40 f4'));
    w64(m, 0x14000, 0x11001n);
    w64(m, 0x14008, 0x13003n); // present, R/W set: reserved in a PAE PDPTE
    m.rules.excExit.add(13).add(14);
    expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.EXCEPTION);
    expect(reg(m, 3)).toBe(seen);
    // Intel: #GP(0) at the MOV to CR3. AMD: the load succeeds; the walk faults with RSVD.
    expect(m.cpu.exit.vector).toBe(faultVec);
    if (vendor === 'amd') {
      expect(m.cpu.state.cr3).toBe(0x14000n);
      expect(m.cpu.exit.errorCode & 8).toBe(8);
    } else expect(m.cpu.state.cr3).toBe(0x10000n);
  });

  it('loadPdptrs (for task switches) loads valid tables and refuses reserved bits with #GP(0)', () => {
    const m = machine();
    paeMode(m);
    m.cpu.runGuest(m.rules, 0);
    w64(m, 0x14000, 0x13001n);
    expect(loadPdptrs(m.cpu, 0x14000n)).toBe(true);
    expect(m.cpu.state.getPdptr(0)).toBe(0x13001n);
    w64(m, 0x15008, 0x13007n);
    expect(loadPdptrs(m.cpu, 0x15000)).toBe(false);
    expect(m.cpu.pend).not.toBe(0);
    expect(m.cpu.excVec).toBe(13);
    expect(m.cpu.state.getPdptr(0)).toBe(0x13001n);
    m.cpu.pend = 0;
  });
});
