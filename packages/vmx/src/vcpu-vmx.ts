/**
 * struct vcpu_vmx and struct kvm_vmx: the backend's per-vCPU and per-VM state.
 * Who touches what: the VMCS is written by the hooks (VMWRITE) and by the processor at VM
 * exit (guest state and exit information); the bitmaps and the PML buffer live in host
 * memory, where the processor reads (and for PML writes) them by host-physical address.
 */
import type { Kvm, KvmVcpu } from '@tsvisor/core';
import { Vmcs } from './vmcs/vmcs';
import { VmxGuestModeRules } from './guest-rules';
import { emptyExitRecord, VmxExitRecord } from './exit-info';
import type { VmcsConfig, VmxModuleParams } from './capabilities';
import type { EptWalker } from './ept/ept';

/** struct kvm_vmx. */
export class KvmVmx {
  /** set_tss_addr / set_identity_map_addr (used only without unrestricted guest). */
  tssAddr = 0;
  identityMapAddr = 0n;
  eptIdentityPagetableDone = false;
  /** VPIDs handed out in this VM (vmx_vpid_bitmap). */
  nextVpid = 1;
  constructor(readonly params: VmxModuleParams, readonly config: VmcsConfig) {}
}

/** struct pi_desc: the posted-interrupt descriptor lives in host memory (SDM 30.6). */
export const PI_DESC_SIZE = 64;

/**
 * The user-return MSR values (vmx->guest_uret_msrs) with a version bumped by every change, so
 * prepareGuestSwitch reloads them into the processor from its copy when nothing changed.
 */
export class VersionedMsrMap extends Map<number, bigint> {
  version = 0;
  override set(k: number, v: bigint): this {
    this.version++;
    return super.set(k, v);
  }
  override delete(k: number): boolean {
    this.version++;
    return super.delete(k);
  }
  override clear(): void {
    this.version++;
    super.clear();
  }
}

/** struct vcpu_vmx. */
export class VcpuVmx {
  readonly vmcs: Vmcs;
  readonly rules = new VmxGuestModeRules();
  /** Host-physical addresses of the pages this vCPU owns. */
  readonly msrBitmap: number;
  readonly ioBitmapA: number;
  readonly ioBitmapB: number;
  readonly pmlPage: number;
  readonly virtualApicPage: number;
  /** Posted-interrupt descriptor (64 bytes at the start of its page). */
  readonly piDesc: number;
  vpid: number;
  ept: EptWalker | null = null;

  /** Full exit reason of the last exit (bit 31: entry failure). */
  exitReason = 0;
  /** VMfailValid at the last VM entry (vmx->fail): VM_INSTRUCTION_ERROR says why. */
  fail = false;
  /** Why the last entry failed, in words (for run.internalMessage). */
  failWhy = '';
  readonly exitRecord: VmxExitRecord = emptyExitRecord();
  /** IDT-vectoring information of the last exit (vmx->idt_vectoring_info). */
  idtVectoringInfo = 0;
  /** VMCS state generation (Vmcs.stateGeneration) after the last successful entry checks (unchanged VMCS → no re-check). */
  checkedGeneration = -1;
  /** Vmcs.ctlGeneration after the last successful control and host-state checks (SDM 27.2). */
  checkedCtlGeneration = -1;
  /** Vmcs.stateGeneration right after the last exit saved guest state (unchanged → the processor still holds it). */
  storedGeneration = -1;
  /**
   * The processor's CR2, DR0-3, DR6 and XCR0 are KVM's (vcpu.arch): set when an exit completed
   * in the fastpath re-enters (vmenter.ts fastpathDone), cleared by the entry that relies on it
   * and by prepareGuestSwitch (every entry through vcpu_enter_guest's slow path, where KVM may
   * have changed them). Entry then skips loadSwitchedState.
   */
  switchedInSync = false;
  /** CpuState.sysWrites when entry last loaded the switched registers. */
  switchedLoadWrites = -1;
  /** The last exit found the processor's DR0-3 unwritten since entry loaded them (sysWrites unchanged). */
  switchedHeld = false;
  /** The 64-bit guest registers as last loaded into or saved from the processor. */
  readonly synced = {
    cr0: -1n, cr3: -1n, cr4: -1n, gdtrBase: -1n, idtrBase: -1n, efer: -1n, pat: -1n, dr7: -1n, debugctl: -1n,
    sysenterCs: -1n, sysenterEsp: -1n, sysenterEip: -1n,
  };

  // MSR state that is not in the VMCS (vmx->guest_msrs, spec_ctrl, …)
  /** The user-return ("shared") MSRs: STAR, LSTAR, CSTAR, SYSCALL_MASK, TSC_AUX, TSX_CTRL. */
  readonly guestMsrs = new VersionedMsrMap();
  /** STAR, LSTAR, CSTAR, SFMASK, TSC_AUX as prepareGuestSwitch last read them from guestMsrs (at uretVersion). */
  readonly uretValues: bigint[] = [0n, 0n, 0n, 0n, 0n];
  uretVersion = -1;
  kernelGsBase = 0n;
  specCtrl = 0n;
  umwaitControl = 0n;
  featureControl = 0n;
  /** Bits IA32_FEATURE_CONTROL accepts (LOCKED; LMCE after setupMce with MCG_LMCE_P). */
  featureControlValidBits = 1n;
  mcgExtCtl = 0n;
  /** Intel PT guest state (pt_desc.guest); reachable only in host-guest PT mode, which this processor lacks. */
  readonly rtit = { ctl: 0n, status: 0n, cr3Match: 0n, outputBase: 0n, outputMask: 0n, addrA: [0n, 0n, 0n, 0n], addrB: [0n, 0n, 0n, 0n] };

  /** VMX-preemption timer deadline for setHvTimer (guest TSC), -1n when off. */
  hvDeadlineTsc = -1n;
  /** The hv timer fired (kvm_lapic_expired_hv_timer would run); cleared by whoever consumes it. */
  hvTimerExpired = false;
  /** requestImmediateExit: the next entry exits at once through a zero preemption timer. */
  immediateExit = false;
  /** The current entry used the preemption timer for an immediate exit (vmx->req_immediate_exit). */
  reqImmediateExit = false;
  /** The last exit found the guest halted in guest mode (HLT exiting off): only an event wakes it. */
  haltedInGuest = false;
  /** event_exit_inst_len for software exceptions/interrupts being re-injected. */
  eventExitInstLen = 0;
  /** SMM: the guest was in SMM when it last exited (vmx->nested.smm, rmode save). */
  inSmm = false;
  /** Blocked in HLT with posted-interrupt wakeups armed (pi_pre_block). */
  blocked = false;
  /** The logical CPU whose VMCS pointer holds this vCPU's VMCS (vcpu_load), -1 when put. */
  loadedCpu = -1;
  /** Instructions retired when the current KVM_RUN began (the slice each entry may still use). */
  runStartRetired = 0;
  /** Host interrupts acknowledged on exit and handed to the host (handle_external_interrupt_irqoff). */
  hostInterrupts = 0;
  /** Host page backing the APIC-access page (set_apic_access_page_addr), -1 until needed. */
  apicAccessPage = -1;

  constructor(readonly vcpu: KvmVcpu, revisionId: number, pages: number, vpid: number) {
    this.vmcs = new Vmcs(revisionId);
    this.msrBitmap = pages;
    this.ioBitmapA = pages + 4096;
    this.ioBitmapB = pages + 2 * 4096;
    this.pmlPage = pages + 3 * 4096;
    this.virtualApicPage = pages + 4 * 4096;
    this.piDesc = pages + 5 * 4096;
    this.vpid = vpid;
    // APIC virtualization signals a newly pending virtual interrupt to this vCPU's processor (apic-access.ts).
    this.rules.apicv.cpu = vcpu.cpu;
  }
}
/** Pages a vCPU allocates: MSR bitmap, I/O bitmaps A and B, PML buffer, virtual-APIC page, PI descriptor. */
export const VCPU_VMX_PAGES = 6;

export function toVmx(vcpu: KvmVcpu): VcpuVmx {
  return vcpu.vendor as VcpuVmx;
}
export function toKvmVmx(kvm: Kvm): KvmVmx {
  return kvm.vendor as KvmVmx;
}
