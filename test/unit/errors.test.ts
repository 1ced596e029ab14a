import {DdrError, ddrErrorJson, formatErrorReport} from '../../src/lib/errors.js'

describe('error reports (what a command prints when it ends on an error)', () => {
  it('names the code, the message and the hint; the cause only with debug', () => {
    const error = new DdrError('BACKEND_UNREACHABLE', 'orthanc1 (127.0.0.1:4242): connection refused', {hint: 'is it running?', cause: new Error('ECONNREFUSED')})
    expect(formatErrorReport(error)).toBe('error [BACKEND_UNREACHABLE]: orthanc1 (127.0.0.1:4242): connection refused\n  hint: is it running?\n')
    expect(formatErrorReport(error, {debug: true})).toMatch(/^ {2}cause: Error: ECONNREFUSED\n/m)
  })

  it('reports anything else as UNEXPECTED, with its stack under debug', () => {
    const error = new TypeError('x is undefined')
    expect(formatErrorReport(error)).toBe('error [UNEXPECTED]: x is undefined\n')
    expect(formatErrorReport(error, {debug: true})).toContain('TypeError: x is undefined\n    at ')
  })

  it('gives --json the code, message, hint and exit code', () => {
    expect(ddrErrorJson(new DdrError('CONFIG_INVALID', 'bad', {hint: 'fix it'}))).toEqual({error: {code: 'CONFIG_INVALID', message: 'bad', hint: 'fix it', exit: 2}})
  })
})
