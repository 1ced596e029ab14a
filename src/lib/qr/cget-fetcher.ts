/**
 * Instances from a backend that speaks only DICOM (a `dimse` backend, an Orthanc without `url`, or
 * any Orthanc when C-GET is how it is fetched): C-GET from its own port, one per series (the
 * series itself when the locate found all of it there, else its SOP Instance UIDs), each
 * incoming C-STORE sub-operation taken exactly as it arrives (its dataset bytes in the transfer
 * syntax of its presentation context) and handed on before the next one is accepted.
 */
import {storableTransferSyntaxes} from '../backends/capabilities.js'
import type {DicomBackendConfig} from '../config/schema.js'
import {Identifier} from '../dicom/identifier.js'
import {buildMetaHeader} from '../dicom/part10.js'
import {Tag} from '../dicom/tags.js'
import {SopClass, TransferSyntax} from '../dicom/uids.js'
import {CommandField} from '../dimse/command.js'
import {QueryModel} from '../dimse/scp.js'
import {type ContextRequest, IMPLICIT_VR_LITTLE_ENDIAN, type IncomingStore, ScuAssociation} from '../dimse/scu.js'
import {formatStatus, isPending} from '../dimse/status.js'
import {clientTlsOptions} from '../dimse/tls.js'
import type {DdrError} from '../errors.js'
import type {FetchedInstance, LocatedInstance} from './types.js'

/** An association holds at most 128 presentation contexts (PS3.8 9.3.2.2); one is C-ECHO's, two the C-GET model's. */
const STORAGE_CONTEXTS = 125
/** Each SOP class gets at least this many transfer syntaxes (the most common first); more classes go on another association. */
const MIN_SYNTAXES_PER_CLASS = 4
/** SOP Instance UIDs in one C-GET identifier (65 bytes each, well under an explicit VR length of 64 KiB). */
const MAX_UIDS_PER_GET = 500

/**
 * The order transfer syntaxes are proposed in: what archives most often store first, so that a
 * class that gets fewer than all of them (many classes on one association) keeps the likely ones.
 */
const LIKELY_SYNTAXES: readonly string[] = [
  TransferSyntax.ExplicitVRLittleEndian,
  TransferSyntax.ImplicitVRLittleEndian,
  TransferSyntax.JPEGLosslessSV1,
  TransferSyntax.JPEGBaseline8Bit,
  TransferSyntax.JPEG2000Lossless,
  TransferSyntax.JPEG2000,
  TransferSyntax.RLELossless,
  TransferSyntax.JPEGLSLossless,
  TransferSyntax.JPEGLSNearLossless,
  TransferSyntax.JPEGExtended12Bit,
  TransferSyntax.JPEGLossless,
  TransferSyntax.DeflatedExplicitVRLittleEndian,
  TransferSyntax.ExplicitVRBigEndian,
]

/**
 * Proposed for instances whose SOP class the locate query did not learn (a backend that does not
 * return SOPClassUID at IMAGE level): the common image and document classes.
 */
const FALLBACK_SOP_CLASSES: readonly string[] = [
  SopClass.CTImageStorage,
  SopClass.MRImageStorage,
  SopClass.ComputedRadiographyImageStorage,
  SopClass.DigitalXRayImageStorageForPresentation,
  SopClass.DigitalMammographyXRayImageStorageForPresentation,
  SopClass.UltrasoundImageStorage,
  SopClass.SecondaryCaptureImageStorage,
  SopClass.XRayAngiographicImageStorage,
  SopClass.NuclearMedicineImageStorage,
  SopClass.PositronEmissionTomographyImageStorage,
  SopClass.BasicTextSRStorage,
  SopClass.EncapsulatedPDFStorage,
]

/** One association's worth of series: the SOP classes they need and the contexts proposed for them. */
export interface GetPlan {
  series: LocatedInstance[][]
  sopClasses: string[]
  contexts: ContextRequest[]
}

/** A backend's transfer syntaxes in proposal order: the likely ones first, then the rest as configured. */
export function proposalOrder(syntaxes: readonly string[]): string[] {
  const available = new Set(syntaxes)
  return [...LIKELY_SYNTAXES.filter((uid) => available.has(uid)), ...syntaxes.filter((uid) => !LIKELY_SYNTAXES.includes(uid))]
}

function sopClassesOf(series: readonly LocatedInstance[]): string[] {
  const classes = new Set<string>()
  for (const instance of series) {
    if (instance.sopClassUid !== undefined && instance.sopClassUid !== '') classes.add(instance.sopClassUid)
    else if (instance.sopClassUids !== undefined && instance.sopClassUids.length > 0) for (const uid of instance.sopClassUids) classes.add(uid)
    else for (const fallback of FALLBACK_SOP_CLASSES) classes.add(fallback)
  }

  return [...classes]
}

/**
 * Groups a backend's instances by series and packs the series onto as few associations as the
 * presentation contexts allow: each SOP class is proposed once per transfer syntax the backend
 * can store (so the backend finds the syntax it stores the instance in and sends it unchanged),
 * as many syntaxes per class as fit, the likely ones first.
 */
export function planGets(instances: readonly LocatedInstance[], syntaxes: readonly string[]): GetPlan[] {
  const bySeries = new Map<string, LocatedInstance[]>()
  for (const instance of instances) {
    const key = `${instance.studyInstanceUid}\u0000${instance.seriesInstanceUid}`
    const list = bySeries.get(key)
    if (list === undefined) bySeries.set(key, [instance])
    else list.push(instance)
  }

  const ordered = proposalOrder(syntaxes)
  const maxClasses = Math.floor(STORAGE_CONTEXTS / Math.min(MIN_SYNTAXES_PER_CLASS, Math.max(ordered.length, 1)))
  const plans: Array<{series: LocatedInstance[][]; classes: Set<string>}> = []
  for (const series of bySeries.values()) {
    const needed = sopClassesOf(series)
    const fits = plans.find((plan) => new Set([...plan.classes, ...needed]).size <= maxClasses)
    if (fits === undefined || needed.length > maxClasses) {
      // A series whose classes alone exceed one association (hardly ever) is proposed in parts: its instances of the classes left out fail with why.
      plans.push({series: [series], classes: new Set(needed.slice(0, maxClasses))})
    } else {
      fits.series.push(series)
      for (const uid of needed) fits.classes.add(uid)
    }
  }

  return plans.map((plan) => {
    const sopClasses = [...plan.classes]
    const perClass = Math.max(1, Math.min(ordered.length, Math.floor(STORAGE_CONTEXTS / sopClasses.length)))
    const contexts = sopClasses.flatMap((abstractSyntax) => ordered.slice(0, perClass).map((transferSyntax) => ({abstractSyntax, transferSyntax})))
    return {series: plan.series, sopClasses, contexts}
  })
}

export interface CGetOptions {
  /** Our AE title towards the backend (the backend must let it retrieve: Orthanc's DicomAlwaysAllowGet or its DicomModalities). */
  callingAeTitle: string
  /** Connecting, and the wait for each next PDU, may take this long (ms). */
  timeoutMs: number
}

/** One instance that did not come, and why. */
export interface NotFetched {
  instance: LocatedInstance
  why: string
}

const ALLOW_GET_HINT = "let ddr's AE title retrieve from the backend: Orthanc needs DicomAlwaysAllowGet, or ddr in its DicomModalities with AllowGet"

/** C-GET SCU towards one DICOM backend. */
export class CGetFetcher {
  private readonly syntaxes: readonly string[]

  constructor(private readonly backend: DicomBackendConfig, private readonly options: CGetOptions) {
    this.syntaxes = storableTransferSyntaxes(backend)
  }

  /**
   * Retrieves the instances (all located on this backend): one C-GET per series, at SERIES level
   * when they are the whole series as located (`seriesCount`), else at IMAGE level with the
   * series' SOP Instance UIDs as a list; over as few associations as the contexts allow.
   * `onArrival` gets each instance as it comes; the backend's next sub-operation is accepted once
   * it resolved. Resolves with the instances that did not come, each with why; never rejects.
   */
  async retrieve(instances: readonly LocatedInstance[], options: {signal?: AbortSignal; onArrival: (instance: LocatedInstance, fetched: FetchedInstance) => Promise<void>}): Promise<NotFetched[]> {
    const missing: NotFetched[] = []
    for (const plan of planGets(instances, this.syntaxes)) {
      if (options.signal?.aborted) {
        for (const series of plan.series) for (const instance of series) missing.push({instance, why: 'cancelled'})
        continue
      }

      missing.push(...(await this.retrievePlan(plan, options)))
    }

    return missing
  }

  private async retrievePlan(plan: GetPlan, options: {signal?: AbortSignal; onArrival: (instance: LocatedInstance, fetched: FetchedInstance) => Promise<void>}): Promise<NotFetched[]> {
    const backend = this.backend
    const all = plan.series.flat()
    let association: ScuAssociation
    try {
      association = await ScuAssociation.connect({
        host: backend.host,
        port: backend.port,
        callingAeTitle: this.options.callingAeTitle,
        calledAeTitle: backend.aeTitle,
        contexts: [
          {abstractSyntax: QueryModel.studyRootGet, transferSyntax: TransferSyntax.ExplicitVRLittleEndian},
          {abstractSyntax: QueryModel.studyRootGet, transferSyntax: IMPLICIT_VR_LITTLE_ENDIAN},
          ...plan.contexts,
        ],
        roleSelections: plan.sopClasses.map((sopClassUid) => ({sopClassUid, scuRole: false, scpRole: true})),
        connectTimeoutMs: this.options.timeoutMs,
        requestTimeoutMs: this.options.timeoutMs,
        ...(backend.tls === undefined ? {} : {tls: clientTlsOptions(backend.tls, `backends[${backend.name}].tls`)}),
      })
    } catch (error) {
      return all.map((instance) => ({instance, why: `C-GET from ${backend.name}: ${(error as Error).message}`}))
    }

    try {
      const syntax = association.supports(QueryModel.studyRootGet, TransferSyntax.ExplicitVRLittleEndian) ? TransferSyntax.ExplicitVRLittleEndian : IMPLICIT_VR_LITTLE_ENDIAN
      if (!association.supports(QueryModel.studyRootGet, syntax)) {
        const why = `${association.peer} does not accept C-GET (Study Root) from ${this.options.callingAeTitle}: ${ALLOW_GET_HINT}`
        return all.map((instance) => ({instance, why}))
      }

      const missing: NotFetched[] = []
      for (const series of plan.series) {
        const whole = isWholeSeries(series)
        for (let start = 0; start < series.length; start += whole ? series.length : MAX_UIDS_PER_GET) {
          const part = whole ? series : series.slice(start, start + MAX_UIDS_PER_GET)
          if (options.signal?.aborted || !association.isOpen) {
            const why = options.signal?.aborted ? 'cancelled' : `the association with ${association.peer} ended`
            missing.push(...part.map((instance) => ({instance, why})))
            continue
          }

          missing.push(...(await this.getPart(association, syntax, part, whole, options)))
        }
      }

      return missing
    } finally {
      await association.release(1000).catch(() => {})
    }
  }

  /** One C-GET: some instances of one series by their UIDs, or the whole series (as the locate found it on this backend). */
  private async getPart(
    association: ScuAssociation,
    syntax: string,
    part: readonly LocatedInstance[],
    wholeSeries: boolean,
    options: {signal?: AbortSignal; onArrival: (instance: LocatedInstance, fetched: FetchedInstance) => Promise<void>},
  ): Promise<NotFetched[]> {
    const backend = this.backend
    const expected = new Map(part.map((instance) => [instance.sopInstanceUid, instance]))
    const arrived = new Set<string>()
    // A list of UIDs costs Orthanc 1.10 a lookup each; a whole series is one.
    const identifier = wholeSeries
      ? Identifier.of([
          [Tag.QueryRetrieveLevel, 'SERIES'],
          [Tag.StudyInstanceUID, part[0].studyInstanceUid],
          [Tag.SeriesInstanceUID, part[0].seriesInstanceUid],
        ])
      : Identifier.of([
          [Tag.QueryRetrieveLevel, 'IMAGE'],
          [Tag.StudyInstanceUID, part[0].studyInstanceUid],
          [Tag.SeriesInstanceUID, part[0].seriesInstanceUid],
          [Tag.SOPInstanceUID, part.map((instance) => instance.sopInstanceUid).join('\\')],
        ])
    const onStore = async (store: IncomingStore): Promise<{status: number; errorComment?: string}> => {
      const instance = expected.get(store.sopInstanceUid)
      // Not asked for (or sent twice): taken and dropped, so the backend does not count a failure.
      if (instance === undefined || arrived.has(store.sopInstanceUid)) return {status: 0}
      arrived.add(store.sopInstanceUid)
      await options.onArrival(instance, fetchedOf(store, backend.aeTitle))
      return {status: 0}
    }

    let response
    try {
      response = await association.query(CommandField.cGetRq, QueryModel.studyRootGet, syntax, identifier.encode(syntax), {signal: options.signal, onStore})
    } catch (error) {
      // Orthanc aborts the association when the calling AE title may not retrieve.
      const refused = arrived.size === 0 && (error as DdrError).code === 'ASSOCIATION_ABORTED' ? ` (${ALLOW_GET_HINT})` : ''
      const why = `C-GET from ${backend.name}: ${(error as Error).message}${refused}`
      return part.filter((instance) => !arrived.has(instance.sopInstanceUid)).map((instance) => ({instance, why}))
    }

    const failedByBackend = new Set(failedUidsOf(response.dataset, syntax))
    const answered = `${formatStatus(response.status)}${response.errorComment ? ` (${response.errorComment})` : ''}`
    const refused = !isPending(response.status) && (response.status & 0xf000) !== 0xb000 && response.status !== 0 && response.status !== 0xfe00
    return part
      .filter((instance) => !arrived.has(instance.sopInstanceUid))
      .map((instance) => {
        if (options.signal?.aborted) return {instance, why: 'cancelled'}
        if (failedByBackend.has(instance.sopInstanceUid)) return {instance, why: `${backend.name} failed its C-GET sub-operation (the C-GET answered ${answered})`}
        if (refused) return {instance, why: `${backend.name} answered the C-GET with ${answered}${response.status === 0xa700 || (response.status & 0xf000) === 0xc000 ? `; ${ALLOW_GET_HINT}` : ''}`}
        return {instance, why: `${backend.name} did not send it (the C-GET answered ${answered})`}
      })
  }
}

/**
 * Whether a backend's instances of one series are all it holds of that series (the locate's
 * `seriesCount`, and every one of them here): one SERIES-level C-GET then brings them. An instance
 * the backend got since is not asked for (dropped on arrival); one it no longer has is missing.
 */
function isWholeSeries(series: readonly LocatedInstance[]): boolean {
  return series.every((instance) => instance.seriesCount === series.length)
}

/**
 * The received instance as ddr keeps it: its dataset as it came; as a file (ddr get, processing),
 * behind a meta header ddr writes naming the backend as source. The file is made only when asked
 * for: a C-MOVE or C-GET sends the dataset alone.
 */
function fetchedOf(store: IncomingStore, sourceAeTitle: string): FetchedInstance {
  let file: Buffer | undefined
  return {
    transferSyntaxUid: store.transferSyntaxUid,
    sopClassUid: store.sopClassUid,
    dataset: store.dataset,
    get file() {
      file ??= Buffer.concat([buildMetaHeader({sopClassUid: store.sopClassUid, sopInstanceUid: store.sopInstanceUid, transferSyntaxUid: store.transferSyntaxUid, sourceAeTitle}), store.dataset])
      return file
    },
  }
}

/** The Failed SOP Instance UID List (0008,0058) of a final C-GET response, if it carries one. */
function failedUidsOf(dataset: Buffer | undefined, syntax: string): string[] {
  if (dataset === undefined || dataset.length === 0) return []
  try {
    return Identifier.decode(dataset, syntax, 'the Failed SOP Instance UID List').list(Tag.FailedSOPInstanceUIDList)
  } catch {
    return []
  }
}
