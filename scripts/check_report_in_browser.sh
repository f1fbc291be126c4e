#!/usr/bin/env bash
# Opens a rendered report in headless Chromium and checks it the way a reader would see it:
#   - the page references nothing outside itself (no http(s) src/href, no <link>, no external <script>);
#   - loading it logs no console errors or warnings;
#   - every figure in figures/*.svg is in the page as a rendered <svg> of real size with drawn content;
#   - a full-page screenshot is saved for a human look.
# Usage: scripts/check_report_in_browser.sh REPORT_DIR [SCREENSHOT.png]
#   (REPORT_DIR holds index.html and figures/; the screenshot defaults to REPORT_DIR/../<name>-screenshot.png)
# Installs Debian's `chromium` package with apt-get when no Chromium is on PATH.
set -euo pipefail

report_dir=${1:?usage: $0 REPORT_DIR [SCREENSHOT.png]}
report_dir=$(cd "$report_dir" && pwd)
index="$report_dir/index.html"
[ -f "$index" ] || { echo "error: $index: no such file" >&2; exit 2; }
screenshot=${2:-"$(dirname "$report_dir")/$(basename "$report_dir")-screenshot.png"}

chromium_bin=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium_bin" ]; then
  echo "chromium not found: installing Debian's chromium package" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  chromium_bin=$(command -v chromium)
fi

failures=()

# 1. Self-contained: nothing is fetched from anywhere.
if grep -Eqi '(src|href)="(https?:)?//|<link[ >]|<script[^>]+src=|url\((["'\'']?)(https?:)?//|@import' "$index"; then
  failures+=("index.html references external resources: $(grep -Eoi '(src|href)="(https?:)?//[^"]*|<link[^>]*>|<script[^>]+src=[^>]*>|@import[^;]*' "$index" | head -3 | tr '\n' ' ')")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The checker runs inside a copy of the page, so the report itself stays script-free. It runs at the
# end of <body>: the whole document is parsed, and reading sizes forces layout.
checker='<script>
(function () {
  var out = [];
  var figures = document.querySelectorAll("figure.plot");
  figures.forEach(function (f) {
    var svg = f.querySelector("svg");
    if (!svg) { out.push(f.dataset.plot + ":missing-svg"); return; }
    var r = svg.getBoundingClientRect();
    var marks = svg.querySelectorAll("path,polyline,polygon,rect,circle,line").length;
    var texts = svg.querySelectorAll("text").length;
    out.push(f.dataset.plot + ":" + Math.round(r.width) + "x" + Math.round(r.height) + ":" + marks + ":" + texts);
  });
  var m = document.createElement("pre");
  m.id = "report-selfcheck";
  m.textContent = "SELF" + "CHECK height=" + document.documentElement.scrollHeight + " figures=" + out.join(" ") + " END";
  document.body.appendChild(m);
  document.currentScript.remove();
  // After every resource has loaded (or failed): images that did not load.
  window.addEventListener("load", function () {
    var broken = Array.prototype.filter.call(document.images, function (i) { return !i.complete || i.naturalWidth === 0; });
    var l = document.createElement("pre");
    l.id = "report-loadcheck";
    l.textContent = "LOAD" + "CHECK broken_images=" + broken.length + " END";
    document.body.appendChild(l);
  });
})();
</script>'
python3 - "$index" "$work/page.html" "$checker" <<'PY'
import sys
src, dst, checker = sys.argv[1], sys.argv[2], sys.argv[3]
html = open(src, encoding="utf-8").read()
i = html.rfind("</body>")
if i < 0:
    sys.exit(f"error: {src}: no </body>")
open(dst, "w", encoding="utf-8").write(html[:i] + checker + html[i:])
PY

flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$work/profile"
       --enable-logging=stderr --v=0)

# 2. Console: chromium logs every console message of the page as "...:CONSOLE:<line>] "<message>""
#    (uncaught exceptions included, as "Uncaught ..."). None may appear.
"$chromium_bin" "${flags[@]}" --window-size=1280,2000 --dump-dom "file://$work/page.html" \
  >"$work/dom.html" 2>"$work/console.log" || { echo "error: chromium failed:"; tail -20 "$work/console.log"; exit 2; }
console_errors=$(grep -E 'CONSOLE[:(]|Uncaught|Failed to load|ERR_FILE|ERR_NAME' "$work/console.log" || true)
[ -z "$console_errors" ] || failures+=("console messages while loading the page: $console_errors")

# 3. Every figure file is in the page, rendered at a real size, with drawn marks and text.
selfcheck=$(grep -o 'SELFCHECK height=[0-9]* figures=[^<]*END' "$work/dom.html" | head -1 || true)
[ -n "$selfcheck" ] || failures+=("the in-page check did not run (no SELFCHECK marker in the DOM)")
loadcheck=$(grep -o 'LOADCHECK broken_images=[0-9]* END' "$work/dom.html" | head -1 || true)
if [ -z "$loadcheck" ]; then
  failures+=("the page did not finish loading (no LOADCHECK marker in the DOM)")
elif [ "$loadcheck" != "LOADCHECK broken_images=0 END" ]; then
  failures+=("images that did not load: $loadcheck")
fi
height=$(sed -n 's/.*height=\([0-9]*\).*/\1/p' <<<"$selfcheck")
declare -A rendered=()
for entry in $(sed -n 's/.*figures=\(.*\) END/\1/p' <<<"$selfcheck"); do
  IFS=: read -r id size marks texts <<<"$entry"
  rendered[$id]=1
  w=${size%x*}; h=${size#*x}
  if [ "$size" = "missing-svg" ] || [ "${w:-0}" -lt 300 ] || [ "${h:-0}" -lt 150 ] || [ "${marks:-0}" -lt 20 ] || [ "${texts:-0}" -lt 5 ]; then
    failures+=("figure $id is not properly rendered (size $size, $marks marks, $texts texts)")
  fi
done
count=0
for svg in "$report_dir"/figures/*.svg; do
  [ -e "$svg" ] || continue
  id=$(basename "$svg" .svg)
  count=$((count + 1))
  [ -n "${rendered[$id]:-}" ] || failures+=("figure $id (figures/$id.svg) is not in the page")
done
[ "$count" -gt 0 ] || failures+=("no figures in $report_dir/figures")

# 4. Full-page screenshot.
"$chromium_bin" "${flags[@]}" --window-size=1280,"${height:-4000}" --screenshot="$work/shot.png" "file://$index" \
  >/dev/null 2>>"$work/console.log" || failures+=("chromium could not take a screenshot")
if [ -s "$work/shot.png" ]; then
  mkdir -p "$(dirname "$screenshot")"
  cp "$work/shot.png" "$screenshot"
else
  failures+=("no screenshot was written")
fi

echo "report:     $index"
echo "figures:    $count in figures/, rendered: ${!rendered[*]}"
echo "screenshot: $screenshot (1280x${height:-?})"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAIL: %s\n' "${failures[@]}"
  exit 1
fi
echo "OK: no console messages, every figure rendered, nothing external"
