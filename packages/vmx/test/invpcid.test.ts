/**
 * INVPCID exits (SDM 26.1.3, reason 58) with their qualification (the displacement) and
 * instruction information (Table 28-11), and KVM's handle_invpcid / kvm_handle_invpcid:
 * the flush it does, and #GP for a bad type or PCID.
 */
import { ExitFastpathCompletion, KvmExitReason, KvmVcpu } from '@tsvisor/core';
import { F, toVmx } from '@tsvisor/vmx';
import * as D from '@tsvisor/vmx';
import { bootGuest, buildLongModeGuest, dword, eax, ebx, ecx, emitIdtSetup, emitIdtTable, idtLabels, Label } from '@tsvisor/testkit';
import { VMX } from './helpers';

const LIN = 0x100000;
const NEW_PHYS = 0x180000;
const DESC = 0x9000;

/** A 64-bit guest (4 KiB identity paging) that reads LIN, runs `invpcid rcx, [rbx+8]` with RCX = the type at 0x8ff0, reads LIN again. */
function guest() {
  return buildLongModeGuest((a) => {
    const again = new Label('again');
    const gp = new Label('gp');
    const t = idtLabels(a);
    emitIdtSetup(a, 13, gp, t);
    a.bind(again);
    a.mov(eax, dword(LIN));
    a.out(0x80, eax);
    a.mov(ecx, dword(0x8ff0));
    a.mov(ebx, DESC - 8);
    a.db(0x66, 0x0f, 0x38, 0x82, 0x4b, 0x08); // invpcid rcx, [rbx+8]
    a.mov(eax, dword(LIN));
    a.out(0x80, eax);
    a.jmp(again);
    // #GP: report 0xd0d on port 0x81.
    a.bind(gp);
    a.mov(eax, 0xd0d);
    a.out(0x81, eax);
    a.hlt();
    emitIdtTable(a, t);
  }, { paging: '4k' });
}

function setup() {
  const { kvm, vcpu } = bootGuest(VMX, guest(), { memory: 4 << 20 });
  vcpu.runBudget = 2_000_000;
  const vmx = toVmx(vcpu);
  const mem = kvm.slot(0)!.userspace;
  const view = new DataView(mem.buffer, mem.byteOffset);
  view.setUint32(LIN, 0x11111111, true);
  view.setUint32(NEW_PHYS, 0x22222222, true);
  const setDesc = (type: number, pcid: bigint, gla: bigint) => {
    view.setUint32(0x8ff0, type, true);
    view.setBigUint64(DESC, pcid, true);
    view.setBigUint64(DESC + 8, gla, true);
  };
  const remap = () => {
    const pte = 0x73000 + (LIN >> 12) * 8;
    view.setBigUint64(pte, (view.getBigUint64(pte, true) & 0xfffn) | BigInt(NEW_PHYS), true);
  };
  const log: { reason: number; qualification: bigint; info: number }[] = [];
  const ops = kvm.ops;
  const orig = ops.handleExit.bind(ops);
  ops.handleExit = (v: KvmVcpu, f: ExitFastpathCompletion) => {
    log.push({ reason: vmx.exitReason & 0xffff, qualification: vmx.vmcs.readNat(F.EXIT_QUALIFICATION), info: vmx.vmcs.read32(F.VMX_INSTRUCTION_INFO) });
    return orig(v, f);
  };
  // "enable INVPCID" with "INVLPG exiting": INVPCID exits (KVM sets these only without EPT).
  const v = vmx.vmcs;
  v.write32(F.CPU_BASED_VM_EXEC_CONTROL, v.read32(F.CPU_BASED_VM_EXEC_CONTROL) | D.CPU_BASED_INVLPG_EXITING);
  v.write32(F.SECONDARY_VM_EXEC_CONTROL, v.read32(F.SECONDARY_VM_EXEC_CONTROL) | D.SECONDARY_EXEC_ENABLE_INVPCID);
  const read = () => {
    const run = vcpu.runVcpu();
    expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
    return new DataView(run.ioData.buffer, run.ioData.byteOffset).getUint32(0, true);
  };
  return { kvm, vcpu, vmx, log, read, remap, setDesc };
}

describe('INVPCID exits and handle_invpcid', () => {
  it('exits with the displacement and instruction information; KVM flushes the address (type 0)', () => {
    const { vmx, log, read, remap, setDesc } = setup();
    setDesc(0, 0n, BigInt(LIN));
    expect(vmx.vmcs.read32(F.SECONDARY_VM_EXEC_CONTROL) & D.SECONDARY_EXEC_ENABLE_INVPCID).toBe(D.SECONDARY_EXEC_ENABLE_INVPCID);
    expect(read()).toBe(0x11111111);
    remap(); // the guest's TLB still holds the old translation
    expect(read()).toBe(0x22222222); // INVPCID (emulated by KVM) flushed it
    const exits = log.filter((e) => e.reason === D.ExitReason.INVPCID);
    expect(exits).toHaveLength(1);
    expect(exits[0].qualification).toBe(8n);
    // Reg2 = RCX (1), base RBX (3), no index, DS, 64-bit address size, scaling 0.
    expect(exits[0].info).toBe(((1 << 28) | (3 << 23) | (1 << 22) | (3 << 15) | (2 << 7)) >>> 0);
  });

  it('types 1-3 flush the context; the translation is stale until then', () => {
    for (const type of [1, 2, 3]) {
      const { read, remap, setDesc } = setup();
      setDesc(type, 0n, 0n);
      expect(read()).toBe(0x11111111);
      remap();
      expect(read()).toBe(0x22222222);
    }
  });

  it('#GP(0) for a type above 3, PCID bits 63:12, a PCID without CR4.PCIDE, a non-canonical address', () => {
    for (const [type, pcid, gla] of [[4, 0n, 0n], [1, 1n << 12n, 0n], [0, 5n, 0n], [0, 0n, 1n << 50n]] as [number, bigint, bigint][]) {
      const { vcpu, log, read, setDesc } = setup();
      setDesc(type, pcid, gla);
      read();
      const run = vcpu.runVcpu();
      expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
      expect(run.io.port).toBe(0x81); // the guest's #GP handler
      expect(log.filter((e) => e.reason === D.ExitReason.INVPCID)).toHaveLength(1);
    }
  });
});
