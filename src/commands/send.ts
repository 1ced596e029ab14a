import {Args, Flags} from '@oclif/core'

import {BaseCommand} from './base-command.js'
import {colorEnabled} from '../lib/output/table.js'
import {formatSendSummary} from '../lib/send/format.js'
import {createSendProgress, progressMode, withProgress} from '../lib/send/progress.js'
import {describeTarget, sendFiles} from '../lib/send/send.js'
import {dcmtkStyleArgv, resolveSendTarget} from '../lib/send/target.js'
import type {SendResult} from '../lib/send/types.js'

export type {SendResult} from '../lib/send/types.js'

export default class Send extends BaseCommand<typeof Send> {
  static override description = `send DICOM files, folders, globs and ZIP archives over C-STORE (like storescu) or the Orthanc REST API

Each file goes out in its own transfer syntax, byte for byte. Non-DICOM files are skipped; broken DICOM files are named with the reason and the rest still go.
Exit codes: 0 all sent, 4 some failed, 3 the receiver cannot be reached, 2 bad arguments. See docs/commands/send.md.`

  static override enableJsonFlag = true
  static override strict = false
  static override examples = [
    '<%= config.bin %> send study/ --host pacs.local --port 104 --called-ae PACS',
    '<%= config.bin %> send "exports/**/*.dcm" archive.zip --concurrency 4',
    '<%= config.bin %> send study.zip -aec ORTHANC1 -aet MODALITY --port 4242',
    '<%= config.bin %> send study/ --backend orthanc2 --json',
    '<%= config.bin %> send study/ --backend cloud --concurrency 2   # a dicomweb backend: STOW-RS',
    'DDR_BACKEND_ORTHANC1_PASSWORD=secret <%= config.bin %> send study/ --rest orthanc1',
    '<%= config.bin %> send study/ --rest https://pacs.example:8043 --ca /etc/ddr/pacs-ca.pem',
  ]

  static override args = {paths: Args.string({description: 'files, folders (recursive), quoted glob patterns or ZIP archives', required: true})}
  static override flags = {
    host: Flags.string({description: 'receiver host [default: localhost]', exclusive: ['rest']}),
    port: Flags.integer({char: 'p', description: 'receiver DICOM port [default: 11113]', min: 1, max: 65535, exclusive: ['rest']}),
    'called-ae': Flags.string({description: "receiver's AE title [default: DYNAMIC_DICOM_MW] (dcmtk: -aec)", aliases: ['aec'], exclusive: ['rest']}),
    'calling-ae': Flags.string({description: 'our AE title [default: DDR] (dcmtk: -aet)', aliases: ['aet']}),
    backend: Flags.string({char: 'b', description: 'send to a configured backend: its host, port and AE title (REST if its transport is rest; STOW-RS for a dicomweb backend; its folder layout for a folder backend)'}),
    rest: Flags.string({description: 'upload with POST /instances to this Orthanc URL, or to the REST API of a configured backend NAME'}),
    ca: Flags.string({description: 'PEM CA bundle (or the self-signed server certificate) that the https:// server of --rest must chain to; replaces the system CAs', exclusive: ['tls']}),
    concurrency: Flags.integer({char: 'j', description: 'associations (or uploads) at once; try 4 for Orthanc', default: 1, min: 1, max: 64}),
    tls: Flags.boolean({description: 'DICOM TLS (TLS 1.2+); the receiver certificate is checked against --tls-ca (or the system CAs)', exclusive: ['rest']}),
    'tls-ca': Flags.string({description: 'PEM CA bundle that signs the receiver certificate (dcmtk: +cf)', dependsOn: ['tls']}),
    'tls-cert': Flags.string({description: 'PEM client certificate, for receivers that require one', dependsOn: ['tls', 'tls-key']}),
    'tls-key': Flags.string({description: 'PEM private key of --tls-cert (unencrypted)', dependsOn: ['tls', 'tls-cert']}),
  }

  public override async init(): Promise<void> {
    this.argv = dcmtkStyleArgv(this.argv)
    await super.init()
  }

  async run(): Promise<SendResult> {
    const {flags, positionals} = this
    const target = resolveSendTarget({host: flags.host, port: flags.port, calledAeTitle: flags['called-ae'], callingAeTitle: flags['calling-ae'], backend: flags.backend, rest: flags.rest, ca: flags.ca, tls: flags.tls ? {ca: flags['tls-ca'], cert: flags['tls-cert'], key: flags['tls-key']} : undefined}, () => this.ddrConfig)
    // Ctrl-C stops taking new files; what was not sent is reported as failed, and the summary still prints.
    const abort = new AbortController()
    const onSignal = () => abort.abort()
    process.once('SIGINT', onSignal)
    const progress = await createSendProgress(progressMode({json: this.jsonEnabled()}), describeTarget(target))
    const result = await withProgress(progress, (onProgress) => sendFiles(positionals, {target, concurrency: flags.concurrency, signal: abort.signal, onProgress})).finally(() => process.off('SIGINT', onSignal))
    if (!this.jsonEnabled()) this.log(formatSendSummary(result, {color: colorEnabled()}))
    if (result.failed > 0) this.setPartialFailure()
    return result
  }
}
