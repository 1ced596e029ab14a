import {mkdir, open, readFile, readdir, rename, rm, stat, statfs, writeFile} from 'node:fs/promises'
import path from 'node:path'

import type {DdrConfig} from '../config/schema.js'
import {readTopLevelElements} from '../dicom/dataset-reader.js'
import {type MetaHeader, readMetaHeader} from '../dicom/part10.js'
import {RECOVERY_TAGS, type ReceivedInstance, datasetBuffers, readPart10Instance, receivedInstanceFromDisk} from '../dicom/received-instance.js'
import {fsyncPath, readFileSlice} from '../fs/durable.js'
import {Journal, type JournalRecord, type RecoveredRecord} from './journal.js'

/** One instance in dead-letter/: its Part 10 file and what its reason.json says. */
export interface DeadLetter {
  id: string
  file: string
  /** Size of the Part 10 file. */
  bytes: number
  /** When it went to dead-letter (ISO). */
  at: string
  /** The reason file as written (status, reason, UIDs, sender, tries, history, ...); {} when it is missing or unreadable. */
  details: Record<string, unknown>
}

/** Dead-letter ids are instance ids (see newInstanceId in listen/intake): nothing that could name another folder. */
const DEAD_LETTER_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

export interface SpoolStats {
  depth: number
  bytes: number
  oldestAgeSeconds: number | null
  deadLetters: number
  refusing: string | null
}

/**
 * The durable queue on disk: `queue/<id>.dcm` are acknowledged instances waiting for a backend
 * (each a Part 10 file: our meta header, then the dataset bytes as received), `queue/*.part` are
 * instances still arriving (never acknowledged), `dead-letter/` holds refused instances with a
 * `<id>.reason.json` beside each.
 */
export class Spool {
  readonly queueDir: string
  readonly deadLetterDir: string
  private bytes = 0
  private readonly entries = new Map<string, {bytes: number; receivedAt: number}>()
  private deadLetters = 0
  private freePercent = 100
  private lastDiskCheck = 0

  /** Small acknowledged instances; large ones have a file each in queueDir. */
  readonly journal: Journal

  constructor(readonly dir: string, private readonly settings: DdrConfig['spool']) {
    this.queueDir = path.join(dir, 'queue')
    this.deadLetterDir = path.join(dir, 'dead-letter')
    this.journal = new Journal(this.queueDir)
  }

  /**
   * Creates the folders, drops partial entries (they were never acknowledged) and returns the
   * acknowledged instances still waiting, oldest first.
   */
  async open(): Promise<{pending: ReceivedInstance[]; discardedPartial: number; unreadable: string[]}> {
    await mkdir(this.queueDir, {recursive: true})
    await mkdir(this.deadLetterDir, {recursive: true})
    this.deadLetters = (await readdir(this.deadLetterDir)).filter((name) => name.endsWith('.dcm')).length
    const names = (await readdir(this.queueDir)).sort()
    let discardedPartial = 0
    const pending: ReceivedInstance[] = []
    const unreadable: string[] = []
    for (const name of names) {
      const file = path.join(this.queueDir, name)
      if (/^seg-\d+\.(log|done)$/.test(name)) continue
      if (!name.endsWith('.dcm')) {
        await rm(file, {force: true})
        discardedPartial++
        continue
      }

      try {
        pending.push(await this.load(file, name.slice(0, -'.dcm'.length)))
      } catch (error) {
        // An acknowledged file we cannot read back: keep it for an operator, never delete it.
        unreadable.push(`${name}: ${(error as Error).message}`)
        await this.moveToDeadLetter(file, name.slice(0, -4), `unreadable after restart: ${(error as Error).message}`)
      }
    }

    for (const record of await this.journal.open()) {
      try {
        pending.push(this.fromJournal(record))
      } catch (error) {
        unreadable.push(`${record.id} (journal): ${(error as Error).message}`)
        await this.writeDeadLetter(record.id, record.payload, `unreadable after restart: ${(error as Error).message}`)
        await this.journal.release(record)
      }
    }

    pending.sort((a, b) => a.receivedAt - b.receivedAt)
    await this.checkDisk(true)
    return {pending, discardedPartial, unreadable}
  }

  /** Why new instances must be refused right now (queue or disk full), or undefined. */
  refusal(): string | undefined {
    void this.checkDisk(false)
    if (this.bytes >= this.settings.maxBytes) return `spool holds ${this.bytes} bytes (limit spool.maxBytes ${this.settings.maxBytes})`
    if (this.freePercent < this.settings.minFreePercent) return `spool disk has ${this.freePercent.toFixed(1)}% free (limit spool.minFreePercent ${this.settings.minFreePercent}%)`
    return undefined
  }

  /** Counts an acknowledged instance in the queue. */
  added(instance: ReceivedInstance): void {
    if (this.entries.has(instance.id)) return
    const bytes = instance.metaHeader.length + instance.datasetLength
    this.entries.set(instance.id, {bytes, receivedAt: instance.receivedAt})
    this.bytes += bytes
  }

  /** A backend stored it: the entry goes. (A crash before this only means a harmless re-send.) */
  async remove(instance: ReceivedInstance): Promise<void> {
    this.forget(instance)
    if (instance.journal !== undefined) await this.journal.release(instance.journal as JournalRecord)
    else if (instance.path) await rm(instance.path, {force: true})
  }

  /** Moves a refused instance to dead-letter (a Part 10 file) with a reason file; it leaves the queue. */
  async deadLetter(instance: ReceivedInstance, reason: Record<string, unknown>): Promise<string> {
    this.forget(instance)
    if (instance.journal === undefined) return this.moveToDeadLetter(instance.path!, instance.id, reason)
    const source = instance.dataset
    const dataset = datasetBuffers(source) ?? ('path' in source ? [await readFileSlice(source.path, source.offset, source.length)] : [])
    const target = await this.writeDeadLetter(instance.id, Buffer.concat([instance.metaHeader, ...dataset]), reason)
    // The spool set it when it appended the instance: it is one of this journal's records.
    await this.journal.release(instance.journal as JournalRecord)
    return target
  }

  /** Every dead letter, newest first. */
  async listDeadLetters(): Promise<DeadLetter[]> {
    const names = (await readdir(this.deadLetterDir)).filter((name) => name.endsWith('.dcm'))
    const letters: DeadLetter[] = []
    for (const name of names) {
      const letter = await this.readDeadLetter(name.slice(0, -'.dcm'.length))
      if (letter !== undefined) letters.push(letter)
    }

    return letters.sort((a, b) => b.at.localeCompare(a.at) || b.id.localeCompare(a.id))
  }

  /** One dead letter, or undefined when there is none by that id. */
  async readDeadLetter(id: string): Promise<DeadLetter | undefined> {
    if (!DEAD_LETTER_ID.test(id)) return undefined
    const file = path.join(this.deadLetterDir, `${id}.dcm`)
    let info
    try {
      info = await stat(file)
    } catch {
      return undefined
    }

    let details: Record<string, unknown> = {}
    try {
      details = JSON.parse(await readFile(path.join(this.deadLetterDir, `${id}.reason.json`), 'utf8')) as Record<string, unknown>
    } catch {
      // an instance moved here by hand, or a reason file lost: the file is still worth a retry
    }

    return {id, file, bytes: info.size, at: typeof details.at === 'string' ? details.at : info.mtime.toISOString(), details}
  }

  /**
   * Moves a dead letter back into the queue as a spool file of its own (rename in one file system,
   * both folders fsynced) and returns its queue path; the caller queues it. Its reason file goes.
   */
  async requeueDeadLetter(id: string): Promise<string | undefined> {
    if (!DEAD_LETTER_ID.test(id)) return undefined
    const target = path.join(this.queueDir, `${id}.dcm`)
    try {
      await rename(path.join(this.deadLetterDir, `${id}.dcm`), target)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw error
    }

    await fsyncPath(this.queueDir)
    await rm(path.join(this.deadLetterDir, `${id}.reason.json`), {force: true})
    await fsyncPath(this.deadLetterDir)
    this.deadLetters = Math.max(0, this.deadLetters - 1)
    return target
  }

  /** Deletes a dead letter and its reason file; false when there is none by that id. */
  async discardDeadLetter(id: string): Promise<boolean> {
    if (!DEAD_LETTER_ID.test(id)) return false
    try {
      await rm(path.join(this.deadLetterDir, `${id}.dcm`))
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false
      throw error
    }

    await rm(path.join(this.deadLetterDir, `${id}.reason.json`), {force: true})
    await fsyncPath(this.deadLetterDir)
    this.deadLetters = Math.max(0, this.deadLetters - 1)
    return true
  }

  stats(): SpoolStats {
    let oldest: number | undefined
    for (const entry of this.entries.values()) if (oldest === undefined || entry.receivedAt < oldest) oldest = entry.receivedAt
    return {
      depth: this.entries.size,
      bytes: this.bytes,
      oldestAgeSeconds: oldest === undefined ? null : Math.round((Date.now() - oldest) / 100) / 10,
      deadLetters: this.deadLetters,
      refusing: this.refusal() ?? null,
    }
  }

  private forget(instance: ReceivedInstance): void {
    const entry = this.entries.get(instance.id)
    if (entry === undefined) return
    this.entries.delete(instance.id)
    this.bytes -= entry.bytes
  }

  private async moveToDeadLetter(file: string, id: string, reason: Record<string, unknown> | string): Promise<string> {
    const target = path.join(this.deadLetterDir, `${id}.dcm`)
    await this.writeReason(id, reason)
    await rename(file, target)
    await fsyncPath(this.deadLetterDir)
    this.deadLetters++
    return target
  }

  private async writeDeadLetter(id: string, part10: Buffer, reason: Record<string, unknown> | string): Promise<string> {
    const target = path.join(this.deadLetterDir, `${id}.dcm`)
    await this.writeReason(id, reason)
    const handle = await open(target, 'w')
    try {
      await handle.writeFile(part10)
      await handle.datasync()
    } finally {
      await handle.close()
    }

    await fsyncPath(this.deadLetterDir)
    this.deadLetters++
    return target
  }

  private async writeReason(id: string, reason: Record<string, unknown> | string): Promise<void> {
    const details = typeof reason === 'string' ? {reason} : reason
    await writeFile(path.join(this.deadLetterDir, `${id}.reason.json`), `${JSON.stringify({id, at: new Date().toISOString(), ...details}, null, 2)}\n`)
  }

  /** An instance from a journal record read back at start (its dataset is read from the segment when sent). */
  private fromJournal(record: RecoveredRecord): ReceivedInstance {
    const meta = readMetaHeader(record.payload, {source: `journal record ${record.id}`})
    const dataset = record.payload.subarray(meta.datasetOffset)
    const {values} = readTopLevelElements(dataset, meta.transferSyntaxUid, RECOVERY_TAGS, {endOfData: true})
    const {payload: _payload, ...journal} = record
    return this.recovered(record.id, meta, values, {
      metaHeader: Buffer.from(record.payload.subarray(0, meta.datasetOffset)),
      dataset: {path: record.segment.path, offset: record.payloadOffset + meta.datasetOffset, length: dataset.length},
      journal,
    })
  }

  /** An instance from a spool file of its own read back at start. */
  private async load(file: string, id: string): Promise<ReceivedInstance> {
    const instance = await readPart10Instance(file, id)
    this.added(instance)
    return instance
  }

  private recovered(id: string, meta: MetaHeader, values: Map<number, string>, where: Pick<ReceivedInstance, 'metaHeader' | 'dataset' | 'path' | 'journal'>): ReceivedInstance {
    const instance = receivedInstanceFromDisk(id, meta, values, where)
    this.added(instance)
    return instance
  }

  private async checkDisk(force: boolean): Promise<void> {
    if (!force && Date.now() - this.lastDiskCheck < 1000) return
    this.lastDiskCheck = Date.now()
    try {
      const fs = await statfs(this.dir)
      this.freePercent = fs.blocks > 0 ? (fs.bavail / fs.blocks) * 100 : 100
    } catch {
      // keep the last reading
    }
  }
}
