/**
 * Multiboot kernels built with the testkit, booted by the Machine on both backends: serial
 * output, the Multiboot hand-over (EAX/EBX, the information structure), fw_cfg and the PM
 * timer from the guest, and the exit through isa-debug-exit at 0xF4.
 */
import { BackendClass, Machine, MachineExitStatus, MULTIBOOT_BOOTLOADER_MAGIC } from '@tsvisor/core';
import { VmxBackend } from '@tsvisor/vmx';
import { SvmBackend } from '@tsvisor/svm';
import { buildMultibootKernel, serialPrintString, Assembler, eax, ebx, ecx, edx, al, ax, dx, dword, mem } from '@tsvisor/testkit';

/** Print "mb ok" if EAX is the Multiboot magic, the PM timer moves and fw_cfg says "QEMU"; then write 0x21 to 0xF4. */
function kernel() {
  return buildMultibootKernel((a: Assembler) => {
    const bad = a.label('bad');
    a.cmp(eax, MULTIBOOT_BOOTLOADER_MAGIC);
    a.jne(bad);
    a.mov(ecx, dword(mem(ebx))); // MBI flags
    a.test(ecx, 1 << 6); // memory map present
    a.jz(bad);
    // fw_cfg signature: select 0, read one byte, expect 'Q'.
    a.mov(dx, 0x510);
    a.mov(ax, 0);
    a.out(dx, ax);
    a.mov(dx, 0x511);
    a.in(al, dx);
    a.cmp(al, 0x51);
    a.jne(bad);
    serialPrintString(a, 'mb ok\n');
    a.mov(dx, 0xf4);
    a.mov(eax, 0x21);
    a.out(dx, eax);
    a.bind(bad);
    serialPrintString(a, 'mb bad\n');
    a.mov(dx, 0xf4);
    a.mov(eax, 0x1);
    a.out(dx, eax);
    a.hlt();
  });
}

const BACKENDS: [string, BackendClass][] = [['vmx', VmxBackend], ['svm', SvmBackend]];

describe.each(BACKENDS)('Machine on %s', (_name, backend) => {
  it('boots a Multiboot kernel, prints on COM1 and exits through 0xF4', () => {
    const k = kernel();
    const m = Machine.create({ backend, memory: 16 * 2 ** 20, kernel: { name: 'mb.elf', data: k.image }, append: 'console=ttyS0' });
    try {
      const r = m.runSync();
      expect(r.message).toMatch(/isa-debug-exit/);
      expect(r.serialOutput).toBe('mb ok\n');
      expect(r.reason).toBe('debug-exit');
      expect(r.debugExitValue).toBe(0x21);
      expect(r.status).toBe(0x21);
      expect(r.qemuStatus).toBe(0x43);
      expect(r.vcpus[0].userspaceExits.KVM_EXIT_IO).toBeGreaterThan(5);
      // The command line QEMU-style: kernel name, then --append.
      const cmdline = m.ram.readU32(0x9000 + 16);
      expect(Buffer.from(m.ram.read(cmdline, 21)).toString()).toBe('mb.elf console=ttyS0\0');
    } finally {
      m.destroy();
    }
  });

  it('is deterministic: the same guest gives the same output and exit counts', () => {
    const runOnce = () => {
      const m = Machine.create({ backend, memory: 16 * 2 ** 20, kernel: { name: 'mb', data: kernel().image }, smp: 2 });
      try {
        const r = m.runSync();
        return { out: r.serialOutput, exits: r.vcpus.map((v) => v.exits), n: r.instructions, status: r.status };
      } finally {
        m.destroy();
      }
    };
    const a = runOnce();
    expect(a.status).toBe(0x21);
    expect(runOnce()).toEqual(a);
  });

  it('ends a guest that halts for good with status 0, and a spinning one at maxInstructions', () => {
    const halt = buildMultibootKernel((a) => { a.cli(); a.hlt(); });
    const m = Machine.create({ backend, memory: 8 * 2 ** 20, kernel: { name: 'halt', data: halt.image } });
    try {
      const r = m.runSync();
      expect(r.reason).toBe('halted');
      expect(r.status).toBe(MachineExitStatus.OK);
    } finally {
      m.destroy();
    }
    const spin = buildMultibootKernel((a) => { const l = a.here(); a.jmp(l); });
    const m2 = Machine.create({ backend, memory: 8 * 2 ** 20, kernel: { name: 'spin', data: spin.image }, maxInstructions: 50_000 });
    try {
      const r = m2.runSync();
      expect(r.reason).toBe('max-instructions');
      expect(r.status).toBe(MachineExitStatus.TIMEOUT);
      expect(r.instructions).toBe(50_000);
    } finally {
      m2.destroy();
    }
  });
});
