/** Two projects: fast unit tests, and integration tests that start real Orthanc and dcmtk processes. */
const common = {
  preset: 'ts-jest/presets/default-esm',
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: {'^(\\.{1,2}/.*)\\.js$': '$1'},
  transform: {'^.+\\.ts$': ['ts-jest', {useESM: true, tsconfig: 'tsconfig.json'}]},
  setupFilesAfterEnv: ['<rootDir>/test/helpers/setup.ts'],
}

export default {
  projects: [
    {...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts']},
    {
      ...common,
      displayName: 'integration',
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      slowTestThreshold: 30,
      // Stops the run when dist/ (the compiled CLI these tests spawn) is older than src/.
      globalSetup: '<rootDir>/test/helpers/check-build.mjs',
    },
  ],
  maxWorkers: 2,
  testTimeout: 60000,
}
