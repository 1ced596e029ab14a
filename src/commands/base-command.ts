import {Command, Flags, Interfaces} from '@oclif/core'

import {loadConfig} from '../lib/config/load.js'
import type {DdrConfig} from '../lib/config/schema.js'
import {DdrError, ddrErrorJson, ExitCode, formatErrorReport} from '../lib/errors.js'

export type DdrFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof BaseCommand)['baseFlags'] & T['flags']>
export type DdrArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>

/**
 * Shared flags (--config, --debug; --json where a command enables it), flags and arguments parsed
 * once (in init, so run() reads this.flags, this.args and this.positionals), configuration loaded
 * once, and one mapping from errors to messages and exit codes.
 *
 * It lives beside the commands because it is oclif glue, but it is not a command: package.json's
 * oclif.commands glob leaves base-command.js out.
 */
export abstract class BaseCommand<T extends typeof Command> extends Command {
  static override baseFlags = {
    config: Flags.string({
      char: 'c',
      description: 'config file (default: $DDR_CONFIG, then ./ddr.config.json, then the built-in two-Orthanc defaults)',
      helpGroup: 'GLOBAL',
    }),
    debug: Flags.boolean({description: 'log decision inputs and protocol details to stderr', helpGroup: 'GLOBAL'}),
  }

  protected flags!: DdrFlags<T>
  protected args!: DdrArgs<T>
  /** Every positional argument, for commands with `strict = false` that take many (paths...). */
  protected positionals!: string[]
  private loadedConfig?: DdrConfig

  /** The validated configuration, loaded on first use so --help never touches it. */
  protected get ddrConfig(): DdrConfig {
    this.loadedConfig ??= loadConfig({configPath: this.flags.config})
    return this.loadedConfig
  }

  public override async init(): Promise<void> {
    await super.init()
    const {args, argv, flags} = await this.parse({
      args: this.ctor.args,
      baseFlags: (super.ctor as typeof BaseCommand).baseFlags,
      enableJsonFlag: this.ctor.enableJsonFlag,
      flags: this.ctor.flags,
      strict: this.ctor.strict,
    })
    this.flags = flags as DdrFlags<T>
    this.args = args as DdrArgs<T>
    this.positionals = argv as string[]
  }

  /** Log to stderr (stdout is for results). */
  protected note(message: string): void {
    if (!this.jsonEnabled()) process.stderr.write(`${message}\n`)
  }

  /** Marks the run as a partial failure (exit 4) while still returning the full result. */
  protected setPartialFailure(): void {
    process.exitCode = ExitCode.partial
  }

  protected override async catch(error: Error & {exitCode?: number; oclif?: {exit?: number}}): Promise<any> {
    if (error instanceof DdrError) {
      if (this.jsonEnabled()) this.logJson(ddrErrorJson(error))
      else process.stderr.write(formatErrorReport(error, {debug: this.flags?.debug}))
      this.exit(error.exit)
    }

    // oclif's own errors (unknown flag, missing argument) carry their exit code and usage text.
    if (error.oclif?.exit !== undefined) return super.catch(error)
    process.stderr.write(formatErrorReport(error, {debug: this.flags?.debug}))
    this.exit(ExitCode.unexpected)
  }

  protected override toErrorJson(error: unknown): any {
    if (error instanceof DdrError) return ddrErrorJson(error)
    return super.toErrorJson(error)
  }
}
