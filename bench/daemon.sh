#!/usr/bin/env bash
# `shardex serve` on fixtures/django (PostgreSQL, 93 migrations): one test rerun, the same after
# an edit, the whole suite's second run with -n 2, idle memory; beside plain pytest and shardex
# without the daemon, in the same run. Prints a markdown table.
#   bash bench/daemon.sh              5 repetitions (~2 min on 2 cores)
#   bash bench/daemon.sh --reps 1     a check of the script
# Which shardex: SHARDEX_BIN, else target/release/shardex; BENCH_BUILD=1 builds it first.
# Needs PostgreSQL: scripts/pg.sh start (scripts/setup.sh installs it).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${BENCH_VENV:-$REPO/.venv}/bin/python"
if [[ ! -x "$PY" ]]; then
    echo "bench: no venv python at $PY (run scripts/setup.sh)" >&2; exit 2
fi
if [[ "${BENCH_BUILD:-0}" == 1 ]]; then
    (cd "$REPO" && cargo build --release -p shardex-cli) >&2
    export SHARDEX_BIN="$REPO/target/release/shardex"
fi
exec "$PY" "$REPO/bench/daemon.py" "$@"
