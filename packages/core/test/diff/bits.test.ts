/** Differential tests against the host CPU: BT BTS BTR BTC, BSF BSR LZCNT TZCNT POPCNT (see harness/suite.ts for the knobs). */
import { describeFamily } from './harness/suite';

describeFamily('bit-test');
describeFamily('bit-scan');
