/** IOPM (APM 15.10.1) and MSRPM (APM 15.11) layouts. */
import { HostMemory, Kvm } from '@tsvisor/core';
import { Iopm, Msrpm, msrpmOffset, IOPM_SIZE, MSRPM_SIZE, SvmBackend, svmOf, VMCB_CONTROL } from '@tsvisor/svm';

describe('IOPM', () => {
  test('is 12 KiB, one bit per port', () => {
    expect(IOPM_SIZE).toBe(12288);
    const io = Iopm.alloc(new HostMemory());
    io.setIntercept(0x3f8, true);
    expect(io.bytes[0x3f8 >> 3]).toBe(1 << (0x3f8 & 7));
    expect(io.intercepts(0x3f8, 1)).toBe(true);
    expect(io.intercepts(0x3f9, 1)).toBe(false);
  });

  test('a multi-byte access checks the bit of every byte it touches', () => {
    const io = Iopm.alloc(new HostMemory());
    io.setIntercept(0x3fb, true);
    expect(io.intercepts(0x3f8, 4)).toBe(true); // 0x3F8..0x3FB
    expect(io.intercepts(0x3f8, 2)).toBe(false);
    expect(io.intercepts(0x3fa, 2)).toBe(true);
  });

  test('an access at port 0xFFFF reads bits past 65535 (why the map has a third page)', () => {
    const io = Iopm.alloc(new HostMemory());
    expect(io.intercepts(0xffff, 4)).toBe(false);
    io.setIntercept(0x10001, true);
    expect(io.intercepts(0xffff, 4)).toBe(true);
    expect(io.intercepts(0xffff, 2)).toBe(false);
  });
});

describe('MSRPM', () => {
  test('is 8 KiB: three 2 KiB vectors, two bits per MSR (read, then write)', () => {
    expect(MSRPM_SIZE).toBe(8192);
    expect(msrpmOffset(0x0)).toEqual({ byte: 0, bit: 0 });
    expect(msrpmOffset(0x1)).toEqual({ byte: 0, bit: 2 });
    expect(msrpmOffset(0x174)).toEqual({ byte: 0x5d, bit: 0 });
    expect(msrpmOffset(0x1fff)).toEqual({ byte: 0x7ff, bit: 6 });
    expect(msrpmOffset(0xc0000080)).toEqual({ byte: 0x800 + 0x20, bit: 0 });
    expect(msrpmOffset(0xc0000100)).toEqual({ byte: 0x800 + 0x40, bit: 0 });
    expect(msrpmOffset(0xc0010114)).toEqual({ byte: 0x1000 + 0x45, bit: 0 });
    expect(msrpmOffset(0x2000)).toBeNull();
    expect(msrpmOffset(0xc0002000)).toBeNull();
    expect(msrpmOffset(0x40000000)).toBeNull();
  });

  test('read and write bits are separate; MSRs outside the ranges always exit', () => {
    const pm = Msrpm.alloc(new HostMemory());
    pm.interceptAll();
    pm.setPassthrough(0xc0000100, true, false);
    expect(pm.intercepts(0xc0000100, false)).toBe(false);
    expect(pm.intercepts(0xc0000100, true)).toBe(true);
    expect(pm.bytes[0x840]).toBe(0xfe);
    pm.bytes.fill(0);
    expect(pm.intercepts(0x40000000, false)).toBe(true);
    expect(pm.intercepts(0x10, false)).toBe(false);
  });

  test("KVM's initial MSRPM passes the VMLOAD/VMSAVE MSRs through and intercepts the rest; the IOPM intercepts every port", () => {
    const kvm = Kvm.create({ backend: SvmBackend });
    const vcpu = kvm.createVcpu(0);
    const svm = svmOf(vcpu);
    expect(Number(svm.vmcb.read64(VMCB_CONTROL.MSRPM_BASE_PA))).toBe(svm.msrpm.pa);
    for (const m of [0xc0000100, 0xc0000101, 0xc0000102, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0x174]) {
      expect(svm.msrpm.intercepts(m, false)).toBe(false);
      expect(svm.msrpm.intercepts(m, true)).toBe(false);
    }
    for (const m of [0xc0000080, 0x175, 0x176, 0x10, 0x1b, 0xc0000103]) expect(svm.msrpm.intercepts(m, true)).toBe(true);
    const iopm = new Iopm(kvm.hostMemory, Number(svm.vmcb.read64(VMCB_CONTROL.IOPM_BASE_PA)));
    expect(iopm.intercepts(0x80, 1)).toBe(true);
    expect(iopm.intercepts(0x3f8, 1)).toBe(true);
    kvm.destroy();
  });
});
