/** The DICOM files a module wrote to DDR_OUT, checked before ddr stores any of them. */
import {readdir} from 'node:fs/promises'
import path from 'node:path'

import {readDatasetFromFile} from '../dicom/dataset-reader.js'
import {RECOVERY_TAGS} from '../dicom/received-instance.js'
import {Tag} from '../dicom/tags.js'
import {isStorageSopClass, isValidUid} from '../dicom/uids.js'
import {ModuleFailure} from './contract.js'

/** An instance a run stores into the study: its SR, or a checked file from DDR_OUT. */
export interface OutputInstance {
  path: string
  sopInstanceUid: string
  sopClassUid: string
  kind: 'sr' | 'dicom'
}

/**
 * Every `*.dcm` file under DDR_OUT (other files, result.json among them, are not instances):
 * each must be a Part 10 file whose meta header and dataset name one storage SOP instance, of
 * the run's patient and study, and not one of the instances the module was given (a module adds
 * to a study, it does not replace). Throws ModuleFailure `invalid-output` naming the file.
 */
export async function checkOutputFiles(outDir: string, study: {studyInstanceUid: string; patientId: string | null}, inputs: ReadonlySet<string>): Promise<OutputInstance[]> {
  const names = (await readdir(outDir, {recursive: true, withFileTypes: true})).filter((entry) => entry.isFile() && entry.name.toLowerCase().endsWith('.dcm'))
  const outputs: OutputInstance[] = []
  const seen = new Set<string>()
  for (const entry of names) {
    const file = path.join(entry.parentPath ?? (entry as unknown as {path: string}).path, entry.name)
    const name = path.relative(outDir, file)
    let read
    try {
      read = await readDatasetFromFile(file, RECOVERY_TAGS)
    } catch (error) {
      throw new ModuleFailure('invalid-output', `DDR_OUT/${name} is not a DICOM Part 10 file: ${(error as Error).message}`)
    }

    const {meta, values, complete} = read
    const sopInstanceUid = values.get(Tag.SOPInstanceUID)
    const sopClassUid = values.get(Tag.SOPClassUID)
    const problem = !complete
      ? 'its dataset is cut short'
      : sopInstanceUid === undefined || !isValidUid(sopInstanceUid)
        ? 'it has no valid SOPInstanceUID'
        : meta.mediaStorageSopInstanceUid !== sopInstanceUid
          ? `its meta header names SOP instance ${meta.mediaStorageSopInstanceUid ?? '(none)'}, its dataset ${sopInstanceUid}`
          : sopClassUid === undefined || !isStorageSopClass(sopClassUid)
            ? `SOP class ${sopClassUid ?? '(none)'} is not a storage SOP class`
            : values.get(Tag.StudyInstanceUID) !== study.studyInstanceUid
              ? `it is in study ${values.get(Tag.StudyInstanceUID) ?? '(none)'}, not ${study.studyInstanceUid}`
              : (values.get(Tag.PatientID) ?? '') !== (study.patientId ?? '')
                ? `its PatientID is "${values.get(Tag.PatientID) ?? ''}", the study's "${study.patientId ?? ''}"`
                : inputs.has(sopInstanceUid)
                  ? `it reuses the SOPInstanceUID of an instance the module was given (${sopInstanceUid}): write new instances, never replace`
                  : seen.has(sopInstanceUid)
                    ? `another file in DDR_OUT has the same SOPInstanceUID ${sopInstanceUid}`
                    : undefined
    if (problem !== undefined) throw new ModuleFailure('invalid-output', `DDR_OUT/${name}: ${problem}`)
    seen.add(sopInstanceUid!)
    outputs.push({path: file, sopInstanceUid: sopInstanceUid!, sopClassUid: sopClassUid!, kind: 'dicom'})
  }

  return outputs
}
