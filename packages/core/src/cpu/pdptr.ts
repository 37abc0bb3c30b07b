/**
 * The PAE PDPTE registers (Intel SDM Vol. 3A 4.4.1; AMD APM Vol. 2 5.3, "legacy-mode PAE").
 *
 * With PAE paging the processor does not read the page-directory-pointer table on each walk:
 * it keeps four internal PDPTE registers, loaded from the 32-byte table CR3 references when
 * CR3 is loaded while PAE paging is in use, when MOV to CR0/CR4 makes PAE paging active or
 * changes CR0.CD/NW/PG or CR4.PAE/PGE/PSE/SMEP while it is (SDM 4.4.1), on a task switch
 * (SDM 7.3 step 12: "the PDPTEs are loaded" with the new CR3), and at VM entry. A later write
 * to the PDPT in memory has no effect on translation until one of those reloads.
 *
 * Who calls what: sys.ts (MOV to CR0/CR3/CR4), task-switch.ts (CR3 from the new TSS), the run
 * loop at entry (`loadPdptrsAtEntry`). Backends read/write `CpuState.pdptrLo/Hi` for the VMCS
 * GUEST_PDPTR0-3 fields.
 */
import type { X86Cpu } from './x86-cpu';
import { ACCESS_PAGE_WALK, ACCESS_READ, GuestExitKind } from './guest-mode';
import { CR0_PG, CR4_PAE, MAXPHYADDR } from './consts';

/** Reserved bits of a present PAE PDPTE, low half: 2:1 and 8:5 (SDM Table 4-8). */
const RSVD_LO = 0x1e6;
/** Reserved bits of a present PAE PDPTE, high half: 63:MAXPHYADDR (SDM Table 4-8; no XD in a PDPTE). */
const RSVD_HI = (~((1 << (MAXPHYADDR - 32)) - 1)) | 0;

const scratchLo = new Int32Array(4);
const scratchHi = new Int32Array(4);

/** Would `cr0`/`cr4`/`efer` select PAE paging (CR0.PG = 1, CR4.PAE = 1, IA32_EFER.LME/LMA = 0)? */
export function isPaePaging(cr0: number, cr4: number, lmeOrLma: boolean): boolean {
  return (cr0 & CR0_PG) !== 0 && (cr4 & CR4_PAE) !== 0 && !lmeOrLma;
}

/** Is the processor using PAE paging now? */
export function paePagingActive(c: X86Cpu): boolean {
  return c.pg && c.pae && !c.lma;
}

/**
 * AMD with nested paging: a legacy-PAE guest's PDPEs are not held in registers; every walk
 * reads them from guest memory (there is no VMCB field for them, and KVM's svm_cache_reg
 * reloads them from memory under NPT for that reason). MOV to CR3/CR0/CR4 then loads nothing
 * and a reserved bit shows up as a reserved-bit #PF on the walk.
 */
export function pdptrsInMemory(c: X86Cpu): boolean {
  return c.options.vendor === 'amd' && c.rules.tdp !== null && !c.emu;
}

/** Does a present PDPTE (lo, hi) set a reserved bit? */
export function pdpteReserved(lo: number, hi: number): boolean {
  return (lo & 1) !== 0 && ((lo & RSVD_LO) !== 0 || (hi & RSVD_HI) !== 0);
}

/**
 * Read the four PDPTEs of the table at `cr3` (bits 31:5; SDM Table 4-7) into scratch; with
 * two-dimensional paging the addresses are guest-physical and go through the backend's walker
 * (an EPT violation or NPF may result). Returns false when the read exited (`pend` set).
 */
function readPdpt(c: X86Cpu, cr3: number): boolean {
  const base = (cr3 & 0xffffffe0) >>> 0;
  for (let i = 0; i < 4; i++) {
    if (c.physLoc(base + i * 8, ACCESS_READ | ACCESS_PAGE_WALK, 0, false) !== 0) return false;
    const b = c.pBuf, p = c.pOff;
    scratchLo[i] = b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24);
    scratchHi[i] = b[p + 4] | (b[p + 5] << 8) | (b[p + 6] << 16) | (b[p + 7] << 24);
  }
  return true;
}

/**
 * Load the PDPTE registers from the PDPT that `cr3` references, as MOV to CR0/CR3/CR4 and a
 * task switch do (SDM 4.4.1). If a present PDPTE sets a reserved bit the registers are left
 * unchanged and #GP(0) is raised (the caller must then not commit its CR / task-switch
 * change; SDM "MOV—Move to/from Control Registers": #GP(0) "if an attempt is made to write
 * to CR3 / set CR0.PG / change CR4 bits with PAE paging and any PDPTE has a reserved bit
 * set"). Returns false when it raised #GP or the read exited (`pend` set); true when loaded.
 *
 * For task-switch.ts: call `loadPdptrs(cpu, newCr3)` when PAE paging is in use after loading
 * CR3 from the new TSS (SDM 7.3 step 12); a false return is the #GP(0) / exit to deliver.
 */
export function loadPdptrs(c: X86Cpu, cr3: bigint | number): boolean {
  if (pdptrsInMemory(c)) return true;
  const v = typeof cr3 === 'bigint' ? Number(cr3 & 0xffffffffn) : cr3 >>> 0;
  if (!readPdpt(c, v)) return false;
  for (let i = 0; i < 4; i++) {
    if (pdpteReserved(scratchLo[i], scratchHi[i])) { c.gp(0); return false; }
  }
  c.state.pdptrLo.set(scratchLo);
  c.state.pdptrHi.set(scratchHi);
  return true;
}

/**
 * VM entry (runGuest) to a guest using PAE paging whose backend did not supply the registers
 * (`rules.pdptrsLoaded`): load them from CR3 as VMX entry without EPT does (SDM 26.3.2.4).
 * Entry has no #GP to raise (the backend's entry checks, SDM 26.3.1.6, own that): a reserved
 * bit is kept in the register and faults as a reserved-bit #PF when the walk uses it. If the
 * read itself cannot complete here (the PDPT is not backed, or TDP faults), the registers are
 * marked for a reload by the first walk (`pdptrReload`), where that exit is reported.
 */
export function loadPdptrsAtEntry(c: X86Cpu): void {
  c.pdptrReload = false;
  if (!paePagingActive(c) || pdptrsInMemory(c)) return;
  if (readPdpt(c, Number(c.state.cr3 & 0xffffffffn))) {
    c.state.pdptrLo.set(scratchLo);
    c.state.pdptrHi.set(scratchHi);
    return;
  }
  // Undo what the failed read left pending; the walk redoes it and reports it.
  c.pend = 0;
  c.exit.kind = GuestExitKind.NONE;
  c.pdptrReload = true;
}

/**
 * The walk's reload of registers marked at entry (see loadPdptrsAtEntry): returns false with
 * the read's exit pending.
 */
export function reloadPdptrsForWalk(c: X86Cpu): boolean {
  if (!readPdpt(c, Number(c.state.cr3 & 0xffffffffn))) return false;
  c.state.pdptrLo.set(scratchLo);
  c.state.pdptrHi.set(scratchHi);
  c.pdptrReload = false;
  return true;
}
