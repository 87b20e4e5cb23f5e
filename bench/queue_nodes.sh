#!/usr/bin/env bash
# 4 CI nodes x 2 workers on this machine, fixtures/queue_skew with stale timings: one shared
# Redis queue (`--queue redis://…`) vs the static split (`--node-total 4` alone), measured in
# the same run. Prints a markdown table (also bench/results/queue_nodes.md).
#   bash bench/queue_nodes.sh              3 repetitions per variant (~2 min on 2 cores)
#   bash bench/queue_nodes.sh --reps 1     a check of the script
# Which shardex: SHARDEX_BIN, else target/release/shardex; BENCH_BUILD=1 builds it first.
# Needs redis-server (scripts/setup.sh installs it); the script starts its own on a free port.
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
exec "$PY" "$REPO/bench/queue_nodes.py" "$@"
