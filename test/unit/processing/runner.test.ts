import {readdir, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {ProcessingModuleConfig} from '../../../src/lib/config/schema.js'
import type {Task} from '../../../src/lib/processing/contract.js'
import {makeRunFolders} from '../../../src/lib/processing/inputs.js'
import {runCommand} from '../../../src/lib/processing/runner.js'

describe('a command module', () => {
  it('is not started when the router stopped while its inputs were gathered (the abort came before the module)', async () => {
    const folders = await makeRunFolders(os.tmpdir(), 'runner-test')
    try {
      const module = {name: 'sleepy', match: {}, command: ['sh', '-c', `touch "${path.join(folders.dir, 'started')}"; sleep 30`], timeoutSeconds: 60, retries: 0, retryDelaySeconds: 0, output: 'sr', settings: {}, rerunOnAmendment: false} as ProcessingModuleConfig
      const controller = new AbortController()
      controller.abort()
      const started = Date.now()
      await expect(runCommand(module, folders, {} as Task, controller.signal)).rejects.toMatchObject({kind: 'exit', detail: 'exit: stopped: the router is shutting down'})
      expect(Date.now() - started).toBeLessThan(2000)
      expect(await readdir(folders.dir)).not.toContain('started')
    } finally {
      await rm(folders.dir, {recursive: true, force: true})
    }
  })
})
