#!/usr/bin/env bash
# Regenerates the screenshots in docs/console/ (docs/console.md shows them): the console's browser
# test against a real router and real Orthancs, saving each page it checks. Needs Debian's chromium.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DDR_CONSOLE_SCREENSHOTS="$PWD/docs/console" node --experimental-vm-modules node_modules/jest/bin/jest.js test/integration/console/browser.test.ts
ls -l docs/console/*.png
