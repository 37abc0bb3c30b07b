/** Differential tests against the host CPU: MOVZX MOVSX MOVSXD BSWAP MOVBE, XCHG XADD CMPXCHG, CMOVcc, SETcc, LAHF SAHF CBW..CQO (see harness/suite.ts for the knobs). */
import { describeFamily } from './harness/suite';

describeFamily('move-extend');
describeFamily('exchange');
describeFamily('cmov');
describeFamily('setcc');
describeFamily('flags-convert');
