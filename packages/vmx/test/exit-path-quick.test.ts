/**
 * The per-exit work the VMX exit path skips in the steady state, and what must still happen
 * when the skip's precondition breaks:
 * - exit information is written by slot at every exit: fields an earlier exit set (an I/O
 *   exit's qualification) read 0 after a CPUID exit that does not use them (SDM 28.2);
 * - skipEmulatedInstruction writes GUEST_INTERRUPTIBILITY_INFO only when a shadow is set, and
 *   then clears it (vmx_set_interrupt_shadow(vcpu, 0));
 * - CR2 (switched by KVM around entry) reaches the processor only when it changed: a value KVM
 *   writes between two exits is what the guest reads, and a value the guest writes is KVM's
 *   after the next exit;
 * - KERNEL_GS_BASE and EFER are copied back only when the processor wrote a system register
 *   (CpuState.sysWrites): a guest WRMSR of KERNEL_GS_BASE between two exits reaches KVM.
 */
import { BackendClass, KvmExitReason, KvmVcpu } from '@tsvisor/core';
import { ExitReason, F, toVmx, VmxBackend, GUEST_INTR_STATE_MOV_SS, GUEST_INTR_STATE_NMI, GUEST_INTR_STATE_STI } from '@tsvisor/vmx';
import { Assembler, BENCH_RESULT_PORT, bootGuest, buildLongModeGuest, eax, runUntilStop } from '@tsvisor/testkit';

const VMX = VmxBackend as unknown as BackendClass;
const OUT_RESULT = [0xba, BENCH_RESULT_PORT & 0xff, BENCH_RESULT_PORT >> 8, 0, 0, 0xef]; // mov edx, port; out dx, eax

function run(body: (a: Assembler) => void, atExit: (vcpu: KvmVcpu, n: number) => void = () => undefined) {
  const guest = buildLongModeGuest((a) => {
    body(a);
    a.cli().hlt();
  });
  const { vcpu } = bootGuest(VMX, guest);
  let exits = 0;
  vcpu.kvm.setTrace(new Set(['kvm_exit']), () => atExit(vcpu, ++exits));
  const results: number[] = [];
  const out = runUntilStop(vcpu, { ports: { [BENCH_RESULT_PORT]: { out: (_p, _s, v) => void results.push(v) } } });
  return { vcpu, out, results };
}

describe('VMX exit path: skipped work stays correct', () => {
  test('a CPUID exit after an I/O exit records qualification 0 and its own reason and length', () => {
    const seen: { reason: number; qual: bigint; len: number; gpa: bigint; gla: bigint }[] = [];
    const { out, results } = run((a) => {
      a.xor(eax, eax).cpuid();
      a.mov(eax, 5);
      a.db(OUT_RESULT);
      a.xor(eax, eax).cpuid();
      a.xor(eax, eax).cpuid();
    }, (v) => {
      const vmcs = toVmx(v).vmcs;
      seen.push({
        reason: vmcs.read32(F.VM_EXIT_REASON), qual: vmcs.readNat(F.EXIT_QUALIFICATION), len: vmcs.read32(F.VM_EXIT_INSTRUCTION_LEN),
        gpa: vmcs.read64(F.GUEST_PHYSICAL_ADDRESS), gla: vmcs.readNat(F.GUEST_LINEAR_ADDRESS),
      });
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(results).toEqual([5]);
    const io = seen.findIndex((e) => e.reason === ExitReason.IO_INSTRUCTION);
    expect(io).toBeGreaterThan(0);
    // SDM 28.2.1 Table 28-5: port in bits 31:16, size - 1 in bits 2:0 (OUT DX, EAX: 4 bytes).
    expect(seen[io].qual).toBe((BigInt(BENCH_RESULT_PORT) << 16n) | 3n);
    const after = seen.slice(io + 1).filter((e) => e.reason === ExitReason.CPUID);
    expect(after.length).toBeGreaterThanOrEqual(2);
    for (const e of after) expect(e).toEqual({ reason: ExitReason.CPUID, qual: 0n, len: 2, gpa: 0n, gla: 0n });
  });

  test('skipping an instruction clears STI and MOV-SS blocking, and leaves NMI blocking and an unblocked VMCS alone', () => {
    const { vcpu } = run((a) => a.xor(eax, eax).cpuid());
    const vmx = toVmx(vcpu);
    const v = vmx.vmcs;
    const ops = vcpu.kvm.ops;
    v.write32(F.GUEST_INTERRUPTIBILITY_INFO, GUEST_INTR_STATE_STI | GUEST_INTR_STATE_NMI);
    ops.skipEmulatedInstruction(vcpu);
    expect(v.read32(F.GUEST_INTERRUPTIBILITY_INFO)).toBe(GUEST_INTR_STATE_NMI);
    v.write32(F.GUEST_INTERRUPTIBILITY_INFO, GUEST_INTR_STATE_MOV_SS);
    ops.skipEmulatedInstruction(vcpu);
    expect(v.read32(F.GUEST_INTERRUPTIBILITY_INFO)).toBe(0);
    // Nothing to clear: no VMWRITE, so the next entry keeps its quick path.
    const gen = v.generation;
    ops.skipEmulatedInstruction(vcpu);
    expect(v.generation).toBe(gen);
    expect(v.read32(F.GUEST_INTERRUPTIBILITY_INFO)).toBe(0);
  });

  test('CR2 written by KVM between two exits is what the guest reads; CR2 written by the guest is KVM\'s after the next exit', () => {
    let cr2AtLast = -1n;
    const { out, results, vcpu } = run((a) => {
      a.xor(eax, eax).cpuid();
      a.xor(eax, eax).cpuid();
      a.db([0x0f, 0x20, 0xd0]); // mov rax, cr2
      a.db(OUT_RESULT);
      a.mov(eax, 0x5678);
      a.db([0x0f, 0x22, 0xd0]); // mov cr2, rax
      a.xor(eax, eax).cpuid();
    }, (v, n) => {
      if (n === 1) v.arch.cr2 = 0x1234n;
      cr2AtLast = v.arch.cr2;
    });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(results).toEqual([0x1234]);
    expect(cr2AtLast).toBe(0x5678n);
    expect(vcpu.arch.cr2).toBe(0x5678n);
  });

  test('CR2 changed by KVM after a KVM_RUN that ended behind a fastpath CPUID exit is what the guest reads', () => {
    // No tracing: CPUID exits complete in the exit fastpath, whose re-entry skips reloading CR2,
    // DR0-3, DR6 and XCR0 (switchedInSync). A small slice makes KVM_RUN return inside the loop;
    // the next KVM_RUN enters through the slow path, which must load what KVM changed.
    const guest = buildLongModeGuest((a) => {
      a.db([0xbe, 0x2c, 0x01, 0x00, 0x00]); // mov esi, 300
      a.db([0x31, 0xc0, 0x0f, 0xa2, 0xff, 0xce, 0x75, 0xf8]); // 1: xor eax, eax; cpuid; dec esi; jnz 1b
      a.db([0x0f, 0x20, 0xd0]); // mov rax, cr2
      a.db(OUT_RESULT);
      a.cli().hlt();
    });
    const { vcpu } = bootGuest(VMX, guest);
    vcpu.runBudget = 31;
    for (let i = 0; i < 1000 && !toVmx(vcpu).switchedInSync; i++) expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_INTR);
    expect(toVmx(vcpu).switchedInSync).toBe(true);
    expect(vcpu.kvm.stats.cpuidExits).toBeLessThan(300);
    // KVM's own copy, as kvm_set_sregs writes it (no VMCS field changes: the entry is a quick one).
    vcpu.arch.cr2 = 0x4321n;
    vcpu.runBudget = 2_000_000;
    const results: number[] = [];
    const out = runUntilStop(vcpu, { ports: { [BENCH_RESULT_PORT]: { out: (_p, _s, v) => void results.push(v) } } });
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(results).toEqual([0x4321]);
    expect(vcpu.kvm.stats.cpuidExits).toBe(300);
  });

  test('KERNEL_GS_BASE written by the guest (MSR not intercepted) between two exits reaches KVM', () => {
    const seen: bigint[] = [];
    const { out } = run((a) => {
      a.xor(eax, eax).cpuid();
      a.db([0xb9, 0x02, 0x01, 0x00, 0xc0]); // mov ecx, 0xc0000102
      a.db([0xb8, 0x00, 0x10, 0x34, 0x12, 0x31, 0xd2, 0x0f, 0x30]); // mov eax, 0x12341000; xor edx, edx; wrmsr
      a.xor(eax, eax).cpuid();
    }, (v) => void seen.push(toVmx(v).kernelGsBase));
    expect(out.exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(seen[0]).not.toBe(0x12341000n);
    expect(seen[seen.length - 1]).toBe(0x12341000n);
  });
});
