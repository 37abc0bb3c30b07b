/** Differential tests against the host CPU: ADD ADC SUB SBB CMP NEG, AND OR XOR TEST NOT, INC DEC (see harness/suite.ts for the knobs). */
import { describeFamily } from './harness/suite';

describeFamily('add-sub');
describeFamily('logic');
describeFamily('inc-dec');
