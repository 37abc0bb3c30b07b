/**
 * tsvisor-backend-example — a third-party tsvisor backend. `tsvisor run --backend
 * tsvisor-backend-example` finds XcbBackend among these exports by its @backend metadata.
 */
export { XcbBackend, VcpuXcb, xcbOf, XCB_HYPERCALL_BYTES } from './backend';
export { Xcb, XCB, XCB_GUEST, XCB_SIZE, XcbExit, XcbIntercept, XcbEntryFailure, XCB_EXIT_NAMES, packAttr, unpackAttr } from './xcb';
export { XcbHardware, XcbRules, xcbEntryCheck } from './hardware';
export { XPT_FORMAT, XptWalker } from './xpt';

import type { KvmVcpu } from '@tsvisor/core';
import { xcbOf } from './backend';
import { XCB, XCB_GUEST } from './xcb';

/** `tsvisor run --dump-control-block`: the XCB's fields by name. */
export function dumpControlBlock(vcpu: KvmVcpu): string {
  const x = xcbOf(vcpu).xcb;
  const lines: string[] = [];
  for (const [name, off] of Object.entries(XCB)) lines.push(`${name.padEnd(22)} 0x${x.r64(off).toString(16)}`);
  for (const [name, off] of Object.entries(XCB_GUEST)) lines.push(`GUEST_${name.padEnd(16)} 0x${x.r64(off).toString(16)}`);
  return lines.join('\n');
}
