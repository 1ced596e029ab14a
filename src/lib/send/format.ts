import {formatTable, painter} from '../output/table.js'
import {formatDecimalBytes, formatElapsed} from '../output/units.js'
import {describeTarget} from './send.js'
import type {SendResult} from './types.js'

/** Skipped files listed in the human summary; --json lists all. */
const MAX_SKIPS_SHOWN = 20

function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`
}

/**
 * The human summary of a send: one line with counts, size and rate, then tables of the failed
 * files (with their hints), the files stored with a warning, and the skipped files.
 */
export function formatSendSummary(result: SendResult, options: {color?: boolean} = {}): string {
  const paint = painter(options.color ?? false)
  const seconds = Math.max(result.durationMs, 1) / 1000
  const attempted = result.sent + result.failed
  const rate = result.sent > 0 ? ` (${Math.round(result.sent / seconds)} files/s, ${formatDecimalBytes(result.bytes / seconds)}/s)` : ''
  const headline = `sent ${result.sent} of ${plural(attempted, 'DICOM file')} (${formatDecimalBytes(result.bytes)}) to ${describeTarget(result.target)} in ${formatElapsed(result.durationMs)}${rate}`
  const counts = [
    result.failed > 0 ? paint.red(`${result.failed} failed`) : '0 failed',
    result.skipped > 0 ? paint.yellow(`${result.skipped} skipped`) : '0 skipped',
    ...(result.warnings.length > 0 ? [paint.yellow(plural(result.warnings.length, 'warning'))] : []),
  ]
  const blocks = [`${result.failed === 0 ? paint.green(headline) : headline}\n${counts.join(', ')}`]

  if (result.failures.length > 0) {
    const table = formatTable(result.failures, [
      {header: 'FAILED', value: (row) => row.file, paint: (_row, text) => paint.red(text)},
      {header: 'REASON', value: (row) => row.reason},
    ], options)
    const hints = [...new Set(result.failures.map((failure) => failure.hint).filter((hint): hint is string => hint !== undefined))]
    blocks.push([table, ...hints.map((hint) => `  hint: ${hint}`)].join('\n'))
  }

  if (result.warnings.length > 0) {
    blocks.push(formatTable(result.warnings, [
      {header: 'STORED WITH WARNING', value: (row) => row.file, paint: (_row, text) => paint.yellow(text)},
      {header: 'WARNING', value: (row) => row.message},
    ], options))
  }

  if (result.skips.length > 0) {
    const shown = result.skips.slice(0, MAX_SKIPS_SHOWN)
    const table = formatTable(shown, [
      {header: 'SKIPPED', value: (row) => row.file},
      {header: 'REASON', value: (row) => row.reason},
    ], options)
    const more = result.skips.length - shown.length
    blocks.push(more > 0 ? `${table}\n... and ${more} more (--json lists them all)` : table)
  }

  return blocks.join('\n\n')
}
