import type { KvmLapic } from '../irqchip/lapic';
import { X86Cpu } from '../cpu/x86-cpu';
import { DescPtr, KvmMsrEntry, KvmReg, KvmSegment, MsrData, NR_VCPU_REGS, VcpuSreg, emptySegment } from '../ops/types';
import type { Kvm } from './kvm';
import { KvmError } from './errors';

const CR0_PG_BIT = 1n << 31n;
const CR4_PAE_BIT = 1n << 5n;
const EFER_LMA_BIT = 1n << 10n;
import { KvmRun } from './run';
import { KvmCpuidEntry2 } from './cpuid';
import { kvmSetMsr } from './msr';

/** struct kvm_regs. */
export interface KvmRegs {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint; rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint; r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

/** struct kvm_sregs. */
export interface KvmSregs {
  cs: KvmSegment; ds: KvmSegment; es: KvmSegment; fs: KvmSegment; gs: KvmSegment; ss: KvmSegment;
  tr: KvmSegment; ldt: KvmSegment;
  gdt: DescPtr; idt: DescPtr;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint; efer: bigint; apicBase: bigint;
}

/** struct kvm_vcpu_events (the parts x86 userspace uses). */
export interface KvmVcpuEvents {
  exception: { injected: boolean; nr: number; hasErrorCode: boolean; errorCode: number };
  interrupt: { injected: boolean; nr: number; soft: boolean; shadow: number };
  nmi: { injected: boolean; pending: boolean; masked: boolean };
}

/** KVM_MP_STATE_*. */
export enum KvmMpState {
  RUNNABLE = 0, UNINITIALIZED = 1, INIT_RECEIVED = 2, HALTED = 3, SIPI_RECEIVED = 4,
}

/** KVM_REQ_* bits serviced at the top of vcpu_enter_guest. */
export enum KvmReq {
  TLB_FLUSH = 1 << 0, TLB_FLUSH_CURRENT = 1 << 1, EVENT = 1 << 2, TRIPLE_FAULT = 1 << 3,
  APIC_PAGE_RELOAD = 1 << 4, LOAD_MMU_PGD = 1 << 5, MMU_RELOAD = 1 << 6, CLOCK_UPDATE = 1 << 7,
  APICV_UPDATE = 1 << 8, NMI = 1 << 9, SMI = 1 << 10, UNHALT = 1 << 11,
}

/** The exception queued for injection (vcpu->arch.exception). */
export interface QueuedException {
  pending: boolean;
  injected: boolean;
  nr: number;
  hasErrorCode: boolean;
  errorCode: number;
  /** #PF: CR2 value to load when delivered (exception payload). */
  payload: bigint;
  hasPayload: boolean;
}

/**
 * struct kvm_vcpu_arch: the vendor-neutral per-vCPU state core keeps.
 * Who touches it: core's generic code; backends read/write it through the register cache
 * protocol (regsAvail / regsDirty, KVM's kvm_register_read/write) and the event fields.
 */
export class VcpuArch {
  /** GPRs and RIP (enum kvm_reg order). Valid when the bit is set in regsAvail. */
  readonly regs = new BigUint64Array(NR_VCPU_REGS);
  /** The same registers as 32-bit halves (little-endian: [2r] low, [2r+1] high): the exit path's BigInt-free view. */
  readonly regs32 = new Uint32Array(this.regs.buffer);
  regsAvail = 0;
  regsDirty = 0;
  rflags = 0x2n;
  cr0 = 0x60000010n;
  cr2 = 0n;
  cr3 = 0n;
  cr4 = 0n;
  cr8 = 0n;
  efer = 0n;
  /** CR0/CR4 bits the guest owns (reads need cacheReg when set). */
  cr0GuestOwnedBits = 0n;
  cr4GuestOwnedBits = 0n;
  apicBase = 0xfee00900n; // BSP, xAPIC enabled (SDM 10.4.4)
  tscOffset = 0n;
  l1TscOffset = 0n;
  miscEnable = 0x1n; // fast-string enable, as after reset on Intel
  pat = 0x0007040600070406n;
  mtrrDefType = 0n;
  ucodeRev = 0n;
  smbase = 0x30000n;
  dr6 = 0xffff0ff0n;
  dr7 = 0x400n;
  db = [0n, 0n, 0n, 0n];
  xcr0 = 1n;

  cpuidEntries: KvmCpuidEntry2[] = [];
  readonly exception: QueuedException = {
    pending: false, injected: false, nr: 0, hasErrorCode: false, errorCode: 0, payload: 0n, hasPayload: false,
  };
  /** vcpu->arch.interrupt: the IRQ being injected. */
  readonly interrupt = { injected: false, nr: 0, soft: false };
  nmiPending = 0;
  nmiInjected = false;
  /** KVM_INTERRUPT without an in-kernel irqchip: the vector userspace wants injected (-1: none). */
  pendingExternalVector = -1;
  mpState = KvmMpState.RUNNABLE;

  /** PIO being completed by userspace (vcpu->arch.pio). */
  readonly pio = { count: 0, size: 0, port: 0, in: false, linearRip: 0n };
  /** vcpu->arch.complete_userspace_io: run at the next KVM_RUN before entering the guest. */
  completeUserspaceIo: ((vcpu: KvmVcpu) => number) | null = null;
  /**
   * MMIO reads userspace has answered for the instruction being emulated (KVM's mmio read
   * cache): an instruction that reads several MMIO fragments (an IDT gate, a far pointer) is
   * re-executed once per fragment and must find every earlier answer here. Cleared when the
   * instruction completes.
   */
  readonly mmioReads: { gpa: bigint; len: number; data: Uint8Array }[] = [];
  /** The RIP the cached fragments belong to (a different instruction starts a fresh cache). */
  mmioReadsRip = -1n;

  /** The hypercall page's instruction has been patched (kvm_emulate_hypercall + patch_hypercall). */
  hypercallsPatched = 0;
  /** vcpu->arch.apic: the in-kernel local APIC (null without an in-kernel irqchip). */
  apic: KvmLapic | null = null;
}

/**
 * struct kvm_vcpu, with its KVM_* vCPU ioctls as methods.
 */
export class KvmVcpu {
  readonly run = new KvmRun();
  readonly arch = new VcpuArch();
  /** The (emulated) physical processor this vCPU runs on. */
  readonly cpu: X86Cpu;
  /** Vendor per-vCPU state (struct vcpu_vmx / vcpu_svm), set by the backend's vcpuCreate. */
  vendor: unknown = null;
  /** KVM_REQ_* bits. */
  requests = 0;
  /**
   * Exits taken, by the backend's own exit-reason name (for stats and the CLI's table): a
   * snapshot built from the numeric counters countExit keeps (no Map update per exit).
   */
  get exitCounts(): Map<string, number> {
    const m = new Map<string, number>();
    for (let i = 0; i < this.exitNames.length; i++) m.set(this.exitNames[i], this.exitNameCounts[i]);
    return m;
  }
  /** Exit-reason names in the order first seen, and their counts (same index). */
  private readonly exitNames: string[] = [];
  private exitNameCounts = new Float64Array(16);
  private readonly exitNameIndex = new Map<string, number>();
  private lastExitIndex = -1;
  /** Instructions each KVM_RUN may retire before returning KVM_EXIT_INTR (a time slice). */
  runBudget = 50_000_000;
  /**
   * internal (core's run loop): the retired-instruction count when this KVM_RUN began, and the
   * exits it has handled in the kernel so far — the slice checks both, on the slow path and
   * on the exit fastpath alike.
   */
  runStartRetired = 0;
  runExits = 0;
  /** Set by the backend/core when the guest must not be entered again (e.g. after an internal error). */
  dead = false;

  constructor(readonly kvm: Kvm, readonly vcpuId: number, cpu: X86Cpu) {
    this.cpu = cpu;
  }

  makeRequest(req: KvmReq): void {
    this.requests |= req;
  }
  checkRequest(req: KvmReq): boolean {
    if (this.requests & req) {
      this.requests &= ~req;
      return true;
    }
    return false;
  }

  /** The backend's name for the last exit it took, and how many it took in all (for stats). */
  lastExit = '';
  exitTotal = 0;

  /**
   * The backend records an exit (its vmx/svm handleExit, before dispatching it). Counted by
   * index: the same name as the last exit (the common case) is one string comparison.
   */
  countExit(name: string): void {
    let i = this.lastExitIndex;
    if (name !== this.lastExit || i < 0) {
      const known = this.exitNameIndex.get(name);
      if (known === undefined) {
        i = this.exitNames.length;
        this.exitNames.push(name);
        this.exitNameIndex.set(name, i);
        if (i >= this.exitNameCounts.length) {
          const grown = new Float64Array(this.exitNameCounts.length * 2);
          grown.set(this.exitNameCounts);
          this.exitNameCounts = grown;
        }
      } else i = known;
      this.lastExitIndex = i;
      this.lastExit = name;
    }
    this.exitNameCounts[i]++;
    this.exitTotal++;
    this.kvm.noteExit(this, name);
  }

  // ---- register cache: kvm_register_read / kvm_register_write (arch/x86/kvm/kvm_cache_regs.h)

  registerRead(reg: KvmReg): bigint {
    if (!(this.arch.regsAvail & (1 << reg))) this.kvm.ops.cacheReg(this, reg);
    return this.arch.regs[reg];
  }
  registerWrite(reg: KvmReg, v: bigint): void {
    this.arch.regs[reg] = BigInt.asUintN(64, v);
    this.arch.regsAvail |= 1 << reg;
    this.arch.regsDirty |= 1 << reg;
  }
  /** The low 32 bits of a register (kvm_register_read truncated, without a BigInt). */
  registerReadLow(reg: KvmReg): number {
    if (!(this.arch.regsAvail & (1 << reg))) this.kvm.ops.cacheReg(this, reg);
    return this.arch.regs32[2 * reg];
  }
  /** The high 32 bits of a register. */
  registerReadHigh(reg: KvmReg): number {
    if (!(this.arch.regsAvail & (1 << reg))) this.kvm.ops.cacheReg(this, reg);
    return this.arch.regs32[2 * reg + 1];
  }
  /** kvm_register_write from 32-bit halves (no BigInt on the exit path). */
  registerWriteHalves(reg: KvmReg, lo: number, hi: number): void {
    const a = this.arch;
    a.regs32[2 * reg] = lo;
    a.regs32[2 * reg + 1] = hi;
    a.regsAvail |= 1 << reg;
    a.regsDirty |= 1 << reg;
  }
  get rip(): bigint {
    return this.registerRead(KvmReg.RIP);
  }
  set rip(v: bigint) {
    this.registerWrite(KvmReg.RIP, v);
  }

  // ---- KVM_GET_REGS / KVM_SET_REGS

  getRegs(): KvmRegs {
    const r = (x: KvmReg) => this.registerRead(x);
    return {
      rax: r(KvmReg.RAX), rbx: r(KvmReg.RBX), rcx: r(KvmReg.RCX), rdx: r(KvmReg.RDX),
      rsi: r(KvmReg.RSI), rdi: r(KvmReg.RDI), rsp: r(KvmReg.RSP), rbp: r(KvmReg.RBP),
      r8: r(KvmReg.R8), r9: r(KvmReg.R9), r10: r(KvmReg.R10), r11: r(KvmReg.R11),
      r12: r(KvmReg.R12), r13: r(KvmReg.R13), r14: r(KvmReg.R14), r15: r(KvmReg.R15),
      rip: r(KvmReg.RIP), rflags: this.kvm.ops.getRflags(this),
    };
  }

  setRegs(regs: KvmRegs): void {
    const names: [keyof KvmRegs, KvmReg][] = [
      ['rax', KvmReg.RAX], ['rbx', KvmReg.RBX], ['rcx', KvmReg.RCX], ['rdx', KvmReg.RDX],
      ['rsi', KvmReg.RSI], ['rdi', KvmReg.RDI], ['rsp', KvmReg.RSP], ['rbp', KvmReg.RBP],
      ['r8', KvmReg.R8], ['r9', KvmReg.R9], ['r10', KvmReg.R10], ['r11', KvmReg.R11],
      ['r12', KvmReg.R12], ['r13', KvmReg.R13], ['r14', KvmReg.R14], ['r15', KvmReg.R15], ['rip', KvmReg.RIP],
    ];
    for (const [k] of names) {
      const v = regs[k];
      if (typeof v !== 'bigint' || v < 0n || v >= 1n << 64n) {
        throw new KvmError('EINVAL', `KVM_SET_REGS: ${k} must be a bigint in [0, 2^64), got ${String(v)}`);
      }
    }
    if (typeof regs.rflags !== 'bigint' || regs.rflags < 0n || regs.rflags >= 1n << 64n) {
      throw new KvmError('EINVAL', `KVM_SET_REGS: rflags must be a bigint in [0, 2^64)`);
    }
    for (const [k, reg] of names) this.registerWrite(reg, regs[k]);
    // RFLAGS bit 1 is always set; reserved bits are forced as KVM does.
    this.kvm.ops.setRflags(this, (regs.rflags | 2n) & 0x3f7fd7n);
    this.makeRequest(KvmReq.EVENT);
  }

  // ---- KVM_GET_SREGS / KVM_SET_SREGS

  getSregs(): KvmSregs {
    const ops = this.kvm.ops;
    const seg = (s: VcpuSreg) => {
      const out = emptySegment();
      ops.getSegment(this, out, s);
      return out;
    };
    const gdt: DescPtr = { size: 0, address: 0n };
    const idt: DescPtr = { size: 0, address: 0n };
    ops.getGdt(this, gdt);
    ops.getIdt(this, idt);
    return {
      cs: seg(VcpuSreg.CS), ds: seg(VcpuSreg.DS), es: seg(VcpuSreg.ES), fs: seg(VcpuSreg.FS),
      gs: seg(VcpuSreg.GS), ss: seg(VcpuSreg.SS), tr: seg(VcpuSreg.TR), ldt: seg(VcpuSreg.LDTR),
      gdt, idt,
      cr0: this.readCr0(), cr2: this.arch.cr2, cr3: this.readCr3(), cr4: this.readCr4(), cr8: this.arch.cr8,
      efer: this.arch.efer, apicBase: this.arch.apicBase,
    };
  }

  setSregs(s: KvmSregs): void {
    validateSregs(s);
    const ops = this.kvm.ops;
    ops.setIdt(this, s.idt);
    ops.setGdt(this, s.gdt);
    this.arch.cr2 = s.cr2;
    this.arch.cr3 = s.cr3;
    this.arch.regsAvail |= 1 << KvmReg.CR3;
    this.arch.cr8 = s.cr8;
    this.arch.apicBase = s.apicBase;
    ops.setEfer(this, s.efer);
    ops.setCr0(this, s.cr0);
    this.arch.cr0 = s.cr0;
    if (ops.setCr4(this, s.cr4) !== 0) throw new KvmError('EINVAL', `KVM_SET_SREGS: CR4 0x${s.cr4.toString(16)} rejected by the backend`);
    this.arch.cr4 = s.cr4;
    // __set_sregs → load_pdptrs: with PAE paging the PDPTE registers come from the table CR3
    // names (SDM 4.4.1), read through the memslots; the vendor takes them at load_mmu_pgd
    // (VMX under EPT: GUEST_PDPTR0-3).
    if ((s.cr0 & CR0_PG_BIT) !== 0n && (s.cr4 & CR4_PAE_BIT) !== 0n && (s.efer & EFER_LMA_BIT) === 0n) this.loadPdptrsFromMemory(s.cr3);
    // load_mmu_pgd takes the TDP root; the vendor writes guest CR3 from arch.cr3 alongside it.
    ops.loadMmuPgd(this, BigInt(this.kvm.mmu?.root ?? 0));
    ops.setSegment(this, s.cs, VcpuSreg.CS);
    ops.setSegment(this, s.ds, VcpuSreg.DS);
    ops.setSegment(this, s.es, VcpuSreg.ES);
    ops.setSegment(this, s.fs, VcpuSreg.FS);
    ops.setSegment(this, s.gs, VcpuSreg.GS);
    ops.setSegment(this, s.ss, VcpuSreg.SS);
    ops.setSegment(this, s.tr, VcpuSreg.TR);
    ops.setSegment(this, s.ldt, VcpuSreg.LDTR);
    this.makeRequest(KvmReq.EVENT | KvmReq.TLB_FLUSH);
  }

  /** load_pdptrs for KVM_SET_SREGS: the four PDPTEs at `cr3` (bits 31:5) into the PDPTE registers. */
  private loadPdptrsFromMemory(cr3: bigint): void {
    const base = Number(cr3 & 0xffffffe0n);
    const st = this.cpu.state, host = this.kvm.hostMemory, slots = this.kvm.memslots;
    for (let i = 0; i < 4; i++) {
      const hpa = slots.gpaToHpa(base + i * 8);
      // A PDPT outside guest RAM reads as all-ones, as the walk would see it.
      st.setPdptr(i, hpa < 0 ? 0xffff_ffff_ffff_ffffn : host.read64(hpa));
    }
    this.arch.regsAvail |= 1 << KvmReg.PDPTR;
    this.arch.regsDirty |= 1 << KvmReg.PDPTR;
  }

  readCr0(): bigint {
    if (this.arch.cr0GuestOwnedBits && !(this.arch.regsAvail & (1 << KvmReg.CR0))) this.kvm.ops.cacheReg(this, KvmReg.CR0);
    return this.arch.cr0;
  }
  readCr3(): bigint {
    if (!(this.arch.regsAvail & (1 << KvmReg.CR3))) this.kvm.ops.cacheReg(this, KvmReg.CR3);
    return this.arch.cr3;
  }
  readCr4(): bigint {
    if (this.arch.cr4GuestOwnedBits && !(this.arch.regsAvail & (1 << KvmReg.CR4))) this.kvm.ops.cacheReg(this, KvmReg.CR4);
    return this.arch.cr4;
  }

  // ---- KVM_GET_MSRS / KVM_SET_MSRS: host-initiated; returns the number processed, like the ioctl.

  getMsrs(entries: KvmMsrEntry[]): number {
    let n = 0;
    for (const e of entries) {
      const m: MsrData = { hostInitiated: true, index: e.index >>> 0, data: 0n };
      if (this.kvm.ops.getMsr(this, m) !== 0) break;
      e.data = m.data;
      n++;
    }
    return n;
  }

  setMsrs(entries: readonly KvmMsrEntry[]): number {
    let n = 0;
    for (const e of entries) {
      if (typeof e.data !== 'bigint' || e.data < 0n || e.data >= 1n << 64n) {
        throw new KvmError('EINVAL', `KVM_SET_MSRS: MSR 0x${(e.index >>> 0).toString(16)} data must be a bigint in [0, 2^64)`);
      }
      const m: MsrData = { hostInitiated: true, index: e.index >>> 0, data: e.data };
      const { r, why } = kvmSetMsr(this, m);
      if (why) throw new KvmError('EINVAL', `KVM_SET_MSRS: MSR 0x${m.index.toString(16)} ${why}`);
      if (r !== 0) break;
      n++;
    }
    return n;
  }

  /** One MSR read as userspace sees it (KVM_GET_MSRS with one entry); throws when the backend refuses it. */
  getMsr(index: number): bigint {
    const e = { index, data: 0n };
    if (this.getMsrs([e]) !== 1) throw new KvmError('EINVAL', `KVM_GET_MSRS: MSR 0x${(index >>> 0).toString(16)} is not readable`);
    return e.data;
  }
  setMsr(index: number, data: bigint): void {
    if (this.setMsrs([{ index, data }]) !== 1) {
      throw new KvmError('EINVAL', `KVM_SET_MSRS: MSR 0x${(index >>> 0).toString(16)} rejected value 0x${data.toString(16)}`);
    }
  }

  // ---- KVM_SET_CPUID2 / KVM_GET_CPUID2

  setCpuid2(entries: readonly KvmCpuidEntry2[]): void {
    this.kvm.setVcpuCpuid(this, entries);
  }
  getCpuid2(): KvmCpuidEntry2[] {
    return this.arch.cpuidEntries.map((e) => ({ ...e }));
  }

  // ---- KVM_INTERRUPT / KVM_NMI (userspace irqchip)

  interrupt(irq: number): void {
    if (!Number.isInteger(irq) || irq < 0 || irq > 255) throw new KvmError('EINVAL', `KVM_INTERRUPT: vector ${irq} is not 0..255`);
    if (this.kvm.irqchipInKernel) throw new KvmError('ENXIO', 'KVM_INTERRUPT: the VM has an in-kernel irqchip');
    this.arch.pendingExternalVector = irq;
    this.makeRequest(KvmReq.EVENT);
  }
  nmi(): void {
    this.arch.nmiPending++;
    this.makeRequest(KvmReq.NMI | KvmReq.EVENT);
  }

  // ---- KVM_GET_MP_STATE / KVM_SET_MP_STATE
  getMpState(): KvmMpState {
    return this.arch.mpState;
  }
  setMpState(s: KvmMpState): void {
    if (!(s in KvmMpState)) throw new KvmError('EINVAL', `KVM_SET_MP_STATE: unknown state ${s}`);
    this.arch.mpState = s;
    this.makeRequest(KvmReq.EVENT);
  }

  // ---- KVM_RUN
  /** Run until an exit userspace must handle; returns the kvm_run record. */
  runVcpu(): KvmRun {
    return this.kvm.vcpuRun(this);
  }
}

function checkSeg(name: string, s: KvmSegment): void {
  if (!s || typeof s.base !== 'bigint') throw new KvmError('EINVAL', `KVM_SET_SREGS: ${name}.base must be a bigint`);
  if (s.selector < 0 || s.selector > 0xffff) throw new KvmError('EINVAL', `KVM_SET_SREGS: ${name}.selector 0x${s.selector.toString(16)} is not 16-bit`);
  if (s.base < 0n || s.base >= 1n << 64n) throw new KvmError('EINVAL', `KVM_SET_SREGS: ${name}.base is not a 64-bit value`);
}

/** kvm_is_valid_sregs plus shape checks: a malformed sregs is EINVAL naming the field. */
function validateSregs(s: KvmSregs): void {
  for (const k of ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const) checkSeg(k, s[k]);
  for (const k of ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const) {
    if (typeof s[k] !== 'bigint' || s[k] < 0n || s[k] >= 1n << 64n) throw new KvmError('EINVAL', `KVM_SET_SREGS: ${k} must be a 64-bit bigint`);
  }
  if (s.cr0 >> 32n) throw new KvmError('EINVAL', `KVM_SET_SREGS: CR0 0x${s.cr0.toString(16)} sets reserved bits 63:32`);
  const LME = 1n << 8n;
  const LMA = 1n << 10n;
  const PG = 1n << 31n;
  const PAE = 1n << 5n;
  const PE = 1n;
  if ((s.cr0 & PG) && !(s.cr0 & PE)) throw new KvmError('EINVAL', 'KVM_SET_SREGS: CR0.PG set without CR0.PE');
  if ((s.efer & LME) && (s.cr0 & PG)) {
    // Long mode active: CR4.PAE and EFER.LMA must agree (kvm_is_valid_sregs).
    if (!(s.cr4 & PAE) || !(s.efer & LMA)) throw new KvmError('EINVAL', 'KVM_SET_SREGS: EFER.LME with CR0.PG requires CR4.PAE and EFER.LMA');
  } else if (s.efer & LMA) {
    throw new KvmError('EINVAL', 'KVM_SET_SREGS: EFER.LMA set without EFER.LME and CR0.PG');
  }
  if (s.gdt.size < 0 || s.gdt.size > 0xffff || s.idt.size < 0 || s.idt.size > 0xffff) {
    throw new KvmError('EINVAL', 'KVM_SET_SREGS: gdt/idt limit must be 16-bit');
  }
}
