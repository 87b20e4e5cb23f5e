#!/usr/bin/env bash
# Sets up (venv with pytest & co., release build) and runs shardex on a fixture suite with
# the embedded local queue: no server needed. Extra arguments go to `shardex run`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
SHARDEX_SKIP_PG_INSTALL=1 bash scripts/setup.sh
cargo build --release -p shardex-cli
suite="${SHARDEX_DEMO_SUITE:-fixtures/slow}"
echo "+ shardex run -n 2 --junitxml=target/demo-junit.xml $* (in $suite)"
cd "$suite"
exec "$REPO/target/release/shardex" run --python "$REPO/.venv/bin/python" -n 2 \
    --junitxml="$REPO/target/demo-junit.xml" "$@"
