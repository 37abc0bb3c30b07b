/**
 * arch/x86/kvm/x86.c, the parts the run loop needs: KVM_RUN (vcpu_run → vcpu_enter_guest),
 * event injection, exception queueing, instruction skipping and the dirty-log plumbing
 * between memslots, the MMU and the vendor's optional hooks.
 */
import { ExitFastpathCompletion, KvmMemorySlot, KvmReg, X86Vector } from '../ops/types';
import { kvmEmulateCpuid } from './cpuid';
import { KvmError } from './errors';
import { KvmExitReason, KvmInternalError } from './run';
import { KvmMpState, KvmReq, KvmVcpu } from './vcpu';
import type { Kvm } from './kvm';
import { KvmWaitResult } from '../irqchip/irq-source';
import { APIC_TASKPRI } from '../irqchip/apic-regs';

const X86_EFLAGS_IF = 1n << 9n;
/** In-kernel exits one KVM_RUN may handle before returning KVM_EXIT_INTR (bounds a livelock). */
export const MAX_EXITS_PER_RUN = 100_000;
const RFLAGS64 = new BigUint64Array(1);
const RFLAGS32 = new Uint32Array(RFLAGS64.buffer);
const X86_EFLAGS_RF = 1n << 16n;

// ---------------------------------------------------------------- exceptions

enum ExceptionClass { BENIGN, CONTRIBUTORY, PF }

function exceptionClass(nr: number): ExceptionClass {
  switch (nr) {
    case X86Vector.PF: return ExceptionClass.PF;
    case X86Vector.DE: case X86Vector.TS: case X86Vector.NP: case X86Vector.SS: case X86Vector.GP:
      return ExceptionClass.CONTRIBUTORY;
    default: return ExceptionClass.BENIGN;
  }
}

/** Vectors that push an error code (SDM Table 6-1). */
export function exceptionHasErrorCode(nr: number): boolean {
  return nr === 8 || (nr >= 10 && nr <= 14) || nr === 17 || nr === 21;
}

/** Faults (as opposed to traps) get RFLAGS.RF set on delivery (SDM 17.3.1.1). */
function exceptionIsFault(nr: number): boolean {
  return !(nr === X86Vector.DB || nr === X86Vector.BP || nr === X86Vector.OF || nr === X86Vector.NMI);
}

/** kvm_multiple_exception: queue, promoting to #DF or triple fault per SDM Table 6-5. */
export function kvmQueueException(vcpu: KvmVcpu, nr: number, errorCode?: number, payload?: bigint): void {
  const ex = vcpu.arch.exception;
  vcpu.makeRequest(KvmReq.EVENT);
  const hasErr = errorCode !== undefined || exceptionHasErrorCode(nr);
  if (!ex.pending && !ex.injected) {
    ex.pending = true;
    ex.injected = false;
    ex.nr = nr;
    ex.hasErrorCode = hasErr;
    ex.errorCode = errorCode ?? 0;
    ex.hasPayload = payload !== undefined;
    ex.payload = payload ?? 0n;
    return;
  }
  const prev = ex.nr;
  if (prev === X86Vector.DF) {
    vcpu.makeRequest(KvmReq.TRIPLE_FAULT);
    return;
  }
  const c1 = exceptionClass(prev);
  const c2 = exceptionClass(nr);
  if ((c1 === ExceptionClass.CONTRIBUTORY && c2 === ExceptionClass.CONTRIBUTORY) || (c1 === ExceptionClass.PF && c2 !== ExceptionClass.BENIGN)) {
    ex.pending = true;
    ex.injected = false;
    ex.nr = X86Vector.DF;
    ex.hasErrorCode = true;
    ex.errorCode = 0;
    ex.hasPayload = false;
  } else {
    // Replace the earlier one, hoping re-execution regenerates it (as KVM does).
    ex.pending = true;
    ex.injected = false;
    ex.nr = nr;
    ex.hasErrorCode = hasErr;
    ex.errorCode = errorCode ?? 0;
    ex.hasPayload = payload !== undefined;
    ex.payload = payload ?? 0n;
  }
}

/** kvm_requeue_exception: an exception that was being delivered when an exit happened. */
export function kvmRequeueException(vcpu: KvmVcpu, nr: number, hasErrorCode: boolean, errorCode: number): void {
  const ex = vcpu.arch.exception;
  vcpu.makeRequest(KvmReq.EVENT);
  ex.pending = false;
  ex.injected = true;
  ex.nr = nr;
  ex.hasErrorCode = hasErrorCode;
  ex.errorCode = errorCode;
  ex.hasPayload = false;
}

export function kvmClearExceptionQueue(vcpu: KvmVcpu): void {
  vcpu.arch.exception.pending = false;
  vcpu.arch.exception.injected = false;
}

/** kvm_queue_interrupt. */
export function kvmQueueInterrupt(vcpu: KvmVcpu, vector: number, soft: boolean): void {
  vcpu.arch.interrupt.injected = true;
  vcpu.arch.interrupt.soft = soft;
  vcpu.arch.interrupt.nr = vector;
}

export function kvmClearInterruptQueue(vcpu: KvmVcpu): void {
  vcpu.arch.interrupt.injected = false;
}

// ---------------------------------------------------------------- instruction skipping

/** kvm_skip_emulated_instruction: vendor skip, then single-step #DB if RFLAGS.TF was set. */
export function kvmSkipEmulatedInstruction(vcpu: KvmVcpu): number {
  const ops = vcpu.kvm.ops;
  const rflags = ops.getRflags(vcpu);
  const r = ops.skipEmulatedInstruction(vcpu);
  if (r) vcpu.cpu.retireSkipped();
  // RFLAGS.TF tested without a BigInt operation (a typed-array conversion, no allocation).
  RFLAGS64[0] = rflags;
  if (r && RFLAGS32[0] & 0x100) {
    // kvm_vcpu_do_singlestep: a trap-like #DB with DR6.BS after the instruction.
    vcpu.arch.dr6 = (vcpu.arch.dr6 & ~0x400fn) | 0x4000n;
    kvmQueueException(vcpu, X86Vector.DB, undefined, 0x4000n);
  }
  return r;
}

// ---------------------------------------------------------------- interrupts

/** kvm_cpu_has_injectable_intr for the userspace-irqchip case (and the in-kernel one, via irqSource). */
export function kvmCpuHasInjectableIntr(vcpu: KvmVcpu): boolean {
  if (vcpu.arch.pendingExternalVector >= 0) return true;
  return vcpu.kvm.irqSource?.hasInterrupt(vcpu) ?? false;
}

function kvmCpuGetInterrupt(vcpu: KvmVcpu): number {
  if (vcpu.arch.pendingExternalVector >= 0) {
    const v = vcpu.arch.pendingExternalVector;
    vcpu.arch.pendingExternalVector = -1;
    return v;
  }
  return vcpu.kvm.irqSource?.acknowledge(vcpu) ?? -1;
}

/** inject_pending_event (5.8 shape): re-inject what was in flight, else the highest-priority new event. */
function injectPendingEvent(vcpu: KvmVcpu): void {
  const a = vcpu.arch;
  const ops = vcpu.kvm.ops;
  if (a.exception.injected) {
    ops.queueException(vcpu);
  } else if (!a.exception.pending) {
    if (a.nmiInjected) ops.setNmi(vcpu);
    else if (a.interrupt.injected) ops.setIrq(vcpu);
  }
  if (a.exception.pending) {
    if (exceptionIsFault(a.exception.nr)) ops.setRflags(vcpu, ops.getRflags(vcpu) | X86_EFLAGS_RF);
    if (a.exception.nr === X86Vector.DB && (a.dr7 & (1n << 13n))) a.dr7 &= ~(1n << 13n);
    a.exception.pending = false;
    a.exception.injected = true;
    ops.queueException(vcpu);
    return;
  }
  if (a.exception.injected || a.nmiInjected || a.interrupt.injected) return;
  if (a.nmiPending && ops.nmiAllowed(vcpu, true) > 0) {
    a.nmiPending--;
    a.nmiInjected = true;
    ops.setNmi(vcpu);
  } else if (kvmCpuHasInjectableIntr(vcpu) && ops.interruptAllowed(vcpu, true) > 0) {
    const v = kvmCpuGetInterrupt(vcpu);
    if (v >= 0) {
      kvmQueueInterrupt(vcpu, v, false);
      vcpu.kvm.stats.irqInjections++;
      if (vcpu.kvm.tracing('kvm_inj_virq')) vcpu.kvm.trace('kvm_inj_virq', vcpu, `irq ${v}`);
      ops.setIrq(vcpu);
    }
  }
}

/** kvm_vcpu_ready_for_interrupt_injection. */
function readyForInterruptInjection(vcpu: KvmVcpu): boolean {
  return vcpu.kvm.ops.interruptAllowed(vcpu, false) > 0 && !vcpu.arch.interrupt.injected &&
    vcpu.arch.pendingExternalVector < 0 && !vcpu.arch.exception.pending && !vcpu.arch.exception.injected;
}

// ---------------------------------------------------------------- the run loop

/** vcpu_enter_guest. Returns 1 to stay in the loop, 0 to return to userspace. */
function vcpuEnterGuest(vcpu: KvmVcpu): number {
  const kvm = vcpu.kvm;
  const ops = kvm.ops;
  const run = vcpu.run;
  if (vcpu.requests) {
    if (vcpu.checkRequest(KvmReq.TRIPLE_FAULT)) {
      run.exitReason = KvmExitReason.KVM_EXIT_SHUTDOWN;
      return 0;
    }
    if (vcpu.checkRequest(KvmReq.LOAD_MMU_PGD)) ops.loadMmuPgd(vcpu, BigInt(kvm.mmu?.root ?? 0));
    if (vcpu.checkRequest(KvmReq.TLB_FLUSH)) ops.tlbFlushAll(vcpu);
    if (vcpu.checkRequest(KvmReq.TLB_FLUSH_CURRENT)) ops.tlbFlushCurrent(vcpu);
    vcpu.checkRequest(KvmReq.NMI);
  }
  const reqIntWin = !kvm.irqchipInKernel && run.requestInterruptWindow;
  if (vcpu.checkRequest(KvmReq.EVENT) || reqIntWin) {
    injectPendingEvent(vcpu);
    if (vcpu.arch.nmiPending) ops.enableNmiWindow(vcpu);
    if (kvmCpuHasInjectableIntr(vcpu) || reqIntWin) ops.enableIrqWindow(vcpu);
    updateCr8Intercept(vcpu);
  }
  ops.prepareGuestSwitch(vcpu);
  if (kvm.tracing('kvm_entry')) kvm.trace('kvm_entry', vcpu, () => `vcpu ${vcpu.vcpuId}`);
  let fastpath = ops.run(vcpu);
  kvm.stats.exits++;
  // The exit fastpath (KVM's EXIT_FASTPATH_REENTER_GUEST): the vendor handled the exit right
  // after it and the guest runs again at once, unless something needs the slow path first.
  while (fastpath === FASTPATH_REENTER_GUEST) {
    if (kvmVcpuExitRequest(vcpu)) {
      fastpath = FASTPATH_EXIT_HANDLED;
      break;
    }
    fastpath = ops.run(vcpu);
    kvm.stats.exits++;
  }
  ops.handleExitIrqoff(vcpu);
  const r = ops.handleExit(vcpu, fastpath);
  kvm.flushExitTrace();
  // HLT without an intercept leaves the processor asleep in guest mode (activity state HLT);
  // only an event wakes it. Wait as vcpu_block would instead of re-entering a sleeping CPU.
  if (r > 0 && vcpu.cpu.state.activity === 1) return haltedInGuestMode(vcpu);
  return r;
}

const FASTPATH_REENTER_GUEST = ExitFastpathCompletion.EXIT_FASTPATH_REENTER_GUEST;
const FASTPATH_EXIT_HANDLED = ExitFastpathCompletion.EXIT_FASTPATH_EXIT_HANDLED;

/**
 * kvm_vcpu_exit_request, for a re-entry from the exit fastpath: the guest may run again without
 * the slow path only if nothing the slow path does before an entry has work — no request
 * (events to inject, TLB flushes, …), no INIT/SIPI to accept and no TPR to sync, no timer due,
 * no interrupt window userspace waits for — and this KVM_RUN's slice is not spent. Timers that
 * fell due fire here (runExpired) exactly as vcpu_run would fire them before its next entry.
 */
function kvmVcpuExitRequest(vcpu: KvmVcpu): boolean {
  const kvm = vcpu.kvm;
  const run = vcpu.run;
  if (++vcpu.runExits >= MAX_EXITS_PER_RUN || vcpu.cpu.state.instructionsRetired - vcpu.runStartRetired >= vcpu.runBudget) return true;
  if (run.immediateExit || (!kvm.irqchipInKernel && run.requestInterruptWindow)) return true;
  // INIT/SIPI to accept (kvm_apic_accept_events). The TPR needs no sync here: no fastpath
  // handler writes CR8 (vcpuPreRun's syncCr8 is for the slow path's CR8 exits and SET_SREGS).
  const apic = vcpu.arch.apic;
  if (apic !== null && apic.pendingEvents !== 0) return true;
  kvm.clock.runExpired(vcpu);
  return vcpu.requests !== 0 || vcpu.arch.mpState !== KvmMpState.RUNNABLE;
}

/**
 * A fastpath handler's result (handle_fastpath_*): the instruction was emulated and skipped —
 * re-enter — or the skip needs userspace (a KVM_GUESTDBG single-step exit).
 */
function fastpathResult(r: number): ExitFastpathCompletion {
  return r > 0 ? FASTPATH_REENTER_GUEST : ExitFastpathCompletion.EXIT_FASTPATH_EXIT_USERSPACE;
}

/** handle_fastpath_invd: INVD is a no-op for KVM (caches are coherent); skip it. */
export function handleFastpathInvd(vcpu: KvmVcpu): ExitFastpathCompletion {
  return fastpathResult(vcpu.kvm.skipEmulatedInstruction(vcpu));
}

/**
 * CPUID on the exit fastpath (tsvisor; KVM 6.18 takes WRMSR, HLT, INVD and the preemption timer
 * there): kvm_emulate_cpuid needs nothing the slow path prepares — it reads RAX/RCX, answers
 * from the guest's CPUID table and skips the instruction.
 */
export function handleFastpathCpuid(vcpu: KvmVcpu): ExitFastpathCompletion {
  return fastpathResult(kvmEmulateCpuid(vcpu));
}

/**
 * update_cr8_intercept: with the local APIC in the kernel and enabled, tell the vendor the TPR
 * class (CR8) and the highest pending IRR class, so that a CR8 write that could unmask a
 * pending interrupt is seen — SVM intercepts CR8 writes only then (otherwise they land in
 * V_TPR), VMX sets the TPR threshold for its TPR shadow.
 */
function updateCr8Intercept(vcpu: KvmVcpu): void {
  const kvm = vcpu.kvm;
  if (!kvm.has('updateCr8Intercept')) return;
  const apic = kvm.irqchip?.lapic(vcpu);
  if (apic === undefined || !apic.enabled) return;
  const irr = apic.highestIrr();
  kvm.ops.updateCr8Intercept!(vcpu, apic.getReg(APIC_TASKPRI) >> 4, irr === -1 ? -1 : irr >> 4);
}

function haltedInGuestMode(vcpu: KvmVcpu): number {
  if (vcpuHasEvents(vcpu)) return 1;
  const wait = vcpu.kvm.irqSource?.waitForEvent(vcpu) ?? KvmWaitResult.HALT;
  if (wait === KvmWaitResult.WOKEN) {
    vcpu.makeRequest(KvmReq.EVENT);
    return 1;
  }
  vcpu.run.exitReason = wait === KvmWaitResult.YIELD ? KvmExitReason.KVM_EXIT_INTR : KvmExitReason.KVM_EXIT_HLT;
  return 0;
}

/** A halted vCPU wakes for an interrupt it can take or an NMI (kvm_vcpu_has_events). */
function vcpuHasEvents(vcpu: KvmVcpu): boolean {
  const a = vcpu.arch;
  if (a.nmiPending || a.exception.pending) return true;
  if (kvmCpuHasInjectableIntr(vcpu) && vcpu.kvm.ops.interruptAllowed(vcpu, false) > 0) return true;
  return false;
}

/** vcpu_block: in-kernel HLT. Without a way to wake, return to userspace with KVM_EXIT_HLT. */
function vcpuBlock(vcpu: KvmVcpu): number {
  const ops = vcpu.kvm.ops;
  if (vcpu.kvm.has('preBlock') && ops.preBlock!(vcpu) !== 0) {
    vcpu.arch.mpState = KvmMpState.RUNNABLE;
    return 1;
  }
  ops.vcpuBlocking?.(vcpu);
  // A vCPU waiting for SIPI is not woken by interrupts or NMIs, only by the SIPI itself.
  const wait = vcpu.arch.mpState === KvmMpState.HALTED && vcpuHasEvents(vcpu)
    ? KvmWaitResult.WOKEN
    : (vcpu.kvm.irqSource?.waitForEvent(vcpu) ?? KvmWaitResult.HALT);
  ops.vcpuUnblocking?.(vcpu);
  ops.postBlock?.(vcpu);
  if (wait === KvmWaitResult.WOKEN) {
    vcpu.arch.mpState = KvmMpState.RUNNABLE;
    vcpu.makeRequest(KvmReq.EVENT);
    return 1;
  }
  // YIELD: not woken yet but something may still wake it — let userspace run the other vCPUs.
  vcpu.run.exitReason = wait === KvmWaitResult.YIELD ? KvmExitReason.KVM_EXIT_INTR : KvmExitReason.KVM_EXIT_HLT;
  return 0;
}

/** KVM_RUN: kvm_arch_vcpu_ioctl_run → vcpu_run. JavaScript errors never escape: they become INTERNAL_ERROR. */
export function vcpuRun(vcpu: KvmVcpu) {
  const kvm = vcpu.kvm;
  const run = vcpu.run;
  if (kvm.memslots.all().length === 0) {
    throw new KvmError('EFAULT', 'KVM_RUN: the VM has no memory (set a memory region first)');
  }
  if (vcpu.dead) {
    run.exitReason = KvmExitReason.KVM_EXIT_INTERNAL_ERROR;
    return run;
  }
  kvm.ops.vcpuLoad(vcpu, 0);
  const prevVcpu = kvm.currentVcpu;
  kvm.currentVcpu = vcpu;
  try {
    let r = 1;
    // The instruction userspace completed (an IN/OUT, an MMIO access) retires now and counts
    // against this KVM_RUN's budget.
    const start = vcpu.cpu.state.instructionsRetired;
    if (vcpu.arch.completeUserspaceIo) {
      const cui = vcpu.arch.completeUserspaceIo;
      vcpu.arch.completeUserspaceIo = null;
      r = cui(vcpu);
    }
    if (r > 0 && (run.immediateExit || vcpu.cpu.state.instructionsRetired - start >= vcpu.runBudget)) {
      run.exitReason = KvmExitReason.KVM_EXIT_INTR;
      r = 0;
    }
    kvm.clock.beginRun(vcpu, start);
    vcpu.runStartRetired = start;
    vcpu.runExits = 0;
    while (r > 0) {
      // kvm_apic_accept_events (INIT/SIPI), then timers that are due (instruction-boundary granularity).
      kvm.irqchip?.vcpuPreRun(vcpu);
      kvm.clock.runExpired(vcpu);
      r = vcpu.arch.mpState === KvmMpState.RUNNABLE ? vcpuEnterGuest(vcpu) : vcpuBlock(vcpu);
      if (r <= 0) break;
      if (!kvm.irqchipInKernel && run.requestInterruptWindow && readyForInterruptInjection(vcpu)) {
        run.exitReason = KvmExitReason.KVM_EXIT_IRQ_WINDOW_OPEN;
        break;
      }
      // The time slice ran out — in retired instructions, or in exits handled in the kernel for
      // a guest that makes no progress (an exception storm retires nothing): as if a signal
      // were pending, so KVM_RUN always returns and userspace's limits apply.
      if (vcpu.cpu.state.instructionsRetired - start >= vcpu.runBudget || ++vcpu.runExits >= MAX_EXITS_PER_RUN) {
        run.exitReason = KvmExitReason.KVM_EXIT_INTR;
        break;
      }
    }
    if (r < 0) internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, `handleExit returned ${r}`);
  } catch (e) {
    // Nothing a guest or a backend does may throw out of KVM_RUN: a JavaScript exception here is
    // a host bug, reported as an internal error and marked as such for fuzzers and tests.
    const err = e as Error;
    const text = `${err?.name ?? 'Error'}: ${err?.message ?? String(e)}`;
    internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_EMULATION, text);
    run.hostError = text;
    vcpu.dead = true;
  } finally {
    kvm.currentVcpu = prevVcpu;
    postKvmRunSave(vcpu);
    kvm.ops.vcpuPut(vcpu);
  }
  return run;
}

export function internalError(vcpu: KvmVcpu, suberror: KvmInternalError, message: string): void {
  const run = vcpu.run;
  run.exitReason = KvmExitReason.KVM_EXIT_INTERNAL_ERROR;
  run.internal.suberror = suberror;
  run.internal.data = [];
  run.internalMessage = message;
}

/** post_kvm_run_save. */
function postKvmRunSave(vcpu: KvmVcpu): void {
  const run = vcpu.run;
  try {
    run.ifFlag = (vcpu.kvm.ops.getRflags(vcpu) & X86_EFLAGS_IF) !== 0n;
    run.cr8 = vcpu.arch.cr8;
    run.apicBase = vcpu.arch.apicBase;
    run.readyForInterruptInjection = readyForInterruptInjection(vcpu);
  } catch {
    // A backend that cannot even report RFLAGS has already produced an internal error.
  }
}

// ---------------------------------------------------------------- reset

/** kvm_vcpu_reset: architectural state after RESET/INIT (SDM Table 9-1), then the vendor's reset. */
export function vcpuReset(vcpu: KvmVcpu, initEvent: boolean): void {
  const a = vcpu.arch;
  a.nmiPending = 0;
  a.nmiInjected = false;
  kvmClearExceptionQueue(vcpu);
  kvmClearInterruptQueue(vcpu);
  a.pendingExternalVector = -1;
  a.dr6 = 0xffff0ff0n;
  a.dr7 = 0x400n;
  a.db = [0n, 0n, 0n, 0n];
  a.cr2 = 0n;
  a.xcr0 = 1n;
  if (!initEvent) {
    a.pat = 0x0007040600070406n;
    a.efer = 0n;
    a.miscEnable = 1n;
  }
  a.regs.fill(0n);
  // EDX after reset holds the processor signature (SDM 9.1.4).
  a.regs[KvmReg.RDX] = 0x600n;
  a.regsAvail = (1 << 17) - 1;
  a.regsDirty = (1 << 17) - 1;
  a.mpState = vcpu.vcpuId === 0 || !initEvent ? KvmMpState.RUNNABLE : KvmMpState.INIT_RECEIVED;
  vcpu.kvm.irqchip?.lapicReset(vcpu, initEvent);
  vcpu.kvm.ops.vcpuReset(vcpu, initEvent);
  // kvm_mmu_reset_context: the vendor reset may have cleared the TDP root (SVM's init_vmcb zeroes N_CR3).
  vcpu.makeRequest(KvmReq.EVENT | KvmReq.TLB_FLUSH | KvmReq.LOAD_MMU_PGD);
}

// ---------------------------------------------------------------- memslots and dirty logging

export function memslotsChanged(vcpu: KvmVcpu): void {
  vcpu.makeRequest(KvmReq.TLB_FLUSH);
  vcpu.kvm.mmu?.memslotsChanged();
}

/** kvm_mmu_slot_apply_flags, logging turned on. */
export function slotEnableLogDirty(kvm: Kvm, slot: KvmMemorySlot): void {
  if (kvm.has('slotEnableLogDirty')) kvm.ops.slotEnableLogDirty!(kvm, slot);
  else kvm.mmu?.slotRemoveWriteAccess(slot);
  flushRemoteTlbs(kvm);
}

/** kvm_mmu_slot_apply_flags, logging off (also called for a new slot without logging). */
export function slotDisableLogDirty(kvm: Kvm, slot: KvmMemorySlot): void {
  if (kvm.has('slotDisableLogDirty')) kvm.ops.slotDisableLogDirty!(kvm, slot);
}

/** kvm_flush_remote_tlbs: the vendor's remote flush when it has one, else a TLB_FLUSH request to every vCPU. */
export function flushRemoteTlbs(kvm: Kvm): void {
  if (kvm.has('tlbRemoteFlush') && kvm.ops.tlbRemoteFlush!(kvm) === 0) return;
  for (const v of kvm.vcpus) v.makeRequest(KvmReq.TLB_FLUSH);
}

const ALL_PAGES_MASK = 0xffff_ffff_ffff_ffffn;

/**
 * kvm_get_dirty_log_protect: drain hardware logs, copy and clear the bitmap, and re-arm the
 * collected pages one 64-page word at a time (kvm_arch_mmu_enable_log_dirty_pt_masked: PML
 * clears their D bits, otherwise they are write-protected again). Words with no bit set cost
 * nothing; one TLB flush at the end if anything was re-armed.
 */
export function getDirtyLogProtect(kvm: Kvm, slot: KvmMemorySlot): Uint32Array {
  if (kvm.has('flushLogDirty')) kvm.ops.flushLogDirty!(kvm);
  const bm = slot.dirtyBitmap!;
  const copy = bm.slice();
  const n = bm.length;
  const vendor = kvm.has('enableLogDirtyPtMasked');
  let any = false;
  for (let w = 0; w < n; w += 2) {
    // A 64-bit bitmap word (BITS_PER_LONG) as two 32-bit halves.
    const lo = bm[w];
    const hi = w + 1 < n ? bm[w + 1] : 0;
    if ((lo | hi) === 0) continue;
    bm[w] = 0;
    if (w + 1 < n) bm[w + 1] = 0;
    any = true;
    if (vendor) {
      // The hook takes KVM's gfn_t and unsigned long as bigint; a full word (every page dirty) needs no conversion.
      const mask = (lo & hi) === -1 ? ALL_PAGES_MASK : (BigInt(hi) << 32n) | BigInt(lo);
      kvm.ops.enableLogDirtyPtMasked!(kvm, slot, BigInt(w * 32), mask);
    }
    else kvm.mmu?.writeProtectPtMasked(slot, w * 32, lo, hi);
  }
  if (any) flushRemoteTlbs(kvm);
  return copy;
}
