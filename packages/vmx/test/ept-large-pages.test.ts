/**
 * 2 MiB and 1 GiB EPT pages (SDM 29.3.2, bit 7 in a PDE / PDPTE; IA32_VMX_EPT_VPID_CAP bits
 * 16/17): translation through them, accessed flags, and the misconfigurations of their
 * reserved address bits (29.3.3.1).
 */
import { ExitFastpathCompletion, GuestExit, GuestExitKind, ACCESS_READ, KvmExitReason, KvmVcpu } from '@tsvisor/core';
import { EptWalker, F, toVmx, MSR_IA32_VMX_EPT_VPID_CAP, VMX_CAPABILITY_MSRS } from '@tsvisor/vmx';
import * as D from '@tsvisor/vmx';
import { bootGuest, buildLongModeGuest, dword, eax, Label } from '@tsvisor/testkit';
import { VMX } from './helpers';

const TWO_M = 0x200000;

describe('EPT large pages', () => {
  it('are advertised in IA32_VMX_EPT_VPID_CAP', () => {
    expect((VMX_CAPABILITY_MSRS.get(MSR_IA32_VMX_EPT_VPID_CAP)! >> 16n) & 3n).toBe(3n);
  });

  it('a 2 MiB EPT page maps guest memory (each 4 KiB frame at its offset), sets A, and its reserved bits misconfigure', () => {
    const guest = buildLongModeGuest((a) => {
      const again = new Label('again');
      a.bind(again);
      a.mov(eax, dword(0x600010));
      a.out(0x80, eax);
      a.mov(eax, dword(0x601010));
      a.out(0x80, eax);
      a.jmp(again);
    });
    const { kvm, vcpu } = bootGuest(VMX, guest, { memory: 8 << 20 });
    vcpu.runBudget = 2_000_000;
    const vmx = toVmx(vcpu);
    const host = kvm.hostMemory;
    const mem = kvm.slot(0)!.userspace;
    const view = new DataView(mem.buffer, mem.byteOffset);
    view.setUint32(0x600010, 0x11111111, true);
    view.setUint32(0x601010, 0x22222222, true);
    const log: { reason: number; gpa: bigint }[] = [];
    const ops = kvm.ops;
    const orig = ops.handleExit.bind(ops);
    ops.handleExit = (v: KvmVcpu, f: ExitFastpathCompletion) => {
      log.push({ reason: vmx.exitReason & 0xffff, gpa: vmx.vmcs.read64(F.GUEST_PHYSICAL_ADDRESS) });
      return orig(v, f);
    };
    const read = () => {
      const run = vcpu.runVcpu();
      expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
      return new DataView(run.ioData.buffer, run.ioData.byteOffset).getUint32(0, true);
    };
    expect(read()).toBe(0x11111111);
    expect(read()).toBe(0x22222222);

    // A 2 MiB-aligned host block with its own contents.
    const region = host.allocPages(1024, 'test 2M block');
    const block = Math.ceil(region / TWO_M) * TWO_M;
    host.write32(block + 0x10, 0x55555555);
    host.write32(block + 0x1010, 0x66666666);
    // The EPT PDE for GPA 0x600000 (PML4E 0 → PDPTE 0 → PDE 3), made a 2 MiB leaf: RWX, WB.
    const eptp = vmx.vmcs.readNum(F.EPT_POINTER);
    const ad = (eptp & 0x40) !== 0;
    const next = (ea: number) => (host.read32(ea) & ~0xfff) + (host.read32(ea + 4) & 0xfffff) * 2 ** 32;
    const pd = next(next(eptp - (eptp % 4096)));
    const pdeA = pd + 3 * 8;
    const pde = (block % 2 ** 32) | 0x7 | (6 << 3) | 0x80;
    host.write32(pdeA, pde);
    host.write32(pdeA + 4, Math.floor(block / 2 ** 32));
    kvm.ops.tlbFlushAll(vcpu); // INVEPT: the 4 KiB translations cached before are gone
    expect(read()).toBe(0x55555555);
    expect(read()).toBe(0x66666666);
    if (ad) expect(host.read32(pdeA) & 0x100).toBe(0x100);

    // Bits 20:12 of a 2 MiB leaf are reserved: EPT misconfiguration, which KVM emulates.
    host.write32(pdeA, pde | 0x1000);
    kvm.ops.tlbFlushAll(vcpu);
    log.length = 0;
    expect(read()).toBe(0x11111111); // the emulated read went to the memslot
    expect(log.some((e) => e.reason === D.ExitReason.EPT_MISCONFIG && e.gpa === 0x600010n)).toBe(true);
  });

  it('a 1 GiB EPT page translates to its frame; bits 29:12 are reserved; bit 7 in a PML4E is reserved', () => {
    const guest = buildLongModeGuest((a) => a.hlt());
    const { kvm, vcpu } = bootGuest(VMX, guest, { memory: 1 << 20 });
    const vmx = toVmx(vcpu);
    const host = kvm.hostMemory;
    const tables = host.allocPages(2, 'test EPT');
    const pdpt = tables + 4096;
    host.write32(tables, (pdpt % 2 ** 32) | 7);
    host.write32(tables + 4, Math.floor(pdpt / 2 ** 32));
    // PDPTE 1 (GPA 1-2 GiB) → host-physical 0x40_0000_0000, a 1 GiB page.
    host.write32(pdpt + 8, 0 | 7 | (6 << 3) | 0x80);
    host.write32(pdpt + 12, 0x40);
    vmx.vmcs.write64(F.EPT_POINTER, BigInt(tables) | 6n | (3n << 3n));
    const walker = new EptWalker(vmx.vmcs, host);
    const exit = new GuestExit();
    expect(walker.translate(0x4123_4000, ACCESS_READ, 0, false, exit)).toBe(0x40_0000_0000 + 0x0123_4000);
    host.write32(pdpt + 8, 0x2000 | 7 | (6 << 3) | 0x80);
    expect(walker.translate(0x4123_4000, ACCESS_READ, 0, false, exit)).toBe(-1);
    expect(exit.kind).toBe(GuestExitKind.TDP_MISCONFIG);
    expect(EptWalker.misconfigured(0x7n | (6n << 3n) | 0x80n | (1n << 21n), 2, true)).toBe(false); // 2 MiB frame bit 21
    expect(EptWalker.misconfigured(0x7n | (6n << 3n) | 0x80n | (1n << 20n), 2, true)).toBe(true);
    expect(EptWalker.misconfigured(0x7n | 0x80n, 4, false)).toBe(true);
  });
});
