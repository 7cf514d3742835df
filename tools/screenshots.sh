#!/usr/bin/env bash
# Regenerates the console's screenshots in docs/ (docs/console-*.png): the browser test
# (tests/console) runs the agent against its embedded simulator in headless Chromium and saves
# what it shows at each step. Needs Chromium (Debian: apt-get install -y chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
UCWA_CONSOLE_SCREENSHOTS="$PWD/docs" cargo test --locked --test console the_console_
ls -l docs/console-*.png
