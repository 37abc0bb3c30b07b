import 'reflect-metadata';
import { injectable, InjectionToken } from 'tsyringe';
import type { X86Ops } from './x86-ops';

/** The DI token core resolves the vendor backend by (one instance per VM, from the VM's child container). */
export const X86_OPS: InjectionToken<X86Ops> = Symbol.for('tsvisor.X86_OPS');

/** How a backend class describes itself (`@backend({...})`). */
export interface BackendInfo {
  /** Short name used by `--backend` (e.g. "vmx", "svm"). */
  name: string;
  /** Which hardware it virtualizes: what the guest's CPUID vendor string says by default. */
  vendor: 'intel' | 'amd';
  description?: string;
  /** npm package that ships it and its version (filled from package.json by the loader when absent). */
  packageName?: string;
  version?: string;
}

const BACKEND_METADATA = Symbol.for('tsvisor.backend');

export type BackendClass = (new (...args: never[]) => X86Ops) & { readonly prototype: X86Ops };

/**
 * Class decorator: marks a class as a tsvisor backend and makes it injectable.
 * `@backend({ name: 'vmx', vendor: 'intel' }) export class VmxBackend implements X86Ops {…}`
 */
export function backend(info: BackendInfo): <T extends new (...args: never[]) => object>(target: T) => T {
  if (!info || typeof info.name !== 'string' || info.name.length === 0) {
    throw new TypeError('@backend: info.name must be a non-empty string');
  }
  if (info.vendor !== 'intel' && info.vendor !== 'amd') {
    throw new TypeError(`@backend(${info.name}): vendor must be 'intel' or 'amd', got ${String(info.vendor)}`);
  }
  return (target) => {
    Reflect.defineMetadata(BACKEND_METADATA, Object.freeze({ ...info }), target);
    injectable()(target as never);
    return target;
  };
}

/** The `@backend` metadata of a class, or undefined when it is not a backend. */
export function getBackendInfo(cls: unknown): BackendInfo | undefined {
  if (typeof cls !== 'function') return undefined;
  return Reflect.getMetadata(BACKEND_METADATA, cls) as BackendInfo | undefined;
}
