/** Differential tests against the host CPU: BMI1, BMI2, ADCX/ADOX, CRC32 (see harness/suite.ts for the knobs). */
import { describeFamily } from './harness/suite';

describeFamily('bmi1');
describeFamily('bmi2');
describeFamily('adx');
describeFamily('crc32');
