import {validateConfig} from '../../../src/lib/config/validate.js'
import type {AssociateRequest} from '../../../src/lib/dimse/pdu.js'
import {addressEntryProblem} from '../../../src/lib/config/addresses.js'
import {addressMatcher, createAssociationCheck, normalizeAddress} from '../../../src/lib/security/access.js'

function request(callingAeTitle: string, calledAeTitle = 'DDR'): AssociateRequest {
  return {callingAeTitle, calledAeTitle, applicationContext: '1.2.840.10008.3.1.1.1', presentationContexts: [], userInformation: {maxPduLength: 16384}}
}

describe('address allow-lists', () => {
  it('accepts IPv4/IPv6 addresses and CIDR blocks, and names what is wrong otherwise', () => {
    for (const entry of ['10.0.0.1', '10.0.0.0/8', '::1', 'fd00::/8', '0.0.0.0/0']) expect(addressEntryProblem(entry)).toBeUndefined()
    expect(addressEntryProblem('10.0.0.0/33')).toContain('0 to 32')
    expect(addressEntryProblem('fd00::/129')).toContain('0 to 128')
    expect(addressEntryProblem('pacs.local')).toContain('CIDR')
    expect(addressEntryProblem('10.0.0.0/8/1')).toContain('CIDR')
    expect(addressEntryProblem('10.0.0.0/x')).toContain('prefix')
  })

  it('matches exact addresses, CIDR blocks and IPv4-mapped IPv6 peers', () => {
    const allowed = addressMatcher(['192.168.1.7', '10.20.0.0/16', 'fd00::/8'])
    expect(allowed('192.168.1.7')).toBe(true)
    expect(allowed('::ffff:192.168.1.7')).toBe(true)
    expect(allowed('192.168.1.8')).toBe(false)
    expect(allowed('10.20.255.1')).toBe(true)
    expect(allowed('10.21.0.1')).toBe(false)
    expect(allowed('fd12::1')).toBe(true)
    expect(allowed('::1')).toBe(false)
    expect(allowed('')).toBe(false)
    expect(normalizeAddress('::ffff:127.0.0.1')).toBe('127.0.0.1')
  })
})

describe('createAssociationCheck', () => {
  const base = {aeTitle: 'DDR', allowedCallingAeTitles: [], allowedAddresses: [], requireCalledAeTitle: false}

  it('accepts anyone with empty lists, whatever the called AE title', () => {
    expect(createAssociationCheck(base)(request('ANY', 'ANY-SCP'), '203.0.113.9')).toEqual({accept: true})
  })

  it('rejects unknown calling AE titles with result 1, source 1, reason 3', () => {
    const check = createAssociationCheck({...base, allowedCallingAeTitles: ['CT1', 'MR2 ']})
    expect(check(request('CT1'), '127.0.0.1')).toEqual({accept: true})
    expect(check(request('MR2'), '127.0.0.1')).toEqual({accept: true})
    expect(check(request('ct1'), '127.0.0.1')).toMatchObject({accept: false, result: 1, source: 1, reason: 3})
  })

  it('rejects a called AE title other than ours with reason 7 when required', () => {
    const check = createAssociationCheck({...base, requireCalledAeTitle: true})
    expect(check(request('CT1', 'DDR'), '127.0.0.1')).toEqual({accept: true})
    expect(check(request('CT1', 'ANY-SCP'), '127.0.0.1')).toMatchObject({accept: false, result: 1, source: 1, reason: 7})
  })

  it('rejects addresses outside the list before looking at AE titles', () => {
    const check = createAssociationCheck({...base, allowedAddresses: ['10.0.0.0/8'], allowedCallingAeTitles: ['CT1']})
    const decision = check(request('EVIL'), '::ffff:192.0.2.1')
    expect(decision).toMatchObject({accept: false, result: 1, source: 1, reason: 1})
    expect(!decision.accept && decision.why).toContain('192.0.2.1')
  })
})

describe('listen security config', () => {
  const invalid = (listen: unknown, backends?: unknown): string => {
    try {
      validateConfig({listen, ...(backends === undefined ? {} : {backends})}, 'test.json')
    } catch (error) {
      return (error as Error).message
    }

    throw new Error('expected the config to be refused')
  }

  it('has defaults that change nothing for existing setups', () => {
    const {listen} = validateConfig({}, 'defaults')
    expect(listen).toMatchObject({allowedCallingAeTitles: [], allowedAddresses: [], requireCalledAeTitle: false, maxPduLength: 262_144, idleTimeoutMs: 300_000, artimTimeoutMs: 30_000, maxInstanceBytes: 4 * 1024 ** 3})
    expect(listen.tls).toBeUndefined()
  })

  it('names each bad field', () => {
    const message = invalid({allowedCallingAeTitles: ['OK', 'THIS_AE_TITLE_IS_TOO_LONG', 3], allowedAddresses: ['10.0.0.0/40'], maxPduLength: 10, maxInstanceBytes: -1, requireCalledAeTitle: 'yes'})
    for (const field of ['listen.allowedCallingAeTitles[1]', 'listen.allowedCallingAeTitles[2]', 'listen.allowedAddresses[0]', 'listen.maxPduLength', 'listen.maxInstanceBytes', 'listen.requireCalledAeTitle']) {
      expect(message).toContain(field)
    }
  })

  it('requires cert and key for listen.tls, and ca with requireClientCert', () => {
    const message = invalid({tls: {requireClientCert: true, extra: 1}})
    for (const field of ['listen.tls.cert', 'listen.tls.key', 'listen.tls.ca', 'listen.tls.extra']) expect(message).toContain(field)
    expect(validateConfig({listen: {tls: {cert: 'a.pem', key: 'a.key'}}}, 't').listen.tls).toEqual({cert: 'a.pem', key: 'a.key', requireClientCert: false})
  })

  it('validates backends[].tls', () => {
    const backend = {name: 'pacs', type: 'dimse', host: 'pacs', port: 104, aeTitle: 'PACS'}
    expect(invalid({}, [{...backend, tls: {cert: 'c.pem'}}])).toContain('backends[0].tls: cert and key go together')
    expect(invalid({}, [{...backend, tls: {rejectUnauthorized: 'no'}}])).toContain('backends[0].tls.rejectUnauthorized')
    const config = validateConfig({backends: [{...backend, tls: {ca: 'ca.pem'}}]}, 't')
    expect(config.backends[0].tls).toEqual({ca: 'ca.pem', rejectUnauthorized: true})
  })
})
