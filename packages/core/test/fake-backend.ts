import 'reflect-metadata';
import { backend, KVM_X86_OPS, KvmVcpu, emptySegment, VcpuSreg } from '../src';

/**
 * A minimal stand-in backend for core's own tests: every hook present, doing the least a
 * backend can (state in plain fields). It exists to test core's seams (binding, DI, the KVM
 * API's argument checks), not to run guests — the real backends' tests do that.
 */
export function makeFakeBackend(omit: readonly string[] = [], name = 'fake') {
  class Fake {
    vmSize = 4096;
    pmuOps = {};
    nestedOps = { enabled: false };
    rflags = 2n;
    segs = Array.from({ length: 8 }, () => emptySegment());
    created: KvmVcpu[] = [];
  }
  const proto = Fake.prototype as unknown as Record<string, unknown>;
  for (const e of KVM_X86_OPS) {
    if (e.kind === 'value') continue;
    proto[e.name] = function () {
      return 0;
    };
  }
  proto.getRflags = function (this: Fake) { return this.rflags; };
  proto.setRflags = function (this: Fake, _v: KvmVcpu, r: bigint) { this.rflags = r; };
  proto.getSegment = function (this: Fake, _v: KvmVcpu, out: ReturnType<typeof emptySegment>, s: VcpuSreg) { Object.assign(out, this.segs[s]); };
  proto.setSegment = function (this: Fake, _v: KvmVcpu, val: ReturnType<typeof emptySegment>, s: VcpuSreg) { this.segs[s] = { ...val }; };
  proto.vcpuCreate = function (this: Fake, v: KvmVcpu) { this.created.push(v); return 0; };
  proto.getCsDbLBits = () => ({ db: 0, l: 0 });
  proto.getExitInfo = () => ({ info1: 0n, info2: 0n });
  proto.setHvTimer = () => ({ result: 0, expired: false });
  for (const o of omit) delete proto[o];
  backend({ name, vendor: 'intel' })(Fake);
  return Fake;
}
