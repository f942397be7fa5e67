#!/usr/bin/env bash
# The README's picture of a report (docs/src/report.png): the massive-activations
# experiment (SmolLM2 from `make test-models`) drawn by headless Chromium through the
# browser test, at 1400 x 900.
set -euo pipefail
cd "$(dirname "$0")/.."
make build test-models >/dev/null
target/release/strata report --quiet experiments/massive-activations.yaml --out target/screenshot
STRATA_SCREENSHOT_PAGE=target/screenshot/index.html \
STRATA_SCREENSHOT="$PWD/docs/src/report.png" \
  cargo test --release --test browser the_report_draws_to_a_png -- --exact
echo "wrote docs/src/report.png"
