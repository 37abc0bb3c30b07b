import { BackendClass, Kvm, KvmVcpu } from '@tsvisor/core';
import { VmxBackend, toVmx, VcpuVmx } from '@tsvisor/vmx';
import { Assembler, bootGuest, GuestImage } from '@tsvisor/testkit';

export const VMX = VmxBackend as unknown as BackendClass;

/** A VM with 1 MiB of RAM at GPA 0 and one vCPU in real mode at 0000:1000 running `code` (16-bit). */
export function realModeVm(body: (a: Assembler) => void, opts: { memory?: number; slotFlags?: number } = {}): { kvm: Kvm; vcpu: KvmVcpu; vmx: VcpuVmx } {
  const a = new Assembler(16, 0x1000);
  body(a);
  const image = a.assemble();
  const guest: GuestImage = { image, loadAddress: 0x1000, cs: 0, ip: 0x1000 } as GuestImage;
  const { kvm, vcpu } = bootGuest(VMX, guest, { memory: opts.memory ?? 1 << 20, slotFlags: opts.slotFlags });
  // A guest gone astray stops with KVM_EXIT_INTR quickly instead of spinning through the default slice.
  vcpu.runBudget = 2_000_000;
  return { kvm, vcpu, vmx: toVmx(vcpu) };
}

/** Bytes the guest wrote to COM1 in one KVM_EXIT_IO. */
export function ioByte(vcpu: KvmVcpu): number {
  return vcpu.run.ioData[0];
}
