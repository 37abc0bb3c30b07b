import { IoPortBus, MmioRegionBus, KvmRun, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KvmExitReason } from '../../src';

describe('IoPortBus', () => {
  it('reads all-ones and drops writes on unclaimed ports', () => {
    const bus = new IoPortBus();
    expect(bus.read(0x1234, 1)).toBe(0xff);
    expect(bus.read(0x1234, 2)).toBe(0xffff);
    expect(bus.read(0x1234, 4)).toBe(0xffffffff);
    expect(() => bus.write(0x1234, 4, 0xdeadbeef)).not.toThrow();
  });

  it('splits wide accesses into byte accesses for 8-bit devices and rejects overlaps', () => {
    const bus = new IoPortBus();
    const regs = new Uint8Array(4);
    bus.register('dev', 0x100, 4, { read8: (p) => regs[p - 0x100], write8: (p, v) => { regs[p - 0x100] = v; } });
    bus.write(0x100, 4, 0x44332211);
    expect([...regs]).toEqual([0x11, 0x22, 0x33, 0x44]);
    expect(bus.read(0x102, 2)).toBe(0x4433);
    // A 32-bit read straddling the device's end sees all-ones for the unclaimed byte.
    expect(bus.read(0x102, 4)).toBe(0xffff4433);
    expect(() => bus.register('other', 0x103, 2, {})).toThrow(/port 0x103 is already claimed by dev/);
  });

  it('answers KVM_EXIT_IO including string I/O (count > 1)', () => {
    const bus = new IoPortBus();
    const seen: number[] = [];
    bus.register('sink', 0x80, 1, { write8: (_p, v) => seen.push(v), read8: () => 0x5a });
    const run = new KvmRun();
    run.exitReason = KvmExitReason.KVM_EXIT_IO;
    Object.assign(run.io, { direction: KVM_EXIT_IO_OUT, size: 1, port: 0x80, count: 3 });
    run.page.set([1, 2, 3], run.io.dataOffset);
    bus.handleExit(run);
    expect(seen).toEqual([1, 2, 3]);
    Object.assign(run.io, { direction: KVM_EXIT_IO_IN, size: 1, port: 0x80, count: 2 });
    bus.handleExit(run);
    expect([...run.ioData]).toEqual([0x5a, 0x5a]);
  });
});

describe('MmioRegionBus', () => {
  it('answers KVM_EXIT_MMIO, splits 8-byte accesses and floats unclaimed reads', () => {
    const bus = new MmioRegionBus();
    const mem = new Uint8Array(16);
    bus.register('ram-ish', 0x1000, 16, {
      read: (o, s) => { let v = 0; for (let i = 0; i < s; i++) v |= mem[o + i] << (8 * i); return v >>> 0; },
      write: (o, s, v) => { for (let i = 0; i < s; i++) mem[o + i] = (v >>> (8 * i)) & 0xff; },
    });
    const run = new KvmRun();
    Object.assign(run.mmio, { physAddr: 0x1000n, len: 8, isWrite: true });
    run.mmio.data.set([1, 2, 3, 4, 5, 6, 7, 8]);
    bus.handleExit(run);
    expect([...mem.subarray(0, 8)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    Object.assign(run.mmio, { physAddr: 0x1004n, len: 4, isWrite: false });
    bus.handleExit(run);
    expect([...run.mmio.data.subarray(0, 4)]).toEqual([5, 6, 7, 8]);
    Object.assign(run.mmio, { physAddr: 0x9000n, len: 2, isWrite: false });
    bus.handleExit(run);
    expect([...run.mmio.data.subarray(0, 2)]).toEqual([0xff, 0xff]);
    expect(() => bus.register('x', 0x100f, 2, { read: () => 0, write: () => {} })).toThrow(/overlaps ram-ish/);
  });
});
