import {mkdtempSync, appendFileSync, rmSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import {AffinityMap, rendezvousOrder} from '../../../src/lib/routing/affinity.js'

const backends = [
  {name: 'orthanc1', weight: 1},
  {name: 'orthanc2', weight: 1},
  {name: 'orthanc3', weight: 2},
]

describe('rendezvous hashing', () => {
  it('gives the same order for a study whatever the order backends are listed in', () => {
    for (let i = 0; i < 50; i++) {
      const study = `2.25.${i}`
      expect(rendezvousOrder(study, backends).map((b) => b.name)).toEqual(rendezvousOrder(study, [...backends].reverse()).map((b) => b.name))
    }
  })

  it('spreads studies in proportion to weight', () => {
    const counts: Record<string, number> = {orthanc1: 0, orthanc2: 0, orthanc3: 0}
    for (let i = 0; i < 4000; i++) counts[rendezvousOrder(`1.2.3.${i}`, backends)[0].name]++
    expect(counts.orthanc3 / 4000).toBeGreaterThan(0.45)
    expect(counts.orthanc3 / 4000).toBeLessThan(0.55)
    expect(counts.orthanc1 / 4000).toBeGreaterThan(0.2)
    expect(counts.orthanc2 / 4000).toBeGreaterThan(0.2)
  })

  it('moves only the studies of a removed backend', () => {
    const without = backends.filter((b) => b.name !== 'orthanc2')
    for (let i = 0; i < 500; i++) {
      const study = `9.${i}`
      const before = rendezvousOrder(study, backends)
      const after = rendezvousOrder(study, without)
      if (before[0].name !== 'orthanc2') expect(after[0].name).toBe(before[0].name)
      else expect(after[0].name).toBe(before[1].name)
    }
  })

  it('never picks a backend with weight 0', () => {
    const order = rendezvousOrder('x', [{name: 'a', weight: 0}, {name: 'b', weight: 1}])
    expect(order.map((b) => b.name)).toEqual(['b'])
  })
})

describe('AffinityMap', () => {
  it('remembers choices across restarts and survives a torn last line', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ddr-affinity-'))
    try {
      const file = path.join(dir, 'affinity.jsonl')
      const first = new AffinityMap(file)
      first.set('1.2.3', 'orthanc1')
      first.set('1.2.4', 'orthanc2')
      first.set('1.2.3', 'orthanc2')
      appendFileSync(file, '{"study":"1.2.5","back')
      const second = new AffinityMap(file)
      expect(second.get('1.2.3')).toBe('orthanc2')
      expect(second.get('1.2.4')).toBe('orthanc2')
      expect(second.get('1.2.5')).toBeUndefined()
      expect(second.size).toBe(2)
    } finally {
      rmSync(dir, {recursive: true, force: true})
    }
  })
})
