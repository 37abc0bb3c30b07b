/**
 * VM exit stores the guest segment registers (SDM 28.3.1). The exit path skips that store when
 * the VMCS still holds what the previous exit stored (no VMWRITE since) and the processor has
 * loaded no segment register since (CpuState.segWrites): these tests pin down that a segment
 * loaded by the guest between two exits still reaches the VMCS. (A VMWRITE between two exits
 * moves the VMCS generation and makes the next entry reload the processor, so the exit after
 * it stores in full; exit-path-caches.test.ts covers the generations.)
 */
import { BackendClass, KvmExitReason, KvmVcpu } from '@tsvisor/core';
import { F, toVmx, VMX_AR_UNUSABLE_MASK, VmxBackend } from '@tsvisor/vmx';
import { BENCH_RESULT_PORT, bootGuest, buildLongModeGuest, eax, runUntilStop } from '@tsvisor/testkit';

/** CPUID ×3, DS's selector into FS, CPUID ×3, report, HLT. `atExit` runs at every exit handled in the kernel. */
function run(atExit: (vcpu: KvmVcpu, n: number) => void) {
  const guest = buildLongModeGuest((a) => {
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    a.db([0x8c, 0xd9, 0x8e, 0xe1]); // mov cx, ds; mov fs, cx
    for (let i = 0; i < 3; i++) a.xor(eax, eax).cpuid();
    a.mov(eax, 7);
    a.db([0xba, BENCH_RESULT_PORT & 0xff, BENCH_RESULT_PORT >> 8, 0, 0, 0xef]); // mov edx, port; out dx, eax
    a.cli().hlt();
  });
  const { vcpu } = bootGuest(VmxBackend as unknown as BackendClass, guest);
  let exits = 0;
  vcpu.kvm.setTrace(new Set(['kvm_exit']), () => atExit(vcpu, ++exits));
  const results: number[] = [];
  const out = runUntilStop(vcpu, { ports: { [BENCH_RESULT_PORT]: { out: (_p, _s, v) => void results.push(v) } } });
  return { vcpu, out, results };
}

describe('VMX: guest segment registers at VM exit', () => {
  test('a segment the guest loads between two exits is in the VMCS after the second', () => {
    const fs: [number, number][] = [];
    let ds = -1;
    const { vcpu, out, results } = run((v) => {
      const vmcs = toVmx(v).vmcs;
      ds = vmcs.read16(F.GUEST_DS_SELECTOR);
      fs.push([vmcs.read16(F.GUEST_FS_SELECTOR), vmcs.read32(F.GUEST_FS_AR_BYTES)]);
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(results).toEqual([7]);
    // FS as the boot stub left it (not DS's selector), then DS's flat data segment.
    expect(ds).not.toBe(0);
    expect(fs[0][0]).not.toBe(ds);
    const last = fs[fs.length - 1];
    expect(last[0]).toBe(ds);
    expect(last[1] & VMX_AR_UNUSABLE_MASK).toBe(0);
    expect(vcpu.getSregs().fs.selector).toBe(ds);
  });
});
