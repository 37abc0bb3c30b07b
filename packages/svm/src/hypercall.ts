/**
 * Hypercalls on SVM: the native instruction is VMMCALL (0F 01 D9). A guest built for Intel
 * executes VMCALL (0F 01 C1), which an AMD processor answers with #UD; KVM intercepts #UD,
 * its emulator recognises VMCALL, rewrites it to VMMCALL (kvm_fix_hypercall → patch_hypercall)
 * and lets the guest re-execute it, which then exits as an ordinary VMMCALL intercept.
 */
import { KvmVcpu, X86Vector, kvmQueueException } from '@tsvisor/core';
import type { VcpuSvm } from './vcpu-svm';
import { readGuestInstruction, writeGuestPhys } from './guest-memory';

export const VMMCALL_BYTES = Uint8Array.of(0x0f, 0x01, 0xd9);
export const VMCALL_BYTES = Uint8Array.of(0x0f, 0x01, 0xc1);

/** svm_patch_hypercall. */
export function svmPatchHypercall(_vcpu: KvmVcpu, hypercallAddr: Uint8Array): void {
  hypercallAddr.set(VMMCALL_BYTES);
}

/** ud_interception (EMULTYPE_TRAP_UD): fix VMCALL, reflect anything else. */
export function svmHandleUd(vcpu: KvmVcpu, _svm: VcpuSvm): number {
  const insn = readGuestInstruction(vcpu, 3);
  if (insn && insn.bytes.length === 3 && insn.bytes.every((b, i) => b === VMCALL_BYTES[i])) {
    const patched = new Uint8Array(3);
    vcpu.kvm.ops.patchHypercall(vcpu, patched);
    if (writeGuestPhys(vcpu, insn.gpa, patched)) {
      vcpu.arch.hypercallsPatched++;
      vcpu.kvm.trace('kvm_hypercall', vcpu, () => `patched VMCALL at gpa 0x${insn.gpa.toString(16)}`);
      // RIP stays: the guest re-executes the now-native instruction.
      return 1;
    }
  }
  kvmQueueException(vcpu, X86Vector.UD);
  return 1;
}
