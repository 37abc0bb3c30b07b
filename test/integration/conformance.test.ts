/**
 * The backend conformance suite (@tsvisor/testkit) against the project's own backends. Each
 * backend states only what its vendor's manual makes different (conformance-options.ts); every
 * other expectation is the same for both.
 */
import { BackendClass } from '@tsvisor/core';
import { VmxBackend } from '@tsvisor/vmx';
import { SvmBackend } from '@tsvisor/svm';
import { describeBackendConformance } from '@tsvisor/testkit';
import { SVM_CONFORMANCE, VMX_CONFORMANCE } from './conformance-options';

describeBackendConformance(VmxBackend as unknown as BackendClass, VMX_CONFORMANCE);
describeBackendConformance(SvmBackend as unknown as BackendClass, SVM_CONFORMANCE);
