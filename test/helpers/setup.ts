import {Console} from 'node:console'

// Jest replaces console with a buffered one that hides oclif's stdout in command tests.
globalThis.console = new Console({stdout: process.stdout, stderr: process.stderr})
