#!/usr/bin/env bash
# The timeline of a 10,000-test run (issue 10): its size (target <= 2 MB) and the time
# headless Chromium takes to open it (target <= 1 s), for `--timeline t.html` and `t.svg`,
# plus a screenshot of each in bench/results/. Prints a markdown table (also
# bench/results/timeline.md).
#   bash bench/timeline.sh             5 loads per file
#   bash bench/timeline.sh --reps 1    a check of the script
# Which shardex: SHARDEX_BIN, else target/release/shardex; BENCH_BUILD=1 builds it first.
# Chromium: scripts/chromium.sh (scripts/setup.sh installs Debian's package).
#
# "Open" is measured inside Chromium: a harness page puts the timeline in an iframe and
# takes performance.now() from setting its src to its load event (HTML parsed, the page's
# script has drawn every bar, SVG parsed): the browser's start-up is not counted. For the
# HTML page the page's own mark (navigation start to drawn and laid out, `data-drawn-ms`)
# is shown too.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${BENCH_VENV:-$REPO/.venv}/bin/python"
REPS=5
while (($#)); do
    case "$1" in
        --reps) REPS="$2"; shift 2 ;;
        *) echo "usage: $0 [--reps N]" >&2; exit 2 ;;
    esac
done
if [[ ! -x "$PY" ]]; then
    echo "bench: no venv python at $PY (run scripts/setup.sh)" >&2; exit 2
fi
if [[ "${BENCH_BUILD:-0}" == 1 ]]; then
    (cd "$REPO" && cargo build --release -p shardex-cli) >&2
fi
BIN="${SHARDEX_BIN:-$REPO/target/release/shardex}"
[[ -x "$BIN" ]] || { echo "bench: no shardex at $BIN (BENCH_BUILD=1 builds it)" >&2; exit 2; }
CHROMIUM="$(bash "$REPO/scripts/chromium.sh" bin)"
RESULTS="$REPO/bench/results"
mkdir -p "$RESULTS"
WORK="$(mktemp -d /tmp/shardex-bench-timeline.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
log() { printf 'bench/timeline: %s\n' "$*" >&2; }

# 100 files x 100 tests: mostly instant, 2% sleeping 5-60 ms, skips, xfails, a few
# failures, reruns of flaky tests (a counter file each) and one crash that passes on retry.
"$PY" - "$WORK/suite" <<'PYEOF'
import random
import sys
from pathlib import Path

root = Path(sys.argv[1])
root.mkdir(parents=True)
(root / "pytest.ini").write_text("[pytest]\n")
(root / "conftest.py").write_text('''
import os
import pytest

@pytest.fixture
def attempt(request):
    path = os.path.join(os.environ["BENCH_COUNTERS"], request.node.name)
    n = int(open(path).read()) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(n + 1))
    return n
''')
rnd = random.Random(10)
for f in range(100):
    lines = ["import os", "import time", "import pytest", ""]
    for t in range(100):
        name = f"test_{f:03d}_{t:03d}"
        roll = rnd.random()
        if f == 50 and t == 50:
            lines += ["@pytest.mark.flaky(reruns=1)", f"def {name}(attempt):",
                      "    if attempt == 0:", "        os._exit(3)"]
        elif roll < 0.02:
            lines += [f"def {name}():", f"    time.sleep({rnd.uniform(0.005, 0.06):.3f})"]
        elif roll < 0.03:
            lines += [f"def {name}():", "    pytest.skip('not here')"]
        elif roll < 0.035:
            lines += ["@pytest.mark.xfail(reason='known')", f"def {name}():", "    assert False"]
        elif roll < 0.0365:
            lines += [f"def {name}():", "    assert 1 + 1 == 3, 'wrong sum'"]
        elif roll < 0.039:
            lines += ["@pytest.mark.flaky(reruns=2)", f"def {name}(attempt):",
                      "    assert attempt >= 1, 'first attempt fails'"]
        else:
            lines += [f"def {name}():", "    pass"]
        lines.append("")
    (root / f"test_f{f:03d}.py").write_text("\n".join(lines) + "\n")
PYEOF

run_with_timeline() {
    local out="$1" counters="$WORK/counters-$(basename "$1")"
    mkdir -p "$counters"
    local t0 t1 code=0
    t0=$(date +%s.%N)
    (cd "$WORK/suite" && BENCH_COUNTERS="$counters" "$BIN" run -n 4 --python "$PY" \
        -p no:cacheprovider --no-timing-store -q --timeline "$out" >"$out.stdout" 2>&1) || code=$?
    t1=$(date +%s.%N)
    log "$(basename "$out"): exit $code, $(tail -1 "$out.stdout"), $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
    [[ -s "$out" ]] || { log "no timeline written"; cat "$out.stdout" >&2; exit 1; }
}

chromium() {
    local profile
    profile="$(mktemp -d "$WORK/profile.XXXXXX")"
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
        --user-data-dir="$profile" "$@" 2>/dev/null
    rm -rf "$profile"
}

cat >"$WORK/harness.html" <<'HTML'
<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<iframe id="f" style="width:1600px;height:1000px;border:0"></iframe>
<script>
const f = document.getElementById("f");
let t0 = 0;
f.onload = () => { document.body.dataset.openMs = (performance.now() - t0).toFixed(1); };
t0 = performance.now();
f.src = decodeURIComponent(location.hash.slice(1));
</script></body></html>
HTML

# median of the harness' open time over $REPS loads, in ms
open_ms() {
    local file="$1" all=() i v
    for ((i = 0; i < REPS; i++)); do
        v="$(chromium --dump-dom "file://$WORK/harness.html#$(basename "$file")" \
            | sed -n 's/.*data-open-ms="\([0-9.]*\)".*/\1/p' | head -1)"
        [[ -n "$v" ]] || { log "no open time for $file"; exit 1; }
        all+=("$v")
    done
    printf '%s\n' "${all[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

drawn_ms() {
    local all=() i v
    for ((i = 0; i < REPS; i++)); do
        v="$(chromium --dump-dom "file://$1" | sed -n 's/.*data-drawn-ms="\([0-9.]*\)".*/\1/p' | head -1)"
        all+=("${v:-nan}")
    done
    printf '%s\n' "${all[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

run_with_timeline "$WORK/timeline.html"
run_with_timeline "$WORK/timeline.svg"
attempts="$(grep -o '<rect class="b ' "$WORK/timeline.svg" | wc -l)"

rows=()
for f in timeline.html timeline.svg; do
    size=$(stat -c %s "$WORK/$f")
    open=$(open_ms "$WORK/$f")
    drawn="-"
    [[ "$f" == *.html ]] && drawn="$(drawn_ms "$WORK/$f") ms"
    ok=$(awk -v s="$size" -v o="$open" 'BEGIN { print (s <= 2000000 && o <= 1000) ? "yes" : "NO" }')
    rows+=("| $f | $(awk -v s="$size" 'BEGIN { printf "%.2f MB (%d bytes)", s / 1e6, s }') | $open ms | $drawn | $ok |")
    chromium --screenshot="$RESULTS/${f%.*}-${f##*.}.png" --window-size=1600,1000 "file://$WORK/$f" >/dev/null
    log "$f: $size bytes, open $open ms; screenshot $RESULTS/${f%.*}-${f##*.}.png"
done

{
    echo "Timeline of a 10,000-test run ($attempts attempts, -n 4), $REPS loads each (median)."
    echo "Chromium: $("$CHROMIUM" --version 2>/dev/null). Open = iframe src set to load event; drawn = the page's own mark."
    echo
    echo "| File | Size | Open in Chromium | Drawn (HTML's own mark) | <= 2 MB and <= 1 s |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} | tee "$RESULTS/timeline.md"
