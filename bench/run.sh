#!/usr/bin/env bash
# shardex benchmark: prints a markdown report and writes bench/results/latest.md.
#   bash bench/run.sh            full run (5 repetitions per variant, ~15 min on 2 cores)
#   bash bench/run.sh --quick    1 repetition of everything (checks the script)
# Other options go to bench/bench.py: --reps N, --sections 1,2,3,4,5, --keep.
# Env: SHARDEX_BIN (default target/release/shardex), BENCH_VENV (default .venv),
#      BENCH_BUILD=1 to run `cargo build --release -p shardex-cli` first.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${BENCH_VENV:-$REPO/.venv}/bin/python"
if [[ ! -x "$PY" ]]; then
    echo "bench: no venv python at $PY (run scripts/setup.sh)" >&2; exit 2
fi
if [[ "${BENCH_BUILD:-0}" == 1 ]]; then
    (cd "$REPO" && cargo build --release -p shardex-cli) >&2
fi
exec "$PY" "$REPO/bench/bench.py" "$@"
