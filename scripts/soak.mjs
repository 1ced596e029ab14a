// The soak (`npm run soak`, which builds first): test/integration/soak/soak.test.ts for 10 minutes
// instead of the 60 s `npm test` gives it. Duration: `npm run soak -- --minutes 30` (or --seconds N),
// else DDR_SOAK_SECONDS, else 600. What it does and checks: docs/reliability.md ("Soak").
import {spawn} from 'node:child_process'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const flag = (name) => {
  const index = args.indexOf(`--${name}`)
  const value = index >= 0 ? args[index + 1] : args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1]
  if (value === undefined) return undefined
  const number = Number(value)
  if (!Number.isFinite(number) || number <= 0) {
    console.error(`--${name} wants a positive number, got "${value}"`)
    process.exit(2)
  }

  return number
}

const minutes = flag('minutes')
const seconds = flag('seconds') ?? (minutes === undefined ? Number(process.env.DDR_SOAK_SECONDS ?? 600) : minutes * 60)
console.error(`soak: ${seconds} s (test/integration/soak/soak.test.ts)`)
const jest = spawn(process.execPath, ['--experimental-vm-modules', path.join(root, 'node_modules/jest/bin/jest.js'), 'test/integration/soak/soak.test.ts'], {
  cwd: root,
  env: {...process.env, DDR_SOAK_SECONDS: String(Math.round(seconds))},
  stdio: 'inherit',
})
jest.on('exit', (code, signal) => process.exit(code ?? (signal === null ? 1 : 128)))
