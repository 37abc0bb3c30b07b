/**
 * Exit handlers both vendors share (x86.c's kvm_emulate_*): HLT, hypercalls, MMIO through
 * instruction emulation, TDP faults.
 */
import { EmulationResult, MmioBus } from '../cpu/x86-cpu';
import { TdpFaultResult } from '../mmu/tdp';
import { KvmReg, X86Vector } from '../ops/types';
import { kvmQueueException } from './x86';
import { KvmExitReason, KvmInternalError } from './run';
import { KvmMpState, KvmVcpu } from './vcpu';
import { internalError } from './x86';
import { withEmulatorState } from './emulator-state';

/** KVM_HC_* hypercall numbers (include/uapi/linux/kvm_para.h). */
export const KVM_HC_VAPIC_POLL_IRQ = 1;
export const KVM_HC_KICK_CPU = 5;
export const KVM_HC_SEND_IPI = 10;
export const KVM_ENOSYS = 1000n;
export const KVM_EPERM = 1n;

/** kvm_vcpu_halt / kvm_emulate_halt: skip HLT, then block in kernel or exit to userspace. */
export function kvmEmulateHalt(vcpu: KvmVcpu): number {
  const ret = vcpu.kvm.skipEmulatedInstruction(vcpu);
  vcpu.kvm.stats.haltExits++;
  if (vcpu.kvm.irqchipInKernel) {
    vcpu.arch.mpState = KvmMpState.HALTED;
    return ret;
  }
  vcpu.run.exitReason = KvmExitReason.KVM_EXIT_HLT;
  return 0;
}

/**
 * kvm_emulate_hypercall: RAX = nr, RBX/RCX/RDX/RSI = args; result in RAX. CPL > 0 gets
 * -KVM_EPERM; unknown numbers -KVM_ENOSYS (as 64-bit two's complement).
 */
export function kvmEmulateHypercall(vcpu: KvmVcpu): number {
  const kvm = vcpu.kvm;
  kvm.stats.hypercalls++;
  const nr = vcpu.registerRead(KvmReg.RAX);
  let ret: bigint;
  if (kvm.ops.getCpl(vcpu) !== 0) {
    ret = -KVM_EPERM;
  } else {
    switch (Number(nr & 0xffffffffn)) {
      case KVM_HC_VAPIC_POLL_IRQ:
        ret = 0n;
        break;
      case KVM_HC_KICK_CPU: {
        const apicId = Number(vcpu.registerRead(KvmReg.RCX) & 0xffffffffn);
        const target = kvm.vcpus.find((v) => v.vcpuId === apicId);
        if (target && target.arch.mpState === KvmMpState.HALTED) target.arch.mpState = KvmMpState.RUNNABLE;
        ret = 0n;
        break;
      }
      default:
        ret = -KVM_ENOSYS;
    }
  }
  if (kvm.tracing('kvm_hypercall')) kvm.trace('kvm_hypercall', vcpu, () => `nr 0x${nr.toString(16)} ret 0x${BigInt.asUintN(64, ret).toString(16)}`);
  vcpu.registerWrite(KvmReg.RAX, BigInt.asUintN(64, ret));
  return kvm.skipEmulatedInstruction(vcpu);
}

/** Routes the emulator's MMIO to in-kernel devices, else prepares KVM_EXIT_MMIO. */
class VcpuMmioBus implements MmioBus {
  exitNeeded = false;
  constructor(private readonly vcpu: KvmVcpu) {}
  read(gpa: bigint, size: number, out: Uint8Array): boolean {
    const v = this.vcpu;
    for (const c of v.arch.mmioReads) {
      if (c.gpa === gpa && c.len === size) {
        out.set(c.data.subarray(0, size));
        return true;
      }
    }
    if (gpa < 2n ** 52n && v.kvm.mmioBus.read(Number(gpa), size, out)) return true;
    const run = v.run;
    run.exitReason = KvmExitReason.KVM_EXIT_MMIO;
    run.mmio.physAddr = gpa;
    run.mmio.len = size;
    run.mmio.isWrite = false;
    run.mmio.data.fill(0);
    this.exitNeeded = true;
    return false;
  }
  write(gpa: bigint, size: number, data: Uint8Array): void {
    const v = this.vcpu;
    if (gpa < 2n ** 52n && v.kvm.mmioBus.write(Number(gpa), size, data)) return;
    if (this.exitNeeded) return; // one userspace exit per instruction; a second write is a split access
    const run = v.run;
    run.exitReason = KvmExitReason.KVM_EXIT_MMIO;
    run.mmio.physAddr = gpa;
    run.mmio.len = size;
    run.mmio.isWrite = true;
    run.mmio.data.fill(0);
    run.mmio.data.set(data.subarray(0, Math.min(8, size)));
    this.exitNeeded = true;
  }
}

/**
 * x86_emulate_instruction for MMIO: run the instruction at RIP through the processor's
 * emulator. Returns 1 to re-enter, 0 for a KVM_EXIT_MMIO to userspace.
 */
export function kvmEmulateInstruction(vcpu: KvmVcpu): number {
  const kvm = vcpu.kvm;
  const cpu = vcpu.cpu;
  const bus = new VcpuMmioBus(vcpu);
  const rip = vcpu.rip;
  if (vcpu.arch.mmioReadsRip !== rip) {
    vcpu.arch.mmioReads.length = 0;
    vcpu.arch.mmioReadsRip = rip;
  }
  const res = withEmulatorState(vcpu, () => cpu.emulateInstruction(bus));
  if (res !== EmulationResult.NEEDS_USERSPACE_READ) {
    vcpu.arch.mmioReads.length = 0;
    vcpu.arch.mmioReadsRip = -1n;
  }
  switch (res) {
    case EmulationResult.DONE:
      if (bus.exitNeeded) {
        kvm.stats.mmioExits++;
        if (kvm.tracing('kvm_mmio')) kvm.trace('kvm_mmio', vcpu, () => `mmio write 0x${vcpu.run.mmio.physAddr.toString(16)} len ${vcpu.run.mmio.len}`);
        return 0;
      }
      return 1;
    case EmulationResult.NEEDS_USERSPACE_READ: {
      kvm.stats.mmioExits++;
      if (kvm.tracing('kvm_mmio')) kvm.trace('kvm_mmio', vcpu, () => `mmio read 0x${vcpu.run.mmio.physAddr.toString(16)} len ${vcpu.run.mmio.len}`);
      // complete_emulated_mmio: on return, cache the data and re-execute the instruction.
      vcpu.arch.completeUserspaceIo = (v) => {
        // Bounded: one fragment per exit, and an instruction reads at most a few.
        if (v.arch.mmioReads.length >= 16) {
          internalError(v, KvmInternalError.KVM_INTERNAL_ERROR_EMULATION, 'an emulated instruction read more than 16 MMIO fragments');
          return 0;
        }
        v.arch.mmioReads.push({ gpa: v.run.mmio.physAddr, len: v.run.mmio.len, data: v.run.mmio.data.slice() });
        return kvmEmulateInstruction(v);
      };
      return 0;
    }
    case EmulationResult.EXCEPTION:
      return 1;
    default:
      internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_EMULATION, `cannot emulate the instruction at RIP 0x${vcpu.rip.toString(16)}`);
      return 0;
  }
}

/** PFERR_* bits of the fault error code core's MMU receives. */
export const PFERR_PRESENT_MASK = 1;
export const PFERR_WRITE_MASK = 2;
export const PFERR_USER_MASK = 4;
export const PFERR_RSVD_MASK = 8;
export const PFERR_FETCH_MASK = 16;

/**
 * kvm_mmu_page_fault for TDP faults (EPT violation / #NPF): map the page, or emulate MMIO.
 * `mmio` is the vendor's fast-path verdict (EPT misconfiguration / NPF with RSVD set).
 */
export function kvmMmuPageFault(vcpu: KvmVcpu, gpa: bigint, errorCode: number, mmio = false): number {
  const kvm = vcpu.kvm;
  if (kvm.tracing('kvm_page_fault')) kvm.trace('kvm_page_fault', vcpu, () => `address 0x${gpa.toString(16)} error_code 0x${errorCode.toString(16)}`);
  if (!mmio && kvm.mmu) {
    const r = kvm.mmu.pageFault(gpa, (errorCode & PFERR_WRITE_MASK) !== 0);
    if (r === TdpFaultResult.RETRY) {
      // No flush: a TDP fault leaves no translation for the faulting access behind (SDM 28.3.3.1;
      // the processor caches only translations that succeeded), and a cached entry with fewer
      // permissions than the access needs misses again. KVM's fast_page_fault does the same.
      return 1;
    }
  }
  // The access was part of delivering an event (the backend re-queued it from the IDT-vectoring
  // information): the guest's IDT, stack or TSS is in MMIO. Emulating the instruction at RIP
  // would not deliver the event, and re-entering would fault again forever — KVM reports
  // KVM_INTERNAL_ERROR_DELIVERY_EV here (vmx_handle_exit's vectoring check).
  const a = vcpu.arch;
  if (a.exception.injected || a.nmiInjected || a.interrupt.injected) {
    internalError(vcpu, KvmInternalError.KVM_INTERNAL_ERROR_DELIVERY_EV,
      `event delivery touched guest-physical 0x${gpa.toString(16)}, which is not RAM (an IDT, stack or TSS in MMIO)`);
    return 0;
  }
  return kvmEmulateInstruction(vcpu);
}

/** kvm_inject_gp / kvm_queue_exception conveniences. */
export function kvmInjectGp(vcpu: KvmVcpu, errorCode = 0): void {
  kvmQueueException(vcpu, X86Vector.GP, errorCode);
}
export function kvmQueueUd(vcpu: KvmVcpu): void {
  kvmQueueException(vcpu, X86Vector.UD);
}
