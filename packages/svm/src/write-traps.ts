/**
 * The trap-like write intercepts: EFER_WRITE_TRAP (0x8F) and CR0–15 write traps (0x90–0x9F),
 * AMD APM Vol. 2 15.35 (SEV-ES) and Table B-1 (intercept vector 4, bits 15 and 31:16). Unlike
 * the CR write intercepts (0x10 + n), which stop the guest *before* MOV CR executes, a trap is
 * taken after the write completed: the guest's register already holds the new value, which
 * EXITINFO1 repeats, and RIP points past the instruction. KVM enables them for SEV-ES guests
 * (sev_es_init_vmcb), whose state it cannot read, to learn about CR0/CR4/CR8/EFER changes; the
 * emulated hardware takes them whenever the intercept bits are set.
 *
 * cr_trap / efer_trap (svm.c): the handlers only bring KVM's view up to date. The instruction is
 * not skipped again (KVM's skip is a no-op for SEV-ES; here RIP is already past it), and an
 * error from the update is reported as #GP, as kvm_complete_insn_gp does.
 */
import { KvmReq, KvmVcpu, MSR, X86Vector, EFER_SVME, kvmQueueException, kvmSetMsrCommon } from '@tsvisor/core';
import { VMCB_CONTROL } from './vmcb/layout';
import { SvmExit } from './vmcb/exit-codes';
import type { VcpuSvm } from './vcpu-svm';
import { kvmSetCr8 } from './cr';

const CR0_PE = 1n, CR0_WP = 1n << 16n, CR0_PG = 1n << 31n;
const CR4_PSE = 1n << 4n, CR4_PAE = 1n << 5n, CR4_PGE = 1n << 7n, CR4_PCIDE = 1n << 17n, CR4_SMEP = 1n << 20n;

/** kvm_complete_insn_gp for an instruction that has already retired: #GP on error, nothing to skip. */
function completeTrap(vcpu: KvmVcpu, err: number): number {
  if (err) kvmQueueException(vcpu, X86Vector.GP, 0);
  return 1;
}

/** kvm_post_set_cr0: a change of paging-relevant bits flushes the current context. */
function kvmPostSetCr0(vcpu: KvmVcpu, oldCr0: bigint, cr0: bigint): void {
  if ((oldCr0 ^ cr0) & (CR0_PG | CR0_WP | CR0_PE)) vcpu.makeRequest(KvmReq.TLB_FLUSH_CURRENT);
}

/** kvm_post_set_cr4. */
function kvmPostSetCr4(vcpu: KvmVcpu, oldCr4: bigint, cr4: bigint): void {
  if ((oldCr4 ^ cr4) & (CR4_PGE | CR4_PAE | CR4_PSE | CR4_PCIDE | CR4_SMEP)) vcpu.makeRequest(KvmReq.TLB_FLUSH_CURRENT);
}

/** cr_trap: EXITCODE - 0x90 is the CR, EXITINFO1 its new value. KVM handles CR0, CR4 and CR8. */
export function crTrap(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const newValue = svm.vmcb.read64(VMCB_CONTROL.EXITINFO1);
  const cr = Number(svm.vmcb.read64(VMCB_CONTROL.EXITCODE)) - SvmExit.CR0_WRITE_TRAP;
  let err = 0;
  switch (cr) {
    case 0: {
      const old = vcpu.arch.cr0;
      // svm_set_cr0 sees the old CR0.PG in vcpu.arch.cr0 and activates/deactivates long mode as the write did.
      vcpu.kvm.ops.setCr0(vcpu, newValue);
      vcpu.arch.cr0 = newValue;
      kvmPostSetCr0(vcpu, old, newValue);
      break;
    }
    case 4: {
      const old = vcpu.arch.cr4;
      vcpu.kvm.ops.setCr4(vcpu, newValue);
      vcpu.arch.cr4 = newValue;
      kvmPostSetCr4(vcpu, old, newValue);
      break;
    }
    case 8:
      err = kvmSetCr8(vcpu, newValue);
      break;
    default:
      // KVM: WARN("unhandled CR%d write trap") and #UD.
      vcpu.kvm.trace('kvm_cr', vcpu, () => `unhandled CR${cr} write trap`);
      kvmQueueException(vcpu, X86Vector.UD);
      return 1;
  }
  return completeTrap(vcpu, err);
}

/**
 * efer_trap: kvm_set_msr_common(EFER, EXITINFO1 & ~SVME) as a guest write. SVME is dropped
 * because svm_set_efer always sets it in the VMCB while the guest's CPUID need not offer SVM.
 */
export function eferTrap(vcpu: KvmVcpu, svm: VcpuSvm): number {
  const data = svm.vmcb.read64(VMCB_CONTROL.EXITINFO1) & ~EFER_SVME;
  return completeTrap(vcpu, kvmSetMsrCommon(vcpu, { hostInitiated: false, index: MSR.EFER, data }));
}
