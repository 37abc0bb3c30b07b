/**
 * APIC virtualization in VMX non-root operation (SDM Vol. 3C ch. 29): what the processor does
 * with the virtual-APIC page when the guest touches its APIC — accesses to the APIC-access page
 * (29.4: virtualized reads, write virtualization and APIC-write emulation, or APIC-access VM
 * exits), MOV CR8 with "use TPR shadow" (29.3), and the virtualizations they trigger: TPR (29.1.2),
 * PPR (29.1.3), EOI (29.1.4) and self-IPI (29.1.5). The processor hands each access over through
 * the `ApicPageHandler` / `Cr8Virtualization` seam (core cpu/guest-mode.ts); these classes are
 * that seam's VMX side, configured from the VMCS at every VM entry (guest-rules.ts).
 */
import {
  ACCESS_FETCH, ACCESS_READ, ACCESS_WRITE, APIC_ACCESS_DONE, APIC_ACCESS_DONE_TRAP, APIC_ACCESS_EXIT, ApicPageHandler,
  Cr8Virtualization, GuestExit, GuestExitKind, HostMemory,
} from '@tsvisor/core';
import { F } from './vmcs/fields';
import { Vmcs } from './vmcs/vmcs';
import * as D from './vmx-defs';

/** Virtual-APIC page offsets (SDM 29.1). */
const VTPR = 0x80;
const VPPR = 0xa0;
const VEOI = 0xb0;
const VISR = 0x100;
const VIRR = 0x200;
const VICR_LO = 0x300;

/**
 * Registers whose low 4 bytes a read virtualizes with "APIC-register virtualization" (SDM
 * 29.4.2): ID, version, TPR, EOI, LDR, DFR, SVR, ISR, TMR, IRR, ESR, ICR low/high, the LVT
 * (CMCI 2F0H through error 370H), initial count and divide configuration — not PPR (0A0H),
 * APR, RRD or the current count (390H). Indexed by offset >> 4.
 */
const READ_VIRTUALIZED = (() => {
  const t = new Uint8Array(64);
  for (const o of [0x020, 0x030, 0x080, 0x0b0, 0x0d0, 0x0e0, 0x0f0, 0x280, 0x300, 0x310, 0x380, 0x3e0]) t[o >> 4] = 1;
  for (let o = 0x100; o <= 0x270; o += 0x10) t[o >> 4] = 1; // ISR, TMR, IRR
  for (let o = 0x2f0; o <= 0x370; o += 0x10) t[o >> 4] = 1; // LVT
  return t;
})();
/** Registers a write virtualizes with "APIC-register virtualization" (SDM 29.4.3.1). */
const WRITE_VIRTUALIZED = (() => {
  const t = new Uint8Array(64);
  for (const o of [0x020, 0x080, 0x0b0, 0x0d0, 0x0e0, 0x0f0, 0x280, 0x300, 0x310, 0x380, 0x3e0]) t[o >> 4] = 1;
  for (let o = 0x2f0; o <= 0x370; o += 0x10) t[o >> 4] = 1; // LVT
  return t;
})();

/**
 * The virtual-APIC page and the VMCS state the virtualizations read (SDM 29.1). Shared by the
 * APIC-access page handler and CR8 virtualization of one vCPU.
 */
export class VmxVirtualApic {
  /** Cached at VM entry from the controls. */
  proc = 0;
  proc2 = 0;
  vapic = -1;
  /** Who to tell that a virtual interrupt became pending: its delivery happens at the next VM entry (see recognize). */
  cpu: { kick: boolean } | null = null;

  constructor(readonly vmcs: Vmcs, readonly host: HostMemory) {}

  read32(off: number): number {
    return this.host.read32(this.vapic + off) >>> 0;
  }
  write32(off: number, v: number): void {
    this.host.write32(this.vapic + off, v >>> 0);
  }

  get vid(): boolean {
    return (this.proc2 & D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY) !== 0;
  }

  /** SDM 29.1.3 PPR virtualization: VPPR = VTPR if VTPR[7:4] >= SVI[7:4], else SVI & F0H (bytes 3:1 cleared). */
  pprVirtualization(): void {
    const vtpr = this.read32(VTPR) & 0xff;
    const svi = this.vmcs.read16(F.GUEST_INTR_STATUS) >> 8;
    this.write32(VPPR, (vtpr >> 4) >= (svi >> 4) ? vtpr : svi & 0xf0);
  }

  /**
   * SDM 29.2.1 evaluation of pending virtual interrupts: with "interrupt-window exiting" 0, a
   * virtual interrupt is recognized when RVI[7:4] > VPPR[7:4]. The processor delivers it at an
   * instruction boundary with RFLAGS.IF = 1 and no blocking (29.2.2); here the emulated
   * processor takes a host interrupt at the next boundary and VM entry delivers it
   * (vmxVirtualInterruptAtEntry), which the guest cannot tell apart.
   */
  evaluatePending(): void {
    if (this.proc & D.CPU_BASED_INTR_WINDOW_EXITING) return;
    const rvi = this.vmcs.read16(F.GUEST_INTR_STATUS) & 0xff;
    if ((rvi >> 4) > ((this.read32(VPPR) & 0xff) >> 4) && this.cpu) this.cpu.kick = true;
  }

  /**
   * SDM 29.1.2 TPR virtualization, after MOV to CR8 or a write to VTPR: without virtual-interrupt
   * delivery, a TPR-below-threshold VM exit (trap-like) when VTPR[7:4] < TPR threshold[3:0];
   * with it, PPR virtualization and evaluation of pending virtual interrupts.
   */
  tprVirtualization(exit: GuestExit): number {
    if (!this.vid) {
      if ((this.read32(VTPR) & 0xff) >> 4 < (this.vmcs.read32(F.TPR_THRESHOLD) & 0xf)) {
        exit.kind = GuestExitKind.TPR_BELOW_THRESHOLD;
        return APIC_ACCESS_DONE_TRAP;
      }
      return APIC_ACCESS_DONE;
    }
    this.pprVirtualization();
    this.evaluatePending();
    return APIC_ACCESS_DONE;
  }

  /**
   * SDM 29.1.4 EOI virtualization: VISR[SVI] = 0, SVI = the highest VISR bit (or 0), PPR
   * virtualization; then an EOI-induced VM exit (trap-like, qualification = the vector) when
   * the vector's EOI-exit bitmap bit is set, else evaluation of pending virtual interrupts.
   */
  eoiVirtualization(exit: GuestExit): number {
    const st = this.vmcs.read16(F.GUEST_INTR_STATUS);
    const vector = st >> 8;
    const w = VISR + 16 * (vector >> 5);
    this.write32(w, this.read32(w) & ~(1 << (vector & 31)));
    let svi = 0;
    for (let i = 7; i >= 0 && !svi; i--) {
      const isr = this.read32(VISR + 16 * i);
      if (isr) svi = i * 32 + 31 - Math.clz32(isr);
    }
    this.vmcs.write16(F.GUEST_INTR_STATUS, (st & 0xff) | (svi << 8));
    this.pprVirtualization();
    const bitmap = [F.EOI_EXIT_BITMAP0, F.EOI_EXIT_BITMAP1, F.EOI_EXIT_BITMAP2, F.EOI_EXIT_BITMAP3][vector >> 6];
    if ((this.vmcs.read64(bitmap) >> BigInt(vector & 63)) & 1n) {
      exit.kind = GuestExitKind.VIRTUALIZED_EOI;
      exit.vector = vector;
      return APIC_ACCESS_DONE_TRAP;
    }
    this.evaluatePending();
    return APIC_ACCESS_DONE;
  }

  /** SDM 29.1.5 self-IPI virtualization: VIRR[vector] = 1, RVI = max(RVI, vector), evaluate. */
  selfIpiVirtualization(vector: number): void {
    const w = VIRR + 16 * (vector >> 5);
    this.write32(w, this.read32(w) | (1 << (vector & 31)));
    const st = this.vmcs.read16(F.GUEST_INTR_STATUS);
    if (vector > (st & 0xff)) this.vmcs.write16(F.GUEST_INTR_STATUS, (st & 0xff00) | vector);
    this.evaluatePending();
  }
}

/** The VMX APIC-access page (SDM 29.4): matched after EPT on the APIC-access address. */
export class VmxApicAccessPage implements ApicPageHandler {
  gpaPage = -1;
  hpaPage = -1;
  readonly result = new Uint32Array(2);

  constructor(readonly v: VmxVirtualApic) {}

  private apicAccessExit(offset: number, kind: number, exit: GuestExit): number {
    // SDM 28.2.1 Table 28-6: the page offset and the access type (exit-info.ts encodes them).
    exit.kind = GuestExitKind.APIC_ACCESS;
    exit.gpa = BigInt(offset);
    exit.access = kind === 0 ? ACCESS_READ : kind === 1 ? ACCESS_WRITE : ACCESS_FETCH;
    return APIC_ACCESS_EXIT;
  }

  access(offset: number, size: number, kind: number, valueLo: number, valueHi: number, exit: GuestExit): number {
    const v = this.v;
    // SDM 29.4.2 / 29.4.3.1: fetches, no TPR shadow, accesses wider than 32 bits or not within
    // the low 4 bytes of a 16-byte-aligned register cause APIC-access VM exits.
    if (kind === 2 || !(v.proc & D.CPU_BASED_TPR_SHADOW) || size > 4 || (offset & 0xf) + size > 4) {
      return this.apicAccessExit(offset, kind, exit);
    }
    const reg = offset & 0xff0;
    const arv = (v.proc2 & D.SECONDARY_EXEC_APIC_REGISTER_VIRT) !== 0;
    if (kind === 0) {
      if (!(arv ? READ_VIRTUALIZED[reg >> 4] : reg === VTPR)) return this.apicAccessExit(offset, kind, exit);
      // A virtualized read returns the virtual-APIC page's bytes at the same offset.
      const word = v.read32(reg) >>> ((offset & 3) * 8);
      this.result[0] = size === 4 ? word : word & (size === 1 ? 0xff : 0xffff);
      this.result[1] = 0;
      return APIC_ACCESS_DONE;
    }
    void valueHi;
    let virtualized: boolean;
    if (arv) virtualized = WRITE_VIRTUALIZED[reg >> 4] === 1;
    else virtualized = reg === VTPR || (v.vid && (reg === VEOI || reg === VICR_LO));
    if (!virtualized) return this.apicAccessExit(offset, kind, exit);
    // Write virtualization (29.4.3.2): the data goes to the virtual-APIC page at the same offset.
    const sh = (offset & 3) * 8;
    const mask = (size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff) << sh;
    v.write32(reg, (v.read32(reg) & ~mask) | ((valueLo << sh) & mask));
    // APIC-write emulation (29.4.3.2).
    if (reg === VTPR) {
      v.write32(VTPR, v.read32(VTPR) & 0xff); // bytes 3:1 of VTPR are cleared
      return v.tprVirtualization(exit);
    }
    if (reg === VEOI && v.vid) return v.eoiVirtualization(exit);
    if (reg === VICR_LO && v.vid) {
      // Self-IPI: reserved bits 31:20, 17:16, 13 and delivery status 12 clear, shorthand self
      // (19:18 = 01), edge (15 = 0), fixed (10:8 = 000), vector[7:4] != 0.
      const icr = v.read32(VICR_LO);
      if ((icr & 0xfff33000) === 0 && ((icr >>> 18) & 3) === 1 && !(icr & 0x8000) && !(icr & 0x700) && (icr & 0xf0)) {
        v.selfIpiVirtualization(icr & 0xff);
        return APIC_ACCESS_DONE;
      }
    }
    // Anything else: an APIC-write VM exit (trap-like, 29.4.3.3), qualification = the write's page offset.
    exit.kind = GuestExitKind.APIC_WRITE;
    exit.gpa = BigInt(offset);
    return APIC_ACCESS_DONE_TRAP;
  }
}

/** MOV CR8 with "use TPR shadow" (SDM 29.3): reads VTPR[7:4]; writes VTPR = src[3:0] << 4, then TPR virtualization. */
export class VmxCr8Shadow implements Cr8Virtualization {
  constructor(readonly v: VmxVirtualApic) {}
  read(): number {
    return (this.v.read32(VTPR) >> 4) & 0xf;
  }
  write(value: number, exit: GuestExit): number {
    this.v.write32(VTPR, (value & 0xf) << 4);
    return this.v.tprVirtualization(exit);
  }
}

/**
 * One vCPU's APIC virtualization as the guest-mode rules carry it. At each VM entry `arm` sets
 * the rules' seam objects from the controls: "virtualize APIC accesses" arms the APIC-access
 * page at APIC_ACCESS_ADDR; "use TPR shadow" virtualizes CR8 (CR8-load/store exiting, which the
 * processor asks first, still take MOV CR8 before it).
 */
export class VmxApicv {
  private vapic: VmxVirtualApic | null = null;
  private page: VmxApicAccessPage | null = null;
  private cr8Shadow: VmxCr8Shadow | null = null;
  /** The vCPU's processor, told when a virtual interrupt becomes pending (VmxVirtualApic.evaluatePending). */
  cpu: { kick: boolean } | null = null;

  arm(rules: { apicPage: ApicPageHandler | null; cr8: Cr8Virtualization | null }, vmcs: Vmcs, host: HostMemory, proc: number, proc2: number): void {
    let va = this.vapic;
    if (va === null || va.vmcs !== vmcs || va.host !== host) {
      va = this.vapic = new VmxVirtualApic(vmcs, host);
      this.page = new VmxApicAccessPage(va);
      this.cr8Shadow = new VmxCr8Shadow(va);
    }
    va.cpu = this.cpu;
    va.proc = proc;
    va.proc2 = proc2;
    const tprShadow = (proc & D.CPU_BASED_TPR_SHADOW) !== 0;
    va.vapic = tprShadow ? vmcs.readNum(F.VIRTUAL_APIC_PAGE_ADDR) : -1;
    if (proc2 & D.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES) {
      this.page!.hpaPage = vmcs.readNum(F.APIC_ACCESS_ADDR);
      rules.apicPage = this.page;
    } else rules.apicPage = null;
    rules.cr8 = tprShadow ? this.cr8Shadow : null;
  }
}
