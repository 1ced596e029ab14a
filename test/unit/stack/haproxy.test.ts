import {haproxyConfig, parseHaproxyStat} from '../../../src/lib/stack/haproxy.js'
import {expectDdrError} from '../../helpers/expect.js'

describe('haproxyConfig', () => {
  const servers = [
    {name: 'router-1', host: '127.0.0.1', port: 41001, checkPort: 41002},
    {name: 'router-2', host: '127.0.0.1', port: 41003, checkPort: 41004},
  ]

  it('is a TCP frontend on the DICOM port, leastconn over the routers, each checked with GET /healthz on its status port', () => {
    const text = haproxyConfig({dir: '/srv/stack/haproxy', port: 11113, servers})
    const lines = text.split('\n').map((line) => line.trim())
    for (const line of [
      'stats socket /srv/stack/haproxy/haproxy.sock mode 600 level admin',
      'mode tcp',
      'option tcpka',
      'timeout connect 5s',
      'timeout client 1h',
      'timeout server 1h',
      'option redispatch 1',
      'bind 0.0.0.0:11113',
      'balance leastconn',
      'option httpchk',
      'http-check send meth GET uri /healthz',
      'http-check expect status 200',
      'default-server inter 1000ms fall 2 rise 2',
      'server router-1 127.0.0.1:41001 check port 41002',
      'server router-2 127.0.0.1:41003 check port 41004',
    ]) {
      expect(lines).toContain(line)
    }

    // The checks belong to the routers' backend, after its header.
    expect(lines.indexOf('backend routers')).toBeLessThan(lines.indexOf('option httpchk'))
    expect(lines.indexOf('frontend dicom')).toBeLessThan(lines.indexOf('bind 0.0.0.0:11113'))
  })

  it('takes the bind address and check timing', () => {
    const text = haproxyConfig({dir: '/x', host: '127.0.0.1', port: 5000, servers, check: {interMs: 2000, fall: 3}})
    expect(text).toContain('    bind 127.0.0.1:5000\n')
    expect(text).toContain('    default-server inter 2000ms fall 3 rise 2\n')
  })

  it('refuses a server name HAProxy would not parse', async () => {
    await expectDdrError(Promise.resolve().then(() => haproxyConfig({dir: '/x', port: 1, servers: [{...servers[0], name: 'router 1'}]})))
  })
})

describe('parseHaproxyStat', () => {
  const csv = [
    '# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,',
    'dicom,FRONTEND,,,0,0,4096,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,,,,,,,,0,0,0,,,0,0,0,0,,,,,,,,,,,,',
    'routers,router-1,0,0,1,1,,7,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,3,0,,1,3,1,,7,,2,0,,1,L7OK,200,1,,,,,,,,,,,0,0,,,,,3,,,0,0,0,0,,,,Layer7 check passed,',
    'routers,router-2,0,0,0,0,,2,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,3,3,,1,3,2,,2,,2,0,,1,L7STS,503,1,,,,,,,,,,,0,0,,,,,5,,,0,0,0,0,,,,Layer7 wrong status,',
    'routers,BACKEND,0,0,1,1,410,9,0,0,0,0,,0,0,0,0,UP,1,1,0,,0,3,0,,1,3,0,,9,,1,0,,1,,,,,,,,,,,,,,0,0,0,0,0,0,3,,,0,0,0,0,,,,,',
  ].join('\n')

  it('reads each router\'s status, sessions and last check, leaving out frontend and backend rows', () => {
    expect(parseHaproxyStat(csv)).toEqual([
      {name: 'router-1', status: 'UP', sessions: 1, totalSessions: 7, check: 'Layer7 check passed'},
      {name: 'router-2', status: 'DOWN', sessions: 0, totalSessions: 2, check: 'Layer7 wrong status'},
    ])
  })

  it('is empty for an answer that is not show stat', () => {
    expect(parseHaproxyStat('Unknown command.\n')).toEqual([])
    expect(parseHaproxyStat('')).toEqual([])
  })
})
