/**
 * VMCS field encodings (SDM Vol. 3C 25.11.2, Vol. 3D App. B) and the VMREAD/VMWRITE rules.
 * Build-time width checks live in src/vmcs/type-checks.ts (tsc fails if they start compiling).
 */
import {
  F, highOf, VMCS_FIELDS, VmcsFieldType, widthFromEncoding, Vmcs, VmcsAccessError, VmInstructionError, VMCS_REVISION_ID,
  vmcsRead16, vmcsRead64, vmcsWrite32, vmcsReadNatural, vmcsWriteNatural, vmcsWrite64, dumpVmcs,
} from '@tsvisor/vmx';

const expectVmError = (fn: () => unknown, error: VmInstructionError) => {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(VmcsAccessError);
    expect((e as VmcsAccessError).error).toBe(error);
    return;
  }
  throw new Error('expected a VM-instruction error');
};

describe('VMCS field encodings', () => {
  const fields = [...VMCS_FIELDS.values()];

  it('has every component of App. B that this processor implements, with HIGH halves', () => {
    expect(fields.filter((f) => !f.high).length).toBe(Object.keys(F).length);
    for (const f of fields.filter((x) => x.width === '64')) expect(VMCS_FIELDS.get(f.encoding | 1)?.name).toBe(`${f.name}_HIGH`);
    // Spot checks against the SDM tables.
    expect(F.GUEST_RIP).toBe(0x681e);
    expect(F.GUEST_FS_BASE).toBe(0x680e);
    expect(F.VM_EXIT_REASON).toBe(0x4402);
    expect(F.EXIT_QUALIFICATION).toBe(0x6400);
    expect(F.EPT_POINTER).toBe(0x201a);
    expect(F.GUEST_PML_INDEX).toBe(0x0812);
    expect(F.PML_ADDRESS).toBe(0x200e);
    expect(F.VMX_PREEMPTION_TIMER_VALUE).toBe(0x482e);
    expect(highOf(F.TSC_OFFSET)).toBe(0x2011);
  });

  it.each(fields.map((f) => [f.name, f] as const))('%s: declared width and type match encoding bits 14:13 and 11:10', (_n, f) => {
    expect(widthFromEncoding(f.encoding)).toBe(f.width);
    expect((f.encoding >> 10) & 3).toBe(f.type);
    expect(f.encoding & 0x1000).toBe(0); // bit 12 reserved
    expect(f.encoding >> 15).toBe(0);
    expect(f.high).toBe((f.encoding & 1) === 1);
    if (f.high) expect((f.encoding >> 13) & 3).toBe(1); // HIGH access only exists for 64-bit fields
  });

  it('names read-only exactly the VM-exit information fields (type 1)', () => {
    const ro = fields.filter((f) => f.type === VmcsFieldType.EXIT_INFO && !f.high).map((f) => f.name).sort();
    expect(ro).toEqual([
      'EXIT_QUALIFICATION', 'GUEST_LINEAR_ADDRESS', 'GUEST_PHYSICAL_ADDRESS', 'IDT_VECTORING_ERROR_CODE',
      'IDT_VECTORING_INFO_FIELD', 'IO_RCX', 'IO_RDI', 'IO_RIP', 'IO_RSI', 'VMX_INSTRUCTION_INFO', 'VM_EXIT_INSTRUCTION_LEN',
      'VM_EXIT_INTR_ERROR_CODE', 'VM_EXIT_INTR_INFO', 'VM_EXIT_REASON', 'VM_INSTRUCTION_ERROR',
    ]);
  });
});

describe('VMREAD/VMWRITE', () => {
  const v = () => new Vmcs(VMCS_REVISION_ID);

  it('stores each width and truncates VMWRITE operands to it', () => {
    const s = v();
    s.vmwrite(F.GUEST_CS_SELECTOR, 0x1234_5678n);
    expect(s.vmread(F.GUEST_CS_SELECTOR)).toBe(0x5678n);
    expect(vmcsRead16(s, F.GUEST_CS_SELECTOR)).toBe(0x5678);
    s.vmwrite(F.GUEST_CS_LIMIT, 0x1_ffff_ffffn);
    expect(s.read32(F.GUEST_CS_LIMIT)).toBe(0xffffffff);
    vmcsWrite64(s, F.TSC_OFFSET, 0xdead_beef_0123_4567n);
    expect(vmcsRead64(s, F.TSC_OFFSET)).toBe(0xdead_beef_0123_4567n);
    expect(s.read32(highOf(F.TSC_OFFSET))).toBe(0xdeadbeef);
    expect(s.vmread(highOf(F.TSC_OFFSET))).toBe(0xdeadbeefn);
    s.write32(highOf(F.TSC_OFFSET), 0x11);
    expect(s.read64(F.TSC_OFFSET)).toBe(0x11_0123_4567n);
    vmcsWriteNatural(s, F.GUEST_RIP, 0xffff_8000_0000_1000n);
    expect(vmcsReadNatural(s, F.GUEST_RIP)).toBe(0xffff_8000_0000_1000n);
    expect(s.readLow(F.GUEST_RIP)).toBe(0x1000);
    expect(s.readHigh(F.GUEST_RIP)).toBe(0xffff8000);
    s.writeNum(F.MSR_BITMAP, 0x1_2345_6000);
    expect(s.readNum(F.MSR_BITMAP)).toBe(0x1_2345_6000);
  });

  it('rejects unknown encodings with error 12', () => {
    const s = v();
    expectVmError(() => s.vmread(0x4830), VmInstructionError.UNSUPPORTED_VMCS_COMPONENT); // unimplemented 32-bit guest index
    expectVmError(() => s.vmwrite(0x7000, 0n), VmInstructionError.UNSUPPORTED_VMCS_COMPONENT);
    expectVmError(() => s.vmread(0x8000), VmInstructionError.UNSUPPORTED_VMCS_COMPONENT);
    expectVmError(() => s.vmread(highOf(F.GUEST_PHYSICAL_ADDRESS) | 0x1000), VmInstructionError.UNSUPPORTED_VMCS_COMPONENT);
  });

  it('rejects width mismatches at run time with error 12 (for untyped callers)', () => {
    const s = v();
    const any = s as unknown as Record<string, (f: number, x?: unknown) => unknown>;
    expectVmError(() => any.read16.call(s, F.GUEST_RIP), VmInstructionError.UNSUPPORTED_VMCS_COMPONENT);
    expectVmError(() => any.read32.call(s, F.GUEST_RIP), VmInstructionError.UNSUPPORTED_VMCS_COMPONENT);
    expectVmError(() => any.read64.call(s, F.GUEST_CS_LIMIT), VmInstructionError.UNSUPPORTED_VMCS_COMPONENT);
    expectVmError(() => any.readNat.call(s, F.EPT_POINTER), VmInstructionError.UNSUPPORTED_VMCS_COMPONENT);
    expectVmError(() => any.write16.call(s, F.GUEST_CS_LIMIT, 1), VmInstructionError.UNSUPPORTED_VMCS_COMPONENT);
    expectVmError(() => any.read64.call(s, highOf(F.EPT_POINTER)), VmInstructionError.UNSUPPORTED_VMCS_COMPONENT);
  });

  it('rejects VMWRITE to read-only exit-information fields with error 13', () => {
    const s = v();
    for (const f of [...VMCS_FIELDS.values()].filter((x) => x.type === VmcsFieldType.EXIT_INFO)) {
      expectVmError(() => s.vmwrite(f.encoding, 1n), VmInstructionError.VMWRITE_READ_ONLY_COMPONENT);
    }
    const any = s as unknown as Record<string, (f: number, x?: unknown) => unknown>;
    expectVmError(() => any.write32.call(s, F.VM_EXIT_REASON, 1), VmInstructionError.VMWRITE_READ_ONLY_COMPONENT);
    expectVmError(() => vmcsWrite32(s, F.VM_INSTRUCTION_ERROR as never, 1), VmInstructionError.VMWRITE_READ_ONLY_COMPONENT);
    // The processor records exit information without VMWRITE.
    s.exitWrite32(F.VM_EXIT_REASON, 30);
    expect(s.read32(F.VM_EXIT_REASON)).toBe(30);
  });

  it('dumps every field by name', () => {
    const s = v();
    s.write16(F.GUEST_CS_SELECTOR, 0xf000);
    const d = dumpVmcs(s);
    for (const f of [...VMCS_FIELDS.values()].filter((x) => !x.high)) expect(d).toContain(f.name);
    expect(d).toMatch(/GUEST_CS_SELECTOR\s+\[0802\] = 0xf000/);
  });
});
