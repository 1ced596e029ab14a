/**
 * One query for the whole fleet: sent to every backend that can answer, in parallel, each within
 * a timeout; the answers are merged by the level's unique key, so a study that a failover split
 * over two backends is one match whose instance counts are summed.
 */
import {Identifier, LEVEL_KEY, type QueryLevel} from '../dicom/identifier.js'
import {Tag} from '../dicom/tags.js'
import {DdrError} from '../errors.js'
import type {QuerySource} from './sources.js'

/** Counts a backend reports for its part; the fleet's is the sum. */
const COUNT_TAGS = [
  Tag.NumberOfPatientRelatedStudies,
  Tag.NumberOfPatientRelatedSeries,
  Tag.NumberOfPatientRelatedInstances,
  Tag.NumberOfStudyRelatedSeries,
  Tag.NumberOfStudyRelatedInstances,
  Tag.NumberOfSeriesRelatedInstances,
]
/** Values that are a set over the backends' parts. */
const UNION_TAGS = [Tag.ModalitiesInStudy]

/** One merged match and the backends that hold (part of) it. */
export interface FleetMatch {
  identifier: Identifier
  backends: string[]
}

/** A backend whose answer is missing from the result, and why. */
export interface MissingAnswer {
  backend: string
  why: string
}

export interface FleetQueryResult {
  level: QueryLevel
  matches: FleetMatch[]
  /** Backends that answered completely. */
  answered: string[]
  /** Backends that failed, timed out or could not be asked. */
  missing: MissingAnswer[]
  cancelled: boolean
}

export interface FleetQueryOptions {
  /** The information model towards the backends (Patient Root or Study Root FIND). */
  model: string
  /** How long each backend may take to answer completely (ms). */
  timeoutMs: number
  signal?: AbortSignal
  /**
   * Called as soon as a match may be sent: at once when the query asks for no counts (a later
   * duplicate from another backend only adds its name), once all backends answered when it does
   * (the counts must be summed first).
   */
  onMatch?: (match: FleetMatch) => void
  /** Backends known not to answer (not DICOM, down), reported in `missing`. */
  skipped?: MissingAnswer[]
}

/** The key a match merges on: the level's unique key (PatientID for PATIENT, with its issuer). */
function mergeKey(level: QueryLevel, match: Identifier): string | undefined {
  const value = match.get(LEVEL_KEY[level])
  if (value === undefined || value === '') return undefined
  return level === 'PATIENT' ? `${value}\u0000${match.get(Tag.IssuerOfPatientID) ?? ''}` : value
}

function mergeInto(target: Identifier, other: Identifier): void {
  for (const tag of COUNT_TAGS) {
    const a = target.get(tag)
    const b = other.get(tag)
    if (a === undefined || b === undefined || b === '') continue
    target.set(tag, String((Number.parseInt(a, 10) || 0) + (Number.parseInt(b, 10) || 0)))
  }

  for (const tag of UNION_TAGS) {
    if (!target.has(tag)) continue
    const values = new Set([...target.list(tag), ...other.list(tag)].filter((v) => v !== ''))
    target.set(tag, [...values].sort().join('\\'))
  }

  for (const tag of other.tags()) {
    // A return key one backend left empty and another filled: keep the value.
    if (target.get(tag) === '' && other.get(tag) !== '') target.set(tag, other.get(tag)!)
  }
}

/**
 * Validates a query identifier: it needs a known Query/Retrieve Level. Throws DdrError USAGE
 * with what is wrong (the C-FIND SCP answers such a query A900).
 */
export function queryLevelOf(query: Identifier): QueryLevel {
  const level = query.level()
  if (level === undefined) {
    const given = query.get(Tag.QueryRetrieveLevel)
    throw new DdrError('USAGE', given === undefined ? 'the query has no Query/Retrieve Level (0008,0052)' : `unknown Query/Retrieve Level "${given}" (PATIENT, STUDY, SERIES or IMAGE)`)
  }

  return level
}

/** Sends the query to every source at once and merges what they answer. Never rejects for a backend's failure. */
export async function queryFleet(query: Identifier, sources: readonly QuerySource[], options: FleetQueryOptions): Promise<FleetQueryResult> {
  const level = queryLevelOf(query)
  const keyTag = LEVEL_KEY[level]
  // Every backend must return the unique key, or its answers cannot be merged.
  const sent = query.clone()
  if (!sent.has(keyTag)) sent.set(keyTag, '')
  const aggregate = [...COUNT_TAGS, ...UNION_TAGS].some((tag) => query.has(tag))
  const merged = new Map<string, FleetMatch>()
  const unkeyed: FleetMatch[] = []
  const answered: string[] = []
  const missing: MissingAnswer[] = [...(options.skipped ?? [])]

  const ask = async (source: QuerySource): Promise<void> => {
    const controller = new AbortController()
    const cancel = () => controller.abort()
    options.signal?.addEventListener('abort', cancel, {once: true})
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        controller.abort()
        reject(new DdrError('TIMEOUT', `${source.name} did not answer within ${options.timeoutMs} ms`))
      }, options.timeoutMs)
    })
    timedOut.catch(() => {})
    try {
      const found = source.find(sent, {
        model: options.model,
        signal: controller.signal,
        onMatch: (match) => {
          const key = mergeKey(level, match)
          if (key === undefined) {
            const entry = {identifier: match, backends: [source.name]}
            unkeyed.push(entry)
            if (!aggregate) options.onMatch?.(entry)
            return
          }

          const known = merged.get(key)
          if (known === undefined) {
            const entry = {identifier: match, backends: [source.name]}
            merged.set(key, entry)
            if (!aggregate) options.onMatch?.(entry)
            return
          }

          if (!known.backends.includes(source.name)) known.backends.push(source.name)
          mergeInto(known.identifier, match)
        },
      })
      await Promise.race([found, timedOut])
      if (options.signal?.aborted) missing.push({backend: source.name, why: 'cancelled'})
      else answered.push(source.name)
    } catch (error) {
      missing.push({backend: source.name, why: options.signal?.aborted ? 'cancelled' : (error as Error).message})
    } finally {
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', cancel)
    }
  }

  await Promise.all(sources.map((source) => ask(source)))
  const matches = [...merged.values(), ...unkeyed]
  if (aggregate && !options.signal?.aborted) for (const match of matches) options.onMatch?.(match)
  return {level, matches, answered, missing, cancelled: options.signal?.aborted ?? false}
}
