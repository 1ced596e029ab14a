import {spawn, type ChildProcess} from 'node:child_process'
import {existsSync, readFileSync} from 'node:fs'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {findPostgresBinaries, postgresStatus, stopPostgres} from '../../../src/lib/stack/postgres-process.js'
import {isAlive, runCommand, tcpAccepts} from '../../../src/lib/stack/processes.js'
import {startTestPostgres, type TestPostgres} from '../../helpers/postgres.js'

/** psql over TCP as the routers connect: the URL's user, host and port, with PGPASSWORD when given. */
async function psqlOverTcp(database: TestPostgres, sql: string, password?: string) {
  const url = new URL(database.url)
  const psql = findPostgresBinaries()!.psql
  return runCommand(psql, ['-X', '-A', '-t', '-w', '-h', url.hostname, '-p', url.port, '-U', url.username, '-d', url.pathname.slice(1), '-c', sql], {
    env: {...process.env, PGPASSWORD: password ?? '', PGCONNECT_TIMEOUT: '5'},
    timeoutMs: 20_000,
  })
}

describe('a throwaway PostgreSQL (test/helpers/postgres.ts over src/lib/stack/postgres-process.ts)', () => {
  let database: TestPostgres
  let bystander: ChildProcess | undefined

  beforeAll(async () => {
    database = await startTestPostgres()
  })

  afterAll(async () => {
    bystander?.kill('SIGKILL')
    await database?.stop()
  })

  it('accepts TCP on 127.0.0.1 and answers the URL\'s role in its own database, socket in the data folder', async () => {
    expect(database.url).toBe(`postgres://ddr@127.0.0.1:${database.port}/ddr`)
    expect(await tcpAccepts('127.0.0.1', database.port)).toBe(true)
    const answer = await psqlOverTcp(database, 'select current_user, current_database(), 1')
    expect(answer.stderr).toBe('')
    expect(answer.stdout.trim()).toBe('ddr|ddr|1')
    expect(existsSync(path.join(database.dir, `.s.PGSQL.${database.port}`))).toBe(true)
    expect((await database.psql('show fsync')).trim()).toBe('off')
    expect((await database.psql("select rolsuper from pg_roles where rolname = 'ddr'")).trim()).toBe('f')
    expect(await postgresStatus(database.dir)).toMatchObject({initialized: true, running: true, pid: database.pid, port: database.port, user: 'ddr', database: 'ddr', url: database.url, version: expect.stringMatching(/^15\.\d+$/)})
  })

  it('keeps its data across a clean stop and a crash-like stop (halt, resume)', async () => {
    await database.psql('create table kept (value text); insert into kept values (\'before\')')
    await database.halt('fast')
    expect(await tcpAccepts('127.0.0.1', database.port, 500)).toBe(false)
    expect(await postgresStatus(database.dir)).toMatchObject({running: false, processAlive: false})
    await database.resume()
    await database.psql("insert into kept values ('after fast')")
    await database.halt('immediate')
    await database.resume()
    expect((await database.psql('select value from kept order by value')).trim().split('\n')).toEqual(['after fast', 'before'])
    expect(readFileSync(path.join(database.dir, 'postgres.log'), 'utf8')).toMatch(/not properly shut down|automatic recovery/)
  })

  it('freeze stalls it (connections hang), thaw lets it answer again', async () => {
    database.freeze()
    try {
      const stalled = await runCommand(path.join(findPostgresBinaries()!.bin, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(database.port), '-t', '1'])
      expect(stalled.code).not.toBe(0)
    } finally {
      database.thaw()
    }

    expect((await database.psql('select 1')).trim()).toBe('1')
  })

  it('never signals a process that is not the postgres of that folder (stale postmaster.pid)', async () => {
    bystander = spawn('sleep', ['300'], {stdio: 'ignore'})
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-pg-stale-'))
    try {
      await writeFile(path.join(dir, 'postmaster.pid'), `${bystander.pid}\n${dir}\n`)
      expect(await stopPostgres(dir)).toEqual({dir, stopped: false})
      expect(isAlive(bystander.pid!)).toBe(true)
    } finally {
      await rm(dir, {recursive: true, force: true})
    }
  })

  it('with a password: TCP needs it (scram-sha-256), the role has it', async () => {
    const guarded = await startTestPostgres({password: "s3cret'pass"})
    try {
      const without = await psqlOverTcp(guarded, 'select 1')
      expect(without.code).not.toBe(0)
      expect(without.stderr).toMatch(/password/)
      const wrong = await psqlOverTcp(guarded, 'select 1', 'wrong')
      expect(wrong.stderr).toMatch(/password authentication failed for user "ddr"/)
      const right = await psqlOverTcp(guarded, 'select current_user', "s3cret'pass")
      expect(right.stdout.trim()).toBe('ddr')
    } finally {
      await guarded.stop()
    }

    expect(isAlive(guarded.pid)).toBe(false)
    expect(existsSync(guarded.dir)).toBe(false)
  })
})
