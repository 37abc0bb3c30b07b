/**
 * #VMEXIT encoding (APM 15.6–15.12, Appendix C): the processor's neutral exit record becomes
 * EXITCODE, EXITINFO1/2, EXITINTINFO, nRIP and guest instruction bytes in the VMCB.
 */
import { CrAccessType, EventType, GuestExit, GuestExitKind, HostMemory, InterceptInsn, X86Cpu, ACCESS_WRITE, ACCESS_FETCH, ACCESS_PAGE_WALK, Memslots } from '@tsvisor/core';
import { SvmHardware, Vmcb, VMCB_CONTROL, SvmExit, encodeVectoring, Intercept1 } from '@tsvisor/svm';

function setup() {
  const host = new HostMemory();
  const cpu = new X86Cpu(host, new Memslots(host), { vendor: 'amd' });
  const hw = new SvmHardware(cpu, host);
  const vmcb = Vmcb.alloc(host);
  return { hw, vmcb, ex: new GuestExit() };
}

function encode(fill: (ex: GuestExit) => void, prep?: (hw: SvmHardware) => void) {
  const { hw, vmcb, ex } = setup();
  prep?.(hw);
  fill(ex);
  hw.recordExit(vmcb, ex);
  return {
    code: vmcb.read64(VMCB_CONTROL.EXITCODE),
    info1: vmcb.read64(VMCB_CONTROL.EXITINFO1),
    info2: vmcb.read64(VMCB_CONTROL.EXITINFO2),
    nrip: vmcb.read64(VMCB_CONTROL.NRIP),
    intinfo: vmcb.read64(VMCB_CONTROL.EXITINTINFO),
    insnLen: vmcb.read8(VMCB_CONTROL.GUEST_INSN_LEN),
    vmcb,
  };
}

describe('IOIO EXITINFO1 (APM 15.10.2)', () => {
  const io = (o: Partial<GuestExit>) => encode((ex) => Object.assign(ex, { kind: GuestExitKind.IO, nextRip: 0x1002n, ...o }));
  test('OUT DX, AL to 0x3F8: port 31:16, SZ8 bit 4, TYPE 0; EXITINFO2 = next RIP', () => {
    const r = io({ port: 0x3f8, size: 1, isIn: false });
    expect(r.code).toBe(0x7bn);
    expect(r.info1).toBe(0x03f8_0010n);
    expect(r.info2).toBe(0x1002n);
    expect(r.nrip).toBe(0x1002n);
  });
  test('IN EAX, 0x60: SZ32 bit 6, TYPE bit 0', () => {
    expect(io({ port: 0x60, size: 4, isIn: true }).info1).toBe(0x0060_0041n);
  });
  test('16-bit access: SZ16 bit 5', () => {
    expect(io({ port: 0x1f0, size: 2, isIn: true }).info1).toBe(0x01f0_0021n);
  });
  test('REP OUTSB with 64-bit addressing from DS: STR bit 2, REP bit 3, A64 bit 9, SEG 12:10 = 3', () => {
    const r = io({ port: 0x3f8, size: 1, isIn: false, isString: true, isRep: true, addrSize: 8, segment: 3 });
    expect(r.info1).toBe(0x03f8_0000n | (3n << 10n) | (1n << 9n) | (1n << 4n) | (1n << 3n) | (1n << 2n));
  });
  test('INSW with 16-bit and 32-bit addressing: A16 bit 7, A32 bit 8', () => {
    expect(io({ port: 0x10, size: 2, isIn: true, isString: true, addrSize: 2, segment: 0 }).info1).toBe(0x0010_0000n | (1n << 7n) | (1n << 5n) | 4n | 1n);
    expect(io({ port: 0x10, size: 2, isIn: true, isString: true, addrSize: 4, segment: 0 }).info1).toBe(0x0010_0000n | (1n << 8n) | (1n << 5n) | 4n | 1n);
  });
});

describe('other exits', () => {
  test('MSR (0x7C): EXITINFO1 0 for RDMSR, 1 for WRMSR; nRIP', () => {
    expect(encode((ex) => Object.assign(ex, { kind: GuestExitKind.MSR_READ, nextRip: 0x2002n }))).toMatchObject({ code: 0x7cn, info1: 0n, nrip: 0x2002n });
    expect(encode((ex) => Object.assign(ex, { kind: GuestExitKind.MSR_WRITE, nextRip: 0x2002n }))).toMatchObject({ code: 0x7cn, info1: 1n });
  });

  test('instruction intercepts map to their exit codes and save nRIP', () => {
    const cases: Array<[InterceptInsn, number]> = [
      [InterceptInsn.CPUID, 0x72], [InterceptInsn.HLT, 0x78], [InterceptInsn.VMMCALL, 0x81], [InterceptInsn.RDTSC, 0x6e],
      [InterceptInsn.PAUSE, 0x77], [InterceptInsn.IRET, 0x74], [InterceptInsn.WBINVD, 0x89], [InterceptInsn.XSETBV, 0x8d],
      [InterceptInsn.VMRUN, 0x80], [InterceptInsn.VMLOAD, 0x82], [InterceptInsn.STGI, 0x84], [InterceptInsn.SKINIT, 0x86],
      [InterceptInsn.SIDT, 0x66], [InterceptInsn.LTR, 0x6d], [InterceptInsn.INVPCID, 0xa2], [InterceptInsn.MWAIT, 0x8b],
    ];
    for (const [insn, code] of cases) {
      const r = encode((ex) => Object.assign(ex, { kind: GuestExitKind.INSTRUCTION, insn, nextRip: 0x3003n }));
      expect([insn, r.code]).toEqual([insn, BigInt(code)]);
      expect(r.nrip).toBe(0x3003n);
    }
  });

  test('INVLPG and INTn decode assists: the address / the vector in EXITINFO1', () => {
    expect(encode((ex) => Object.assign(ex, { kind: GuestExitKind.INSTRUCTION, insn: InterceptInsn.INVLPG, faultAddress: 0xffff_8000_1234_5000n })))
      .toMatchObject({ code: 0x79n, info1: 0xffff_8000_1234_5000n });
    expect(encode((ex) => Object.assign(ex, { kind: GuestExitKind.INSTRUCTION, insn: InterceptInsn.INTN, vector: 0x80 })))
      .toMatchObject({ code: 0x75n, info1: 0x80n });
  });

  test('MOV CR decode assist: bit 63 + GPR; CR0 selective write uses 0x65 unless CR0 writes are intercepted', () => {
    const w = encode((ex) => Object.assign(ex, { kind: GuestExitKind.CR_ACCESS, crNumber: 4, crAccessType: CrAccessType.MOV_TO_CR, gpr: 3 }),
      (hw) => { hw.rules.interceptCr = 1 << (16 + 4); });
    expect(w).toMatchObject({ code: 0x14n, info1: (1n << 63n) | 3n });
    const r = encode((ex) => Object.assign(ex, { kind: GuestExitKind.CR_ACCESS, crNumber: 3, crAccessType: CrAccessType.MOV_FROM_CR, gpr: 11 }));
    expect(r).toMatchObject({ code: 0x03n, info1: (1n << 63n) | 11n });
    const sel = encode((ex) => Object.assign(ex, { kind: GuestExitKind.CR_ACCESS, crNumber: 0, crAccessType: CrAccessType.MOV_TO_CR, gpr: 0 }),
      (hw) => { hw.rules.misc1 = 1 << Intercept1.CR0_SEL_WRITE; });
    expect(sel.code).toBe(BigInt(SvmExit.CR0_SEL_WRITE));
    const full = encode((ex) => Object.assign(ex, { kind: GuestExitKind.CR_ACCESS, crNumber: 0, crAccessType: CrAccessType.MOV_TO_CR, gpr: 0 }),
      (hw) => { hw.rules.interceptCr = 1 << 16; });
    expect(full.code).toBe(0x10n);
    const lmsw = encode((ex) => Object.assign(ex, { kind: GuestExitKind.CR_ACCESS, crNumber: 0, crAccessType: CrAccessType.LMSW, gpr: 0 }));
    expect(lmsw.info1 >> 63n).toBe(0n);
  });

  test('MOV DR: 0x20+n / 0x30+n with the GPR in EXITINFO1[3:0]', () => {
    expect(encode((ex) => Object.assign(ex, { kind: GuestExitKind.DR_ACCESS, drNumber: 7, isWrite: true, gpr: 2 }))).toMatchObject({ code: 0x37n, info1: 2n });
    expect(encode((ex) => Object.assign(ex, { kind: GuestExitKind.DR_ACCESS, drNumber: 6, isWrite: false, gpr: 9 }))).toMatchObject({ code: 0x26n, info1: 9n });
  });

  test('exceptions: 0x40+vector, error code in EXITINFO1, #PF address in EXITINFO2 with instruction bytes', () => {
    const gp = encode((ex) => Object.assign(ex, { kind: GuestExitKind.EXCEPTION, vector: 13, hasErrorCode: true, errorCode: 0x18 }));
    expect(gp).toMatchObject({ code: 0x4dn, info1: 0x18n, info2: 0n, insnLen: 0 });
    const pf = encode((ex) => {
      Object.assign(ex, { kind: GuestExitKind.EXCEPTION, vector: 14, hasErrorCode: true, errorCode: 6, faultAddress: 0xdead000n, insnBytesCount: 2 });
      ex.insnBytes.set([0x89, 0x08]);
    });
    expect(pf).toMatchObject({ code: 0x4en, info1: 6n, info2: 0xdead000n, insnLen: 2 });
    expect(Array.from(pf.vmcb.bytes.subarray(0xd1, 0xd3))).toEqual([0x89, 0x08]);
    expect(encode((ex) => Object.assign(ex, { kind: GuestExitKind.EXCEPTION, vector: 6, hasErrorCode: false })).code).toBe(0x46n);
  });

  test('#NPF (0x400): error code in EXITINFO1 (P, RW, US, RSVD, ID, final/walk bits 32/33), GPA in EXITINFO2', () => {
    const notPresentWrite = encode((ex) => Object.assign(ex, { kind: GuestExitKind.TDP_FAULT, gpa: 0x200123n, access: ACCESS_WRITE, tdpPermissions: 0, reservedBit: false }));
    expect(notPresentWrite).toMatchObject({ code: 0x400n, info1: (1n << 32n) | 4n | 2n, info2: 0x200123n });
    const protFetch = encode((ex) => Object.assign(ex, { kind: GuestExitKind.TDP_FAULT, gpa: 0x5000n, access: ACCESS_FETCH, tdpPermissions: 1, reservedBit: false }));
    expect(protFetch.info1).toBe((1n << 32n) | 16n | 4n | 1n);
    const walk = encode((ex) => Object.assign(ex, { kind: GuestExitKind.TDP_FAULT, gpa: 0x70000n, access: ACCESS_PAGE_WALK, tdpPermissions: 0, reservedBit: false }));
    expect(walk.info1).toBe((1n << 33n) | 4n);
    const rsvd = encode((ex) => Object.assign(ex, { kind: GuestExitKind.TDP_FAULT, gpa: 0xfee00000n, access: ACCESS_WRITE, tdpPermissions: 0, reservedBit: true }));
    expect(rsvd.info1 & 0xfn).toBe(8n | 4n | 2n | 1n);
  });

  test('task switch (0x7D): selector in EXITINFO1; IRET/JMP reason and error code in EXITINFO2', () => {
    const r = encode((ex) => Object.assign(ex, { kind: GuestExitKind.TASK_SWITCH, taskSelector: 0x28, taskSource: 2, hasErrorCode: true, errorCode: 0x1c }));
    expect(r).toMatchObject({ code: 0x7dn, info1: 0x28n, info2: (1n << 38n) | (1n << 44n) | 0x1cn });
    expect(encode((ex) => Object.assign(ex, { kind: GuestExitKind.TASK_SWITCH, taskSource: 1, hasErrorCode: false })).info2).toBe(1n << 36n);
  });

  test('INTR for budget/kick stops, VINTR for the interrupt window, SHUTDOWN for a triple fault, NMI, INIT', () => {
    expect(encode((ex) => { ex.kind = GuestExitKind.BUDGET; }).code).toBe(0x60n);
    expect(encode((ex) => { ex.kind = GuestExitKind.EXTERNAL_INTERRUPT; }).code).toBe(0x60n);
    expect(encode((ex) => { ex.kind = GuestExitKind.INTERRUPT_WINDOW; }).code).toBe(0x64n);
    expect(encode((ex) => { ex.kind = GuestExitKind.TRIPLE_FAULT; }).code).toBe(0x7fn);
    expect(encode((ex) => { ex.kind = GuestExitKind.NMI; }).code).toBe(0x61n);
    expect(encode((ex) => { ex.kind = GuestExitKind.INIT; }).code).toBe(0x63n);
  });

  test('EXITINTINFO: the event being delivered, in EVENTINJ format (APM 15.7.2)', () => {
    const ex = new GuestExit();
    Object.assign(ex.vectoring, { valid: true, type: EventType.HARDWARE_EXCEPTION, vector: 14, hasErrorCode: true, errorCode: 2 });
    expect(encodeVectoring(ex)).toBe((2n << 32n) | (1n << 31n) | (1n << 11n) | (3n << 8n) | 14n);
    Object.assign(ex.vectoring, { valid: true, type: EventType.EXTERNAL_INTERRUPT, vector: 0x30, hasErrorCode: false });
    expect(encodeVectoring(ex)).toBe((1n << 31n) | 0x30n);
    Object.assign(ex.vectoring, { valid: true, type: EventType.NMI, vector: 2 });
    expect(encodeVectoring(ex)).toBe((1n << 31n) | (2n << 8n) | 2n);
    Object.assign(ex.vectoring, { valid: true, type: EventType.SOFTWARE_INTERRUPT, vector: 0x80 });
    expect(encodeVectoring(ex)).toBe((1n << 31n) | (4n << 8n) | 0x80n);
    ex.vectoring.valid = false;
    expect(encodeVectoring(ex)).toBe(0n);
  });
});

describe('trap-like and AVIC exits (APM 15.35, 15.29)', () => {
  test('CR write traps 0x90+n and EFER_WRITE_TRAP 0x8F: EXITINFO1 = the new value, nRIP = RIP past the write', () => {
    const cr4 = encode((ex) => Object.assign(ex, { kind: GuestExitKind.CR_WRITE_TRAP, crNumber: 4, value: 0x6a0n, nextRip: 0x2003n }));
    expect([cr4.code, cr4.info1, cr4.nrip]).toEqual([0x94n, 0x6a0n, 0x2003n]);
    const cr8 = encode((ex) => Object.assign(ex, { kind: GuestExitKind.CR_WRITE_TRAP, crNumber: 8, value: 5n, nextRip: 0x10n }));
    expect(cr8.code).toBe(BigInt(SvmExit.CR8_WRITE_TRAP));
    const efer = encode((ex) => Object.assign(ex, { kind: GuestExitKind.MSR_WRITE_TRAP, msrIndex: 0xc0000080, value: 0xd01n, nextRip: 0x3002n }));
    expect([efer.code, efer.info1, efer.nrip]).toEqual([0x8fn, 0xd01n, 0x3002n]);
  });
  test('AVIC_NOACCEL 0x402: offset | write bit 32 (fault-like read/write, trap-like write with the vector in EXITINFO2); AVIC_INCOMPLETE_IPI 0x401', () => {
    const read = encode((ex) => Object.assign(ex, { kind: GuestExitKind.APIC_ACCESS, gpa: 0x390n, access: 1 }));
    expect([read.code, read.info1, read.info2]).toEqual([0x402n, 0x390n, 0n]);
    const fault = encode((ex) => Object.assign(ex, { kind: GuestExitKind.APIC_ACCESS, gpa: 0x200n, access: ACCESS_WRITE }));
    expect(fault.info1).toBe(0x200n | (1n << 32n));
    const trap = encode((ex) => Object.assign(ex, { kind: GuestExitKind.APIC_WRITE, gpa: 0xb0n, access: ACCESS_WRITE, vector: 0x50 }));
    expect([trap.code, trap.info1, trap.info2]).toEqual([0x402n, 0xb0n | (1n << 32n), 0x50n]);
    const ipi = encode((ex) => Object.assign(ex, { kind: GuestExitKind.INCOMPLETE_IPI, value: (0x03000000n << 32n) | 0x4041n, errorCode: 1, vector: 3 }));
    expect([ipi.code, ipi.info1, ipi.info2]).toEqual([0x401n, (0x03000000n << 32n) | 0x4041n, (1n << 32n) | 3n]);
  });
});
