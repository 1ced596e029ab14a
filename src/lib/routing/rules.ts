import {closeSync, openSync, readSync} from 'node:fs'

import type {BackendConfig, RoutingRule, RuleTagMatch} from '../config/schema.js'
import {readTopLevelElements} from '../dicom/dataset-reader.js'
import {Tag, parseTag} from '../dicom/tags.js'
import {DdrError} from '../errors.js'
import {type ReceivedInstance, datasetBuffer} from '../dicom/received-instance.js'

/** What the rules say about one instance. */
export interface RuleDecision {
  /** The rule that matched ("rules[2]" or its name); undefined when none did. */
  rule?: string
  /** Place only on these backends (undefined: on every primary backend). */
  backends?: string[]
  /** Refuse the instance, for this reason. */
  drop?: string
  /** Backends that get a copy besides the primary: every `mirror: true` backend and the rule's mirrors. */
  mirrors: string[]
}

/** The instance fields a rule may look at without reading the dataset. */
export type RuleInstance = Pick<ReceivedInstance, 'sopClassUid' | 'callingAeTitle' | 'calledAeTitle' | 'modality' | 'studyInstanceUid' | 'seriesInstanceUid' | 'patientId' | 'sopInstanceUid' | 'transferSyntaxUid'> &
  Partial<Pick<ReceivedInstance, 'dataset' | 'path' | 'metaHeader'>>

type Condition = (instance: RuleInstance) => boolean

interface CompiledRule {
  name: string
  conditions: Condition[]
  action: RoutingRule['action']
}

/** Header values every ReceivedInstance already carries: rules on these never read the dataset. */
const KNOWN_FIELDS: ReadonlyMap<number, (i: RuleInstance) => string | undefined> = new Map([
  [Tag.Modality, (i: RuleInstance) => i.modality],
  [Tag.SOPClassUID, (i: RuleInstance) => i.sopClassUid],
  [Tag.SOPInstanceUID, (i: RuleInstance) => i.sopInstanceUid],
  [Tag.StudyInstanceUID, (i: RuleInstance) => i.studyInstanceUid],
  [Tag.SeriesInstanceUID, (i: RuleInstance) => i.seriesInstanceUid],
  [Tag.PatientID, (i: RuleInstance) => i.patientId],
])

/** Dataset prefix read at first when a rule needs a tag the header read did not keep; grows when needed. */
const FIRST_READ_BYTES = 64 * 1024
const MAX_READ_BYTES = 16 * 1024 * 1024

function compare(condition: RuleTagMatch, where: string): (value: string | undefined) => boolean {
  if (condition.equals !== undefined) {
    const wanted = condition.equals
    return (value) => value === wanted
  }

  if (condition.prefix !== undefined) {
    const wanted = condition.prefix
    return (value) => value !== undefined && value.startsWith(wanted)
  }

  if (condition.regex !== undefined) {
    const pattern = new RegExp(condition.regex)
    return (value) => value !== undefined && pattern.test(value)
  }

  throw new DdrError('CONFIG_INVALID', `${where}: give one of equals, prefix, regex`)
}

/** What a rule (or a processing module) matches on; every field given must hold. */
export type InstanceMatchFields = Partial<Pick<RoutingRule['match'], 'callingAeTitle' | 'calledAeTitle' | 'modality' | 'sopClassUid' | 'tags'>>

/**
 * A match's conditions, compiled: the match fields compare exactly; `tags` compare the values
 * `valueOf` gives (the caller reads tags beyond KNOWN_FIELDS from the instance's bytes, and caches).
 * `where` names the match in errors (an unknown tag keyword is CONFIG_INVALID).
 */
function compileMatch(match: InstanceMatchFields, where: string, valueOf: (instance: RuleInstance, tag: number) => string | undefined): {conditions: Condition[]; extraTags: number[]} {
  const conditions: Condition[] = []
  const extraTags: number[] = []
  const {callingAeTitle, calledAeTitle, modality, sopClassUid} = match
  if (callingAeTitle !== undefined) conditions.push((i) => i.callingAeTitle === callingAeTitle)
  if (calledAeTitle !== undefined) conditions.push((i) => i.calledAeTitle === calledAeTitle)
  if (modality !== undefined) conditions.push((i) => i.modality === modality)
  if (sopClassUid !== undefined) conditions.push((i) => i.sopClassUid === sopClassUid)
  for (const [key, condition] of Object.entries(match.tags ?? {})) {
    const tag = parseTag(key)
    if (tag === undefined) throw new DdrError('CONFIG_INVALID', `${where}.match.tags.${key}: unknown tag or keyword`, {hint: 'write the tag as "gggg,eeee", e.g. "0008,0060"'})
    if (!KNOWN_FIELDS.has(tag)) extraTags.push(tag)
    const test = compare(condition, `${where}.match.tags.${key}`)
    conditions.push((i) => test(valueOf(i, tag)))
  }

  return {conditions, extraTags}
}

/**
 * A tag's value for matching: the header values an instance carries, else read from its bytes
 * (all of `extraTags` at once) the first time one is asked, and kept for that instance.
 */
function tagReader(extraTags: () => readonly number[]): (instance: RuleInstance, tag: number) => string | undefined {
  const read = new WeakMap<object, Map<number, string>>()
  return (instance, tag) => {
    const known = KNOWN_FIELDS.get(tag)
    if (known !== undefined) return known(instance)
    let values = read.get(instance)
    if (values === undefined) {
      values = readExtraTags(instance, extraTags())
      read.set(instance, values)
    }

    return values.get(tag)
  }
}

/**
 * One match on its own (a processing module's): the same semantics as a routing rule's, tags beyond
 * the header values read from the instance's bytes once per instance, only when needed.
 */
export class InstanceMatch {
  private readonly conditions: Condition[]
  private readonly extraTags: number[]
  private readonly value = tagReader(() => this.extraTags)

  constructor(match: InstanceMatchFields, where: string) {
    const compiled = compileMatch(match, where, this.value)
    this.conditions = compiled.conditions
    this.extraTags = compiled.extraTags
  }

  /** Whether the match needs tags that only the instance's bytes hold. */
  get readsDataset(): boolean {
    return this.extraTags.length > 0
  }

  test(instance: RuleInstance): boolean {
    return this.conditions.every((condition) => condition(instance))
  }
}

/**
 * The routing rules, compiled once: first match wins. The match fields callingAeTitle,
 * calledAeTitle, modality and sopClassUid compare exactly; `tags` compare any top-level tag
 * (values as readTopLevelElements gives them: padding trimmed, several values joined by "\").
 * Tags beyond the header values the listener keeps are read from the instance's bytes, only when
 * a rule needs them and only once per instance.
 */
export class RuleEngine {
  private readonly rules: CompiledRule[]
  private readonly globalMirrors: string[]
  /** Tags some rule needs that ReceivedInstance does not carry. */
  readonly extraTags: number[]
  private readonly value = tagReader(() => this.extraTags)

  constructor(rules: readonly RoutingRule[], backends: ReadonlyArray<Pick<BackendConfig, 'name' | 'mirror'>>) {
    this.globalMirrors = backends.filter((b) => b.mirror).map((b) => b.name)
    const extra = new Set<number>()
    this.rules = rules.map((rule, index) => {
      const name = rule.name ?? `rules[${index}]`
      const {conditions, extraTags} = compileMatch(rule.match, name, this.value)
      for (const tag of extraTags) extra.add(tag)
      return {name, conditions, action: rule.action}
    })
    this.extraTags = [...extra].sort((a, b) => a - b)
  }

  /** Whether any rule (or mirror) exists: without, decide() is a constant. */
  get empty(): boolean {
    return this.rules.length === 0 && this.globalMirrors.length === 0
  }

  /** The first matching rule's decision for an instance (never throws: an unreadable tag is "absent"). */
  decide(instance: RuleInstance): RuleDecision {
    for (const rule of this.rules) {
      if (!rule.conditions.every((condition) => condition(instance))) continue
      const mirrors = [...new Set([...this.globalMirrors, ...(rule.action.mirrors ?? [])])]
      const decision: RuleDecision = {rule: rule.name, mirrors}
      if (rule.action.backends !== undefined) decision.backends = rule.action.backends
      if (rule.action.drop !== undefined) decision.drop = rule.action.drop
      return decision
    }

    return {mirrors: [...this.globalMirrors]}
  }
}

/**
 * Reads top-level tags from an instance's dataset bytes (memory or file), growing the prefix read
 * until the answer is final. Synchronous because placement is; only runs when a rule needs a tag.
 */
export function readExtraTags(instance: RuleInstance, tags: readonly number[]): Map<number, string> {
  const source = instance.dataset
  if (source === undefined || tags.length === 0) return new Map()
  try {
    const inMemory = datasetBuffer(source)
    if (inMemory !== undefined) return readTopLevelElements(inMemory, instance.transferSyntaxUid, tags, {endOfData: true}).values
    if (!('path' in source)) return new Map()
    const fd = openSync(source.path, 'r')
    try {
      for (let take = Math.min(source.length, FIRST_READ_BYTES); ; take = Math.min(source.length, take * 8)) {
        const buffer = Buffer.allocUnsafe(take)
        const got = readSync(fd, buffer, 0, take, source.offset)
        const whole = got >= source.length
        const result = readTopLevelElements(buffer.subarray(0, got), instance.transferSyntaxUid, tags, {endOfData: whole, source: source.path})
        if (result.complete || whole || take >= MAX_READ_BYTES) return result.values
      }
    } finally {
      closeSync(fd)
    }
  } catch {
    return new Map()
  }
}
