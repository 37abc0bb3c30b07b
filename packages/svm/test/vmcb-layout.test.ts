/**
 * Every VMCB offset against AMD APM Vol. 2 Appendix B (Tables B-1 and B-2), as also pinned
 * by the size and reserved-offset checks in Linux's arch/x86/include/asm/svm.h.
 */
import {
  VMCB_CONTROL, VMCB_SAVE, VMCB_SIZE, VMCB_SAVE_BASE, SEG_SELECTOR, SEG_ATTRIB, SEG_LIMIT, SEG_BASE, SEG_SIZE,
  CLEAN_GROUPS, VmcbCleanBit, Vmcb, packAttrib, attribToCpu, cpuToAttrib, Intercept1, Intercept2, SvmExit, svmExitName,
} from '@tsvisor/svm';
import { HostMemory, emptySegment } from '@tsvisor/core';

const CONTROL: Array<[keyof typeof VMCB_CONTROL, number, number]> = [
  ['INTERCEPT_CR', 0x000, 4], ['INTERCEPT_DR', 0x004, 4], ['INTERCEPT_EXCEPTIONS', 0x008, 4],
  ['INTERCEPT_MISC1', 0x00c, 4], ['INTERCEPT_MISC2', 0x010, 4], ['INTERCEPT_MISC3', 0x014, 4],
  ['PAUSE_FILTER_THRESHOLD', 0x03c, 2], ['PAUSE_FILTER_COUNT', 0x03e, 2],
  ['IOPM_BASE_PA', 0x040, 8], ['MSRPM_BASE_PA', 0x048, 8], ['TSC_OFFSET', 0x050, 8],
  ['GUEST_ASID', 0x058, 4], ['TLB_CONTROL', 0x05c, 1],
  ['V_TPR', 0x060, 1], ['V_IRQ', 0x061, 1], ['V_INTR_PRIO', 0x062, 1], ['V_INTR_MASKING', 0x063, 1],
  ['INT_CTL', 0x060, 4], ['V_INTR_VECTOR', 0x064, 1], ['INTERRUPT_SHADOW', 0x068, 8],
  ['EXITCODE', 0x070, 8], ['EXITINFO1', 0x078, 8], ['EXITINFO2', 0x080, 8], ['EXITINTINFO', 0x088, 8],
  ['NP_ENABLE', 0x090, 8], ['AVIC_APIC_BAR', 0x098, 8], ['GHCB_PA', 0x0a0, 8], ['EVENTINJ', 0x0a8, 8],
  ['N_CR3', 0x0b0, 8], ['LBR_VIRTUALIZATION_ENABLE', 0x0b8, 8], ['VMCB_CLEAN', 0x0c0, 4], ['NRIP', 0x0c8, 8],
  ['GUEST_INSN_LEN', 0x0d0, 1], ['GUEST_INSN_BYTES', 0x0d1, 1],
  ['AVIC_BACKING_PAGE', 0x0e0, 8], ['AVIC_LOGICAL_TABLE', 0x0f0, 8], ['AVIC_PHYSICAL_TABLE', 0x0f8, 8],
  ['VMSA_PA', 0x108, 8],
];

const SAVE: Array<[keyof typeof VMCB_SAVE, number]> = [
  ['ES', 0x400], ['CS', 0x410], ['SS', 0x420], ['DS', 0x430], ['FS', 0x440], ['GS', 0x450],
  ['GDTR', 0x460], ['LDTR', 0x470], ['IDTR', 0x480], ['TR', 0x490], ['CPL', 0x4cb], ['EFER', 0x4d0],
  ['CR4', 0x548], ['CR3', 0x550], ['CR0', 0x558], ['DR7', 0x560], ['DR6', 0x568], ['RFLAGS', 0x570],
  ['RIP', 0x578], ['RSP', 0x5d8], ['RAX', 0x5f8], ['STAR', 0x600], ['LSTAR', 0x608], ['CSTAR', 0x610],
  ['SFMASK', 0x618], ['KERNEL_GS_BASE', 0x620], ['SYSENTER_CS', 0x628], ['SYSENTER_ESP', 0x630],
  ['SYSENTER_EIP', 0x638], ['CR2', 0x640], ['G_PAT', 0x668], ['DBGCTL', 0x670], ['BR_FROM', 0x678],
  ['BR_TO', 0x680], ['LASTEXCPFROM', 0x688], ['LASTEXCPTO', 0x690],
];

describe('VMCB layout (APM Vol. 2 Appendix B)', () => {
  test.each(CONTROL)('control area %s at 0x%s, %i bytes', (name, offset, width) => {
    expect(VMCB_CONTROL[name].offset).toBe(offset);
    expect(VMCB_CONTROL[name].width).toBe(width);
    expect(VMCB_CONTROL[name].name).toBe(name);
  });

  test.each(SAVE)('state save area %s at 0x%s', (name, offset) => {
    expect(VMCB_SAVE[name].offset).toBe(offset);
    expect(VMCB_SAVE[name].name).toBe(name);
  });

  test('every field is listed, the page is 4 KiB and the save area starts at 0x400', () => {
    expect(Object.keys(VMCB_CONTROL).sort()).toEqual(CONTROL.map((c) => c[0]).sort());
    expect(Object.keys(VMCB_SAVE).sort()).toEqual(SAVE.map((c) => c[0]).sort());
    expect(VMCB_SIZE).toBe(4096);
    expect(VMCB_SAVE_BASE).toBe(0x400);
    // Linux: EXPECTED_VMCB_SAVE_AREA_SIZE 744 (0x2E8) for the non-SEV-ES layout: the last field ends there.
    expect(VMCB_SAVE.LASTEXCPTO.offset + 8 - VMCB_SAVE_BASE).toBe(0x298);
  });

  test('vmcb_seg is selector u16, attrib u16, limit u32, base u64', () => {
    expect([SEG_SELECTOR, SEG_ATTRIB, SEG_LIMIT, SEG_BASE, SEG_SIZE]).toEqual([0, 2, 4, 8, 16]);
    const host = new HostMemory();
    const v = Vmcb.alloc(host);
    v.writeSeg(VMCB_SAVE.TR, 0x1234, 0x08b, 0x67, 0xfedc_ba98_7654_3210n);
    const dv = new DataView(v.bytes.buffer, v.bytes.byteOffset);
    expect(dv.getUint16(0x490, true)).toBe(0x1234);
    expect(dv.getUint16(0x492, true)).toBe(0x08b);
    expect(dv.getUint32(0x494, true)).toBe(0x67);
    expect(dv.getBigUint64(0x498, true)).toBe(0xfedc_ba98_7654_3210n);
  });

  test('accessors are little-endian DataView reads at the field offset', () => {
    const v = Vmcb.alloc(new HostMemory());
    v.write64(VMCB_SAVE.RIP, 0x1122_3344_5566_7788n);
    expect(v.bytes[0x578]).toBe(0x88);
    expect(v.bytes[0x57f]).toBe(0x11);
    v.write32(VMCB_CONTROL.GUEST_ASID, 0xabcd);
    expect(v.bytes[0x058]).toBe(0xcd);
    v.write8(VMCB_SAVE.CPL, 3);
    expect(v.bytes[0x4cb]).toBe(3);
  });

  test('intercept bit numbers (Table B-1)', () => {
    expect(Intercept1.INTR).toBe(0);
    expect(Intercept1.VINTR).toBe(4);
    expect(Intercept1.CR0_SEL_WRITE).toBe(5);
    expect(Intercept1.RDTSC).toBe(14);
    expect(Intercept1.CPUID).toBe(18);
    expect(Intercept1.IRET).toBe(20);
    expect(Intercept1.HLT).toBe(24);
    expect(Intercept1.IOIO_PROT).toBe(27);
    expect(Intercept1.MSR_PROT).toBe(28);
    expect(Intercept1.SHUTDOWN).toBe(31);
    expect(Intercept2.VMRUN).toBe(0);
    expect(Intercept2.VMMCALL).toBe(1);
    expect(Intercept2.XSETBV).toBe(13);
    expect(Intercept2.EFER_WRITE_TRAP).toBe(15);
  });

  test('exit codes (Appendix C) and KVM names (SVM_EXIT_REASONS)', () => {
    const codes: Array<[number, string]> = [
      [SvmExit.READ_CR0, 'read_cr0'], [SvmExit.WRITE_CR4, 'write_cr4'], [0x040 + 14, 'PF excp'], [0x040 + 6, 'UD excp'],
      [SvmExit.INTR, 'interrupt'], [SvmExit.VINTR, 'vintr'], [SvmExit.CPUID, 'cpuid'], [SvmExit.HLT, 'hlt'],
      [SvmExit.IOIO, 'io'], [SvmExit.MSR, 'msr'], [SvmExit.SHUTDOWN, 'shutdown'], [SvmExit.VMMCALL, 'hypercall'],
      [SvmExit.NPF, 'npf'], [SvmExit.AVIC_INCOMPLETE_IPI, 'avic_incomplete_ipi'],
      [SvmExit.AVIC_UNACCELERATED_ACCESS, 'avic_unaccelerated_access'],
    ];
    expect([SvmExit.CPUID, SvmExit.HLT, SvmExit.IOIO, SvmExit.MSR, SvmExit.VMMCALL, SvmExit.NPF, SvmExit.INTR, SvmExit.SHUTDOWN])
      .toEqual([0x72, 0x78, 0x7b, 0x7c, 0x81, 0x400, 0x60, 0x7f]);
    for (const [c, n] of codes) expect(svmExitName(c)).toBe(n);
    expect(svmExitName(0xffff_ffff_ffff_ffffn)).toBe('invalid');
  });

  test('clean-bit groups cover the fields of APM Table 15-9', () => {
    const names = (b: VmcbCleanBit) => CLEAN_GROUPS[b].map((f) => f.name).sort();
    expect(names(VmcbCleanBit.CRX)).toEqual(['CR0', 'CR3', 'CR4', 'EFER']);
    expect(names(VmcbCleanBit.SEG)).toEqual(['CPL', 'CS', 'DS', 'ES', 'SS']);
    expect(names(VmcbCleanBit.NP)).toEqual(['G_PAT', 'NP_ENABLE', 'N_CR3']);
    expect(names(VmcbCleanBit.DT)).toEqual(['GDTR', 'IDTR']);
    expect(VmcbCleanBit.AVIC).toBe(11);
  });
});

describe('packed segment attributes', () => {
  test('kvm_segment ↔ 12-bit attrib ↔ processor descriptor bits', () => {
    const s = { ...emptySegment(), type: 0xb, s: 1, dpl: 3, present: 1, avl: 1, l: 1, db: 0, g: 1, unusable: 0 };
    const a = packAttrib(s);
    expect(a).toBe(0xb | (1 << 4) | (3 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 11));
    const cpu = attribToCpu(a);
    // descriptor bits 40..47 in 7:0, bits 52..55 (AVL L D/B G) in 15:12
    expect(cpu).toBe(0xfb | (1 << 12) | (1 << 13) | (1 << 15));
    expect(cpuToAttrib(cpu)).toBe(a);
    expect(packAttrib({ ...s, unusable: 1 })).toBe(0);
    expect(attribToCpu(0) & (1 << 16)).not.toBe(0);
  });
});
