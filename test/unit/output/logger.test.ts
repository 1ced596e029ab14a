import {Logger} from '../../../src/lib/output/logger.js'

describe('Logger', () => {
  const capture = (format?: 'text' | 'json') => {
    const lines: string[] = []
    return {lines, logger: new Logger({format, write: (line) => lines.push(line)})}
  }

  it('writes `time LEVEL event key=value ... - message`, leaving out empty fields and quoting values with spaces, quotes or =', () => {
    const {lines, logger} = capture()
    logger.info('routed', {sop: '1.2.3', study: undefined, from: 'STORESCU', backend: 'a b', why: 'x="y"', status: null, empty: '', ms: 1.5, ok: true}, 'done')
    logger.warn('refused', {})
    logger.error('failed', {n: 0})
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO {2}routed sop=1\.2\.3 from=STORESCU backend="a b" why="x=\\"y\\"" ms=1\.5 ok=true - done$/)
    expect(lines[1]).toMatch(/Z WARN {2}refused$/)
    expect(lines[2]).toMatch(/Z ERROR failed n=0$/)
  })

  it('writes debug lines only with debug on', () => {
    const lines: string[] = []
    new Logger({write: (line) => lines.push(line)}).debug('quiet')
    new Logger({debug: true, write: (line) => lines.push(line)}).debug('loud', {a: 1})
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/Z DEBUG loud a=1$/)
  })

  it('writes JSON lines with every field as given', () => {
    const {lines, logger} = capture('json')
    logger.info('routed', {sop: '1.2.3', ms: 2}, 'why')
    expect(JSON.parse(lines[0])).toEqual({time: expect.any(String), level: 'info', event: 'routed', sop: '1.2.3', ms: 2, message: 'why'})
  })
})
