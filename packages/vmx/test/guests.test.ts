/**
 * Guests through the public KVM API (Kvm.create → setUserMemoryRegion → createVcpu → runVcpu)
 * on the VMX backend: each exit path from the guest instruction to what userspace sees.
 */
import { GuestExitKind, KvmExitReason, KvmInternalError, KvmReg, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, MSR, VcpuSreg } from '@tsvisor/core';
import { ExitReason, F, toVmx, vmxEnableInterceptForMsr, MSR_TYPE_RW, VMX_EXIT_REASONS_FAILED_VMENTRY } from '@tsvisor/vmx';
import * as D from '@tsvisor/vmx';
import { al, ax, byte, Code, dx, eax, ecx, edx, es, mem, word } from '@tsvisor/testkit';
import { realModeVm } from './helpers';

const count = (vcpu: { exitCounts: Map<string, number> }, name: string) => vcpu.exitCounts.get(name) ?? 0;

describe('VMX guests', () => {
  it('CPUID exits and is answered from the guest CPUID table (GenuineIntel)', () => {
    const { vcpu } = realModeVm((a) => a.mov(eax, 0).cpuid().hlt());
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    const r = vcpu.getRegs();
    const s = [r.rbx, r.rdx, r.rcx].map((x) => Buffer.from(Uint32Array.of(Number(x)).buffer).toString('latin1')).join('');
    expect(s).toBe('GenuineIntel');
    expect(count(vcpu, 'CPUID')).toBe(1);
    expect(count(vcpu, 'HLT')).toBe(1);
  });

  it('OUT to COM1 is KVM_EXIT_IO with the data; IN completes with userspace data', () => {
    const { vcpu, vmx } = realModeVm((a) => a.mov(al, 0x41).mov(dx, 0x3f8).out(dx, al).in(al, 0x71).hlt());
    let run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.io).toMatchObject({ direction: KVM_EXIT_IO_OUT, port: 0x3f8, size: 1, count: 1 });
    expect(run.ioData[0]).toBe(0x41);
    // The qualification KVM decoded it from (SDM Table 28-5).
    expect(vmx.vmcs.readNat(F.EXIT_QUALIFICATION)).toBe(0x03f8_0000n);
    expect(vmx.vmcs.read32(F.VM_EXIT_INSTRUCTION_LEN)).toBe(1);
    run = vcpu.runVcpu();
    expect(run.io).toMatchObject({ direction: KVM_EXIT_IO_IN, port: 0x71, size: 1 });
    expect(vmx.vmcs.readNat(F.EXIT_QUALIFICATION)).toBe(0x0071_0000n | 8n | 0x40n);
    run.ioData[0] = 0x5a;
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(vcpu.getRegs().rax & 0xffffn).toBe(0x5an);
    expect(count(vcpu, 'IO_INSTRUCTION')).toBe(2);
  });

  it('WRMSR/RDMSR: FS_BASE passes through the MSR bitmap, LSTAR exits; getMsr reads the VMCS', () => {
    const { vcpu, vmx } = realModeVm((a) => a
      .mov(ecx, 0xc0000100).mov(eax, 0x1000).mov(edx, 0x7e57).wrmsr()
      .mov(ecx, 0xc0000100).rdmsr().mov(word(0x800), ax)
      .mov(ecx, 0xc0000082).mov(eax, 0x2000).mov(edx, 0xffff8000).wrmsr()
      .mov(ecx, 0xc0000082).mov(eax, 0).rdmsr()
      .hlt());
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(count(vcpu, 'MSR_WRITE')).toBe(1);
    expect(count(vcpu, 'MSR_READ')).toBe(1);
    // The seed's get_fsgsbase_from_vmcs: the FS base comes from GUEST_FS_BASE.
    expect(vmx.vmcs.readNat(F.GUEST_FS_BASE)).toBe(0x7e57_0000_1000n);
    expect(vcpu.getMsr(MSR.FS_BASE)).toBe(0x7e57_0000_1000n);
    expect(vcpu.getMsr(MSR.LSTAR)).toBe(0xffff_8000_0000_2000n);
    expect(vcpu.getRegs().rax).toBe(0x2000n);
  });

  it('turning the FS_BASE intercept on makes the same WRMSR exit', () => {
    const { vcpu } = realModeVm((a) => a.mov(ecx, 0xc0000100).mov(eax, 0x3000).mov(edx, 0).wrmsr().hlt());
    vmxEnableInterceptForMsr(vcpu, 0xc0000100, MSR_TYPE_RW);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(count(vcpu, 'MSR_WRITE')).toBe(1);
    expect(vcpu.getMsr(MSR.FS_BASE)).toBe(0x3000n);
  });

  it('a refused WRMSR is #GP for the guest (real mode IVT handler sees vector 13)', () => {
    const { vcpu, kvm } = realModeVm((a) => a.mov(ecx, 0xc0000082).mov(eax, 0).mov(edx, 0x8000).wrmsr().hlt());
    // IVT entry 13 → 0000:2000, where the handler writes a marker and halts.
    const mem = kvm.slot(0)!.userspace;
    mem.set([0x00, 0x20, 0x00, 0x00], 13 * 4);
    mem.set([0xb0, 0x0d, 0xe6, 0x80, 0xf4], 0x2000); // mov al,13; out 0x80,al; hlt
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.io.port).toBe(0x80);
    expect(run.ioData[0]).toBe(13);
    expect(count(vcpu, 'MSR_WRITE')).toBe(1);
  });

  it('VMCALL is the hypercall: RAX = nr, result in RAX', () => {
    const { vcpu } = realModeVm((a) => a.mov(eax, 1).vmcall().mov(ecx, eax).mov(eax, 0x99).vmcall().hlt());
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    const r = vcpu.getRegs();
    expect(r.rcx).toBe(0n); // KVM_HC_VAPIC_POLL_IRQ → 0
    expect(r.rax).toBe(BigInt.asUintN(64, -1000n)); // -KVM_ENOSYS
    expect(count(vcpu, 'VMCALL')).toBe(2);
    expect(vcpu.kvm.stats.hypercalls).toBe(2);
  });

  it('VMMCALL is #UD on Intel: KVM patches it to VMCALL and the hypercall completes', () => {
    const { vcpu, kvm } = realModeVm((a) => a.mov(eax, 1).vmmcall().hlt());
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(count(vcpu, 'EXCEPTION_NMI')).toBe(1);
    expect(count(vcpu, 'VMCALL')).toBe(1);
    expect(vcpu.getRegs().rax).toBe(0n);
    const mem = kvm.slot(0)!.userspace;
    const at = mem.indexOf(0x0f, 0x1000);
    expect([...mem.subarray(at, at + 3)]).toEqual([0x0f, 0x01, 0xc1]);
    expect(vcpu.arch.hypercallsPatched).toBe(1);
  });

  it('HLT is KVM_EXIT_HLT with RIP after the HLT', () => {
    const { vcpu } = realModeVm((a) => a.nop().hlt());
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(vcpu.getRegs().rip).toBe(0x1002n);
  });

  it('an exception with no IDT escalates to a triple fault: KVM_EXIT_SHUTDOWN', () => {
    const { vcpu, kvm } = realModeVm((a) => a.lidt(mem(0x900)).ud2());
    kvm.slot(0)!.userspace.fill(0, 0x900, 0x906);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_SHUTDOWN);
    expect(count(vcpu, 'EXCEPTION_NMI')).toBe(1); // #UD is intercepted (VMMCALL patching), then re-injected
    expect(count(vcpu, 'TRIPLE_FAULT')).toBe(1);
  });

  it('KVM_SET_SREGS with an invalid TR gives KVM_EXIT_FAIL_ENTRY with exit reason 33 | bit 31', () => {
    const { vcpu } = realModeVm((a) => a.hlt());
    const s = vcpu.getSregs();
    vcpu.setSregs({ ...s, tr: { ...s.tr, type: 1 } });
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_FAIL_ENTRY);
    expect(run.failEntry.hardwareEntryFailureReason).toBe(BigInt((ExitReason.INVALID_STATE | VMX_EXIT_REASONS_FAILED_VMENTRY) >>> 0));
    expect(count(vcpu, 'INVALID_STATE')).toBe(1);
  });

  it('an exit reason without a handler is an INTERNAL_ERROR with a full VMCS dump, not a silent continue', () => {
    const { vcpu } = realModeVm((a) => a.hlt());
    // The processor reports a SIPI (VMX has no handler for it: core has no INIT/SIPI signalling).
    const cpu = vcpu.cpu;
    const real = cpu.runGuest.bind(cpu);
    cpu.runGuest = (rules, budget) => {
      cpu.exit.kind = GuestExitKind.SIPI;
      cpu.exit.vector = 0x28;
      cpu.exit.vectoring.valid = false;
      void real;
      void rules;
      void budget;
      return GuestExitKind.SIPI;
    };
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_INTERNAL_ERROR);
    expect(run.internal.suberror).toBe(KvmInternalError.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON);
    expect(run.internal.data[0]).toBe(BigInt(ExitReason.SIPI_SIGNAL));
    expect(run.internalMessage).toMatch(/unexpected exit reason 0x4 \(SIPI_SIGNAL\)/);
    expect(run.internalMessage).toMatch(/EXIT_QUALIFICATION\s+\[6400\] = 0x0000000000000028/);
    expect(run.internalMessage).toContain('GUEST_RIP');
  });

  it('segment, CPL and descriptor-table hooks read the VMCS guest-state area', () => {
    const { vcpu, vmx } = realModeVm((a) => a.hlt());
    vcpu.runVcpu();
    const ops = vcpu.kvm.ops;
    const cs = vcpu.getSregs().cs;
    expect(cs).toMatchObject({ selector: 0, base: 0n, limit: 0xffff, type: 0xb, s: 1, present: 1, unusable: 0 });
    expect(ops.getCpl(vcpu)).toBe(0);
    vmx.vmcs.write32(F.GUEST_SS_AR_BYTES, 0xf3);
    expect(ops.getCpl(vcpu)).toBe(3);
    vmx.vmcs.write32(F.GUEST_CS_AR_BYTES, 0xa09b);
    expect(ops.getCsDbLBits(vcpu)).toEqual({ db: 0, l: 1 });
    vmx.vmcs.writeNat(F.GUEST_GS_BASE, 0x1234_5678n);
    expect(ops.getSegmentBase(vcpu, VcpuSreg.GS)).toBe(0x1234_5678n);
    vmx.vmcs.write32(F.GUEST_FS_AR_BYTES, 0x10000);
    const fs = vcpu.getSregs().fs;
    expect(fs.unusable).toBe(1);
    expect(fs.present).toBe(0);
    ops.setSegment(vcpu, { ...fs, unusable: 0, present: 1, type: 2, s: 1, selector: 0x10 }, VcpuSreg.FS);
    expect(vmx.vmcs.read32(F.GUEST_FS_AR_BYTES)).toBe(0x93); // accessed bit set for unrestricted guests
    expect(vmx.vmcs.read16(F.GUEST_FS_SELECTOR)).toBe(0x10);
    const gdt = { size: 0, address: 0n };
    ops.setGdt(vcpu, { size: 0x27, address: 0x5000n });
    ops.getGdt(vcpu, gdt);
    expect(gdt).toEqual({ size: 0x27, address: 0x5000n });
    expect(vmx.vmcs.readNat(F.GUEST_GDTR_BASE)).toBe(0x5000n);
  });

  it('register cache: RSP/RIP/RFLAGS come from the VMCS; skipEmulatedInstruction uses the exit instruction length', () => {
    const { vcpu, vmx } = realModeVm((a) => a.mov(eax, 0x11223344).hlt());
    vcpu.runVcpu();
    expect(vcpu.arch.regsAvail & (1 << KvmReg.RIP)).toBe(1 << KvmReg.RIP); // read by the HLT handler
    vmx.vmcs.writeNat(F.GUEST_RSP, 0xbeefn);
    vcpu.arch.regsAvail &= ~(1 << KvmReg.RSP);
    expect(vcpu.registerRead(KvmReg.RSP)).toBe(0xbeefn);
    expect(vcpu.registerRead(KvmReg.RAX)).toBe(0x11223344n);
    vcpu.kvm.ops.setRflags(vcpu, 0x202n);
    expect(vmx.vmcs.readNat(F.GUEST_RFLAGS)).toBe(0x202n);
    expect(vcpu.kvm.ops.getRflags(vcpu)).toBe(0x202n);
    const rip = vcpu.rip;
    vcpu.kvm.ops.setInterruptShadow(vcpu, 2);
    expect(vmx.vmcs.read32(F.GUEST_INTERRUPTIBILITY_INFO) & 1).toBe(1);
    vcpu.kvm.ops.skipEmulatedInstruction(vcpu);
    expect(vcpu.rip).toBe(rip + BigInt(vmx.vmcs.read32(F.VM_EXIT_INSTRUCTION_LEN)));
    expect(vcpu.kvm.ops.getInterruptShadow(vcpu)).toBe(0);
  });

  it('the guest state after reset is the SDM\'s (CS F000 base FFFF0000, RIP FFF0)', () => {
    const { kvm } = realModeVm((a) => a.hlt());
    const v = kvm.createVcpu(1);
    const vmx = toVmx(v);
    expect(vmx.vmcs.read16(F.GUEST_CS_SELECTOR)).toBe(0xf000);
    expect(vmx.vmcs.readNat(F.GUEST_CS_BASE)).toBe(0xffff0000n);
    expect(v.getRegs().rip).toBe(0xfff0n);
    expect(v.getSregs().cr0).toBe(0x60000010n);
    expect(vmx.vmcs.readNat(F.GUEST_CR0)).toBe(0x60000030n); // NE forced in hardware, hidden by the shadow
    expect(vmx.vmcs.readNat(F.CR0_READ_SHADOW)).toBe(0x60000010n);
    expect(vmx.vmcs.readNat(F.GUEST_CR4)).toBe(0x2000n);
    expect(vmx.vmcs.read32(F.GUEST_TR_AR_BYTES)).toBe(0x8b);
    expect(vmx.vmcs.read64(F.VMCS_LINK_POINTER)).toBe((1n << 64n) - 1n);
  });
});

describe('EPT on a real guest', () => {
  it('EPT violations carry the access and GPA (SDM Table 28-7); MMIO is emulated, then found by EPT misconfiguration', () => {
    const { vcpu, kvm, vmx } = realModeVm((a) => a
      .mov(ax, 0x9000).mov(es, ax)
      .mov(al, 0x5a).mov(byte({ seg: es, disp: 0x10 }), al)   // GPA 0x90010: no memslot → MMIO
      .mov(al, 0x5b).mov(byte({ seg: es, disp: 0x20 }), al)   // same page again: EPT misconfiguration
      .mov(byte(0x7000), al)                                  // RAM page not yet in the EPT: a write violation
      .hlt(), { memory: 0x80000 });
    const seen: { reason: number; qual: bigint; gpa: bigint }[] = [];
    const ops = kvm.ops as unknown as { handleExit: (v: typeof vcpu, f: number) => number };
    const orig = ops.handleExit.bind(ops);
    ops.handleExit = (v, f) => {
      seen.push({ reason: vmx.vmcs.read32(F.VM_EXIT_REASON), qual: vmx.vmcs.readNat(F.EXIT_QUALIFICATION), gpa: vmx.vmcs.read64(F.GUEST_PHYSICAL_ADDRESS) });
      return orig(v, f);
    };
    let run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_MMIO);
    expect(run.mmio).toMatchObject({ physAddr: 0x90010n, len: 1, isWrite: true });
    expect(run.mmio.data[0]).toBe(0x5a);
    // The first exit was the code fetch at 0x1000: a fetch (bit 2) of a not-present GPA, linear address valid.
    expect(seen[0]).toEqual({ reason: ExitReason.EPT_VIOLATION, qual: 0x4n | 0x80n | 0x100n, gpa: 0x1000n });
    expect(seen.at(-1)).toMatchObject({ reason: ExitReason.EPT_VIOLATION, gpa: 0x90010n });
    expect(seen.at(-1)!.qual & 0x2n).toBe(0x2n);
    run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_MMIO);
    expect(run.mmio).toMatchObject({ physAddr: 0x90020n, isWrite: true });
    expect(seen.at(-1)).toMatchObject({ reason: ExitReason.EPT_MISCONFIG, gpa: 0x90020n });
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(seen.at(-2)).toMatchObject({ reason: ExitReason.EPT_VIOLATION, gpa: 0x7000n });
    expect(seen.at(-2)!.qual & 0x3fn).toBe(0x2n); // a write; the entry allowed nothing (not present)
    expect(kvm.slot(0)!.userspace[0x7000]).toBe(0x5b);
  });
});

describe('instruction exits chosen by the VM-execution controls', () => {
  it('RDTSC, WBINVD, INVD, PAUSE, INVLPG exit and are emulated; the counts are by KVM exit-reason name', () => {
    const { vcpu, vmx } = realModeVm((a) => a.rdtsc().wbinvd().invd().pause().invlpg(mem(0x5000)).hlt());
    const v = vmx.vmcs;
    v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) | D.CPU_BASED_RDTSC_EXITING | D.CPU_BASED_PAUSE_EXITING | D.CPU_BASED_INVLPG_EXITING);
    vcpu.setMsr(MSR.IA32_TSC, 0x5_0000_0000n);
    const flushGva = jest.spyOn(vcpu.kvm.ops, 'tlbFlushGva');
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    for (const n of ['RDTSC', 'WBINVD', 'INVD', 'PAUSE_INSTRUCTION', 'INVLPG', 'HLT']) expect([n, count(vcpu, n)]).toEqual([n, 1]);
    const r = vcpu.getRegs();
    expect((r.rdx << 32n) | r.rax).toBeGreaterThanOrEqual(0x5_0000_0000n);
    expect(flushGva).toHaveBeenCalledWith(vcpu, 0x5000n);
    expect(r.rip).toBe(0x100en); // 2+2+2+2+5 bytes and the HLT: every exiting instruction was skipped by its length
  });

  it('RDRAND exiting makes RDRAND #UD (KVM\'s handle_invalid_op)', () => {
    const { vcpu, vmx, kvm } = realModeVm((a) => a.op(Code.Rdrand_r16, ax).hlt());
    installUdHandler(kvm.slot(0)!.userspace);
    vmx.vmcs.write32(F.SECONDARY_VM_EXEC_CONTROL, vmx.vmcs.read32(F.SECONDARY_VM_EXEC_CONTROL) | D.SECONDARY_EXEC_RDRAND_EXITING);
    const run = vcpu.runVcpu();
    expect(count(vcpu, 'RDRAND')).toBe(1);
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    expect(run.ioData[0]).toBe(6);
  });

  it('the monitor trap flag exits after every instruction', () => {
    const { vcpu, vmx } = realModeVm((a) => a.nop().nop().nop().nop().nop().hlt());
    vmx.vmcs.write32(F.CPU_BASED_VM_EXEC_CONTROL, vmx.vmcs.read32(F.CPU_BASED_VM_EXEC_CONTROL) | D.CPU_BASED_MONITOR_TRAP_FLAG);
    expect(vcpu.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_HLT);
    expect(count(vcpu, 'MONITOR_TRAP_FLAG')).toBe(5);
  });
});

/** IVT vector 6 → 0000:2000: OUT 6 to port 0x80, HLT. */
function installUdHandler(mem: Uint8Array): void {
  mem.set([0x00, 0x20, 0, 0], 6 * 4);
  mem.set([0xb0, 0x06, 0xe6, 0x80, 0xf4], 0x2000);
}
