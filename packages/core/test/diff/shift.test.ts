/** Differential tests against the host CPU: SHL/SAL SHR SAR, ROL ROR RCL RCR (by 1, CL, imm), SHLD SHRD (see harness/suite.ts for the knobs). */
import { describeFamily } from './harness/suite';

describeFamily('shift');
describeFamily('rotate');
describeFamily('double-shift');
