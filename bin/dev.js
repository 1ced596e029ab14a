#!/usr/bin/env node
// Runs the compiled commands too: build first (npm run build). Kept for oclif's conventions.
import {execute} from '@oclif/core'

await execute({development: true, dir: import.meta.url})
