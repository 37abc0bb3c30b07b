/**
 * #VMEXIT stores GDTR/IDTR, EFER, CR0/CR3/CR4, DR7, the VMLOAD/VMSAVE MSRs, DBGCTL and G_PAT into
 * the VMCB save area (APM 15.6). The emulated hardware skips those stores when the previous
 * #VMEXIT stored them into the same VMCB, nothing wrote those slots through the Vmcb accessors
 * since, and the processor wrote none of those registers (CpuState.sysWrites). This test pins
 * down that guest writes to CR0, CR3, CR4, EFER, IA32_SYSENTER_ESP and LSTAR (not intercepted)
 * between two exits are in the VMCB after the second.
 */
import { KvmExitReason, KvmVcpu } from '@tsvisor/core';
import { svmOf, VMCB_SAVE } from '@tsvisor/svm';
import { BENCH_RESULT_PORT, buildLongModeGuest, eax } from '@tsvisor/testkit';
import { runWithCpuidHooks } from './helpers';

/** CPUID ×3; CR0.TS, CR4.OSXMMEXCPT, EFER.NXE set, SYSENTER_ESP written; CPUID ×3; CR3.PWT set; CPUID ×3, report, HLT. */
function run(atExit: (vcpu: KvmVcpu, n: number) => void) {
  const guest = buildLongModeGuest((a) => {
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    a.db([0x0f, 0x20, 0xc0, 0x48, 0x83, 0xc8, 0x08, 0x0f, 0x22, 0xc0]); // mov rax, cr0; or rax, 8; mov cr0, rax
    a.db([0x0f, 0x20, 0xe0, 0x48, 0x0d, 0x00, 0x04, 0x00, 0x00, 0x0f, 0x22, 0xe0]); // mov rax, cr4; or rax, 0x400; mov cr4, rax
    a.db([0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32, 0x0d, 0x00, 0x08, 0x00, 0x00, 0x0f, 0x30]); // EFER.NXE = 1
    a.db([0xb9, 0x75, 0x01, 0x00, 0x00, 0xb8, 0x78, 0x56, 0x34, 0x12, 0x31, 0xd2, 0x0f, 0x30]); // wrmsr SYSENTER_ESP = 0x12345678
    // CPUID exits after the writes KVM may intercept, then one it does not (NPT: MOV to CR3), so
    // the exit after it is the first to see it, with no VMCB write in between.
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    a.db([0x0f, 0x20, 0xd8, 0x48, 0x83, 0xc8, 0x08, 0x0f, 0x22, 0xd8]); // mov rax, cr3; or rax, 8; mov cr3, rax
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    // LSTAR is not intercepted (KVM passes the VMLOAD/VMSAVE MSRs through): only the processor
    // knows of this write until the next #VMEXIT stores it.
    a.db([0xb9, 0x82, 0x00, 0x00, 0xc0, 0xb8, 0x60, 0x45, 0x23, 0x81, 0xba, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x30]); // wrmsr LSTAR = 0xffffffff81234560
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    a.mov(eax, 7);
    a.db([0xba, BENCH_RESULT_PORT & 0xff, BENCH_RESULT_PORT >> 8, 0, 0, 0xef]); // mov edx, port; out dx, eax
    a.cli().hlt();
  });
  return runWithCpuidHooks(guest, atExit, () => {});
}

describe('SVM: guest system registers at #VMEXIT', () => {
  test('CR0, CR3, CR4, EFER, SYSENTER_ESP and LSTAR written between two exits are in the VMCB after the second', () => {
    const seen: bigint[][] = [];
    const { vcpu, out, reports } = run((v) => {
      const vmcb = svmOf(v).vmcb;
      seen.push([VMCB_SAVE.CR0, VMCB_SAVE.CR3, VMCB_SAVE.CR4, VMCB_SAVE.EFER, VMCB_SAVE.SYSENTER_ESP, VMCB_SAVE.LSTAR].map((f) => vmcb.read64(f)));
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(reports).toEqual([7]);
    expect(seen).toHaveLength(12);
    for (const r of seen.slice(0, 9)) expect(r[5]).not.toBe(0xffffffff81234560n);
    for (const r of seen.slice(9)) expect(r[5]).toBe(0xffffffff81234560n);
    const bits = (r: bigint[]) => [r[0] & 8n, r[1] & 8n, r[2] & 0x400n, r[3] & 0x800n, r[4]];
    for (const r of seen.slice(0, 3)) expect(bits(r)).not.toEqual([8n, 8n, 0x400n, 0x800n, 0x12345678n]);
    for (const r of seen.slice(3, 6)) expect(bits(r)).toEqual([8n, 0n, 0x400n, 0x800n, 0x12345678n]);
    for (const r of seen.slice(6)) expect(bits(r)).toEqual([8n, 8n, 0x400n, 0x800n, 0x12345678n]);
    const sr = vcpu.getSregs();
    expect([sr.cr0 & 8n, sr.cr3 & 8n, sr.cr4 & 0x400n, sr.efer & 0x800n]).toEqual([8n, 8n, 0x400n, 0x800n]);
  });
});
