/**
 * The emulated processor's VMX capability MSRs (SDM Vol. 3D Appendix A) and KVM's
 * setup_vmcs_config negotiation against them (arch/x86/kvm/vmx/vmx.c, capabilities.h).
 * The MSRs describe exactly what this package's VM entry, guest-mode rules and EPT walker
 * implement: a control reported allowed-1 here is honoured, one reported allowed-0 is not.
 */
import { VMCS_FIELDS } from './vmcs/fields';
import * as D from './vmx-defs';

export const MSR_IA32_VMX_BASIC = 0x480;
export const MSR_IA32_VMX_PINBASED_CTLS = 0x481;
export const MSR_IA32_VMX_PROCBASED_CTLS = 0x482;
export const MSR_IA32_VMX_EXIT_CTLS = 0x483;
export const MSR_IA32_VMX_ENTRY_CTLS = 0x484;
export const MSR_IA32_VMX_MISC = 0x485;
export const MSR_IA32_VMX_CR0_FIXED0 = 0x486;
export const MSR_IA32_VMX_CR0_FIXED1 = 0x487;
export const MSR_IA32_VMX_CR4_FIXED0 = 0x488;
export const MSR_IA32_VMX_CR4_FIXED1 = 0x489;
export const MSR_IA32_VMX_VMCS_ENUM = 0x48a;
export const MSR_IA32_VMX_PROCBASED_CTLS2 = 0x48b;
export const MSR_IA32_VMX_EPT_VPID_CAP = 0x48c;
export const MSR_IA32_VMX_TRUE_PINBASED_CTLS = 0x48d;
export const MSR_IA32_VMX_TRUE_PROCBASED_CTLS = 0x48e;
export const MSR_IA32_VMX_TRUE_EXIT_CTLS = 0x48f;
export const MSR_IA32_VMX_TRUE_ENTRY_CTLS = 0x490;
export const MSR_IA32_VMX_VMFUNC = 0x491;

/** VMCS revision identifier of this processor (IA32_VMX_BASIC[30:0]). */
export const VMCS_REVISION_ID = 0x7473; // "ts"
/** Preemption-timer rate: the timer counts down once every 2^5 TSC ticks (IA32_VMX_MISC[4:0]). */
export const PREEMPTION_TIMER_RATE = 5;
/** CR3-target values supported (IA32_VMX_MISC[24:16]). */
export const CR3_TARGET_COUNT_MAX = 4;

// EPT/VPID capability bits (SDM A.10)
export const VMX_EPT_EXECUTE_ONLY_BIT = 1n << 0n;
export const VMX_EPT_PAGE_WALK_4_BIT = 1n << 6n;
/** 2 MiB and 1 GiB EPT pages (bit 7 in a PDE / PDPTE, SDM 29.3.2; App. A.10). */
export const VMX_EPT_2MB_PAGE_BIT = 1n << 16n;
export const VMX_EPT_1GB_PAGE_BIT = 1n << 17n;
export const VMX_EPT_PAGE_WALK_5_BIT = 1n << 7n;
export const VMX_EPTP_UC_BIT = 1n << 8n;
export const VMX_EPTP_WB_BIT = 1n << 14n;
export const VMX_EPT_INVEPT_BIT = 1n << 20n;
export const VMX_EPT_AD_BIT = 1n << 21n;
export const VMX_EPT_EXTENT_CONTEXT_BIT = 1n << 25n;
export const VMX_EPT_EXTENT_GLOBAL_BIT = 1n << 26n;
export const VMX_VPID_INVVPID_BIT = 1n << 32n;
export const VMX_VPID_EXTENT_INDIVIDUAL_ADDR_BIT = 1n << 40n;
export const VMX_VPID_EXTENT_SINGLE_CONTEXT_BIT = 1n << 41n;
export const VMX_VPID_EXTENT_GLOBAL_CONTEXT_BIT = 1n << 42n;
export const VMX_VPID_EXTENT_SINGLE_NON_GLOBAL_BIT = 1n << 43n;

/** CR0 bits fixed to 1 in VMX operation: PE, NE, PG (PE/PG exempt for unrestricted guests). */
export const VMX_CR0_FIXED0 = 0x80000021;
export const VMX_CR0_FIXED1 = 0xffffffff;
/** CR4.VMXE is fixed to 1. */
export const VMX_CR4_FIXED0 = 0x2000;
/** CR4 bits the emulated processor implements: VME…OSXMMEXCPT, VMXE, SMEP, SMAP. */
export const VMX_CR4_FIXED1 = 0x7ff | 0x2000 | 0x100000 | 0x200000;

/** Allowed-1 settings: everything this package's VM entry and guest-mode rules implement. */
const PIN_ALLOWED1 = D.PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR | D.PIN_BASED_EXT_INTR_MASK | D.PIN_BASED_NMI_EXITING |
  D.PIN_BASED_VIRTUAL_NMIS | D.PIN_BASED_VMX_PREEMPTION_TIMER | D.PIN_BASED_POSTED_INTR;
const PROC_ALLOWED1 = (D.CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR | D.CPU_BASED_INTR_WINDOW_EXITING |
  D.CPU_BASED_USE_TSC_OFFSETTING | D.CPU_BASED_HLT_EXITING | D.CPU_BASED_INVLPG_EXITING | D.CPU_BASED_MWAIT_EXITING |
  D.CPU_BASED_RDPMC_EXITING | D.CPU_BASED_RDTSC_EXITING | D.CPU_BASED_CR3_LOAD_EXITING | D.CPU_BASED_CR3_STORE_EXITING |
  D.CPU_BASED_CR8_LOAD_EXITING | D.CPU_BASED_CR8_STORE_EXITING | D.CPU_BASED_TPR_SHADOW | D.CPU_BASED_NMI_WINDOW_EXITING |
  D.CPU_BASED_MOV_DR_EXITING | D.CPU_BASED_UNCOND_IO_EXITING | D.CPU_BASED_USE_IO_BITMAPS | D.CPU_BASED_MONITOR_TRAP_FLAG |
  D.CPU_BASED_USE_MSR_BITMAPS | D.CPU_BASED_MONITOR_EXITING | D.CPU_BASED_PAUSE_EXITING |
  D.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS) >>> 0;
const PROC2_ALLOWED1 = D.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES | D.SECONDARY_EXEC_ENABLE_EPT | D.SECONDARY_EXEC_DESC |
  D.SECONDARY_EXEC_ENABLE_RDTSCP | D.SECONDARY_EXEC_ENABLE_VPID | D.SECONDARY_EXEC_WBINVD_EXITING |
  D.SECONDARY_EXEC_UNRESTRICTED_GUEST | D.SECONDARY_EXEC_APIC_REGISTER_VIRT | D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY |
  D.SECONDARY_EXEC_RDRAND_EXITING | D.SECONDARY_EXEC_ENABLE_INVPCID | D.SECONDARY_EXEC_RDSEED_EXITING |
  D.SECONDARY_EXEC_ENABLE_PML;
const EXIT_ALLOWED1 = D.VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR | D.VM_EXIT_SAVE_DEBUG_CONTROLS | D.VM_EXIT_HOST_ADDR_SPACE_SIZE |
  D.VM_EXIT_ACK_INTR_ON_EXIT | D.VM_EXIT_SAVE_IA32_PAT | D.VM_EXIT_LOAD_IA32_PAT | D.VM_EXIT_SAVE_IA32_EFER |
  D.VM_EXIT_LOAD_IA32_EFER | D.VM_EXIT_SAVE_VMX_PREEMPTION_TIMER;
const ENTRY_ALLOWED1 = D.VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR | D.VM_ENTRY_LOAD_DEBUG_CONTROLS | D.VM_ENTRY_IA32E_MODE |
  D.VM_ENTRY_LOAD_IA32_PAT | D.VM_ENTRY_LOAD_IA32_EFER;

const ctls = (allowed0: number, allowed1: number): bigint => (BigInt(allowed1 >>> 0) << 32n) | BigInt(allowed0 >>> 0);

function highestVmcsIndex(): number {
  let max = 0;
  for (const enc of VMCS_FIELDS.keys()) max = Math.max(max, (enc >> 1) & 0x1ff);
  return max;
}

/** The capability MSRs of the emulated processor, by index. */
export const VMX_CAPABILITY_MSRS: ReadonlyMap<number, bigint> = new Map<number, bigint>([
  // A.1: revision, 4 KiB region, WB memory type (6), INS/OUTS info (54), TRUE controls (55)
  [MSR_IA32_VMX_BASIC, BigInt(VMCS_REVISION_ID) | (0x1000n << 32n) | (6n << 50n) | (1n << 54n) | (1n << 55n)],
  [MSR_IA32_VMX_PINBASED_CTLS, ctls(D.PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR, PIN_ALLOWED1)],
  [MSR_IA32_VMX_PROCBASED_CTLS, ctls(D.CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR, PROC_ALLOWED1)],
  [MSR_IA32_VMX_EXIT_CTLS, ctls(D.VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR, EXIT_ALLOWED1)],
  [MSR_IA32_VMX_ENTRY_CTLS, ctls(D.VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR, ENTRY_ALLOWED1)],
  // A.6: timer rate, EFER.LMA stored into "IA-32e mode guest" (5), HLT/shutdown/wait-for-SIPI
  // activity states (6-8), CR3-target count, 512-entry MSR lists (N=0)
  [MSR_IA32_VMX_MISC, BigInt(PREEMPTION_TIMER_RATE) | (1n << 5n) | (7n << 6n) | (BigInt(CR3_TARGET_COUNT_MAX) << 16n)],
  [MSR_IA32_VMX_CR0_FIXED0, BigInt(VMX_CR0_FIXED0)],
  [MSR_IA32_VMX_CR0_FIXED1, BigInt(VMX_CR0_FIXED1)],
  [MSR_IA32_VMX_CR4_FIXED0, BigInt(VMX_CR4_FIXED0)],
  [MSR_IA32_VMX_CR4_FIXED1, BigInt(VMX_CR4_FIXED1)],
  [MSR_IA32_VMX_VMCS_ENUM, BigInt(highestVmcsIndex() << 1)],
  [MSR_IA32_VMX_PROCBASED_CTLS2, ctls(0, PROC2_ALLOWED1)],
  [MSR_IA32_VMX_EPT_VPID_CAP, VMX_EPT_EXECUTE_ONLY_BIT | VMX_EPT_PAGE_WALK_4_BIT | VMX_EPT_PAGE_WALK_5_BIT | VMX_EPTP_UC_BIT |
    VMX_EPT_2MB_PAGE_BIT | VMX_EPT_1GB_PAGE_BIT |
    VMX_EPTP_WB_BIT | VMX_EPT_INVEPT_BIT | VMX_EPT_AD_BIT | VMX_EPT_EXTENT_CONTEXT_BIT | VMX_EPT_EXTENT_GLOBAL_BIT |
    VMX_VPID_INVVPID_BIT | VMX_VPID_EXTENT_INDIVIDUAL_ADDR_BIT | VMX_VPID_EXTENT_SINGLE_CONTEXT_BIT |
    VMX_VPID_EXTENT_GLOBAL_CONTEXT_BIT | VMX_VPID_EXTENT_SINGLE_NON_GLOBAL_BIT],
  // A.3.1/A.3.2/A.4/A.5: the TRUE MSRs let some default1 controls be 0
  [MSR_IA32_VMX_TRUE_PINBASED_CTLS, ctls(D.PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR, PIN_ALLOWED1)],
  [MSR_IA32_VMX_TRUE_PROCBASED_CTLS, ctls(D.CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR &
    ~(D.CPU_BASED_CR3_LOAD_EXITING | D.CPU_BASED_CR3_STORE_EXITING), PROC_ALLOWED1)],
  [MSR_IA32_VMX_TRUE_EXIT_CTLS, ctls(D.VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR & ~D.VM_EXIT_SAVE_DEBUG_CONTROLS, EXIT_ALLOWED1)],
  [MSR_IA32_VMX_TRUE_ENTRY_CTLS, ctls(D.VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR & ~D.VM_ENTRY_LOAD_DEBUG_CONTROLS, ENTRY_ALLOWED1)],
  // A.11: no VM functions (secondary control 13 is allowed-0)
  [MSR_IA32_VMX_VMFUNC, 0n],
]);

export function vmxCapability(index: number): bigint {
  const v = VMX_CAPABILITY_MSRS.get(index);
  if (v === undefined) throw new Error(`not a VMX capability MSR: 0x${index.toString(16)}`);
  return v;
}

const ALLOWED = new Map<number, { must1: number; may1: number }>();
for (const [i, v] of VMX_CAPABILITY_MSRS) ALLOWED.set(i, { must1: Number(v & 0xffffffffn) >>> 0, may1: Number(v >> 32n) >>> 0 });

/** Allowed-0 (must be 1) and allowed-1 (may be 1) halves of a control capability MSR. */
export function allowedSettings(index: number): { must1: number; may1: number } {
  const a = ALLOWED.get(index);
  if (!a) throw new Error(`not a VMX capability MSR: 0x${index.toString(16)}`);
  return a;
}

export class VmcsConfigError extends Error {
  constructor(what: string, missing: number) {
    super(`setup_vmcs_config: the processor does not allow required ${what} 0x${(missing >>> 0).toString(16)}`);
    this.name = 'VmcsConfigError';
  }
}

/** adjust_vmx_controls: (min|opt) limited to allowed-1, forced to allowed-0; min must survive. */
export function adjustVmxControls(min: number, opt: number, msr: number, what: string): number {
  const { must1, may1 } = allowedSettings(msr);
  let ctl = (min | opt) & may1;
  ctl |= must1;
  if ((min & ~ctl) !== 0) throw new VmcsConfigError(what, min & ~ctl);
  return ctl >>> 0;
}

/** struct vmcs_config: the controls this KVM runs every guest with. */
export interface VmcsConfig {
  readonly revisionId: number;
  readonly pinBased: number;
  readonly cpuBased: number;
  readonly cpuBased2: number;
  readonly vmexit: number;
  readonly vmentry: number;
  readonly eptVpidCap: bigint;
}

/** Module options, like kvm-intel's (enable_ept, enable_vpid, enable_pml, …). */
export interface VmxModuleParams {
  ept: boolean;
  unrestrictedGuest: boolean;
  vpid: boolean;
  pml: boolean;
  /** APICv: virtual-interrupt delivery, APIC-register virtualization and posted interrupts. */
  apicv: boolean;
  preemptionTimer: boolean;
}

export const DEFAULT_VMX_PARAMS: VmxModuleParams = {
  ept: true, unrestrictedGuest: true, vpid: true, pml: true, apicv: false, preemptionTimer: true,
};

/** setup_vmcs_config: negotiate the controls against the TRUE capability MSRs. */
export function setupVmcsConfig(p: VmxModuleParams): VmcsConfig {
  const minProc = D.CPU_BASED_HLT_EXITING | D.CPU_BASED_CR3_LOAD_EXITING | D.CPU_BASED_CR3_STORE_EXITING |
    D.CPU_BASED_CR8_LOAD_EXITING | D.CPU_BASED_CR8_STORE_EXITING | D.CPU_BASED_UNCOND_IO_EXITING |
    D.CPU_BASED_MOV_DR_EXITING | D.CPU_BASED_USE_TSC_OFFSETTING | D.CPU_BASED_MWAIT_EXITING |
    D.CPU_BASED_MONITOR_EXITING | D.CPU_BASED_INVLPG_EXITING | D.CPU_BASED_RDPMC_EXITING;
  // The TPR shadow (a virtual-APIC page) is APICv's; without it CR8 accesses exit to KVM.
  const optProc = (p.apicv ? D.CPU_BASED_TPR_SHADOW : 0) | D.CPU_BASED_USE_MSR_BITMAPS | D.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS;
  let cpuBased = adjustVmxControls(minProc, optProc, MSR_IA32_VMX_TRUE_PROCBASED_CTLS, 'processor-based controls');
  // With a TPR shadow, CR8 accesses go to the virtual-APIC page instead of exiting.
  if (cpuBased & D.CPU_BASED_TPR_SHADOW) cpuBased &= ~(D.CPU_BASED_CR8_LOAD_EXITING | D.CPU_BASED_CR8_STORE_EXITING);
  let cpuBased2 = 0;
  if (cpuBased & D.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS) {
    let opt2 = D.SECONDARY_EXEC_WBINVD_EXITING | D.SECONDARY_EXEC_ENABLE_RDTSCP |
      D.SECONDARY_EXEC_ENABLE_INVPCID;
    if (p.ept) opt2 |= D.SECONDARY_EXEC_ENABLE_EPT;
    if (p.ept && p.unrestrictedGuest) opt2 |= D.SECONDARY_EXEC_UNRESTRICTED_GUEST;
    if (p.vpid) opt2 |= D.SECONDARY_EXEC_ENABLE_VPID;
    if (p.ept && p.pml) opt2 |= D.SECONDARY_EXEC_ENABLE_PML;
    if (p.apicv) opt2 |= D.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES | D.SECONDARY_EXEC_APIC_REGISTER_VIRT | D.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY;
    cpuBased2 = adjustVmxControls(0, opt2, MSR_IA32_VMX_PROCBASED_CTLS2, 'secondary processor-based controls');
  }
  if (cpuBased2 & D.SECONDARY_EXEC_ENABLE_EPT) {
    // EPT translates guest-physical addresses: the guest may own CR3 and INVLPG (setup_vmcs_config).
    cpuBased &= ~(D.CPU_BASED_CR3_LOAD_EXITING | D.CPU_BASED_CR3_STORE_EXITING | D.CPU_BASED_INVLPG_EXITING);
  }
  const minPin = D.PIN_BASED_EXT_INTR_MASK | D.PIN_BASED_NMI_EXITING;
  let optPin = D.PIN_BASED_VIRTUAL_NMIS;
  if (p.preemptionTimer) optPin |= D.PIN_BASED_VMX_PREEMPTION_TIMER;
  if (p.apicv) optPin |= D.PIN_BASED_POSTED_INTR;
  const pinBased = adjustVmxControls(minPin, optPin, MSR_IA32_VMX_TRUE_PINBASED_CTLS, 'pin-based controls');
  const minExit = D.VM_EXIT_SAVE_DEBUG_CONTROLS | D.VM_EXIT_HOST_ADDR_SPACE_SIZE | D.VM_EXIT_ACK_INTR_ON_EXIT;
  const optExit = D.VM_EXIT_SAVE_IA32_PAT | D.VM_EXIT_LOAD_IA32_PAT | D.VM_EXIT_SAVE_IA32_EFER | D.VM_EXIT_LOAD_IA32_EFER;
  const vmexit = adjustVmxControls(minExit, optExit, MSR_IA32_VMX_TRUE_EXIT_CTLS, 'VM-exit controls');
  const minEntry = D.VM_ENTRY_LOAD_DEBUG_CONTROLS;
  const optEntry = D.VM_ENTRY_LOAD_IA32_PAT | D.VM_ENTRY_LOAD_IA32_EFER;
  const vmentry = adjustVmxControls(minEntry, optEntry, MSR_IA32_VMX_TRUE_ENTRY_CTLS, 'VM-entry controls');
  return {
    revisionId: VMCS_REVISION_ID, pinBased, cpuBased: cpuBased >>> 0, cpuBased2, vmexit, vmentry,
    eptVpidCap: vmxCapability(MSR_IA32_VMX_EPT_VPID_CAP),
  };
}
