/**
 * What the VMM sets up before the first KVM_RUN, checked on a recording stand-in for the
 * VM and vCPU: RAM in slot 0, the image at its load address, boot data, sregs and regs.
 */
import { emptySegment, Kvm, KvmRegs, KvmSregs, KvmUserspaceMemoryRegion, KvmVcpu } from '@tsvisor/core';
import { CliError, flatBinaryGuest, loadGuest } from '@tsvisor/cli';
import { writeGuest } from './helpers';

function recorder() {
  const regions: KvmUserspaceMemoryRegion[] = [];
  let sregs: KvmSregs | null = null;
  let regs: KvmRegs | null = null;
  let cpuidSet = false;
  const kvm = {
    setUserMemoryRegion: (r: KvmUserspaceMemoryRegion) => regions.push(r),
    getSupportedCpuid: () => [],
  } as unknown as Kvm;
  const seg = () => ({ ...emptySegment(), present: 1, unusable: 0, limit: 0xffff });
  const vcpu = {
    setCpuid2: () => (cpuidSet = true),
    getSregs: (): KvmSregs => ({
      cs: { ...seg(), selector: 0xf000, base: 0xffff0000n, type: 0xb, s: 1 }, ds: seg(), es: seg(), fs: seg(), gs: seg(), ss: seg(),
      tr: { ...seg(), type: 0xb }, ldt: { ...seg(), type: 2 }, gdt: { size: 0xffff, address: 0n }, idt: { size: 0xffff, address: 0n },
      cr0: 0x60000010n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n, apicBase: 0xfee00900n,
    }),
    setSregs: (s: KvmSregs) => (sregs = s),
    getRegs: (): KvmRegs => ({
      rax: 0n, rbx: 0n, rcx: 0n, rdx: 0x600n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n, r8: 0n, r9: 0n, r10: 0n, r11: 0n,
      r12: 0n, r13: 0n, r14: 0n, r15: 0n, rip: 0xfff0n, rflags: 2n,
    }),
    setRegs: (r: KvmRegs) => (regs = r),
  } as unknown as KvmVcpu;
  return { kvm, vcpu, regions, get sregs() { return sregs!; }, get regs() { return regs!; }, get cpuidSet() { return cpuidSet; } };
}

const RAM = 4 * 2 ** 20;

describe('loading a flat binary', () => {
  it('real mode at 0x7c00: slot 0 at GPA 0, CS:IP 0000:7c00, base = selector << 4, SS:SP 0:7c00', () => {
    const r = recorder();
    const guest = flatBinaryGuest(writeGuest([0xf4, 0x90]), { loadAddress: 0x7c00, entry: 0x7c00, mode: 'real' });
    const ram = loadGuest(r.kvm, r.vcpu, guest, RAM);
    expect(r.regions).toHaveLength(1);
    expect(r.regions[0]).toMatchObject({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: BigInt(RAM) });
    expect(r.regions[0].userspace).toBe(ram);
    expect([...ram.subarray(0x7c00, 0x7c02)]).toEqual([0xf4, 0x90]);
    expect(r.cpuidSet).toBe(true);
    expect(r.sregs.cs).toMatchObject({ selector: 0, base: 0n, limit: 0xffff, type: 0xb, present: 1, s: 1, db: 0, l: 0 });
    for (const s of [r.sregs.ds, r.sregs.es, r.sregs.ss, r.sregs.fs, r.sregs.gs]) {
      expect(s).toMatchObject({ selector: 0, base: 0n, limit: 0xffff, type: 3, present: 1, s: 1 });
    }
    expect(r.sregs.cr0 & 1n).toBe(0n);
    expect(r.regs).toMatchObject({ rip: 0x7c00n, rsp: 0x7c00n, rflags: 2n, rdx: 0x600n });
  });

  it('real mode entry above 64 KiB: CS is the 64 KiB segment, IP the offset', () => {
    const r = recorder();
    loadGuest(r.kvm, r.vcpu, flatBinaryGuest(writeGuest([0xf4]), { loadAddress: 0x12340, entry: 0x12345, mode: 'real' }), RAM);
    expect(r.sregs.cs).toMatchObject({ selector: 0x1000, base: 0x10000n });
    expect(r.regs.rip).toBe(0x2345n);
  });

  it('protected mode: flat 4 GiB segments from the GDT tsvisor writes at the top of RAM', () => {
    const r = recorder();
    const ram = loadGuest(r.kvm, r.vcpu, flatBinaryGuest(writeGuest([0xf4]), { loadAddress: 0x100000, entry: 0x100000, mode: 'protected' }), RAM);
    expect(r.sregs.cs).toMatchObject({ selector: 0x08, base: 0n, limit: 0xffffffff, type: 0xb, db: 1, g: 1, l: 0, present: 1 });
    expect(r.sregs.ss).toMatchObject({ selector: 0x10, limit: 0xffffffff, type: 3, db: 1, g: 1 });
    expect(r.sregs.cr0).toBe(0x11n);
    expect(r.sregs.efer).toBe(0n);
    expect(r.sregs.tr).toMatchObject({ type: 0xb, present: 1, s: 0, unusable: 0 });
    const gdt = new DataView(ram.buffer, Number(r.sregs.gdt.address));
    expect(r.sregs.gdt.size).toBe(5 * 8 - 1);
    expect(gdt.getBigUint64(0x08, true)).toBe(0x00cf9b000000ffffn);
    expect(gdt.getBigUint64(0x10, true)).toBe(0x00cf93000000ffffn);
    expect(r.regs).toMatchObject({ rip: 0x100000n, rsp: 0x100000n });
  });

  it('long mode: 64-bit CS, EFER.LME|LMA, CR4.PAE, CR3 → identity map of 4 GiB with 2 MiB pages', () => {
    const r = recorder();
    const ram = loadGuest(r.kvm, r.vcpu, flatBinaryGuest(writeGuest([0xf4]), { loadAddress: 0x100000, entry: 0x100000, mode: 'long' }), RAM);
    expect(r.sregs.cs).toMatchObject({ selector: 0x18, l: 1, db: 0, type: 0xb });
    expect(r.sregs.efer).toBe(0x500n);
    expect(r.sregs.cr0).toBe(0x80000011n);
    expect(r.sregs.cr4).toBe(0x20n);
    const dv = new DataView(ram.buffer);
    const cr3 = Number(r.sregs.cr3);
    expect(cr3 % 4096).toBe(0);
    const pdpt = Number(dv.getBigUint64(cr3, true) & ~0xfffn);
    expect(dv.getBigUint64(cr3, true) & 3n).toBe(3n);
    // Walk 0xC0200000 (PDPT[3], PD[1]) → 2 MiB page at the same address.
    const va = 0xc0200000;
    const pde = Number(dv.getBigUint64(pdpt + 3 * 8, true) & ~0xfffn);
    const leaf = dv.getBigUint64(pde + 1 * 8, true);
    expect(leaf & 0x83n).toBe(0x83n);
    expect(Number(leaf & ~0xfffn & 0xfffffffffn)).toBe(va);
    expect(r.regs.rip).toBe(0x100000n);
  });

  it('refuses an image that does not fit, or that overlaps the boot data', () => {
    const r = recorder();
    const big = flatBinaryGuest(writeGuest(new Array(8192).fill(0x90)), { loadAddress: RAM - 4096, entry: RAM - 4096, mode: 'long' });
    expect(() => loadGuest(r.kvm, r.vcpu, big, RAM)).toThrow(CliError);
    expect(() => loadGuest(r.kvm, r.vcpu, big, RAM)).toThrow(/does not fit in 4 MiB of RAM/);
    const top = flatBinaryGuest(writeGuest([0xf4]), { loadAddress: RAM - 8192, entry: RAM - 8192, mode: 'protected' });
    expect(() => loadGuest(r.kvm, r.vcpu, top, RAM)).toThrow(/overlaps the boot data/);
    expect(r.regions).toHaveLength(0);
  });

  it('refuses a real-mode entry at or above 1 MiB', () => {
    expect(() => flatBinaryGuest(writeGuest([0xf4]), { loadAddress: 0x100000, entry: 0x100000, mode: 'real' })).toThrow(
      '--entry 0x100000 is not reachable in real mode (must be below 0x100000)',
    );
  });
});
