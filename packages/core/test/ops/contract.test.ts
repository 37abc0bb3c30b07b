import { readFileSync, existsSync } from 'fs';
import { join } from 'path';
import {
  container, BackendBindError, bindX86Ops, getBackendInfo, Kvm, KVM_X86_OPS, OPS_BY_NAME, X86_OPS,
} from '../../src';
import { makeFakeBackend } from '../fake-backend';

/**
 * The seed's 111 member names (../shared/seed/kvm_x86_ops.members.txt beside the repository),
 * copied into the tree so the test does not depend on where the repository is checked out.
 */
const SEED = join(__dirname, 'seed/kvm_x86_ops.members.txt');

function camel(s: string): string {
  return s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

describe('the kvm_x86_ops table', () => {
  it('has one entry per member of the seed struct, in order, with camelCase names', () => {
    expect(existsSync(SEED)).toBe(true);
    const members = readFileSync(SEED, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
    expect(members).toHaveLength(111);
    expect(KVM_X86_OPS.map((e) => e.seed)).toEqual(members);
    expect(KVM_X86_OPS.map((e) => e.name)).toEqual(members.map(camel));
  });

  it('gives every entry a kind and a concern group', () => {
    for (const e of KVM_X86_OPS) {
      expect(['required', 'optional', 'optional_ret0', 'value']).toContain(e.kind);
      expect(e.group).toMatch(/^[a-z-]+$/);
    }
    expect(OPS_BY_NAME.get('getMsr')?.kind).toBe('required');
    // The hooks a vendor may lack (DESIGN.md) are optional.
    for (const n of ['slotEnableLogDirty', 'flushLogDirty', 'setHvTimer', 'cancelHvTimer', 'memEncOp', 'memEncRegRegion'] as const) {
      expect(OPS_BY_NAME.get(n)?.kind).toBe('optional');
    }
  });
});

describe('binding a backend', () => {
  it('accepts a backend with every required hook and records the optional ones it has', () => {
    const Fake = makeFakeBackend(['setHvTimer', 'memEncOp']);
    const b = bindX86Ops(new Fake(), getBackendInfo(Fake)!);
    expect(b.present.has('getMsr')).toBe(true);
    expect(b.present.has('setHvTimer')).toBe(false);
    expect(b.present.has('memEncOp')).toBe(false);
  });

  it('refuses a backend missing a required hook, naming the hook and the backend', () => {
    const Fake = makeFakeBackend(['getMsr', 'handleExit'], 'broken');
    expect(() => bindX86Ops(new Fake(), getBackendInfo(Fake)!)).toThrow(BackendBindError);
    expect(() => bindX86Ops(new Fake(), getBackendInfo(Fake)!)).toThrow(
      "backend 'broken' cannot be bound: missing required hooks: getMsr, handleExit",
    );
  });

  it('refuses a hook that is not a function and a malformed value member', () => {
    const Fake = makeFakeBackend([], 'odd');
    const o = new Fake() as unknown as Record<string, unknown>;
    o.getCpl = 3;
    o.vmSize = -1;
    expect(() => bindX86Ops(o, getBackendInfo(Fake)!)).toThrow(/malformed: vmSize .*getCpl \(expected a function, got number\)/);
  });
});

describe('dependency injection', () => {
  it('resolves the backend registered for X86_OPS, one instance per VM in its own child container', () => {
    const Fake = makeFakeBackend();
    const parent = container.createChildContainer();
    parent.register(X86_OPS, { useClass: Fake as never });
    const a = Kvm.create({ container: parent });
    const b = Kvm.create({ container: parent });
    expect(a.ops).toBeInstanceOf(Fake);
    expect(a.ops).not.toBe(b.ops);
    expect(a.container).not.toBe(b.container);
    expect(a.backendInfo.name).toBe('fake');
  });

  it('explains when no backend is registered', () => {
    const empty = container.createChildContainer();
    expect(() => Kvm.create({ container: empty })).toThrow(/ENODEV: KVM_CREATE_VM: no backend is registered for X86_OPS/);
  });

  it('refuses a class without @backend metadata', () => {
    class NotABackend {}
    const c = container.createChildContainer();
    c.register(X86_OPS, { useValue: new NotABackend() as never });
    expect(() => Kvm.create({ container: c })).toThrow(/NotABackend is not a tsvisor backend \(it lacks the @backend/);
  });

  it('refuses at VM creation a backend missing a required hook', () => {
    const Fake = makeFakeBackend(['run'], 'norun');
    expect(() => Kvm.create({ backend: Fake as never })).toThrow(/missing required hook: run/);
  });
});
