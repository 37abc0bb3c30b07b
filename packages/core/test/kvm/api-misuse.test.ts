import { Kvm, KvmError, KVM_MEM_LOG_DIRTY_PAGES, KVM_MAX_CPUID_ENTRIES } from '../../src';
import { makeFakeBackend } from '../fake-backend';

function vm(): Kvm {
  return Kvm.create({ backend: makeFakeBackend() as never, hostMemoryLimit: 64 * 2 ** 20 });
}

function errCode(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof KvmError) return e.code;
    throw e;
  }
  return 'no error';
}

describe('KVM API misuse gets a typed error naming the problem', () => {
  it('memory regions: unaligned, overlapping, bad flags, bad slot, too large, bad delete', () => {
    const kvm = vm();
    expect(errCode(() => kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0x800n, memorySize: 0x1000n }))).toBe('EINVAL');
    expect(errCode(() => kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x1800n }))).toBe('EINVAL');
    expect(errCode(() => kvm.setUserMemoryRegion({ slot: 0, flags: 0x80, guestPhysAddr: 0n, memorySize: 0x1000n }))).toBe('EINVAL');
    expect(errCode(() => kvm.setUserMemoryRegion({ slot: 99999, flags: 0, guestPhysAddr: 0n, memorySize: 0x1000n }))).toBe('EINVAL');
    kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n });
    expect(errCode(() => kvm.setUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: 0xf000n, memorySize: 0x2000n }))).toBe('EEXIST');
    expect(errCode(() => kvm.setUserMemoryRegion({ slot: 2, flags: 0, guestPhysAddr: 1n << 40n, memorySize: 1n << 30n }))).toBe('ENOMEM');
    expect(errCode(() => kvm.setUserMemoryRegion({ slot: 3, flags: 0, guestPhysAddr: 0x100000n, memorySize: 0n }))).toBe('EINVAL');
    expect(() => kvm.setUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: 0xf000n, memorySize: 0x2000n })).toThrow(/overlaps slot 0/);
  });

  it('dirty log on a slot without logging or that does not exist', () => {
    const kvm = vm();
    kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n });
    expect(() => kvm.getDirtyLog(0)).toThrow(/slot 0 does not have KVM_MEM_LOG_DIRTY_PAGES/);
    expect(errCode(() => kvm.getDirtyLog(5))).toBe('ENOENT');
    kvm.setUserMemoryRegion({ slot: 0, flags: KVM_MEM_LOG_DIRTY_PAGES, guestPhysAddr: 0n, memorySize: 0x10000n });
    expect(kvm.getDirtyLog(0)).toEqual(new Uint32Array(1));
  });

  it('vCPU ids out of range or reused', () => {
    const kvm = vm();
    kvm.createVcpu(0);
    expect(errCode(() => kvm.createVcpu(0))).toBe('EEXIST');
    expect(errCode(() => kvm.createVcpu(-1))).toBe('EINVAL');
    expect(errCode(() => kvm.createVcpu(5000))).toBe('EINVAL');
    expect(errCode(() => kvm.createVcpu(1.5))).toBe('EINVAL');
  });

  it('running a VM without memory', () => {
    const kvm = vm();
    const v = kvm.createVcpu(0);
    expect(() => v.runVcpu()).toThrow(/EFAULT: KVM_RUN: the VM has no memory/);
  });

  it('CPUID entries beyond limits or malformed', () => {
    const v = vm().createVcpu(0);
    const e = { function: 0, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 };
    expect(errCode(() => v.setCpuid2(Array.from({ length: KVM_MAX_CPUID_ENTRIES + 1 }, () => e)))).toBe('E2BIG');
    expect(() => v.setCpuid2([{ ...e, eax: 2 ** 32 }])).toThrow(/entry 0 field eax must be a 32-bit unsigned integer/);
  });

  it('register values that are not 64-bit, sregs that are inconsistent', () => {
    const v = vm().createVcpu(0);
    const regs = v.getRegs();
    expect(() => v.setRegs({ ...regs, rax: -1n })).toThrow(/KVM_SET_REGS: rax must be a bigint in \[0, 2\^64\)/);
    expect(() => v.setRegs({ ...regs, rbx: 1n << 64n })).toThrow(/rbx/);
    const s = v.getSregs();
    expect(() => v.setSregs({ ...s, cr0: 0x80000000n })).toThrow(/CR0.PG set without CR0.PE/);
    expect(() => v.setSregs({ ...s, efer: 1n << 10n })).toThrow(/EFER.LMA set without/);
    expect(() => v.setSregs({ ...s, cs: { ...s.cs, selector: 0x10000 } })).toThrow(/cs.selector/);
  });

  it('KVM_INTERRUPT with a vector out of range', () => {
    const v = vm().createVcpu(0);
    expect(errCode(() => v.interrupt(256))).toBe('EINVAL');
  });

  it('destroyed VMs refuse further calls', () => {
    const kvm = vm();
    kvm.destroy();
    expect(() => kvm.createVcpu(0)).toThrow(/destroyed/);
  });
});

describe('non-canonical addresses in MSRs', () => {
  it('KVM_SET_MSRS refuses a non-canonical FS_BASE/LSTAR with EINVAL naming it, and canonicalizes SYSENTER_EIP', () => {
    const kvm = vm();
    const v = kvm.createVcpu(0);
    expect(() => v.setMsr(0xc0000100, 0x0000_8000_0000_0000n)).toThrow(/KVM_SET_MSRS: MSR 0xc0000100 value 0x800000000000 is not a canonical 48-bit address/);
    expect(() => v.setMsr(0xc0000082, 0x1234_0000_0000_0000n)).toThrow(/not a canonical 48-bit address/);
    const seen: bigint[] = [];
    (kvm.ops as unknown as { setMsr: (vc: unknown, m: { index: number; data: bigint }) => number }).setMsr = (_vc, m) => { seen.push(m.data); return 0; };
    v.setMsr(0xc0000100, 0xffff_8000_0000_1000n); // canonical: accepted
    v.setMsr(0x176, 0x0000_8000_0000_1000n); // SYSENTER_EIP: sign-extended from bit 47
    expect(seen).toEqual([0xffff_8000_0000_1000n, 0xffff_8000_0000_1000n]);
  });
});
