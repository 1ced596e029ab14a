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
    {...common, displayName: 'integration', testMatch: ['<rootDir>/test/integration/**/*.test.ts'], slowTestThreshold: 30},
  ],
  maxWorkers: 2,
  testTimeout: 60000,
}
