/** Differential tests against the host CPU: MUL, IMUL (1/2/3 operands), DIV, IDIV (#DE) (see harness/suite.ts for the knobs). */
import { describeFamily } from './harness/suite';

describeFamily('mul');
describeFamily('div');
