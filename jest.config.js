/** Tests run against the TypeScript sources (ts-jest, transpile-only for speed; `tsc -b`
 * in `npm test` is the type check). @tsvisor/* resolve to each package's src. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/packages'],
  testMatch: ['**/test/**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.test.json' }],
  },
  moduleNameMapper: {
    '^@tsvisor/(core|vmx|svm|cli|testkit)$': '<rootDir>/packages/$1/src/index.ts',
  },
  testTimeout: 60000,
};
