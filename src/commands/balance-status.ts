import {Flags} from '@oclif/core'

import {BaseCommand} from './base-command.js'
import {selectBackends} from '../lib/config/load.js'
import {colorEnabled} from '../lib/output/table.js'
import {type BalanceStatusResult, balanceExitCode, formatBalance, formatWatchFrame, gatherBalance, watchBalance} from '../lib/status/balance.js'

export type {BackendBalance, BalanceStatusResult, RouterBalance} from '../lib/status/balance.js'

const DEFAULT_WATCH_SECONDS = '2'

export default class BalanceStatus extends BaseCommand<typeof BalanceStatus> {
  static override description = `show health and load of every backend, and the router's counters

Each backend is checked directly (C-ECHO, Orthanc /statistics; a folder backend: writable, free space, files; a dicomweb backend: QIDO-RS); the router's /status (status.host/port in config) adds routed/failed counts, in-flight, queue depth and scores when it runs.
Exit code 3 when no backend answers at all; 0 otherwise, even when some are down (the table and --json say which).
--watch refreshes in place until Ctrl-C; with --json it prints one JSON document per line per refresh.`

  static override enableJsonFlag = true
  static override examples = [
    '<%= config.bin %> balance-status',
    '<%= config.bin %> balance-status --json',
    '<%= config.bin %> balance-status --watch',
    '<%= config.bin %> balance-status --watch 10 --backend orthanc1',
  ]

  static override flags = {
    backend: Flags.string({multiple: true, description: 'only these backends (by name)'}),
    watch: Flags.integer({char: 'w', min: 1, helpValue: '[SECONDS]', description: `refresh every SECONDS (default ${DEFAULT_WATCH_SECONDS}) until Ctrl-C`}),
  }

  public override async init(): Promise<void> {
    this.argv = withOptionalValue(this.argv, ['--watch', '-w'], DEFAULT_WATCH_SECONDS)
    await super.init()
  }

  async run(): Promise<BalanceStatusResult | undefined> {
    const config = this.ddrConfig
    const backends = selectBackends(config, this.flags.backend)
    const gather = () => gatherBalance(config, {backends})
    if (this.flags.watch === undefined) {
      const result = await gather()
      process.exitCode = balanceExitCode(result)
      if (!this.jsonEnabled()) this.log(formatBalance(result, {color: colorEnabled()}))
      return result
    }

    const controller = new AbortController()
    process.once('SIGINT', () => controller.abort())
    const inPlace = Boolean(process.stdout.isTTY) && !this.jsonEnabled()
    if (inPlace) process.stdout.write('\u001B[2J')
    const last = await watchBalance(gather, {
      intervalMs: this.flags.watch * 1000,
      signal: controller.signal,
      onResult: (result) => {
        process.exitCode = balanceExitCode(result)
        const frame = this.jsonEnabled() ? `${JSON.stringify(result)}\n` : formatWatchFrame(result, {intervalSeconds: this.flags.watch!, inPlace, color: colorEnabled()})
        process.stdout.write(frame)
      },
    })
    // Every refresh was printed already: returning the last one would print it again under --json.
    return this.jsonEnabled() ? undefined : last
  }
}

/** Lets an option flag be given without its value (`--watch`, `--watch --json`): the default is put in. */
function withOptionalValue(argv: string[], names: string[], fallback: string): string[] {
  const out: string[] = []
  for (let index = 0; index < argv.length; index++) {
    out.push(argv[index])
    if (argv[index] === '--') return [...out, ...argv.slice(index + 1)]
    if (names.includes(argv[index]) && !/^\d+$/.test(argv[index + 1] ?? '')) out.push(fallback)
  }

  return out
}
