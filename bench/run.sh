#!/usr/bin/env bash
# shardex benchmark: prints a markdown report and writes bench/results/latest.md.
#   bash bench/run.sh            full run (5 repetitions per variant; ~13 min on 2 cores)
#   bash bench/run.sh --quick    1 repetition of everything (checks the script; ~4 min)
# Other options go to bench/bench.py: --reps N, --sections 1,2,3,4,5, --keep.
# Which shardex:
#   default           target/release/shardex as it is (SHARDEX_BIN overrides the path)
#   BENCH_BUILD=1     `cargo build --release -p shardex-cli` in the repo first
#   BENCH_BUILD=head  build the committed HEAD (git archive, so nobody's uncommitted edits)
#                     in /tmp/shardex-bench-build, reused while crates/ and Cargo.* do not change
# bench.py copies the binary before measuring, so a rebuild during the run does not matter.
# BENCH_VENV: the venv with pytest and pytest-xdist (default .venv, see scripts/setup.sh).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${BENCH_VENV:-$REPO/.venv}/bin/python"
if [[ ! -x "$PY" ]]; then
    echo "bench: no venv python at $PY (run scripts/setup.sh)" >&2; exit 2
fi
case "${BENCH_BUILD:-0}" in
    0) ;;
    1) (cd "$REPO" && cargo build --release -p shardex-cli) >&2
       export SHARDEX_BIN="$REPO/target/release/shardex" ;;
    head)
        sha="$(git -C "$REPO" rev-parse --short HEAD)"
        # Cache key: the committed sources of the build, so commits elsewhere reuse the binary.
        key="$(git -C "$REPO" rev-parse HEAD:crates HEAD:Cargo.toml HEAD:Cargo.lock | sha1sum | cut -c1-12)"
        dir=/tmp/shardex-bench-build
        bin="$dir/shardex-$key"
        if [[ ! -x "$bin" ]]; then
            rm -rf "$dir/src-$key" && mkdir -p "$dir/src-$key"
            git -C "$REPO" archive HEAD | tar -x -C "$dir/src-$key"
            (cd "$dir/src-$key" && CARGO_TARGET_DIR="$dir/target" cargo build --release -p shardex-cli) >&2
            cp "$dir/target/release/shardex" "$bin.tmp" && mv "$bin.tmp" "$bin"
            rm -rf "$dir/src-$key"
        fi
        export SHARDEX_BIN="$bin" BENCH_SHARDEX_DESC="built from committed HEAD $sha" ;;
    *) echo "bench: BENCH_BUILD must be 0, 1 or head" >&2; exit 2 ;;
esac
exec "$PY" "$REPO/bench/bench.py" "$@"
