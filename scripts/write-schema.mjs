// Writes ddr.schema.json from the config schema (src/lib/config/schema.ts), as built in dist/.
// `npm run schema` builds first; test/unit/config/json-schema.test.ts fails while the committed file differs.
import {writeFileSync} from 'node:fs'

import {configJsonSchemaText, JSON_SCHEMA_FILE_NAME} from '../dist/lib/config/json-schema.js'

const file = new URL(`../${JSON_SCHEMA_FILE_NAME}`, import.meta.url)
writeFileSync(file, configJsonSchemaText())
console.log(`wrote ${file.pathname}`)
