/**
 * C-FIND matching (PS3.4 C.2.2.2) done by ddr itself, for backends that cannot answer a query
 * (a folder backend, answered from the ledger and its files): universal, single value, wildcard
 * (`*` `?`), range (dates and times) and list of UIDs matching, as a DICOM SCP applies them.
 */
import type {Identifier} from '../dicom/identifier.js'
import {Tag} from '../dicom/tags.js'

/** Query elements that select nothing: the level, the character set of the query itself. */
const NOT_MATCHING_KEYS: ReadonlySet<number> = new Set([Tag.QueryRetrieveLevel, Tag.SpecificCharacterSet])

const RANGE_VRS: ReadonlySet<string> = new Set(['DA', 'TM', 'DT'])

function wildcard(pattern: string, caseInsensitive: boolean): RegExp {
  const source = [...pattern].map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[$()+.[\\\]^{|}]/g, '\\$&'))).join('')
  return new RegExp(`^${source}$`, caseInsensitive ? 'isu' : 'su')
}

/**
 * Whether a date, time or datetime lies in a range ("A-B", "-B", "A-"), bounds included. Digits
 * compare in time order; a bound or value given less precisely compares on the digits both have,
 * so an upper bound of 1200 includes 12:00:30 and a bound of 20260131 the whole day.
 */
function inRange(key: string, value: string): boolean {
  const dash = key.indexOf('-')
  const digits = (text: string) => text.replace(/\D/g, '')
  const at = digits(value)
  const lower = digits(key.slice(0, dash))
  const upper = digits(key.slice(dash + 1))
  const common = (bound: string) => Math.min(bound.length, at.length)
  if (lower !== '' && at.slice(0, common(lower)) < lower.slice(0, common(lower))) return false
  if (upper !== '' && at.slice(0, common(upper)) > upper.slice(0, common(upper))) return false
  return true
}

/**
 * Whether one candidate value matches one query key of the given VR. `value` may hold several
 * values joined by "\" (ModalitiesInStudy, say): one matching is enough. Person names match
 * without regard to case, as Orthanc does by default; everything else is case-sensitive.
 */
export function matchesKey(key: string, value: string | undefined, vr: string): boolean {
  const wanted = key.trim()
  if (wanted === '') return true
  const values = (value ?? '').split('\\').map((v) => v.trim())
  const caseInsensitive = vr === 'PN'
  return wanted.split('\\').some((alternative) => {
    const one = alternative.trim()
    if (/^\*+$/.test(one)) return true
    if (RANGE_VRS.has(vr) && one.includes('-')) return values.some((v) => v !== '' && inRange(one, v))
    if (vr !== 'UI' && /[*?]/.test(one)) {
      const pattern = wildcard(one, caseInsensitive)
      return values.some((v) => pattern.test(v))
    }

    return values.some((v) => (caseInsensitive ? v.toUpperCase() === one.toUpperCase() : v === one))
  })
}

/**
 * Whether a candidate matches every matching key of the query (keys with a value); `valueOf`
 * gives the candidate's value of a tag (undefined when it has none). Sequence keys are return
 * keys only here.
 */
export function matchesQuery(query: Identifier, valueOf: (tag: number) => string | undefined): boolean {
  for (const tag of query.tags()) {
    if (NOT_MATCHING_KEYS.has(tag)) continue
    const vr = query.vr(tag) ?? 'LO'
    const key = query.get(tag) ?? ''
    if (vr === 'SQ' || key.trim() === '') continue
    if (!matchesKey(key, valueOf(tag), vr)) return false
  }

  return true
}
