#!/usr/bin/env node
import module from 'node:module'

// Node 22.1+ keeps V8's compiled code of ddr and oclif between runs (in the OS temp folder), which
// shortens every start; on Node 20 the function does not exist and nothing changes.
module.enableCompileCache?.()

const {execute} = await import('@oclif/core')
await execute({dir: import.meta.url})
