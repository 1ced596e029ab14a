import {postgresHba, postgresSettings, postgresUrl, versionsNewestFirst} from '../../../src/lib/stack/postgres-process.js'

describe('PostgreSQL cluster files', () => {
  it('listens on loopback at the port, its socket in the data folder, fsync on unless told', () => {
    const text = postgresSettings({dir: '/srv/stack/postgres', port: 5433})
    expect(text.split('\n')).toEqual(expect.arrayContaining(["listen_addresses = '127.0.0.1'", 'port = 5433', "unix_socket_directories = '/srv/stack/postgres'", 'fsync = on', 'full_page_writes = on']))
    expect(text).not.toContain('synchronous_commit')
    const fast = postgresSettings({dir: '/t', port: 1, fsync: false, settings: {max_connections: 50, log_line_prefix: "it's"}})
    expect(fast).toContain('fsync = off\n')
    expect(fast).toContain('max_connections = 50\n')
    expect(fast).toContain("log_line_prefix = 'it''s'\n")
  })

  it('trusts the socket; TCP on loopback by password when there is one, else trusted', () => {
    expect(postgresHba({})).toMatch(/^local\s+all\s+all\s+trust$/m)
    expect(postgresHba({})).toMatch(/^host\s+all\s+all\s+127\.0\.0\.1\/32\s+trust$/m)
    expect(postgresHba({})).not.toContain('0.0.0.0/0')
    const guarded = postgresHba({password: 'x', host: '0.0.0.0'})
    expect(guarded).toMatch(/^host\s+all\s+all\s+127\.0\.0\.1\/32\s+scram-sha-256$/m)
    expect(guarded).toMatch(/^host\s+all\s+all\s+0\.0\.0\.0\/0\s+scram-sha-256$/m)
    expect(guarded).not.toMatch(/^host.*trust$/m)
  })

  it('builds the URL without a password; picks the newest Debian version folder', () => {
    expect(postgresUrl({user: 'ddr', host: '127.0.0.1', port: 5432, database: 'ddr'})).toBe('postgres://ddr@127.0.0.1:5432/ddr')
    expect(postgresUrl({user: 'ddr', host: '::1', port: 5432, database: 'ddr'})).toBe('postgres://ddr@[::1]:5432/ddr')
    expect(versionsNewestFirst(['9.6', '15', 'README', '13', '16'])).toEqual(['16', '15', '13', '9.6'])
  })
})
