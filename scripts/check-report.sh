#!/usr/bin/env bash
# Renders a `slimbert compress` report.html in headless Chromium (Debian's chromium) and checks
# that the page loads, that its three plots are drawn, and that no label crosses a plot frame,
# leaves its picture or overlaps another label (the page's own check, run when it is opened with
# #check). Also writes a screenshot beside the report.
#   scripts/check-report.sh OUT/report.html
set -euo pipefail
report=$(realpath "${1:?usage: check-report.sh REPORT.html}")
if ! command -v chromium >/dev/null; then
  echo "check-report: installing Debian's chromium" >&2
  (apt-get update -qq || true) && apt-get install -y -qq chromium >/dev/null
fi
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=5000)
dom=$(chromium "${flags[@]}" --dump-dom "file://$report#check" 2>/dev/null)
chromium "${flags[@]}" --window-size=1200,2400 --screenshot="${report%.html}.png" \
  "file://$report" >/dev/null 2>&1 || true
# The check's text: between <pre id="layout-check"> and the next </pre>, lines kept.
check=$(printf '%s' "$dom" | tr '\n' '\r' |
  sed -n 's|.*<pre id="layout-check">\([^<]*\)</pre>.*|\1|p' | tr '\r' '\n')
echo "check-report: $report"
printf '%s\n' "$check" | sed 's/^/  /'
plots=$(printf '%s\n' "$check" | sed -n 's/^plots \([0-9]*\)$/\1/p')
[[ "$plots" == 3 ]] || { echo "check-report: expected 3 plots, found '${plots:-none}'" >&2; exit 1; }
printf '%s\n' "$check" | grep -qx ok || { echo "check-report: layout problems" >&2; exit 1; }
echo "check-report: ok (screenshot ${report%.html}.png)"
