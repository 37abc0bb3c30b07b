/**
 * The example backend passes tsvisor's backend conformance suite. The options state only what
 * this backend chose differently from the manuals' vendors.
 */
import type { BackendClass } from '@tsvisor/core';
import { describeBackendConformance } from '@tsvisor/testkit';
import { XcbBackend, XcbEntryFailure } from '../src';

describeBackendConformance(XcbBackend as unknown as BackendClass, {
  cpuVendor: 'GenuineIntel',
  hypercall: 'vmcall',
  exitNames: { cpuid: 'cpuid', hlt: 'hlt', io: 'io', msrRead: 'rdmsr', msrWrite: 'wrmsr', hypercall: 'hypercall' },
  failEntryReason: BigInt(XcbEntryFailure.CS_L_AND_D),
  dirtyLog: 'write-protect',
  tlb: 'tagged',
});
