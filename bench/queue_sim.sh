#!/usr/bin/env bash
# The shared queue at scale, by simulation (issue 8): 64 nodes x 8 workers and 100,000 tests of
# skewed durations (sleeps, no Python) driven through the real queue::redis::Remote code against
# one private redis-server (127.0.0.1, a free port, a temp dir, no persistence; killed at the end).
# Prints a markdown table: Redis round trips and CPU per test, take latency, exactly-once check.
#   bash bench/queue_sim.sh                 # the full run (~20 s after the release build)
#   bash bench/queue_sim.sh --kill-node     # the last node dies 3 s in: its leases are reclaimed
#   bash bench/queue_sim.sh --nodes 8 --workers 4 --tests 5000   # smaller
# Exit status 1 when a test was not acknowledged exactly once.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
SERVER="$(bash scripts/redis.sh bin)" || { echo "queue_sim.sh: run scripts/setup.sh first" >&2; exit 1; }
cargo build --quiet --release -p shardex-agent --example queue_sim
mkdir -p bench/results
out=bench/results/queue_sim.md
{
    echo "## queue_sim: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $("$SERVER" --version | sed -n 's/.* v=\([^ ]*\).*/redis-server \1/p'), commit $(git rev-parse --short HEAD)"
    echo
} >"$out"
status=0
timeout 300 "$REPO/target/release/examples/queue_sim" --redis-server "$SERVER" "$@" | tee -a "$out" || status=$?
echo "queue_sim.sh: written to $out" >&2
exit "$status"
