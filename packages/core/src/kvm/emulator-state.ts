/**
 * The bridge between vCPU state (held by the vendor's control block, reached only through
 * kvm_x86_ops) and the processor's emulator — KVM's emulator_ops in x86.c. Before core
 * emulates an instruction on the guest's behalf it loads the architectural state through the
 * hooks into the vCPU's processor, and afterwards writes back what the instruction changed.
 * The backend reloads the processor from its control block at the next entry, so using the
 * vCPU's own processor as the emulator's scratch state is safe.
 */
import { emptySegment, KvmReg, VcpuSreg } from '../ops/types';
import { kvmQueueException } from './x86';
import type { KvmVcpu } from './vcpu';
import { taskSwitchStatus } from '../cpu/task-switch';
import { storeTaskSwitchState } from './task-switch';

const seg = emptySegment();

export function loadEmulatorState(vcpu: KvmVcpu): void {
  const ops = vcpu.kvm.ops;
  const s = vcpu.cpu.state;
  for (let r = 0; r < 16; r++) s.setGpr(r, vcpu.registerRead(r as KvmReg));
  s.rip = vcpu.registerRead(KvmReg.RIP);
  s.rflags = Number(ops.getRflags(vcpu) & 0xffffffffn);
  for (let i = 0; i < 8; i++) {
    ops.getSegment(vcpu, seg, i as VcpuSreg);
    s.setSegment(i as VcpuSreg, seg);
  }
  const dt = { size: 0, address: 0n };
  ops.getGdt(vcpu, dt);
  s.sysWrites++;
  s.gdtrBase = dt.address;
  s.gdtrLimit = dt.size;
  ops.getIdt(vcpu, dt);
  s.idtrBase = dt.address;
  s.idtrLimit = dt.size;
  s.cr0 = vcpu.readCr0();
  s.cr2 = vcpu.arch.cr2;
  s.cr3 = vcpu.readCr3();
  s.cr4 = vcpu.readCr4();
  s.efer = vcpu.arch.efer;
  s.cpl = ops.getCpl(vcpu);
}

/** Write back what an emulated instruction can change: GPRs, RIP, RFLAGS. */
export function storeEmulatorState(vcpu: KvmVcpu): void {
  const s = vcpu.cpu.state;
  for (let r = 0; r < 16; r++) {
    const v = s.getGpr(r);
    if (v !== vcpu.arch.regs[r]) vcpu.registerWrite(r as KvmReg, v);
  }
  const rip = s.rip;
  if (rip !== vcpu.arch.regs[KvmReg.RIP]) vcpu.registerWrite(KvmReg.RIP, rip);
  vcpu.kvm.ops.setRflags(vcpu, BigInt(s.rflags >>> 0));
}

/** Run `fn` on the processor with the vCPU's state loaded, write back, and queue any exception it raised. */
export function withEmulatorState<T>(vcpu: KvmVcpu, fn: () => T): T {
  loadEmulatorState(vcpu);
  const cpu = vcpu.cpu;
  cpu.injection.valid = false;
  taskSwitchStatus.committed = false;
  const r = fn();
  // An emulated JMP/CALL/IRET that switched tasks changed segments, TR, LDTR, CR0/CR3, DR7 too.
  if (taskSwitchStatus.committed) storeTaskSwitchState(vcpu);
  else storeEmulatorState(vcpu);
  if (cpu.injection.valid) {
    cpu.injection.valid = false;
    kvmQueueException(vcpu, cpu.injection.vector, cpu.injection.hasErrorCode ? cpu.injection.errorCode : undefined);
  }
  return r;
}
