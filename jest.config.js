/** Package tests live in each package's test folder; tests that need several packages (a backend with
 * the platform, both backends side by side) live in test/integration.
 * Tests run against the TypeScript sources (ts-jest, transpile-only for speed; `tsc -b`
 * in `npm test` is the type check). @tsvisor/* resolve to each package's src. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/packages', '<rootDir>/test'],
  testMatch: ['**/test/**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.test.json' }],
  },
  moduleNameMapper: {
    '^@tsvisor/(core|vmx|svm|cli|testkit)$': '<rootDir>/packages/$1/src/index.ts',
  },
  testTimeout: 60000,
};
