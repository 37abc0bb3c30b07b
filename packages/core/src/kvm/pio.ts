import { KvmReg } from '../ops/types';
import { KvmExitReason, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_PIO_PAGE_OFFSET } from './run';
import type { KvmVcpu } from './vcpu';

function sizeMask(size: number): bigint {
  return size === 1 ? 0xffn : size === 2 ? 0xffffn : 0xffffffffn;
}

/** kvm_fast_pio(): a non-string IN/OUT exit. Returns 1 (handled in kernel) or 0 (KVM_EXIT_IO). */
export function kvmFastPio(vcpu: KvmVcpu, size: number, port: number, isIn: boolean): number {
  const kvm = vcpu.kvm;
  const run = vcpu.run;
  const data = run.page.subarray(KVM_PIO_PAGE_OFFSET, KVM_PIO_PAGE_OFFSET + size);
  if (kvm.tracing('kvm_pio')) kvm.trace('kvm_pio', vcpu, () => `pio_${isIn ? 'read' : 'write'} at 0x${port.toString(16)} size ${size}`);
  if (!isIn) {
    const v = vcpu.registerRead(KvmReg.RAX) & sizeMask(size);
    for (let i = 0; i < size; i++) data[i] = Number((v >> BigInt(8 * i)) & 0xffn);
    if (kvm.pioBus.write(port, size, data)) return kvm.skipEmulatedInstruction(vcpu);
    exitIo(vcpu, KVM_EXIT_IO_OUT, size, port);
    vcpu.arch.pio.linearRip = vcpu.rip;
    // complete_fast_pio_out: the instruction retires when userspace comes back.
    vcpu.arch.completeUserspaceIo = (v) => (v.rip === v.arch.pio.linearRip ? v.kvm.skipEmulatedInstruction(v) : 1);
    return 0;
  }
  if (kvm.pioBus.read(port, size, data)) {
    completePioIn(vcpu, size, data);
    return kvm.skipEmulatedInstruction(vcpu);
  }
  exitIo(vcpu, KVM_EXIT_IO_IN, size, port);
  vcpu.arch.pio.linearRip = vcpu.rip;
  vcpu.arch.completeUserspaceIo = (v) => {
    if (v.rip !== v.arch.pio.linearRip) return 1;
    completePioIn(v, size, v.run.page.subarray(KVM_PIO_PAGE_OFFSET, KVM_PIO_PAGE_OFFSET + size));
    return v.kvm.skipEmulatedInstruction(v);
  };
  return 0;
}

/** complete_fast_pio_in: 8/16-bit IN merge into RAX; 32-bit IN zero-extends (SDM 3.4.1.1). */
function completePioIn(vcpu: KvmVcpu, size: number, data: Uint8Array): void {
  let v = 0n;
  for (let i = 0; i < size; i++) v |= BigInt(data[i]) << BigInt(8 * i);
  const rax = vcpu.registerRead(KvmReg.RAX);
  vcpu.registerWrite(KvmReg.RAX, size < 4 ? (rax & ~sizeMask(size)) | v : v);
}

function exitIo(vcpu: KvmVcpu, direction: number, size: number, port: number): void {
  const run = vcpu.run;
  run.exitReason = KvmExitReason.KVM_EXIT_IO;
  run.io.direction = direction;
  run.io.size = size;
  run.io.port = port;
  run.io.count = 1;
  run.io.dataOffset = KVM_PIO_PAGE_OFFSET;
  vcpu.kvm.stats.pioExits++;
  vcpu.arch.pio.count = 1;
  vcpu.arch.pio.size = size;
  vcpu.arch.pio.port = port;
  vcpu.arch.pio.in = direction === KVM_EXIT_IO_IN;
}
