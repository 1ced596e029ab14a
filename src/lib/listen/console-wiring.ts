import {rm} from 'node:fs/promises'

import type {DdrConfig} from '../config/schema.js'
import {type Console, type DeadLetterActions, createConsole} from '../console/console.js'
import type {Ingest} from '../console/upload.js'
import {readPart10Instance} from '../dicom/received-instance.js'
import type {StudyLedger} from '../ledger/ledger.js'
import type {Logger} from '../output/logger.js'
import type {Spool} from '../spool/spool.js'
import type {RouterStatus} from '../status/server.js'
import type {Forwarder} from './forwarder.js'

/** What the router has that the console reads and acts through. */
export interface ConsoleParts {
  config: DdrConfig
  logger: Logger
  status(): RouterStatus
  ingest: Ingest
  scratchDir: string
  spool?: Spool
  forwarder?: Forwarder
  ledger?: StudyLedger
}

/**
 * Dead letters as the console acts on them. A retry moves the file back into the queue (a spool
 * file of its own, durable) and hands it to the forwarder like an instance recovered at start:
 * placed, delivered, retried and, if it fails again, dead-lettered again with a new reason. The
 * ledger marks it queued again until the forwarder records where it went.
 */
export function deadLetterActions(spool: Spool, forwarder: Forwarder, ledger?: StudyLedger): DeadLetterActions {
  return {
    list: () => spool.listDeadLetters(),
    get: (id) => spool.readDeadLetter(id),
    async retry(id) {
      const letter = await spool.readDeadLetter(id)
      if (letter === undefined) return undefined
      const sop = typeof letter.details.sopInstanceUid === 'string' ? letter.details.sopInstanceUid : undefined
      // The sender sent it again meanwhile and that copy waits: this one is not needed.
      if (sop !== undefined && forwarder.has(sop)) {
        await spool.discardDeadLetter(id)
        return 'already-queued'
      }

      // Read where it lies first: one that cannot be read stays in dead-letter (the error says why).
      await readPart10Instance(letter.file, id)
      const file = await spool.requeueDeadLetter(id)
      if (file === undefined) return undefined
      const instance = await readPart10Instance(file, id)
      if (forwarder.has(instance.sopInstanceUid)) {
        await rm(file, {force: true})
        return 'already-queued'
      }

      await ledger?.store.requeued([instance.sopInstanceUid])
      forwarder.enqueue(instance, true)
      return 'queued'
    },
    discard: (id) => spool.discardDeadLetter(id),
  }
}

/** The console for a running router (status.console), or undefined when it is off. */
export function routerConsole(parts: ConsoleParts): Console | undefined {
  if (!parts.config.status.console) return undefined
  const {spool, forwarder} = parts
  return createConsole({
    config: parts.config,
    logger: parts.logger,
    status: parts.status,
    ingest: parts.ingest,
    scratchDir: parts.scratchDir,
    ledger: parts.ledger,
    queue: forwarder === undefined ? undefined : (limit) => forwarder.waiting(limit),
    deadLetters: spool === undefined || forwarder === undefined ? undefined : deadLetterActions(spool, forwarder, parts.ledger),
  })
}
