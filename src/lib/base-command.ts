import {Command, Flags, Interfaces} from '@oclif/core'

import {loadConfig} from './config/load.js'
import type {DdrConfig} from './config/schema.js'
import {DdrError, ExitCode} from './errors.js'

export type DdrFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof BaseCommand)['baseFlags'] & T['flags']>
export type DdrArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>

/**
 * Shared flags (--config, --debug; --json where a command enables it), configuration loaded once,
 * and one mapping from errors to messages and exit codes.
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
  private loadedConfig?: DdrConfig

  /** The validated configuration, loaded on first use so --help never touches it. */
  protected get ddrConfig(): DdrConfig {
    this.loadedConfig ??= loadConfig({configPath: this.flags.config})
    return this.loadedConfig
  }

  public override async init(): Promise<void> {
    await super.init()
    const {args, flags} = await this.parse({
      args: this.ctor.args,
      baseFlags: (super.ctor as typeof BaseCommand).baseFlags,
      enableJsonFlag: this.ctor.enableJsonFlag,
      flags: this.ctor.flags,
      strict: this.ctor.strict,
    })
    this.flags = flags as DdrFlags<T>
    this.args = args as DdrArgs<T>
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
      if (this.jsonEnabled()) {
        this.logJson(this.toErrorJson(error))
      } else {
        process.stderr.write(`error [${error.code}]: ${error.message}\n`)
        if (error.hint) process.stderr.write(`  hint: ${error.hint}\n`)
        if (this.flags?.debug && error.cause) process.stderr.write(`  cause: ${String((error.cause as Error)?.stack ?? error.cause)}\n`)
      }

      this.exit(error.exit)
    }

    if (error.oclif?.exit !== undefined) return super.catch(error)
    process.stderr.write(`error [UNEXPECTED]: ${error.message}\n`)
    if (this.flags?.debug) process.stderr.write(`${error.stack}\n`)
    this.exit(ExitCode.unexpected)
  }

  protected override toErrorJson(error: unknown): any {
    if (error instanceof DdrError) return {error: {code: error.code, message: error.message, hint: error.hint, exit: error.exit}}
    return super.toErrorJson(error)
  }
}
