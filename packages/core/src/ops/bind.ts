import { BackendBindError } from '../kvm/errors';
import { BackendInfo } from './backend';
import { KVM_X86_OPS, OpName } from './table';
import type { X86Ops } from './x86-ops';

/** Which hooks a bound backend provides; core consults it like KVM's static_call_cond. */
export interface BoundOps {
  readonly ops: X86Ops;
  readonly info: BackendInfo;
  /** Members present on the backend (required ones always; optional ones when implemented). */
  readonly present: ReadonlySet<OpName>;
}

/**
 * kvm_ops_update(): check a backend instance against the table. A missing required hook,
 * a hook that is not a function, or a malformed value member is an error naming it.
 */
export function bindX86Ops(ops: unknown, info: BackendInfo): BoundOps {
  if (ops === null || typeof ops !== 'object') {
    throw new BackendBindError(info.name, [], `backend '${info.name}' did not produce an object`);
  }
  const o = ops as Record<string, unknown>;
  const missing: string[] = [];
  const wrong: string[] = [];
  const present = new Set<OpName>();
  for (const e of KVM_X86_OPS) {
    const v = o[e.name];
    if (e.kind === 'value') {
      if (v === undefined) missing.push(e.name);
      else if (e.name === 'vmSize' ? typeof v !== 'number' || !(v >= 0) : typeof v !== 'object' || v === null) {
        wrong.push(`${e.name} (expected ${e.name === 'vmSize' ? 'a non-negative number' : 'an object'})`);
      } else present.add(e.name);
      continue;
    }
    if (v === undefined || v === null) {
      if (e.kind === 'required') missing.push(e.name);
      continue;
    }
    if (typeof v !== 'function') {
      wrong.push(`${e.name} (expected a function, got ${typeof v})`);
      continue;
    }
    present.add(e.name);
  }
  if (missing.length || wrong.length) {
    const parts = [];
    if (missing.length) parts.push(`missing required hook${missing.length > 1 ? 's' : ''}: ${missing.join(', ')}`);
    if (wrong.length) parts.push(`malformed: ${wrong.join(', ')}`);
    throw new BackendBindError(info.name, missing, `backend '${info.name}' cannot be bound: ${parts.join('; ')}`);
  }
  return { ops: ops as X86Ops, info, present };
}
