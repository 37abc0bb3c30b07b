/**
 * Multiboot kernels built with the testkit, booted by the Machine on both backends: serial
 * output, the Multiboot hand-over (EAX/EBX, the information structure), fw_cfg and the PM
 * timer from the guest, and the exit through isa-debug-exit at 0xF4.
 */
import { BackendClass, Machine, MachineConfigError, MachineExitStatus, MULTIBOOT_BOOTLOADER_MAGIC, NO_EXIT } from '@tsvisor/core';
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

describe('Machine: interruption, exit timing, tracing, vCPU identity', () => {
  const spin = () => buildMultibootKernel((a) => { const l = a.here(); a.jmp(l); });

  it('interrupt() ends an async run promptly with reason interrupted and status 130', async () => {
    const m = Machine.create({ backend: VmxBackend, memory: 8 * 2 ** 20, kernel: { name: 'spin', data: spin().image } });
    try {
      const t = setTimeout(() => m.interrupt('test'), 100);
      const started = Date.now();
      const r = await m.run();
      clearTimeout(t);
      expect(Date.now() - started).toBeLessThan(2000);
      expect(r.reason).toBe('interrupted');
      expect(r.status).toBe(MachineExitStatus.INTERRUPTED);
      expect(r.status).toBe(130);
    } finally {
      m.destroy();
    }
  });

  it.each(BACKENDS)('exitTiming charges each KVM_RUN to a backend exit reason on %s; without it no time is kept', (_name, backend) => {
    const timed = Machine.create({ backend, memory: 16 * 2 ** 20, kernel: { name: 'mb', data: kernel().image }, exitTiming: true });
    const plain = Machine.create({ backend, memory: 16 * 2 ** 20, kernel: { name: 'mb', data: kernel().image } });
    try {
      const r = timed.runSync();
      const times = r.vcpus[0].exitTimeMs;
      const charged = Object.keys(times).filter((k) => k !== NO_EXIT);
      expect(charged.length).toBeGreaterThan(0);
      for (const k of charged) expect(r.vcpus[0].exits[k]).toBeGreaterThan(0);
      expect(Object.values(times).every((t) => t >= 0)).toBe(true);
      const p = plain.runSync();
      expect(p.vcpus[0].exitTimeMs).toEqual({});
      expect(p.vcpus[0].exits).toEqual(r.vcpus[0].exits);
    } finally {
      timed.destroy();
      plain.destroy();
    }
  });

  it.each(BACKENDS)('kvm_exit is traced once per backend exit on %s (core writes it when the backend does not)', (_name, backend) => {
    const lines: string[] = [];
    const m = Machine.create({
      backend, memory: 16 * 2 ** 20, kernel: { name: 'mb', data: kernel().image },
      trace: { events: ['kvm_exit', 'kvm_userspace_exit'], sink: (e, id, text) => lines.push(`${id} ${e} ${text}`) },
    });
    try {
      const r = m.runSync();
      const total = Object.values(r.vcpus[0].exits).reduce((a, b) => a + b, 0);
      expect(lines.filter((l) => l.includes(' kvm_exit reason ')).length).toBe(total);
      const userspace = Object.values(r.vcpus[0].userspaceExits).reduce((a, b) => a + b, 0);
      expect(lines.filter((l) => l.includes(' kvm_userspace_exit reason KVM_EXIT_')).length).toBe(userspace);
    } finally {
      m.destroy();
    }
  });

  it('each vCPU sees its own APIC id in CPUID leaf 1 (KVM_SET_CPUID2 per vCPU, as QEMU)', () => {
    const m = Machine.create({ backend: SvmBackend, memory: 8 * 2 ** 20, kernel: { name: 'spin', data: spin().image }, smp: 3 });
    try {
      m.vcpus.forEach((s, i) => {
        const leaf1 = s.vcpu.getCpuid2().find((e) => e.function === 1)!;
        expect(leaf1.ebx >>> 24).toBe(i);
        expect((leaf1.ebx >>> 16) & 0xff).toBe(3);
      });
    } finally {
      m.destroy();
    }
  });

  it('refuses memory it cannot give with a MachineConfigError', () => {
    expect(() => Machine.create({ backend: VmxBackend, memory: 65 * 2 ** 30, kernel: { name: 'spin', data: spin().image } }))
      .toThrow(MachineConfigError);
  });
});
