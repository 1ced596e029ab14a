/* global module */
/**
 * The house's allowed import directions, checked by `npm run lint` (docs/architecture.md draws
 * them). Rooms are the folders of src/lib (and src/commands on top); each layer may import the
 * layers below it, never one above, and rooms in one layer do not import each other unless a
 * rule below allows it. A new room gets its place in LAYERS.
 */
const LAYERS = [
  ['commands', 'index.ts'],
  ['listen'],
  ['console', 'processing'],
  ['ledger'],
  ['qr'],
  ['send', 'inspect', 'stack'],
  ['status'],
  ['routing'],
  ['spool'],
  ['backends'],
  ['orthanc'],
  ['security'],
  ['config'],
  ['dimse'],
  ['dicom'],
  ['fs', 'output', 'errors.ts'],
]

const roomPath = (room) => (room === 'commands' ? '^src/commands/' : room.endsWith('.ts') ? `^src/lib/${room.replace('.', '\\.')}$` : `^src/lib/${room}/`)
const anyOf = (rooms) => rooms.map(roomPath)

const upward = LAYERS.flatMap((rooms, index) =>
  rooms
    .map((room) => ({room, above: LAYERS.slice(0, index + 1).flat().filter((other) => other !== room)}))
    .filter(({above}) => above.length > 0)
    .map(({room, above}) => ({
      name: `no-upward-from-${room.replace('.ts', '')}`,
      comment: `${room} may import only the layers below it, not ${above.join(', ')} (see docs/architecture.md)`,
      severity: 'error',
      from: {path: roomPath(room)},
      to: {path: anyOf(above)},
    })),
)

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'a cycle is a design bug: move the shared part down',
      severity: 'error',
      from: {path: '^src/'},
      to: {circular: true},
    },
    {
      name: 'no-oclif-in-lib',
      comment: 'src/lib takes options objects and returns data; only src/commands knows oclif',
      severity: 'error',
      from: {path: '^src/lib/'},
      to: {path: 'node_modules/@oclif/'},
    },
    {
      name: 'lib-not-into-commands',
      severity: 'error',
      from: {path: '^src/lib/'},
      to: {path: '^src/commands/'},
    },
    ...upward,
  ],
  options: {
    doNotFollow: {path: 'node_modules'},
    includeOnly: '^(src|node_modules/@oclif)/',
    tsConfig: {fileName: 'tsconfig.json'},
    tsPreCompilationDeps: true,
  },
}
