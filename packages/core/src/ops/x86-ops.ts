import type { Kvm } from '../kvm/kvm';
import type { KvmVcpu } from '../kvm/vcpu';
import type { OpName, OptionalOpName, RequiredOpName } from './table';
import type {
  DescPtr, ExitFastpathCompletion, KvmEncRegion, KvmMemorySlot, KvmMsrEntry, KvmReg, KvmSegment,
  KvmTlbRange, MsrData, VcpuSreg, X86Exception, X86InstructionInfo, X86InterceptStage,
} from './types';

/** struct kvm_pmc: one performance counter as the PMU sub-table exposes it. */
export interface KvmPmc {
  /** Index in KVM's numbering: general counters from 0, fixed counters from INTEL_PMC_IDX_FIXED (32). */
  idx: number;
  counter: bigint;
  eventsel: bigint;
}

/** struct kvm_pmu_ops: the vendor PMU (Intel architectural PMU vs AMD PERF_CTL/PERF_CTR). */
export interface KvmPmuOps {
  pmcIsEnabled(pmc: KvmPmc): boolean;
  pmcIdxToPmc(vcpu: KvmVcpu, pmcIdx: number): KvmPmc | null;
  rdpmcEcxToPmc(vcpu: KvmVcpu, idx: number): { pmc: KvmPmc; mask: bigint } | null;
  msrIdxToPmc(vcpu: KvmVcpu, msr: number): KvmPmc | null;
  isValidRdpmcEcx(vcpu: KvmVcpu, idx: number): boolean;
  isValidMsr(vcpu: KvmVcpu, msr: number): boolean;
  getMsr(vcpu: KvmVcpu, msr: MsrData): number;
  setMsr(vcpu: KvmVcpu, msr: MsrData): number;
  /** Recompute the PMU from guest CPUID (leaf 0xA on Intel, family on AMD). */
  refresh(vcpu: KvmVcpu): void;
  init(vcpu: KvmVcpu): void;
  reset(vcpu: KvmVcpu): void;
}

/** struct kvm_nested_state header as KVM_GET/SET_NESTED_STATE moves it. */
export interface KvmNestedState {
  format: number;
  flags: number;
  size: number;
  data: Uint8Array;
}

/** struct kvm_x86_nested_ops. */
export interface KvmX86NestedOps {
  /** Whether nested virtualization is offered to guests at all. */
  readonly enabled: boolean;
  checkEvents(vcpu: KvmVcpu): number;
  getState(vcpu: KvmVcpu): KvmNestedState;
  setState(vcpu: KvmVcpu, state: KvmNestedState): number;
  getVmcs12Pages(vcpu: KvmVcpu): boolean;
}

/**
 * One signature per member of the contract. The keys must be exactly the table's names:
 * `_SignaturesMatchTable` below fails the build otherwise.
 * Return-value conventions are KVM's: 0 for success, 1 for "not handled / #GP", negative errno.
 */
export interface HookSignatures {
  hardwareEnable(): number;
  hardwareDisable(): void;
  hardwareUnsetup(): void;
  cpuHasAcceleratedTpr(): boolean;
  hasEmulatedMsr(index: number): boolean;
  cpuidUpdate(vcpu: KvmVcpu): void;
  /** Bytes of host memory the backend's per-VM structure takes (struct kvm_vmx / kvm_svm). */
  readonly vmSize: number;
  vmInit(kvm: Kvm): number;
  vmDestroy(kvm: Kvm): void;
  vcpuCreate(vcpu: KvmVcpu): number;
  vcpuFree(vcpu: KvmVcpu): void;
  vcpuReset(vcpu: KvmVcpu, initEvent: boolean): void;
  prepareGuestSwitch(vcpu: KvmVcpu): void;
  vcpuLoad(vcpu: KvmVcpu, cpu: number): void;
  vcpuPut(vcpu: KvmVcpu): void;
  updateBpIntercept(vcpu: KvmVcpu): void;
  getMsr(vcpu: KvmVcpu, msr: MsrData): number;
  setMsr(vcpu: KvmVcpu, msr: MsrData): number;
  getSegmentBase(vcpu: KvmVcpu, seg: VcpuSreg): bigint;
  getSegment(vcpu: KvmVcpu, out: KvmSegment, seg: VcpuSreg): void;
  getCpl(vcpu: KvmVcpu): number;
  setSegment(vcpu: KvmVcpu, value: KvmSegment, seg: VcpuSreg): void;
  /** C's int *db, int *l out-parameters become a returned pair. */
  getCsDbLBits(vcpu: KvmVcpu): { db: number; l: number };
  setCr0(vcpu: KvmVcpu, cr0: bigint): void;
  setCr4(vcpu: KvmVcpu, cr4: bigint): number;
  setEfer(vcpu: KvmVcpu, efer: bigint): void;
  getIdt(vcpu: KvmVcpu, dt: DescPtr): void;
  setIdt(vcpu: KvmVcpu, dt: DescPtr): void;
  getGdt(vcpu: KvmVcpu, dt: DescPtr): void;
  setGdt(vcpu: KvmVcpu, dt: DescPtr): void;
  syncDirtyDebugRegs(vcpu: KvmVcpu): void;
  setDr7(vcpu: KvmVcpu, value: bigint): void;
  cacheReg(vcpu: KvmVcpu, reg: KvmReg): void;
  getRflags(vcpu: KvmVcpu): bigint;
  setRflags(vcpu: KvmVcpu, rflags: bigint): void;
  tlbFlushAll(vcpu: KvmVcpu): void;
  tlbFlushCurrent(vcpu: KvmVcpu): void;
  tlbRemoteFlush(kvm: Kvm): number;
  tlbRemoteFlushWithRange(kvm: Kvm, range: KvmTlbRange): number;
  tlbFlushGva(vcpu: KvmVcpu, addr: bigint): void;
  tlbFlushGuest(vcpu: KvmVcpu): void;
  run(vcpu: KvmVcpu): ExitFastpathCompletion;
  /** 1: resume the guest; 0: return to userspace with vcpu.run filled in; < 0: -errno. */
  handleExit(vcpu: KvmVcpu, fastpath: ExitFastpathCompletion): number;
  skipEmulatedInstruction(vcpu: KvmVcpu): number;
  updateEmulatedInstruction(vcpu: KvmVcpu): void;
  setInterruptShadow(vcpu: KvmVcpu, mask: number): void;
  getInterruptShadow(vcpu: KvmVcpu): number;
  /** Write the vendor's native hypercall instruction (3 bytes) into `hypercallAddr`. */
  patchHypercall(vcpu: KvmVcpu, hypercallAddr: Uint8Array): void;
  setIrq(vcpu: KvmVcpu): void;
  setNmi(vcpu: KvmVcpu): void;
  queueException(vcpu: KvmVcpu): void;
  cancelInjection(vcpu: KvmVcpu): void;
  interruptAllowed(vcpu: KvmVcpu, forInjection: boolean): number;
  nmiAllowed(vcpu: KvmVcpu, forInjection: boolean): number;
  getNmiMask(vcpu: KvmVcpu): boolean;
  setNmiMask(vcpu: KvmVcpu, masked: boolean): void;
  enableNmiWindow(vcpu: KvmVcpu): void;
  enableIrqWindow(vcpu: KvmVcpu): void;
  updateCr8Intercept(vcpu: KvmVcpu, tpr: number, irr: number): void;
  checkApicvInhibitReasons(bit: number): boolean;
  preUpdateApicvExecCtrl(kvm: Kvm, activate: boolean): void;
  refreshApicvExecCtrl(vcpu: KvmVcpu): void;
  hwapicIrrUpdate(vcpu: KvmVcpu, maxIrr: number): void;
  hwapicIsrUpdate(vcpu: KvmVcpu, isr: number): void;
  guestApicHasInterrupt(vcpu: KvmVcpu): boolean;
  /** eoiExitBitmap: 256 bits as four 64-bit words. */
  loadEoiExitmap(vcpu: KvmVcpu, eoiExitBitmap: readonly bigint[]): void;
  setVirtualApicMode(vcpu: KvmVcpu): void;
  setApicAccessPageAddr(vcpu: KvmVcpu): void;
  deliverPostedInterrupt(vcpu: KvmVcpu, vector: number): number;
  syncPirToIrr(vcpu: KvmVcpu): number;
  setTssAddr(kvm: Kvm, addr: number): number;
  setIdentityMapAddr(kvm: Kvm, identAddr: bigint): number;
  getTdpLevel(vcpu: KvmVcpu): number;
  getMtMask(vcpu: KvmVcpu, gfn: bigint, isMmio: boolean): bigint;
  loadMmuPgd(vcpu: KvmVcpu, root: bigint): void;
  hasWbinvdExit(): boolean;
  writeL1TscOffset(vcpu: KvmVcpu, offset: bigint): bigint;
  /** C's u64 *info1, u64 *info2 out-parameters become a returned pair. */
  getExitInfo(vcpu: KvmVcpu): { info1: bigint; info2: bigint };
  checkIntercept(vcpu: KvmVcpu, info: X86InstructionInfo, stage: X86InterceptStage, exception: X86Exception): number;
  handleExitIrqoff(vcpu: KvmVcpu): void;
  requestImmediateExit(vcpu: KvmVcpu): void;
  schedIn(vcpu: KvmVcpu, cpu: number): void;
  slotEnableLogDirty(kvm: Kvm, slot: KvmMemorySlot): void;
  slotDisableLogDirty(kvm: Kvm, slot: KvmMemorySlot): void;
  flushLogDirty(kvm: Kvm): void;
  enableLogDirtyPtMasked(kvm: Kvm, slot: KvmMemorySlot, gfnOffset: bigint, mask: bigint): void;
  writeLogDirty(vcpu: KvmVcpu, l2Gpa: bigint): number;
  readonly pmuOps: KvmPmuOps;
  readonly nestedOps: KvmX86NestedOps;
  preBlock(vcpu: KvmVcpu): number;
  postBlock(vcpu: KvmVcpu): void;
  vcpuBlocking(vcpu: KvmVcpu): void;
  vcpuUnblocking(vcpu: KvmVcpu): void;
  updatePiIrte(kvm: Kvm, hostIrq: number, guestIrq: number, set: boolean): number;
  apicvPostStateRestore(vcpu: KvmVcpu): void;
  dyApicvHasPendingInterrupt(vcpu: KvmVcpu): boolean;
  /** C's bool *expired out-parameter becomes part of the result. */
  setHvTimer(vcpu: KvmVcpu, guestDeadlineTsc: bigint): { result: number; expired: boolean };
  cancelHvTimer(vcpu: KvmVcpu): void;
  setupMce(vcpu: KvmVcpu): void;
  smiAllowed(vcpu: KvmVcpu, forInjection: boolean): number;
  preEnterSmm(vcpu: KvmVcpu, smstate: Uint8Array): number;
  preLeaveSmm(vcpu: KvmVcpu, smstate: Uint8Array): number;
  enableSmiWindow(vcpu: KvmVcpu): void;
  memEncOp(kvm: Kvm, argp: unknown): number;
  memEncRegRegion(kvm: Kvm, region: KvmEncRegion): number;
  memEncUnregRegion(kvm: Kvm, region: KvmEncRegion): number;
  getMsrFeature(entry: KvmMsrEntry): number;
  needEmulationOnPageFault(vcpu: KvmVcpu): boolean;
  apicInitSignalBlocked(vcpu: KvmVcpu): boolean;
  enableDirectTlbflush(vcpu: KvmVcpu): number;
  migrateTimers(vcpu: KvmVcpu): void;
}

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
/** Compile-time proof that HookSignatures and the table name the same 111 members. */
export const _SignaturesMatchTable: Same<keyof HookSignatures, OpName> = true;

/** The vendor contract, derived from the table: required members mandatory, optional ones not. */
export type X86Ops = { [K in RequiredOpName]: HookSignatures[K] } & { [K in OptionalOpName]?: HookSignatures[K] };
