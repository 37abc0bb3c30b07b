/**
 * VM exit stores CR3, GDTR/IDTR, SYSENTER_CS/ESP/EIP and, as the exit controls ask, EFER, PAT,
 * DR7 and DEBUGCTL (SDM 28.3.1, 28.3.2). The exit path skips those stores when the VMCS still
 * holds what the previous exit stored (no VMWRITE since) and the processor wrote none of those
 * registers since (CpuState.sysWrites): this test pins down that guest writes to CR0, CR3, CR4,
 * EFER and IA32_SYSENTER_ESP between two exits reach the VMCS (or KVM's view of it).
 */
import { BackendClass, KvmExitReason, KvmVcpu } from '@tsvisor/core';
import { F, toVmx, VmxBackend } from '@tsvisor/vmx';
import { BENCH_RESULT_PORT, bootGuest, buildLongModeGuest, eax, runUntilStop } from '@tsvisor/testkit';

/** CPUID ×3; CR0.TS, CR3.PWT, CR4.OSXMMEXCPT, EFER.NXE set and SYSENTER_ESP written; CPUID ×3, report, HLT. */
function run(atExit: (vcpu: KvmVcpu) => void) {
  const guest = buildLongModeGuest((a) => {
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    a.db([0x0f, 0x20, 0xc0, 0x48, 0x83, 0xc8, 0x08, 0x0f, 0x22, 0xc0]); // mov rax, cr0; or rax, 8; mov cr0, rax
    a.db([0x0f, 0x20, 0xd8, 0x48, 0x83, 0xc8, 0x08, 0x0f, 0x22, 0xd8]); // mov rax, cr3; or rax, 8; mov cr3, rax
    a.db([0x0f, 0x20, 0xe0, 0x48, 0x0d, 0x00, 0x04, 0x00, 0x00, 0x0f, 0x22, 0xe0]); // mov rax, cr4; or rax, 0x400; mov cr4, rax
    a.db([0xb9, 0x75, 0x01, 0x00, 0x00, 0xb8, 0x78, 0x56, 0x34, 0x12, 0x31, 0xd2, 0x0f, 0x30]); // wrmsr SYSENTER_ESP = 0x12345678
    a.db([0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32, 0x0d, 0x00, 0x08, 0x00, 0x00, 0x0f, 0x30]); // EFER.NXE = 1
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    a.mov(eax, 7);
    a.db([0xba, BENCH_RESULT_PORT & 0xff, BENCH_RESULT_PORT >> 8, 0, 0, 0xef]); // mov edx, port; out dx, eax
    a.cli().hlt();
  });
  const { vcpu } = bootGuest(VmxBackend as unknown as BackendClass, guest);
  vcpu.kvm.setTrace(new Set(['kvm_exit']), () => atExit(vcpu));
  const results: number[] = [];
  const out = runUntilStop(vcpu, { ports: { [BENCH_RESULT_PORT]: { out: (_p, _s, v) => void results.push(v) } } });
  return { vcpu, out, results };
}

describe('VMX: guest system registers at VM exit', () => {
  test('CR0, CR3, CR4, EFER and SYSENTER_ESP written between two exits are stored by the second', () => {
    const seen: { cr3: bigint; esp: bigint }[] = [];
    const { vcpu, out, results } = run((v) => {
      const vmcs = toVmx(v).vmcs;
      seen.push({ cr3: vmcs.readNat(F.GUEST_CR3), esp: vmcs.readNat(F.GUEST_SYSENTER_ESP) });
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(results).toEqual([7]);
    expect(seen[0].cr3 & 8n).toBe(0n);
    expect(seen[0].esp).not.toBe(0x12345678n);
    const last = seen[seen.length - 1];
    expect(last.cr3 & 8n).toBe(8n);
    expect(last.esp).toBe(0x12345678n);
    const sr = vcpu.getSregs();
    expect(sr.cr0 & 8n).toBe(8n);
    expect(sr.cr3 & 8n).toBe(8n);
    expect(sr.cr4 & 0x400n).toBe(0x400n);
    expect(sr.efer & 0x800n).toBe(0x800n);
  });
});
