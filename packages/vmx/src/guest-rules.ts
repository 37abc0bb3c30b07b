/**
 * VMX guest-mode rules (SDM Vol. 3C ch. 26, "VMX Non-Root Operation"): what makes the
 * processor exit, computed from the VMCS's VM-execution controls at each VM entry.
 * The processor calls these at each point the SDM defines; they read only state cached here
 * at entry (bitmaps as byte views into host memory), so a check is a few array loads.
 */
import { GuestModeRules, HostMemory, InterceptInsn, TdpWalker } from '@tsvisor/core';
import { F } from './vmcs/fields';
import { Vmcs } from './vmcs/vmcs';
import * as D from './vmx-defs';
import { PREEMPTION_TIMER_RATE } from './capabilities';
import { VmxApicv, VmxApicAccessPage, VmxCr8Shadow } from './apic-access';

const PF_VECTOR = 14;
const S_TIMER_VALUE = Vmcs.slotOf(F.VMX_PREEMPTION_TIMER_VALUE);
/** No preemption-timer deadline (a constant: `-1n` in an expression negates, and allocates, each time). */
const NO_DEADLINE = -1n;

export class VmxGuestModeRules implements GuestModeRules {
  readonly insn = new Uint8Array(InterceptInsn.COUNT);
  irqWindowExiting = false;
  nmiWindowExiting = false;
  /** VMX always exits on a triple fault (SDM 26.2). */
  shutdownExits = true;
  tdp: TdpWalker | null = null;
  tlbTag = 0;
  monitorTrapFlag = false;
  preemptionDeadlineTsc = -1n;
  /** With EPT and PAE paging, VM entry supplies the PDPTE registers from GUEST_PDPTR0-3 (vmenter.ts, SDM 27.3.2.4). */
  pdptrsLoaded = false;
  /** APIC virtualization (SDM ch. 29, apic-access.ts): the APIC-access page and CR8 with a TPR shadow, armed at entry. */
  apicPage: VmxApicAccessPage | null = null;
  cr8: VmxCr8Shadow | null = null;
  readonly apicv = new VmxApicv();
  /** SDM 26.2: INIT signals always exit in VMX non-root operation; SIPIs exit in wait-for-SIPI. */
  readonly initSipiExits = true;

  // Cached controls (SDM 25.6)
  pin = 0;
  proc = 0;
  proc2 = 0;
  exceptionBitmap = 0;
  pfecMask = 0;
  pfecMatch = 0;
  cr0Mask = 0n;
  cr0Shadow = 0n;
  cr4Mask = 0n;
  cr4Shadow = 0n;
  readonly cr3Targets: bigint[] = [];
  /** Bitmaps, as views of host memory (null when the control is off). */
  private msrBitmap: Uint8Array | null = null;
  private msrBitmapOff = 0;
  private ioA: Uint8Array | null = null;
  private ioAOff = 0;
  private ioB: Uint8Array | null = null;
  private ioBOff = 0;

  /** Vmcs.ctlGeneration these rules were computed from: they read only control fields, so an
   * entry with no control field written since only recomputes the preemption-timer deadline. */
  private loadedGeneration = -1;
  private loadedVmcs: Vmcs | null = null;

  /** Re-read the controls from the VMCS (called at every VM entry, after the entry checks passed). */
  load(vmcs: Vmcs, host: HostMemory, guestTsc: bigint): void {
    if (vmcs.ctlGeneration === this.loadedGeneration && vmcs === this.loadedVmcs) {
      this.loadTimer(vmcs, guestTsc);
      return;
    }
    this.loadedGeneration = vmcs.ctlGeneration;
    this.loadedVmcs = vmcs;
    const pin = (this.pin = vmcs.read32(F.PIN_BASED_VM_EXEC_CONTROL));
    const proc = (this.proc = vmcs.read32(F.CPU_BASED_VM_EXEC_CONTROL));
    const proc2 = (this.proc2 = proc & D.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS ? vmcs.read32(F.SECONDARY_VM_EXEC_CONTROL) : 0);
    this.exceptionBitmap = vmcs.read32(F.EXCEPTION_BITMAP);
    this.pfecMask = vmcs.read32(F.PAGE_FAULT_ERROR_CODE_MASK);
    this.pfecMatch = vmcs.read32(F.PAGE_FAULT_ERROR_CODE_MATCH);
    this.cr0Mask = vmcs.readNat(F.CR0_GUEST_HOST_MASK);
    this.cr0Shadow = vmcs.readNat(F.CR0_READ_SHADOW);
    this.cr4Mask = vmcs.readNat(F.CR4_GUEST_HOST_MASK);
    this.cr4Shadow = vmcs.readNat(F.CR4_READ_SHADOW);
    this.cr3Targets.length = 0;
    const n = vmcs.read32(F.CR3_TARGET_COUNT);
    const targets = [F.CR3_TARGET_VALUE0, F.CR3_TARGET_VALUE1, F.CR3_TARGET_VALUE2, F.CR3_TARGET_VALUE3];
    for (let i = 0; i < n && i < 4; i++) this.cr3Targets.push(vmcs.readNat(targets[i]));

    const ins = this.insn;
    ins.fill(0);
    // SDM 26.1.2: instructions that cause VM exits unconditionally.
    ins[InterceptInsn.CPUID] = 1;
    ins[InterceptInsn.INVD] = 1;
    ins[InterceptInsn.XSETBV] = 1;
    ins[InterceptInsn.VMCALL] = 1;
    ins[InterceptInsn.VMX_INSN] = 1;
    // SDM 26.1.3: instructions that exit conditionally.
    ins[InterceptInsn.HLT] = proc & D.CPU_BASED_HLT_EXITING ? 1 : 0;
    ins[InterceptInsn.INVLPG] = proc & D.CPU_BASED_INVLPG_EXITING ? 1 : 0;
    ins[InterceptInsn.INVPCID] = proc & D.CPU_BASED_INVLPG_EXITING && proc2 & D.SECONDARY_EXEC_ENABLE_INVPCID ? 1 : 0;
    ins[InterceptInsn.RDPMC] = proc & D.CPU_BASED_RDPMC_EXITING ? 1 : 0;
    ins[InterceptInsn.RDTSC] = proc & D.CPU_BASED_RDTSC_EXITING ? 1 : 0;
    ins[InterceptInsn.RDTSCP] = proc & D.CPU_BASED_RDTSC_EXITING && proc2 & D.SECONDARY_EXEC_ENABLE_RDTSCP ? 1 : 0;
    ins[InterceptInsn.MWAIT] = proc & D.CPU_BASED_MWAIT_EXITING ? 1 : 0;
    ins[InterceptInsn.MONITOR] = proc & D.CPU_BASED_MONITOR_EXITING ? 1 : 0;
    ins[InterceptInsn.PAUSE] = proc & D.CPU_BASED_PAUSE_EXITING ? 1 : 0;
    ins[InterceptInsn.WBINVD] = proc2 & D.SECONDARY_EXEC_WBINVD_EXITING ? 1 : 0;
    ins[InterceptInsn.RDRAND] = proc2 & D.SECONDARY_EXEC_RDRAND_EXITING ? 1 : 0;
    ins[InterceptInsn.RDSEED] = proc2 & D.SECONDARY_EXEC_RDSEED_EXITING ? 1 : 0;
    const desc = proc2 & D.SECONDARY_EXEC_DESC ? 1 : 0;
    ins[InterceptInsn.LGDT] = ins[InterceptInsn.LIDT] = ins[InterceptInsn.SGDT] = ins[InterceptInsn.SIDT] = desc;
    ins[InterceptInsn.LLDT] = ins[InterceptInsn.LTR] = ins[InterceptInsn.SLDT] = ins[InterceptInsn.STR] = desc;

    this.irqWindowExiting = (proc & D.CPU_BASED_INTR_WINDOW_EXITING) !== 0;
    this.nmiWindowExiting = (proc & D.CPU_BASED_NMI_WINDOW_EXITING) !== 0;
    this.monitorTrapFlag = (proc & D.CPU_BASED_MONITOR_TRAP_FLAG) !== 0;
    this.tlbTag = proc2 & D.SECONDARY_EXEC_ENABLE_VPID ? vmcs.read16(F.VIRTUAL_PROCESSOR_ID) : 0;
    this.apicv.arm(this, vmcs, host, proc, proc2);

    if (proc & D.CPU_BASED_USE_MSR_BITMAPS) {
      // A bitmap address with no memory behind it reads as all-ones: every MSR exits.
      this.msrBitmap = host.sliceOrOnes(vmcs.readNum(F.MSR_BITMAP), 4096);
      this.msrBitmapOff = 0;
    } else this.msrBitmap = null;
    if (proc & D.CPU_BASED_USE_IO_BITMAPS) {
      this.ioA = host.sliceOrOnes(vmcs.readNum(F.IO_BITMAP_A), 4096);
      this.ioAOff = 0;
      this.ioB = host.sliceOrOnes(vmcs.readNum(F.IO_BITMAP_B), 4096);
      this.ioBOff = 0;
    } else this.ioA = this.ioB = null;

    this.loadTimer(vmcs, guestTsc);
  }

  /**
   * Whether these rules were computed from `vmcs` as it is now (no control field written since):
   * a resume (vmenter.ts) keeps them and calls only loadTimer, as `load` would.
   */
  loadedFrom(vmcs: Vmcs): boolean {
    return vmcs.ctlGeneration === this.loadedGeneration && vmcs === this.loadedVmcs;
  }

  /** The preemption-timer deadline from VMX_PREEMPTION_TIMER_VALUE (SDM 26.5.1), part of every `load`. */
  loadTimer(vmcs: Vmcs, guestTsc: bigint): void {
    // SDM 26.5.1: the timer counts down by 1 each time TSC bit X changes (X = IA32_VMX_MISC[4:0]).
    if (this.pin & D.PIN_BASED_VMX_PREEMPTION_TIMER) {
      const value = vmcs.loadSlotInt(S_TIMER_VALUE);
      // 2^32 - 1 ticks (2^37 TSC cycles) is beyond any single entry's instruction budget.
      if (value === -1) {
        // (tested first: storing the bigint at every entry would cost a write barrier)
        if (!this.noDeadline) this.clearDeadline();
        return;
      }
      const v = BigInt(value >>> 0);
      this.preemptionDeadlineTsc = v === 0n ? guestTsc : ((guestTsc >> BigInt(PREEMPTION_TIMER_RATE)) + v) << BigInt(PREEMPTION_TIMER_RATE);
      this.noDeadline = false;
    } else if (!this.noDeadline) this.clearDeadline();
  }
  /** preemptionDeadlineTsc is NO_DEADLINE (tracked as a boolean: no BigInt comparison per entry). */
  private noDeadline = false;
  private clearDeadline(): void {
    this.preemptionDeadlineTsc = NO_DEADLINE;
    this.noDeadline = true;
  }

  /** SDM 26.2: the exception bitmap, with #PF filtered by error-code mask/match. */
  exceptionExits(vector: number, errorCode: number): boolean {
    if (vector === PF_VECTOR) {
      const matches = (errorCode & this.pfecMask) === this.pfecMatch;
      return (this.exceptionBitmap & (1 << PF_VECTOR)) !== 0 ? matches : !matches;
    }
    return (this.exceptionBitmap & (1 << vector)) !== 0;
  }

  /** SDM 26.1.3: unconditional I/O exiting, or I/O bitmaps A (0000-7FFF) and B (8000-FFFF). */
  ioExits(port: number, size: number, _isIn: boolean): boolean {
    if (this.ioA === null) return (this.proc & D.CPU_BASED_UNCOND_IO_EXITING) !== 0;
    // An access that wraps past FFFF exits (SDM 26.1.3).
    if (port + size - 1 > 0xffff) return true;
    for (let p = port; p < port + size; p++) {
      const bit = p & 0x7fff;
      const byte = p < 0x8000 ? this.ioA[this.ioAOff + (bit >> 3)] : this.ioB![this.ioBOff + (bit >> 3)];
      if (byte & (1 << (bit & 7))) return true;
    }
    return false;
  }

  /**
   * SDM 25.6.9: the 4 KiB MSR bitmap — read-low (0-1FFF) at 0, read-high (C0000000-C0001FFF)
   * at 1024, write-low at 2048, write-high at 3072. MSRs outside both ranges always exit.
   */
  msrExits(index: number, isWrite: boolean): boolean {
    const bm = this.msrBitmap;
    if (bm === null) return true;
    let off: number;
    if (index >>> 0 <= 0x1fff) off = 0;
    else if (index >>> 0 >= 0xc0000000 && index >>> 0 <= 0xc0001fff) off = 1024;
    else return true;
    if (isWrite) off += 2048;
    const bit = index & 0x1fff;
    return (bm[this.msrBitmapOff + off + (bit >> 3)] & (1 << (bit & 7))) !== 0;
  }

  /** SDM 26.1.3: MOV to CR0/CR4 (and CLTS, LMSW) exit when a host-owned bit would differ from its shadow. */
  crWriteExits(cr: number, value: bigint): boolean {
    switch (cr) {
      case 0: return ((value ^ this.cr0Shadow) & this.cr0Mask) !== 0n;
      case 4: return ((value ^ this.cr4Shadow) & this.cr4Mask) !== 0n;
      case 3:
        if (!(this.proc & D.CPU_BASED_CR3_LOAD_EXITING)) return false;
        // The CR3-target list: loads of a listed value do not exit.
        for (const t of this.cr3Targets) if (t === value) return false;
        return true;
      case 8: return (this.proc & D.CPU_BASED_CR8_LOAD_EXITING) !== 0;
      default: return false;
    }
  }

  crReadExits(cr: number): boolean {
    if (cr === 3) return (this.proc & D.CPU_BASED_CR3_STORE_EXITING) !== 0;
    if (cr === 8) return (this.proc & D.CPU_BASED_CR8_STORE_EXITING) !== 0;
    return false;
  }

  /** SDM 26.3: reads of CR0/CR4 return the read shadow for host-owned bits. */
  crReadValue(cr: number, real: bigint): bigint {
    if (cr === 0) return (real & ~this.cr0Mask) | (this.cr0Shadow & this.cr0Mask);
    if (cr === 4) return (real & ~this.cr4Mask) | (this.cr4Shadow & this.cr4Mask);
    return real;
  }

  drExits(_dr: number, _isWrite: boolean): boolean {
    return (this.proc & D.CPU_BASED_MOV_DR_EXITING) !== 0;
  }
}
