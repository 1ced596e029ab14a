/**
 * What ddr needs to know about value representations (PS3.5 6.2), in one place: the element
 * reader, the value decoders, the dump and the writers all take their VR facts from here.
 */

/**
 * VRs whose explicit-VR element header has a 2-byte length (PS3.5 7.1.2). Every other VR takes
 * the 4-byte form, unknown ones too: every VR added since 2000 (UC, UR, OV, SV, UV...) does.
 */
export const SHORT_LENGTH_VRS: ReadonlySet<string> = new Set(['AE', 'AS', 'AT', 'CS', 'DA', 'DS', 'DT', 'FD', 'FL', 'IS', 'LO', 'LT', 'PN', 'SH', 'SL', 'SS', 'ST', 'TM', 'UI', 'UL', 'US'])

/** VRs whose value is text (padded with a space, UI with a NUL). */
export const TEXT_VRS: ReadonlySet<string> = new Set(['AE', 'AS', 'CS', 'DA', 'DS', 'DT', 'IS', 'LO', 'LT', 'PN', 'SH', 'ST', 'TM', 'UC', 'UI', 'UR', 'UT'])

/** Text VRs whose bytes follow SpecificCharacterSet; the other text VRs are plain ASCII. */
export const CHARSET_VRS: ReadonlySet<string> = new Set(['LO', 'LT', 'PN', 'SH', 'ST', 'UC', 'UT'])

/** Text VRs in which leading spaces are significant (only trailing padding is trimmed). */
export const KEEP_LEADING_SPACE_VRS: ReadonlySet<string> = new Set(['LT', 'ST', 'UT'])

/** Binary number VRs and the size of one value in bytes. */
export const NUMBER_VR_SIZES: Readonly<Record<string, number>> = {US: 2, SS: 2, UL: 4, SL: 4, FL: 4, FD: 8, AT: 4, SV: 8, UV: 8}

/** Whether an explicit-VR header of this VR has the 2-byte length form. */
export function hasShortLength(vr: string): boolean {
  return SHORT_LENGTH_VRS.has(vr)
}

// The reader meets a VR in every explicit-VR element header; these tables turn its two bytes into
// the VR string and its length form without building a string or hashing one per header.
const LETTERS = 26
const vrNames: string[] = []
const shortLength = new Uint8Array(LETTERS * LETTERS)
for (let first = 0; first < LETTERS; first++) {
  for (let second = 0; second < LETTERS; second++) {
    const name = String.fromCharCode(0x41 + first, 0x41 + second)
    vrNames.push(name)
    shortLength[first * LETTERS + second] = SHORT_LENGTH_VRS.has(name) ? 1 : 0
  }
}

/**
 * The index of the VR whose two bytes are `first` and `second` (for vrName and
 * vrHasShortLength), or -1 when they are not two upper-case letters (not a VR).
 */
export function vrIndex(first: number, second: number): number {
  const a = first - 0x41
  const b = second - 0x41
  // Unsigned compare: one test per byte for both "below A" and "above Z".
  return a >>> 0 < LETTERS && b >>> 0 < LETTERS ? a * LETTERS + b : -1
}

/** The VR string at a vrIndex. */
export function vrName(index: number): string {
  return vrNames[index]
}

/** Whether the VR at a vrIndex has the 2-byte length form. */
export function vrHasShortLength(index: number): boolean {
  return shortLength[index] === 1
}
