import {Chalk, type ChalkInstance} from 'chalk'

/** Colour only on a terminal, and never when NO_COLOR is set. */
export function colorEnabled(stream: NodeJS.WriteStream = process.stdout): boolean {
  return Boolean(stream.isTTY) && !process.env.NO_COLOR
}

/** A chalk instance that paints only when `color` is true. */
export function painter(color: boolean): ChalkInstance {
  return new Chalk({level: color ? 1 : 0})
}

export interface Column<T> {
  header: string
  value: (row: T) => string
  /** Paints a cell (after padding); receives the row to pick a colour by state. */
  paint?: (row: T, text: string) => string
  align?: 'left' | 'right'
}

/** Aligned plain-text columns with a bold header; `paint` colours cells when colour is on. */
export function formatTable<T>(rows: T[], columns: Array<Column<T>>, options: {color?: boolean} = {}): string {
  const bold = painter(options.color ?? false).bold
  const cells = rows.map((row) => columns.map((column) => column.value(row)))
  const widths = columns.map((column, index) => Math.max(column.header.length, ...cells.map((row) => row[index].length)))
  const pad = (text: string, index: number) => (columns[index].align === 'right' ? text.padStart(widths[index]) : text.padEnd(widths[index]))
  const header = columns.map((column, index) => pad(column.header, index)).join('  ').trimEnd()
  const lines = cells.map((row, rowIndex) =>
    row
      .map((text, index) => {
        const padded = pad(text, index)
        const paint = columns[index].paint
        return paint && options.color ? paint(rows[rowIndex], padded) : padded
      })
      .join('  ')
      .trimEnd(),
  )
  return [bold(header), ...lines].join('\n')
}
