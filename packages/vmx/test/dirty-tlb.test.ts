/**
 * PML dirty logging (SDM Vol. 3C 29.3.6) through the VM's dirty-log API, and VPID-tagged TLB
 * flushes with INVVPID semantics (29.4.3): what the hardware caches, and when it stops.
 */
import { KvmExitReason, KVM_MEM_LOG_DIRTY_PAGES } from '@tsvisor/core';
import { F, toVmx } from '@tsvisor/vmx';
import {
  al, bootGuest, buildLongModeGuest, buildProtectedModeGuest, byte, dword, eax, edi, esi, Label,
} from '@tsvisor/testkit';
import { VMX } from './helpers';

const TABLE = 0x9000;

/** A flat 32-bit guest that, each round, writes one byte to every page listed at TABLE (0-terminated), then OUTs. */
function dirtyGuest() {
  return buildProtectedModeGuest((a) => {
    const round = new Label('round');
    const next = new Label('next');
    const done = new Label('done');
    a.bind(round);
    a.mov(esi, TABLE);
    a.bind(next);
    a.mov(edi, dword(esi));
    a.test(edi, edi);
    a.jz(done);
    a.mov(byte(edi), al);
    a.add(esi, 4);
    a.jmp(next);
    a.bind(done);
    a.out(0x80, al);
    a.jmp(round);
  });
}

describe('dirty logging with PML', () => {
  it('returns exactly the pages the guest dirtied, across rounds, including a PML-full exit', () => {
    const { kvm, vcpu } = bootGuest(VMX, dirtyGuest(), { memory: 8 << 20, slotFlags: KVM_MEM_LOG_DIRTY_PAGES });
    const mem = kvm.slot(0)!.userspace;
    const view = new DataView(mem.buffer, mem.byteOffset);
    const setTable = (gfns: number[]) => {
      gfns.forEach((g, i) => view.setUint32(TABLE + 4 * i, g * 4096 + 0x10, true));
      view.setUint32(TABLE + 4 * gfns.length, 0, true);
    };
    const runRound = () => {
      const run = vcpu.runVcpu();
      expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
      expect(run.io.port).toBe(0x80);
    };
    // Round 0: the boot stub runs; whatever it touched is collected and dropped.
    setTable([]);
    runRound();
    kvm.getDirtyGfns(0);
    const rounds = [
      [0x100, 0x101, 0x250],
      [0x101, 0x300],
      [],
      // 600 pages: the first time each faults into the EPT (every exit drains the log) ...
      Array.from({ length: 600 }, (_, i) => 0x200 + i),
      // ... the second time they are mapped and clean: 600 > 512 log entries → one PML-full exit.
      Array.from({ length: 600 }, (_, i) => 0x200 + i),
      [0x100],
    ];
    for (const pages of rounds) {
      setTable(pages);
      runRound();
      expect(kvm.getDirtyGfns(0).map(Number).sort((x, y) => x - y)).toEqual([...pages].sort((x, y) => x - y));
    }
    expect(vcpu.exitCounts.get('PML_FULL')).toBe(1);
    // The hooks KVM NULLs without PML are present.
    expect(kvm.has('flushLogDirty')).toBe(true);
    expect(kvm.has('enableLogDirtyPtMasked')).toBe(true);
    // The index is reset after every drain (vmx_flush_pml_buffer).
    expect(toVmx(vcpu).vmcs.read16(F.GUEST_PML_INDEX)).toBe(511);
    // Logging off (slotDisableLogDirty): every mapped leaf is dirty again, so the hardware stops logging.
    expect(kvm.hostMemory.read64(kvm.mmu!.leafEntryAddress(0x300, false)) & 0x200n).toBe(0n); // re-armed: clean
    const setDirty = jest.spyOn(kvm.mmu!, 'slotSetDirty');
    kvm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: BigInt(8 << 20), userspace: mem });
    expect(setDirty).toHaveBeenCalledWith(kvm.slot(0));
  });
});

describe('VPID-tagged TLB (INVVPID semantics)', () => {
  const LIN = 0x100000;
  const NEW_PHYS = 0x180000;
  function staleTlbGuest() {
    // 4 KiB identity paging of 0-2 MiB; the guest reads LIN and reports the value, forever.
    return buildLongModeGuest((a) => {
      const again = new Label('again');
      a.bind(again);
      a.mov(eax, dword(LIN));
      a.out(0x80, eax);
      a.jmp(again);
    }, { paging: '4k' });
  }

  function setup() {
    const guest = staleTlbGuest();
    const { kvm, vcpu } = bootGuest(VMX, guest, { memory: 4 << 20 });
    const mem = kvm.slot(0)!.userspace;
    const view = new DataView(mem.buffer, mem.byteOffset);
    view.setUint32(LIN, 0x11111111, true);
    view.setUint32(NEW_PHYS, 0x22222222, true);
    const read = () => {
      const run = vcpu.runVcpu();
      expect(run.exitReason).toBe(KvmExitReason.KVM_EXIT_IO);
      return new DataView(run.ioData.buffer, run.ioData.byteOffset).getUint32(0, true);
    };
    // Re-point the guest's PTE for LIN (PT at 0x73000) behind its back, as another CPU would.
    const remap = () => {
      const pte = 0x73000 + (LIN >> 12) * 8;
      view.setBigUint64(pte, (view.getBigUint64(pte, true) & 0xfffn) | BigInt(NEW_PHYS), true);
    };
    return { kvm, vcpu, read, remap };
  }

  it('tlbFlushGva: the stale translation is used before the flush and not after', () => {
    const { vcpu, read, remap } = setup();
    expect(read()).toBe(0x11111111);
    remap();
    expect(read()).toBe(0x11111111); // still cached under this VPID
    vcpu.kvm.ops.tlbFlushGva(vcpu, BigInt(LIN));
    expect(read()).toBe(0x22222222);
  });

  it('tlbFlushGuest and tlbFlushCurrent flush the VPID context', () => {
    for (const flush of ['tlbFlushGuest', 'tlbFlushCurrent', 'tlbFlushAll'] as const) {
      const { vcpu, read, remap } = setup();
      expect(read()).toBe(0x11111111);
      remap();
      expect(read()).toBe(0x11111111);
      vcpu.kvm.ops[flush](vcpu);
      expect(read()).toBe(0x22222222);
    }
  });

  it('tlbRemoteFlush flushes every vCPU', () => {
    const { kvm, read, remap } = setup();
    expect(read()).toBe(0x11111111);
    remap();
    expect(read()).toBe(0x11111111);
    expect(kvm.ops.tlbRemoteFlush!(kvm)).toBe(0);
    expect(read()).toBe(0x22222222);
  });

  it('tlbRemoteFlushWithRange is a context flush (INVEPT has no ranged form)', () => {
    const { kvm, read, remap } = setup();
    expect(read()).toBe(0x11111111);
    remap();
    expect(read()).toBe(0x11111111);
    expect(kvm.ops.tlbRemoteFlushWithRange!(kvm, { startGfn: BigInt(LIN >> 12), pages: 1n })).toBe(0);
    expect(read()).toBe(0x22222222);
  });

  it('without VPID every VM entry flushes (SDM 29.4.3.3): no stale translation survives an exit', () => {
    const { vcpu, read, remap } = setup();
    const v = toVmx(vcpu).vmcs;
    v.write32(F.SECONDARY_VM_EXEC_CONTROL, v.read32(F.SECONDARY_VM_EXEC_CONTROL) & ~(1 << 5));
    expect(read()).toBe(0x11111111);
    remap();
    expect(read()).toBe(0x22222222);
  });
});
