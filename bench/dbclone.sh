#!/usr/bin/env bash
# First run with 2 slots on an empty PostgreSQL: `pytest -n 2 --create-db` (pytest-django under
# xdist: each worker migrates its own test_<db>_gwK) vs `shardex run -n 2 --create-db` (one
# migrated template, cloned per slot), on fixtures/django (93 migrations, 22 tests), measured
# round-robin in the same run. Prints a markdown table (also bench/results/dbclone.md).
#   bash bench/dbclone.sh              3 repetitions per variant (~1 min on 2 cores)
#   bash bench/dbclone.sh --reps 1     a check of the script
# Which shardex: SHARDEX_BIN, else target/release/shardex; BENCH_BUILD=1 builds it first.
# Needs the private PostgreSQL (scripts/pg.sh start); the suite uses its own database name, so
# no other test DB is touched. Every run starts with no test DB of that name left.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${BENCH_VENV:-$REPO/.venv}/bin/python"
REPS=3
while [[ $# -gt 0 ]]; do
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
# The server's address (SHARDEX_PG_* as scripts/pg.sh prints them, unless already set).
[[ -n "${SHARDEX_PG_PORT:-}" ]] || eval "$(bash "$REPO/scripts/pg.sh" env)"
export SHARDEX_PG_DB=shardex_bench_dbclone VIRTUAL_ENV="$(dirname "$(dirname "$PY")")"
export PATH="$VIRTUAL_ENV/bin:$PATH"

WORK="$(mktemp -d /tmp/shardex-bench-dbclone.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cp -r "$REPO/fixtures/django" "$WORK/suite"
cp "$BIN" "$WORK/shardex"  # a rebuild during the run does not matter

# The test DBs of this suite: dropped before each run (and listed after it: none may be left).
sql() {
    "$PY" - "$@" <<'PY'
import os, sys
import psycopg
conn = psycopg.connect(host=os.environ["SHARDEX_PG_HOST"], port=os.environ["SHARDEX_PG_PORT"],
                       user=os.environ["SHARDEX_PG_USER"], password=os.environ["SHARDEX_PG_PASSWORD"],
                       dbname="postgres", autocommit=True)
names = [r[0] for r in conn.execute(
    "SELECT datname FROM pg_database WHERE datname LIKE %s", ["test_" + os.environ["SHARDEX_PG_DB"] + "%"])]
if sys.argv[1] == "drop":
    for name in names:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
else:
    print(" ".join(sorted(names)))
PY
}

# One timed run: prints its wall seconds; fails loudly on a wrong exit code or test count.
timed() {
    local label="$1"; shift
    sql drop
    local out="$WORK/out.txt" start end
    start=$(date +%s.%N)
    (cd "$WORK/suite" && timeout 300 "$@") >"$out" 2>&1 || { echo "bench: $label failed:" >&2; tail -20 "$out" >&2; exit 1; }
    end=$(date +%s.%N)
    grep -q "22 passed" "$out" || { echo "bench: $label: not 22 passed:" >&2; tail -5 "$out" >&2; exit 1; }
    local left; left="$(sql list)"
    [[ -z "$left" ]] || { echo "bench: $label left test DBs: $left" >&2; exit 1; }
    "$PY" -c "print(f'{$end - $start:.3f}')"
}

sql list >/dev/null || { echo "bench: PostgreSQL does not answer on port $SHARDEX_PG_PORT (scripts/pg.sh start)" >&2; exit 2; }
declare -a PYTEST SHARDEX
for rep in $(seq 1 "$REPS"); do
    PYTEST+=("$(timed "pytest -n 2" "$PY" -m pytest -n 2 --create-db -q)")
    SHARDEX+=("$(timed "shardex run -n 2" "$WORK/shardex" run --python "$PY" -n 2 --create-db -q)")
    echo "bench: rep $rep: pytest ${PYTEST[-1]} s, shardex ${SHARDEX[-1]} s" >&2
done

REPORT="$("$PY" - "${PYTEST[*]}" "${SHARDEX[*]}" "$REPS" "$(git -C "$REPO" rev-parse --short HEAD)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import statistics, sys, datetime
pytest = [float(x) for x in sys.argv[1].split()]
shardex = [float(x) for x in sys.argv[2].split()]
reps, head, load = sys.argv[3], sys.argv[4], sys.argv[5]
mp, ms = statistics.median(pytest), statistics.median(shardex)
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"First run, 2 slots, empty PostgreSQL, fixtures/django (93 migrations, 22 tests); {when}, "
      f"shardex at {head}, {reps} repetitions round-robin, load average {load} at the end.\n")
print("| Variant | Median s | Range s |")
print("|---|---:|---:|")
print(f"| `pytest -n 2 --create-db` | {mp:.2f} | {min(pytest):.2f}–{max(pytest):.2f} |")
print(f"| `shardex run -n 2 --create-db` | {ms:.2f} | {min(shardex):.2f}–{max(shardex):.2f} |")
print(f"\nshardex / pytest = **{ms / mp:.2f}** (target ≤ 0.6)")
PY
)"
mkdir -p "$REPO/bench/results"
printf '%s\n' "$REPORT" | tee "$REPO/bench/results/dbclone.md"
