import {TagVr, tagGroup, tagElement, tagName} from './tags.js'

/** What the data dictionary says about a tag. */
export interface DictionaryEntry {
  /** The VR to decode the value with; ambiguous VRs are resolved as implicit VR little endian does (OW, US, UL). */
  vr: string
  /** The standard keyword ("SOPClassUID"), or a description for group lengths and private tags. */
  name: string
}

let standard: Map<number, DictionaryEntry> | undefined

// dcmjs writes some VRs as placeholders for "depends on context".
const placeholderVrs: Record<string, string> = {ox: 'OW', xs: 'US', lt: 'OW', up: 'UL', na: ''}

/**
 * Loads the full PS3.6 data dictionary (from dcmjs's tables: only the tables, dcmjs never parses
 * a file for ddr). Without it, dictionaryEntry knows only the tags named in tags.ts. Safe to call
 * more than once; a failure leaves the small dictionary in place.
 */
export async function loadDictionary(): Promise<void> {
  if (standard) return
  const entries = new Map<number, DictionaryEntry>()
  try {
    // A variable specifier: dcmjs ships no types, and only its name map is used.
    const specifier = 'dcmjs'
    const dcmjs: any = await import(specifier)
    const nameMap: Record<string, {tag: string; vr: string; name: string}> = (dcmjs.default ?? dcmjs).data.DicomMetaDictionary.nameMap
    for (const entry of Object.values(nameMap)) {
      const match = /^\(([0-9A-F]{4}),([0-9A-F]{4})\)$/i.exec(entry.tag)
      if (!match) continue
      const tag = (Number.parseInt(match[1], 16) * 0x10000 + Number.parseInt(match[2], 16)) >>> 0
      entries.set(tag, {vr: placeholderVrs[entry.vr] ?? entry.vr, name: entry.name})
    }
  } catch {
    return
  }

  standard = entries
}

/** Whether the private tag is a private creator (gggg,0010-00FF). */
export function isPrivateCreator(tag: number): boolean {
  const element = tagElement(tag)
  return (tagGroup(tag) & 1) === 1 && element >= 0x10 && element <= 0xff
}

/**
 * The dictionary entry of a tag: standard tags (repeating groups 50xx and 60xx included), group
 * lengths, private creators. Undefined for private data elements and unknown tags.
 */
export function dictionaryEntry(tag: number): DictionaryEntry | undefined {
  const group = tagGroup(tag)
  if (isPrivateCreator(tag)) return {vr: 'LO', name: 'PrivateCreator'}
  if (tagElement(tag) === 0 && group !== 0xfffe && (group & 1) === 1) return {vr: 'UL', name: 'GroupLength'}
  if ((group & 1) === 1) return undefined
  const named = tagName(tag)
  const small = TagVr[tag]
  const repeating = (group & 0xff00) === 0x5000 || (group & 0xff00) === 0x6000 ? (((group & 0xff00) * 0x10000 + tagElement(tag)) >>> 0) : tag
  const full = standard?.get(tag) ?? standard?.get(repeating)
  if (full) return full
  if (named && small !== undefined) return {vr: small, name: named}
  if (tagElement(tag) === 0 && group !== 0xfffe) return {vr: 'UL', name: 'GroupLength'}
  return undefined
}
