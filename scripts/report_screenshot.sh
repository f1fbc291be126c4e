#!/usr/bin/env bash
# Regenerates docs/report-screenshot.png, the README's picture of a report: the top of the CI run's
# report (reports/ci/index.html) as a reader's browser window shows it (1280x1400), after
# scripts/check_report_in_browser.sh has checked the page (self-contained, no console errors, every
# figure rendered). Needs reports/ci/index.html: `target/debug/pipeline --config configs/ci.toml all`.
set -euo pipefail
cd "$(dirname "$0")/.."
index=$PWD/reports/ci/index.html
[ -f "$index" ] || { echo "error: $index: no such file; run: target/debug/pipeline --config configs/ci.toml all" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/check_report_in_browser.sh reports/ci "$work/full-page.png"
chromium_bin=$(command -v chromium || command -v chromium-browser)
"$chromium_bin" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1400 \
  --screenshot="$work/top.png" "file://$index" >/dev/null 2>&1
mv "$work/top.png" docs/report-screenshot.png
echo "docs/report-screenshot.png: the top 1280x1400 of $index"
