import { Kvm, KvmError, KvmIrqchipId, defaultIrqRouting } from '../../src';
import { apicWrite, guest, inb, irqVm, mmioRead32, mmioWrite32, outb, swEnable } from './helpers';

const IOAPIC = 0xfec00000;
const EOI = 0xb0, LVT0 = 0x350;

function ioapicRead(v: Parameters<typeof mmioRead32>[0], reg: number): number {
  mmioWrite32(v, IOAPIC, reg);
  return mmioRead32(v, IOAPIC + 0x10);
}
function ioapicWrite(v: Parameters<typeof mmioRead32>[0], reg: number, val: number): void {
  mmioWrite32(v, IOAPIC, reg);
  mmioWrite32(v, IOAPIC + 0x10, val);
}
/** Program redirection entry `pin`: low word and destination APIC ID. */
function route(v: Parameters<typeof mmioRead32>[0], pin: number, low: number, dest = 0): void {
  ioapicWrite(v, 0x11 + 2 * pin, dest << 24);
  ioapicWrite(v, 0x10 + 2 * pin, low);
}

function apicVm(n = 1) {
  const r = irqVm({ vcpus: n });
  for (const v of r.vcpus) {
    swEnable(v);
    apicWrite(v, LVT0, 0x10000); // IOAPIC mode: the 8259 is not wired through
  }
  return r;
}

describe('IOAPIC (82093AA) at 0xFEC00000', () => {
  it('identifies itself: version 0x170011 (24 pins), ID writable, entries masked at reset', () => {
    const { vcpus: [v] } = apicVm();
    expect(ioapicRead(v, 1)).toBe(0x170011);
    ioapicWrite(v, 0, 0x0a000000);
    expect(ioapicRead(v, 0)).toBe(0x0a000000);
    expect(ioapicRead(v, 2)).toBe(0x0a000000);
    expect(ioapicRead(v, 0x10)).toBe(0x10000);
    expect(ioapicRead(v, 0x10 + 2 * 23)).toBe(0x10000);
    // Remote IRR and delivery status are read-only.
    ioapicWrite(v, 0x12, 0x1ffff);
    expect(ioapicRead(v, 0x12)).toBe(0x1afff);
  });

  it('edge pins deliver on a rising edge only', () => {
    const { kvm, vcpus: [v] } = apicVm();
    route(v, 4, 0x34);
    expect(kvm.irqLine(4, 1)).toBe(2); // KVM's status sums the routes: the 8259 (unmasked after reset) and the IOAPIC
    expect(kvm.irqchip!.lapic(v)!.irrPending(0x34)).toBe(true);
    expect(kvm.irqSource!.acknowledge(v)).toBe(0x34);
    apicWrite(v, EOI, 0);
    expect(kvm.irqLine(4, 1)).toBe(0); // still high: no new edge
    expect(kvm.irqchip!.lapic(v)!.irrPending(0x34)).toBe(false);
    kvm.irqLine(4, 0);
    expect(kvm.irqLine(4, 1)).toBe(1); // the 8259 saw no new edge (its IRR bit is still set)
  });

  it('level pins set remote IRR until the LAPIC EOIs, and re-deliver while still asserted', () => {
    const { kvm, vcpus: [v] } = apicVm();
    const ioapic = kvm.irqchip!.ioapic;
    route(v, 10, 0x8000 | 0x5a); // level, vector 0x5A
    kvm.irqLine(10, 1);
    expect(ioapic.remoteIrr(10)).toBe(true);
    expect(ioapicRead(v, 0x10 + 20) & 0x4000).toBe(0x4000);
    expect(kvm.irqSource!.acknowledge(v)).toBe(0x5a);
    expect(kvm.irqchip!.lapic(v)!.tmrSet(0x5a)).toBe(true);
    // Line still high at EOI: delivered again.
    apicWrite(v, EOI, 0);
    expect(ioapic.remoteIrr(10)).toBe(true);
    expect(kvm.irqSource!.acknowledge(v)).toBe(0x5a);
    // Device lowers the line, guest EOIs: remote IRR clears, nothing new.
    kvm.irqLine(10, 0);
    apicWrite(v, EOI, 0);
    expect(ioapic.remoteIrr(10)).toBe(false);
    expect(kvm.irqSource!.hasInterrupt(v)).toBe(false);
  });

  it('a masked level pin is delivered when unmasked; switching to edge drops remote IRR', () => {
    const { kvm, vcpus: [v] } = apicVm();
    route(v, 11, 0x18000 | 0x5b); // level, masked
    kvm.irqLine(11, 1);
    expect(kvm.irqSource!.hasInterrupt(v)).toBe(false);
    route(v, 11, 0x8000 | 0x5b);
    expect(kvm.irqchip!.lapic(v)!.irrPending(0x5b)).toBe(true);
    expect(kvm.irqchip!.ioapic.remoteIrr(11)).toBe(true);
    route(v, 11, 0x5b);
    expect(kvm.irqchip!.ioapic.remoteIrr(11)).toBe(false);
  });

  it('delivers to the destination APIC (physical and logical)', () => {
    const { kvm, vcpus: [a, b] } = apicVm(2);
    route(a, 5, 0x45, 1);
    kvm.irqLine(5, 1);
    expect(kvm.irqchip!.lapic(b)!.irrPending(0x45)).toBe(true);
    expect(kvm.irqchip!.lapic(a)!.irrPending(0x45)).toBe(false);
    apicWrite(a, 0xd0, 0x01000000);
    apicWrite(b, 0xd0, 0x02000000);
    route(a, 6, 0x800 | 0x46, 0x01); // logical, flat
    kvm.irqLine(6, 1);
    expect(kvm.irqchip!.lapic(a)!.irrPending(0x46)).toBe(true);
    expect(kvm.irqchip!.lapic(b)!.irrPending(0x46)).toBe(false);
  });
});

describe('8259 PIC pair', () => {
  /** The BIOS-style initialisation: master vectors 0x20, slave 0x28, cascade on IRQ2, 8086 mode. */
  function initPics(kvm: Kvm, icw4 = 0x01): void {
    outb(kvm, 0x20, 0x11); outb(kvm, 0x21, 0x20); outb(kvm, 0x21, 0x04); outb(kvm, 0x21, icw4);
    outb(kvm, 0xa0, 0x11); outb(kvm, 0xa1, 0x28); outb(kvm, 0xa1, 0x02); outb(kvm, 0xa1, icw4);
  }

  it('ICW1-4 set the vector base; IRQs reach the BSP as ExtINT through LINT0', () => {
    const { kvm, vcpus: [v] } = irqVm();
    initPics(kvm);
    expect(inb(kvm, 0x21)).toBe(0); // ICW1 cleared the mask
    kvm.irqLine(1, 1);
    expect(kvm.irqSource!.hasInterrupt(v)).toBe(true);
    expect(kvm.irqSource!.acknowledge(v)).toBe(0x21);
    outb(kvm, 0x20, 0x0b); // OCW3: read ISR
    expect(inb(kvm, 0x20)).toBe(0x02);
    outb(kvm, 0x20, 0x0a); // OCW3: read IRR
    expect(inb(kvm, 0x20)).toBe(0x00);
    outb(kvm, 0x20, 0x20); // non-specific EOI
    outb(kvm, 0x20, 0x0b);
    expect(inb(kvm, 0x20)).toBe(0);
  });

  it('OCW1 masks, and a masked LVT0 keeps the 8259 away from the vCPU', () => {
    const { kvm, vcpus: [v] } = irqVm();
    initPics(kvm);
    outb(kvm, 0x21, 0xff);
    expect(kvm.irqLine(3, 1)).toBe(0); // PIC masked (-1, ignored), IOAPIC pin masked (0)
    expect(kvm.irqSource!.hasInterrupt(v)).toBe(false);
    outb(kvm, 0x21, 0x00);
    expect(kvm.irqSource!.hasInterrupt(v)).toBe(true);
    swEnable(v);
    apicWrite(v, LVT0, 0x10700);
    expect(kvm.irqSource!.hasInterrupt(v)).toBe(false);
  });

  it('the slave cascades through IRQ2; priorities order simultaneous requests', () => {
    const { kvm, vcpus: [v] } = irqVm();
    initPics(kvm);
    kvm.irqLine(12, 1);
    kvm.irqLine(4, 1);
    kvm.irqLine(1, 1);
    const src = kvm.irqSource!;
    expect(src.acknowledge(v)).toBe(0x21);
    outb(kvm, 0x20, 0x20);
    expect(src.acknowledge(v)).toBe(0x2c); // IRQ12 via IRQ2 beats IRQ4
    outb(kvm, 0xa0, 0x0b);
    expect(inb(kvm, 0xa0)).toBe(0x10);
    outb(kvm, 0xa0, 0x20);
    outb(kvm, 0x20, 0x20);
    expect(src.acknowledge(v)).toBe(0x24);
    outb(kvm, 0x20, 0x64); // specific EOI for IRQ4
    expect(src.hasInterrupt(v)).toBe(false);
  });

  it('ELCR makes a line level-triggered; auto-EOI leaves ISR clear; poll acts as INTA', () => {
    const { kvm, vcpus: [v] } = irqVm();
    initPics(kvm, 0x03); // auto-EOI
    outb(kvm, 0x4d1, 0xff);
    expect(inb(kvm, 0x4d1)).toBe(0xde); // IRQ8 and IRQ13 cannot be level
    outb(kvm, 0x4d0, 0x20);
    kvm.irqLine(5, 1);
    expect(kvm.irqSource!.acknowledge(v)).toBe(0x25);
    outb(kvm, 0x20, 0x0b);
    expect(inb(kvm, 0x20)).toBe(0); // auto-EOI
    expect(kvm.irqSource!.acknowledge(v)).toBe(0x25); // level: still requesting
    kvm.irqLine(5, 0);
    expect(kvm.irqSource!.hasInterrupt(v)).toBe(false);
    // Spurious: nothing pending at INTA gives IRQ7's vector.
    expect(kvm.irqSource!.acknowledge(v)).toBe(-1);
    expect(kvm.irqchip!.pic.readIrq()).toBe(0x27);
    // Poll (OCW3 bit 2): 0x80 | level of the highest request.
    kvm.irqLine(6, 1);
    outb(kvm, 0x20, 0x0c);
    expect(inb(kvm, 0x20)).toBe(0x86);
  });
});

describe('GSI routing, KVM_IRQ_LINE and KVM_SIGNAL_MSI', () => {
  it('default routing: GSI 0 drives PIC pin 0 and IOAPIC pin 2; 16-23 only the IOAPIC', () => {
    const r = defaultIrqRouting();
    expect(r.filter((e) => e.gsi === 0)).toEqual([
      { gsi: 0, type: 'irqchip', irqchip: KvmIrqchipId.PIC_MASTER, pin: 0 },
      { gsi: 0, type: 'irqchip', irqchip: KvmIrqchipId.IOAPIC, pin: 2 },
    ]);
    expect(r.filter((e) => e.gsi === 9).map((e) => e.type === 'irqchip' && e.irqchip)).toEqual([KvmIrqchipId.PIC_SLAVE, KvmIrqchipId.IOAPIC]);
    expect(r.filter((e) => e.gsi === 17)).toEqual([{ gsi: 17, type: 'irqchip', irqchip: KvmIrqchipId.IOAPIC, pin: 17 }]);
    expect(r.filter((e) => e.gsi === 2)).toEqual([]);

    const { kvm, vcpus: [v] } = apicVm();
    route(v, 2, 0x30);
    kvm.irqLine(0, 1);
    expect(kvm.irqchip!.lapic(v)!.irrPending(0x30)).toBe(true);
    expect(kvm.irqLine(2, 1)).toBe(-1); // the cascade GSI exists but goes nowhere
  });

  it('unknown GSIs and missing irqchips are errors naming the problem', () => {
    const { kvm } = irqVm();
    expect(() => kvm.irqLine(24, 1)).toThrow(KvmError);
    expect(() => kvm.irqLine(24, 1)).toThrow(/GSI 24 is not in the GSI routing table/);
    expect(() => kvm.irqLine(-1, 1)).toThrow(/EINVAL/);
    expect(() => kvm.createIrqchip()).toThrow(/EEXIST/);
    const bare = irqVm({ irqchip: false }).kvm;
    expect(() => bare.irqLine(0, 1)).toThrow(/ENXIO.*createIrqchip/);
    expect(() => kvm.setGsiRouting([{ gsi: 0, type: 'irqchip', irqchip: KvmIrqchipId.IOAPIC, pin: 24 }])).toThrow(/pin 24 is not 0..23/);
    expect(() => kvm.setGsiRouting([
      { gsi: 3, type: 'irqchip', irqchip: KvmIrqchipId.IOAPIC, pin: 1 },
      { gsi: 3, type: 'irqchip', irqchip: KvmIrqchipId.IOAPIC, pin: 2 },
    ])).toThrow(/routed twice/);
  });

  it('KVM_SET_GSI_ROUTING with an MSI route, and KVM_SIGNAL_MSI', () => {
    const { kvm, vcpus: [a, b] } = apicVm(2);
    kvm.setGsiRouting([{ gsi: 40, type: 'msi', addressLo: 0xfee01000, addressHi: 0, data: 0x4066 }]);
    expect(kvm.irqLine(40, 1)).toBe(1);
    expect(kvm.irqchip!.lapic(b)!.irrPending(0x66)).toBe(true);
    expect(kvm.irqLine(0, 1)).toBe(-1); // inside the table (0..40) but no route
    expect(() => kvm.irqLine(41, 1)).toThrow(/GSI 41 is not in the GSI routing table \(GSIs 0..40\)/);
    expect(kvm.signalMsi(0xfee00000n, 0x67)).toBe(1);
    expect(kvm.irqchip!.lapic(a)!.irrPending(0x67)).toBe(true);
    expect(() => kvm.signalMsi(0xfec00000n, 0x67)).toThrow(/not in the MSI window/);
    // NMI by MSI.
    kvm.signalMsi(0xfee01000n, 0x400);
    expect(b.arch.nmiPending).toBe(1);
  });

  it('a device interrupt wakes a halted vCPU through the run loop', () => {
    const { kvm, vcpus: [v] } = apicVm();
    route(v, 9, 0x8000 | 0x59);
    guest(v).haltAt = 20;
    v.runVcpu();
    expect(guest(v).injected).toEqual([]);
    kvm.irqLine(9, 1);
    guest(v).onIrq = () => { kvm.irqLine(9, 0); apicWrite(v, EOI, 0); };
    v.runVcpu();
    expect(guest(v).injected.map((i) => i.vector)).toEqual([0x59]);
    expect(kvm.irqchip!.ioapic.remoteIrr(9)).toBe(false);
  });
});
