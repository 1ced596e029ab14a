// Sizes and durations for human output. Two scales each, on purpose: what sits on a disk is given
// the way df -h and Orthanc's statistics count it (binary), what moves over the network the way
// transfer tools give it (decimal); ages read coarse ("1h 2m"), run times precise ("3 min 4 s").

/** Divides by `base` until the value is below it (or the largest unit is reached). */
function scaled(amount: number, base: number, units: readonly string[]): {value: number; unit: string; scaledDown: boolean} {
  let value = amount
  let index = 0
  while (value >= base && index < units.length - 1) {
    value /= base
    index++
  }

  return {value, unit: units[index], scaledDown: index > 0}
}

/** A size on disk (stores, spools, free space) in binary units: 1536 → "1.5 KiB". */
export function formatBytes(bytes: number): string {
  const {value, unit, scaledDown} = scaled(bytes, 1024, ['B', 'KiB', 'MiB', 'GiB', 'TiB'])
  return scaledDown ? `${value < 10 ? value.toFixed(1) : Math.round(value)} ${unit}` : `${value} ${unit}`
}

/** An amount sent or a transfer rate, in decimal units as network tools give them: 1_500_000 → "1.5 MB". */
export function formatDecimalBytes(bytes: number): string {
  const {value, unit, scaledDown} = scaled(bytes, 1000, ['B', 'KB', 'MB', 'GB', 'TB'])
  return scaledDown ? `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${unit}` : `${value} ${unit}`
}

/** An age or uptime in seconds, to the two largest units: 3725 → "1h 2m". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`
}

/** How long a run took (or will take), from milliseconds: 9400 → "9.4 s", 184_000 → "3 min 4 s". */
export function formatElapsed(ms: number): string {
  const seconds = ms / 1000
  if (seconds < 10) return `${seconds.toFixed(1)} s`
  if (seconds < 60) return `${Math.round(seconds)} s`
  const minutes = Math.floor(seconds / 60)
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`
}
