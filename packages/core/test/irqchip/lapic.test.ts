import { KvmExitReason, KvmMpState, VcpuSreg, emptySegment } from '../../src';
import { apicRead, apicWrite, guest, irqVm, swEnable, inVcpu, mmioRead32 } from './helpers';

const ID = 0x20, LVR = 0x30, TPR = 0x80, PPR = 0xa0, EOI = 0xb0, LDR = 0xd0, DFR = 0xe0, SVR = 0xf0;
const ISR = 0x100, TMR = 0x180, IRR = 0x200, ESR = 0x280, ICR = 0x300, ICR2 = 0x310;
const LVTT = 0x320, LVT0 = 0x350, LVT1 = 0x360, LVTERR = 0x370;

const bit = (base: number, vec: number) => ({ off: base + (vec >> 5) * 0x10, mask: 1 << (vec & 31) });
function vecSet(v: Parameters<typeof apicRead>[0], base: number, vec: number): boolean {
  const b = bit(base, vec);
  return (apicRead(v, b.off) & b.mask) !== 0;
}
/** ICR low: vector | delivery mode << 8 | logical << 11 | assert << 14 | level << 15 | shorthand << 18. */
const icr = (vec: number, mode = 0, o: { logical?: boolean; level?: boolean; assert?: boolean; short?: number } = {}) =>
  (vec | (mode << 8) | (o.logical ? 1 << 11 : 0) | (o.assert !== false ? 1 << 14 : 0) | (o.level ? 1 << 15 : 0) | ((o.short ?? 0) << 18)) >>> 0;

describe('local APIC registers (xAPIC MMIO at 0xFEE00000)', () => {
  it('come out of reset as the SDM and KVM define them', () => {
    const { vcpus: [bsp, ap] } = irqVm({ vcpus: 2 });
    expect(apicRead(bsp, ID)).toBe(0);
    expect(apicRead(ap, ID)).toBe(1 << 24);
    expect(apicRead(bsp, LVR)).toBe(0x50014);
    expect(apicRead(bsp, SVR)).toBe(0xff);
    expect(apicRead(bsp, DFR)).toBe(0xffffffff);
    expect(apicRead(bsp, LVTT)).toBe(0x10000);
    expect(apicRead(bsp, LVT1)).toBe(0x10000);
    // KVM's LINT0_REENABLED quirk: the BSP's LINT0 is ExtINT (virtual-wire mode), the AP's masked.
    expect(apicRead(bsp, LVT0)).toBe(0x700);
    expect(apicRead(ap, LVT0)).toBe(0x10000);
    expect(bsp.getMpState()).toBe(KvmMpState.RUNNABLE);
    expect(ap.getMpState()).toBe(KvmMpState.INIT_RECEIVED);
  });

  it('dispatch the shared page by the vCPU whose context the access is in', () => {
    const { vcpus: [a, b] } = irqVm({ vcpus: 2 });
    apicWrite(a, TPR, 0x20);
    apicWrite(b, TPR, 0x70);
    expect(apicRead(a, TPR)).toBe(0x20);
    expect(apicRead(b, TPR)).toBe(0x70);
    expect(a.arch.cr8).toBe(2n); // CR8 mirrors TPR[7:4]
  });

  it('keep read-only bits, mask LVTs while software-disabled, latch ESR on write', () => {
    const { vcpus: [v] } = irqVm();
    apicWrite(v, LVR, 0x12345678);
    expect(apicRead(v, LVR)).toBe(0x50014);
    apicWrite(v, LVTERR, 0x33); // SVR.EN = 0: forced masked
    expect(apicRead(v, LVTERR)).toBe(0x10033);
    swEnable(v);
    apicWrite(v, LVTERR, 0x33);
    expect(apicRead(v, LVTERR)).toBe(0x33);
    apicWrite(v, DFR, 0);
    expect(apicRead(v, DFR)).toBe(0x0fffffff);
    apicWrite(v, LDR, 0x12345678);
    expect(apicRead(v, LDR)).toBe(0x12000000);
    // Software-disabling masks every LVT.
    apicWrite(v, SVR, 0xff);
    expect(apicRead(v, LVTERR)).toBe(0x10033);
    swEnable(v);
    // Sending a fixed IPI with an illegal vector (< 16) sets "send illegal vector" once ESR is written.
    apicWrite(v, ICR, icr(3, 0, { short: 1 }));
    expect(apicRead(v, ESR)).toBe(0);
    apicWrite(v, ESR, 0);
    expect(apicRead(v, ESR)).toBe(0x20);
    apicWrite(v, ESR, 0);
    expect(apicRead(v, ESR)).toBe(0);
  });

  it('MMIO of a hardware-disabled APIC reads all-ones and is not the APIC (KVM_X86_QUIRK_LAPIC_MMIO_HOLE)', () => {
    const { vcpus: [v] } = irqVm();
    v.setMsr(0x1b, 0xfee00100n); // EN = 0
    expect(mmioRead32(v, 0xfee00030)).toBe(0xffffffff);
    // Relocating the base moves the page for this vCPU.
    v.setMsr(0x1b, 0xfed00900n);
    expect(mmioRead32(v, 0xfed00030)).toBe(0x50014);
    const d = new Uint8Array(4);
    expect(inVcpu(v, () => v.kvm.mmioBus.read(0xfee00030, 4, d))).toBe(false);
  });
});

describe('priority, acknowledge and EOI (IrqSource contract)', () => {
  it('delivers the highest IRR above PPR, moves it to ISR, and EOI retires the highest ISR', () => {
    const { kvm, vcpus: [v] } = irqVm();
    swEnable(v);
    apicWrite(v, LVT0, 0x10000); // no ExtINT
    const src = kvm.irqSource!;
    for (const vec of [0x31, 0x52, 0x45]) apicWrite(v, ICR, icr(vec, 0, { short: 1 })); // self IPIs
    expect(vecSet(v, IRR, 0x31) && vecSet(v, IRR, 0x52) && vecSet(v, IRR, 0x45)).toBe(true);
    expect(src.hasInterrupt(v)).toBe(true);
    expect(src.acknowledge(v)).toBe(0x52);
    expect(vecSet(v, ISR, 0x52)).toBe(true);
    expect(vecSet(v, IRR, 0x52)).toBe(false);
    expect(apicRead(v, PPR)).toBe(0x50);
    // 0x45's class (4) does not beat PPR's (5): nothing deliverable until EOI.
    expect(src.hasInterrupt(v)).toBe(false);
    expect(src.acknowledge(v)).toBe(-1);
    apicWrite(v, EOI, 0);
    expect(vecSet(v, ISR, 0x52)).toBe(false);
    expect(apicRead(v, PPR)).toBe(0);
    // TPR 0x40 masks class 4 and below.
    apicWrite(v, TPR, 0x40);
    expect(apicRead(v, PPR)).toBe(0x40);
    expect(src.hasInterrupt(v)).toBe(false);
    apicWrite(v, TPR, 0x3f);
    expect(src.acknowledge(v)).toBe(0x45);
    // Nested: 0x31 cannot preempt 0x45 in service.
    expect(src.hasInterrupt(v)).toBe(false);
    apicWrite(v, EOI, 0);
    apicWrite(v, TPR, 0);
    expect(src.acknowledge(v)).toBe(0x31);
    apicWrite(v, EOI, 0);
    expect(src.hasInterrupt(v)).toBe(false);
  });

  it('a software-disabled APIC drops fixed interrupts', () => {
    const { kvm, vcpus: [v] } = irqVm();
    apicWrite(v, LVT0, 0x10000);
    apicWrite(v, ICR, icr(0x40, 0, { short: 1 }));
    expect(vecSet(v, IRR, 0x40)).toBe(false);
    expect(kvm.irqSource!.hasInterrupt(v)).toBe(false);
  });

  it('records the trigger mode in TMR', () => {
    const { vcpus: [v] } = irqVm();
    swEnable(v);
    apicWrite(v, ICR, icr(0x61, 0, { short: 1, level: true }));
    apicWrite(v, ICR, icr(0x62, 0, { short: 1 }));
    expect(vecSet(v, TMR, 0x61)).toBe(true);
    expect(vecSet(v, TMR, 0x62)).toBe(false);
  });
});

describe('IPIs through the ICR', () => {
  function smp(n: number) {
    const r = irqVm({ vcpus: n });
    for (const v of r.vcpus) swEnable(v);
    return r;
  }
  const irr = (v: Parameters<typeof apicRead>[0], vec: number) => vecSet(v, IRR, vec);

  it('physical destinations, broadcast and the shorthands', () => {
    const { vcpus: [a, b, c] } = smp(3);
    apicWrite(a, ICR2, 2 << 24);
    apicWrite(a, ICR, icr(0x40));
    expect([irr(a, 0x40), irr(b, 0x40), irr(c, 0x40)]).toEqual([false, false, true]);
    apicWrite(a, ICR2, 0xff << 24);
    apicWrite(a, ICR, icr(0x41));
    expect([irr(a, 0x41), irr(b, 0x41), irr(c, 0x41)]).toEqual([true, true, true]);
    apicWrite(b, ICR, icr(0x42, 0, { short: 1 })); // self
    expect([irr(a, 0x42), irr(b, 0x42), irr(c, 0x42)]).toEqual([false, true, false]);
    apicWrite(b, ICR, icr(0x43, 0, { short: 2 })); // all including self
    expect([irr(a, 0x43), irr(b, 0x43), irr(c, 0x43)]).toEqual([true, true, true]);
    apicWrite(b, ICR, icr(0x44, 0, { short: 3 })); // all excluding self
    expect([irr(a, 0x44), irr(b, 0x44), irr(c, 0x44)]).toEqual([true, false, true]);
  });

  it('logical destinations in flat and cluster models', () => {
    const { vcpus: [a, b, c] } = smp(3);
    apicWrite(a, LDR, 0x01 << 24);
    apicWrite(b, LDR, 0x02 << 24);
    apicWrite(c, LDR, 0x04 << 24);
    apicWrite(a, ICR2, 0x06 << 24);
    apicWrite(a, ICR, icr(0x50, 0, { logical: true }));
    expect([irr(a, 0x50), irr(b, 0x50), irr(c, 0x50)]).toEqual([false, true, true]);
    // Cluster model: high nibble is the cluster, low nibble a bitmap within it.
    for (const v of [a, b, c]) apicWrite(v, DFR, 0x0fffffff);
    apicWrite(a, LDR, 0x11 << 24);
    apicWrite(b, LDR, 0x12 << 24);
    apicWrite(c, LDR, 0x21 << 24);
    apicWrite(a, ICR2, 0x13 << 24);
    apicWrite(a, ICR, icr(0x51, 0, { logical: true }));
    expect([irr(a, 0x51), irr(b, 0x51), irr(c, 0x51)]).toEqual([true, true, false]);
    apicWrite(a, ICR2, 0x21 << 24);
    apicWrite(a, ICR, icr(0x52, 0, { logical: true }));
    expect([irr(a, 0x52), irr(b, 0x52), irr(c, 0x52)]).toEqual([false, false, true]);
  });

  it('lowest priority picks exactly one target (vector hashing over the candidates)', () => {
    const { vcpus } = smp(3);
    vcpus.forEach((v, i) => apicWrite(v, LDR, (1 << i) << 24));
    apicWrite(vcpus[0], ICR2, 0x07 << 24);
    apicWrite(vcpus[0], ICR, icr(0x61, 1, { logical: true }));
    expect(vcpus.map((v) => irr(v, 0x61))).toEqual([false, true, false]); // 0x61 % 3 = 1
  });

  it('NMI and SMI set the requests; the run loop sees the NMI pending', () => {
    const { vcpus: [a, b] } = smp(2);
    apicWrite(a, ICR2, 1 << 24);
    apicWrite(a, ICR, icr(0, 4));
    expect(b.arch.nmiPending).toBe(1);
  });

  it('INIT then SIPI start an AP in real mode at vector << 8 : 0', () => {
    const { kvm, vcpus: [bsp, ap] } = smp(2);
    const cs = emptySegment();
    expect(ap.getMpState()).toBe(KvmMpState.INIT_RECEIVED);
    // A waiting AP stays parked: KVM_RUN yields while the BSP can still run.
    expect(ap.runVcpu().exitReason).toBe(KvmExitReason.KVM_EXIT_INTR);
    expect(ap.cpu.state.instructionsRetired).toBe(0);
    apicWrite(bsp, ICR2, 1 << 24);
    apicWrite(bsp, ICR, icr(0, 5, { level: true })); // INIT assert
    apicWrite(bsp, ICR, icr(0, 5, { level: true, assert: false })); // INIT de-assert: no effect
    apicWrite(bsp, ICR, icr(0x9a, 6)); // SIPI vector 0x9A
    guest(ap).haltAt = 10;
    const r = ap.runVcpu();
    expect(ap.getMpState()).toBe(KvmMpState.HALTED); // started, ran 10 instructions, halted
    kvm.ops.getSegment(ap, cs, VcpuSreg.CS);
    expect(cs.selector).toBe(0x9a00);
    expect(cs.base).toBe(0x9a000n);
    expect(ap.rip).toBe(0n);
    expect(ap.cpu.state.instructionsRetired).toBe(11); // 10 instructions and the HLT KVM completed
    expect(r.exitReason).toBe(KvmExitReason.KVM_EXIT_INTR); // halted; the BSP can still run
    // A second SIPI without INIT is ignored; INIT to the halted AP parks it again.
    apicWrite(bsp, ICR, icr(0x10, 6));
    ap.runVcpu();
    kvm.ops.getSegment(ap, cs, VcpuSreg.CS);
    expect(cs.selector).toBe(0x9a00);
    apicWrite(bsp, ICR, icr(0, 5, { level: true }));
    ap.runVcpu();
    expect(ap.getMpState()).toBe(KvmMpState.INIT_RECEIVED);
  });
});

describe('IA32_APIC_BASE and x2APIC', () => {
  it('allows only the SDM 10.12.5 transitions from the guest', async () => {
    const { wrmsr, rdmsr } = await import('./helpers');
    const { vcpus: [v] } = irqVm();
    const XAPIC = 0xfee00900n, X2APIC = 0xfee00d00n, DISABLED = 0xfee00100n;
    expect(wrmsr(v, 0x1b, 0xfee00500n)).toBe(1); // EXTD without EN: invalid
    expect(wrmsr(v, 0x1b, 0xfee00901n)).toBe(1); // reserved bit 0
    expect(wrmsr(v, 0x1b, X2APIC)).toBe(0); // xAPIC → x2APIC
    expect(wrmsr(v, 0x1b, XAPIC)).toBe(1); // x2APIC → xAPIC: #GP
    expect(wrmsr(v, 0x1b, DISABLED)).toBe(0); // x2APIC → disabled
    expect(wrmsr(v, 0x1b, X2APIC)).toBe(1); // disabled → x2APIC: #GP
    expect(wrmsr(v, 0x1b, XAPIC)).toBe(0); // disabled → xAPIC
    expect(rdmsr(v, 0x1b)).toBe(XAPIC);
    // Userspace (host-initiated) may set any valid state directly.
    v.setMsr(0x1b, X2APIC);
    v.setMsr(0x1b, XAPIC);
    expect(v.getMsr(0x1b)).toBe(XAPIC);
    // Without CPUID x2APIC, EXTD is reserved.
    v.setCpuid2(v.getCpuid2().map((e) => (e.function === 1 ? { ...e, ecx: (e.ecx & ~(1 << 21)) >>> 0 } : e)));
    expect(wrmsr(v, 0x1b, X2APIC)).toBe(1);
  });

  it('x2APIC MSRs: 32-bit ID, derived LDR, 64-bit ICR, self IPI, #GP rules', async () => {
    const { wrmsr, rdmsr } = await import('./helpers');
    const { kvm, vcpus: [a, b] } = irqVm({ vcpus: 2 });
    expect(rdmsr(b, 0x802)).toBe('#GP'); // not in x2APIC mode yet
    for (const v of [a, b]) {
      expect(wrmsr(v, 0x1b, v.arch.apicBase | 0xc00n)).toBe(0);
      expect(wrmsr(v, 0x80f, 0x1ffn)).toBe(0); // SVR
    }
    expect(rdmsr(b, 0x802)).toBe(1n);
    expect(rdmsr(b, 0x803)).toBe(0x50014n);
    expect(rdmsr(b, 0x80d)).toBe((0n << 16n) | (1n << 1n)); // cluster 0, bit 1
    expect(wrmsr(b, 0x802, 5n)).toBe(1); // ID is read-only
    expect(wrmsr(b, 0x80d, 5n)).toBe(1); // LDR is read-only
    expect(rdmsr(b, 0x80e)).toBe('#GP'); // no DFR
    expect(rdmsr(b, 0x831)).toBe('#GP'); // no ICR2
    expect(rdmsr(b, 0x80b)).toBe('#GP'); // EOI is write-only
    expect(rdmsr(b, 0x83f)).toBe('#GP'); // SELF IPI is write-only
    expect(wrmsr(b, 0x80b, 1n)).toBe(1); // EOI with a non-zero value
    expect(wrmsr(b, 0x808, 1n << 32n)).toBe(1); // reserved upper half
    expect(wrmsr(b, 0x808, 0x20n)).toBe(0);
    expect(rdmsr(b, 0x808)).toBe(0x20n);
    // 64-bit ICR: destination in bits 63:32.
    expect(wrmsr(a, 0x830, (1n << 32n) | 0x4070n)).toBe(0);
    expect(rdmsr(a, 0x830)).toBe((1n << 32n) | 0x4070n);
    expect(kvm.irqchip!.lapic(b)!.irrPending(0x70)).toBe(true);
    // Self IPI.
    expect(wrmsr(a, 0x83f, 0x71n)).toBe(0);
    expect(kvm.irqchip!.lapic(a)!.irrPending(0x71)).toBe(true);
    expect(wrmsr(a, 0x83f, 0x171n)).toBe(1);
    // x2APIC logical: cluster 0, bit 1 is vCPU 1.
    expect(wrmsr(a, 0x830, (0x2n << 32n) | 0x4872n)).toBe(0);
    expect(kvm.irqchip!.lapic(b)!.irrPending(0x72)).toBe(true);
    // EOI through the MSR retires the in-service vector.
    expect(kvm.irqSource!.acknowledge(b)).toBe(0x72);
    expect(wrmsr(b, 0x80b, 0n)).toBe(0);
    expect(kvm.irqchip!.lapic(b)!.isrSet(0x72)).toBe(false);
    // The xAPIC page is gone in x2APIC mode.
    expect(mmioRead32(a, 0xfee00020)).toBe(0xffffffff);
  });
});
