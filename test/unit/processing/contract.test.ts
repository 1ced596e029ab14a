import {execFileSync} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import http from 'node:http'
import type {AddressInfo} from 'node:net'
import os from 'node:os'
import path from 'node:path'

import type {ProcessingModuleConfig} from '../../../src/lib/config/schema.js'
import {ModuleFailure, type Task, parseResult} from '../../../src/lib/processing/contract.js'
import {type InputInstance, makeRunFolders} from '../../../src/lib/processing/inputs.js'
import {checkOutputFiles} from '../../../src/lib/processing/outputs.js'
import {runCommand, runHttp} from '../../../src/lib/processing/runner.js'
import {fixturePath, manifest} from '../../helpers/fixtures.js'
import {waitFor} from '../../helpers/wait.js'

const given = {sopInstanceUids: new Set(['1.2.3.4']), seriesInstanceUids: new Set(['1.2.3'])}

function failure(fn: () => unknown): ModuleFailure {
  try {
    fn()
  } catch (error) {
    if (error instanceof ModuleFailure) return error
    throw error
  }

  throw new Error('did not fail')
}

async function failureOf(promise: Promise<unknown>): Promise<ModuleFailure> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  if (!(error instanceof ModuleFailure)) throw new Error(`expected a ModuleFailure, got ${String(error)}`)
  return error
}

const task: Task = {version: 1, module: 'm', settings: {}, study: {studyInstanceUid: '1.2', patientId: 'P', accessionNumber: null, studyDate: null, modalities: []}, series: [], backend: null, run: 1, attempt: 1, output: 'sr'}

function module(overrides: Partial<ProcessingModuleConfig>): ProcessingModuleConfig {
  return {name: 'm', match: {}, timeoutSeconds: 10, retries: 0, retryDelaySeconds: 0, output: 'sr', settings: {}, rerunOnAmendment: false, ...overrides}
}

/** Whether a process with this pid runs (a zombie waiting to be reaped does not). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

describe('result.json', () => {
  it('takes findings with codes, probabilities, values and references to what the module was given', () => {
    const result = parseResult(
      JSON.stringify({
        findings: [
          {label: 'Cardiomegaly', code: {value: '8186001', scheme: 'SCT', meaning: 'Cardiomegaly'}, probability: 0.87, sopInstanceUid: '1.2.3.4'},
          {label: 'Width', value: 12.5, unit: 'mm', seriesInstanceUid: '1.2.3'},
        ],
        summary: 'text',
      }),
      given,
    )
    expect(result.findings).toHaveLength(2)
    expect(parseResult('{"findings": []}', given)).toEqual({findings: []})
  })

  it.each([
    ['not JSON', '{"findings": [', /^result\.json is not JSON: /],
    ['no findings', '{"summary": "x"}', /^result\.json does not follow the contract: \/findings expected required property/],
    ['a probability above 1', '{"findings": [{"label": "x", "probability": 1.5}]}', /\/findings\/0\/probability expected number to be less or equal to 1/],
    ['a misspelt field', '{"findings": [{"label": "x", "probabilty": 0.5}]}', /\/findings\/0\/probabilty unexpected property/],
    ['an empty label', '{"findings": [{"label": ""}]}', /\/findings\/0\/label expected string length greater or equal to 1/],
    ['a unit without a value', '{"findings": [{"label": "x", "unit": "mm"}]}', /findings\[0\] has a unit but no value/],
    ['an instance it was not given', '{"findings": [{"label": "x", "sopInstanceUid": "1.2.3.5"}]}', /findings\[0\]\.sopInstanceUid 1\.2\.3\.5 is not one of the instances the module was given/],
    ['a series it was not given', '{"findings": [{"label": "x", "seriesInstanceUid": "9.9"}]}', /findings\[0\]\.seriesInstanceUid 9\.9 is not one of the series/],
  ])('is refused with a reason that names the problem: %s', (_what, text, reason) => {
    const error = failure(() => parseResult(text, given))
    expect(error.kind).toBe('invalid-result')
    expect(error.message).toMatch(reason)
  })
})

describe('running a module', () => {
  let dir: string

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-runner-'))
  })

  afterEach(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  it('gives a command DDR_IN, DDR_OUT and task.json, and reads result.json from DDR_OUT', async () => {
    const folders = await makeRunFolders(dir, 'ok')
    const output = await runCommand(module({command: ['sh', '-c', 'test -f "$DDR_IN/task.json" && test "$DDR_TASK" = "$DDR_IN/task.json" && echo "{\\"findings\\": [], \\"summary\\": \\"$DDR_MODULE\\"}" > "$DDR_OUT/result.json"']}), folders, task)
    expect(JSON.parse(output.resultText!)).toEqual({findings: [], summary: 'm'})
    expect(JSON.parse(await readFile(path.join(folders.inDir, 'task.json'), 'utf8'))).toEqual(task)
  })

  it('fails an attempt on a non-zero exit, keeping the end of stderr; and one that cannot start', async () => {
    const folders = await makeRunFolders(dir, 'exit')
    const error = await failureOf(runCommand(module({command: ['sh', '-c', `head -c 10000 /dev/zero | tr '\\0' x >&2; echo; echo 'the reason' >&2; exit 7`]}), folders, task))
    expect(error.kind).toBe('exit')
    expect(error.message).toBe('exited with code 7')
    expect(error.stderr.length).toBeLessThanOrEqual(4096)
    expect(error.stderr.trim().endsWith('the reason')).toBe(true)
    const missing = await failureOf(runCommand(module({command: [path.join(dir, 'no-such-program')]}), folders, task))
    expect(missing.message).toMatch(/^cannot start .*no-such-program: spawn .* ENOENT/)
  })

  it('kills a module that hangs at its timeout, with whatever it started in its process group', async () => {
    const folders = await makeRunFolders(dir, 'hang')
    const pidFile = path.join(dir, 'pids')
    const started = Date.now()
    // The shell starts a background sleep and waits: both must go.
    const error = await failureOf(runCommand(module({timeoutSeconds: 1, command: ['sh', '-c', `sleep 600 & echo $! > ${pidFile}; echo $$ >> ${pidFile}; echo working >&2; wait`]}), folders, task))
    expect(error.kind).toBe('timeout')
    expect(error.message).toBe('still running after timeoutSeconds (1 s): killed')
    expect(error.stderr.trim()).toBe('working')
    expect(Date.now() - started).toBeLessThan(5000)
    const pids = (await readFile(pidFile, 'utf8')).trim().split('\n').map(Number)
    expect(pids).toHaveLength(2)
    await waitFor('the module and its child to be gone', () => pids.every((pid) => !alive(pid)), 2000)
  })

  it('posts the study to an HTTP module as multipart/form-data and reads its JSON answer; an error status fails the attempt', async () => {
    const cr = manifest.files.find((f) => f.path === 'studies/5/cr.dcm')!
    const input: InputInstance = {sopInstanceUid: cr.sopInstanceUid, sopClassUid: cr.sopClassUid, file: `${cr.sopInstanceUid}.dcm`, transferSyntaxUid: cr.transferSyntaxUid, seriesInstanceUid: cr.seriesInstanceUid, modality: 'CR', callingAeTitle: 'X', backend: null, path: fixturePath(cr), datasetOffset: 0, datasetLength: 0}
    let body = Buffer.alloc(0)
    let contentType = ''
    let status = 200
    const server = http.createServer((request, response) => {
      contentType = request.headers['content-type'] ?? ''
      const chunks: Buffer[] = []
      request.on('data', (c: Buffer) => chunks.push(c))
      request.on('end', () => {
        body = Buffer.concat(chunks)
        response.writeHead(status, {'content-type': 'application/json'}).end(status === 200 ? '{"findings": [{"label": "seen"}]}' : 'model not loaded')
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/analyze`
    try {
      const output = await runHttp(module({url}), task, [input])
      expect(JSON.parse(output.resultText!)).toEqual({findings: [{label: 'seen'}]})
      const boundary = /boundary=(.+)$/.exec(contentType)![1]
      const text = body.toString('latin1')
      expect(text).toContain(`--${boundary}\r\nContent-Disposition: form-data; name="task"; filename="task.json"\r\nContent-Type: application/json\r\n\r\n${JSON.stringify(task)}\r\n`)
      expect(text).toContain(`Content-Disposition: form-data; name="instance"; filename="${cr.sopInstanceUid}.dcm"\r\nContent-Type: application/dicom\r\n\r\n`)
      // The file goes as it is, byte for byte.
      expect(body.includes(await readFile(fixturePath(cr)))).toBe(true)
      expect(text.endsWith(`--${boundary}--\r\n`)).toBe(true)

      status = 503
      const error = await failureOf(runHttp(module({url}), task, [input]))
      expect(error).toMatchObject({kind: 'http', message: `POST ${url} answered HTTP 503`, stderr: 'model not loaded'})
    } finally {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    }

    const refused = await failureOf(runHttp(module({url}), task, [input]))
    expect(refused.kind).toBe('http')
    expect(refused.message).toMatch(/ECONNREFUSED/)
  })
})

describe("DDR_OUT's DICOM", () => {
  let dir: string

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-outputs-'))
  })

  afterEach(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  const cr = manifest.files.find((f) => f.path === 'studies/5/cr.dcm')!
  const study = {studyInstanceUid: cr.studyInstanceUid, patientId: cr.patientId}

  /** A copy of the CR fixture with new values (dcmodify). */
  async function variant(name: string, changes: string[]): Promise<string> {
    const file = path.join(dir, name)
    await writeFile(file, await readFile(fixturePath(cr)))
    execFileSync('dcmodify', ['-nb', ...changes.flatMap((c) => ['-m', c]), file])
    return file
  }

  it('takes Part 10 files of the study with new UIDs and ignores other files', async () => {
    await variant('a.dcm', ['(0008,0018)=1.2.826.0.1.3680043.10.1.77.1'])
    await writeFile(path.join(dir, 'result.json'), '{}')
    await writeFile(path.join(dir, 'notes.txt'), 'x')
    expect(await checkOutputFiles(dir, study, new Set([cr.sopInstanceUid]))).toEqual([{path: path.join(dir, 'a.dcm'), sopInstanceUid: '1.2.826.0.1.3680043.10.1.77.1', sopClassUid: cr.sopClassUid, kind: 'dicom'}])
  })

  it.each([
    ['another study', ['(0008,0018)=1.2.826.0.1.3680043.10.1.77.2', '(0020,000d)=1.2.826.0.1.3680043.10.1.77.3'], /DDR_OUT\/x\.dcm: it is in study 1\.2\.826\.0\.1\.3680043\.10\.1\.77\.3, not /],
    ['another patient', ['(0008,0018)=1.2.826.0.1.3680043.10.1.77.4', '(0010,0020)=SOMEONE'], /DDR_OUT\/x\.dcm: its PatientID is "SOMEONE", the study's "DDR-P005"/],
    ['an input instance', [], /reuses the SOPInstanceUID of an instance the module was given/],
  ])('refuses a file of %s', async (_what, changes, reason) => {
    await (changes.length > 0 ? variant('x.dcm', changes) : writeFile(path.join(dir, 'x.dcm'), await readFile(fixturePath(cr))))
    const error = await failureOf(checkOutputFiles(dir, study, new Set([cr.sopInstanceUid])))
    expect(error.kind).toBe('invalid-output')
    expect(error.message).toMatch(reason)
  })

  it('refuses a .dcm file that is not DICOM', async () => {
    await writeFile(path.join(dir, 'broken.dcm'), 'hello')
    const error = await failureOf(checkOutputFiles(dir, study, new Set()))
    expect(error.message).toMatch(/^DDR_OUT\/broken\.dcm is not a DICOM Part 10 file: /)
  })
})
