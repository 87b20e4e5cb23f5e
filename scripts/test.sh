#!/usr/bin/env bash
# The one command that runs all of shardex's checks and tests:
#   setup (venvs + PostgreSQL binaries) -> private PostgreSQL -> fmt -> clippy -> the plugin's ruff and
#   pytester tests (scripts/test_python.sh) -> cargo test (unit + e2e) -> the wheel
#   (scripts/wheel.sh --smoke: pip install into a fresh venv, run a fixture suite).
# Every step runs even if an earlier one failed; the exit status is 0 only if all passed.
# Env: SHARDEX_KEEP_PG=1 keeps the PostgreSQL server running afterwards (it is also left running
# if it was already running before this script started).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

log() { printf '\n=== test.sh: %s\n' "$*" >&2; }

log "setup"
bash scripts/setup.sh || { echo "test.sh: scripts/setup.sh failed" >&2; exit 1; }

pg_was_running=0
bash scripts/pg.sh status >/dev/null 2>&1 && pg_was_running=1
cleanup() {
    if [[ $pg_was_running -eq 0 && "${SHARDEX_KEEP_PG:-0}" != 1 ]]; then
        bash scripts/pg.sh stop || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "pg.sh start"
bash scripts/pg.sh start || { echo "test.sh: scripts/pg.sh start failed" >&2; exit 1; }
eval "$(bash scripts/pg.sh env)"

export VIRTUAL_ENV="$REPO/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-$([[ -t 1 ]] && echo auto || echo never)}"

failed_steps=()
step() {
    local name="$1"; shift
    log "$name"
    local start=$SECONDS
    if "$@"; then
        printf 'test.sh: %s ok (%ss)\n' "$name" "$((SECONDS - start))" >&2
    else
        printf 'test.sh: %s FAILED (exit %s, %ss)\n' "$name" "$?" "$((SECONDS - start))" >&2
        failed_steps+=("$name")
    fi
}

step "cargo fmt" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
step "python plugin (ruff, pytester)" bash scripts/test_python.sh
# --all-targets: unit, integration and e2e tests (there are no doc-tests to run).
test_log="$(mktemp)"
run_tests() { cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$test_log"; return "${PIPESTATUS[0]}"; }
step "cargo test" run_tests
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$test_log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .*; ([0-9]+) failed' "$test_log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
rm -f "$test_log"
# `pip install shardex` as users get it: the wheel (maturin, pyproject.toml) installed into a
# fresh venv that holds only pytest, then a fixture suite run with it, no Rust toolchain on
# PATH. Built from the dev profile: maturin reuses most of what `cargo test` just compiled
# (a release build would add minutes; the packaging is the same).
step "wheel (pip install, shardex run without Rust)" bash scripts/wheel.sh --smoke --profile dev

if ((${#failed_steps[@]})); then
    log "FAILED: ${failed_steps[*]}"
    echo "tests: $passed passed, $failed failed"
    exit 1   # never pass through a tool's own status (e.g. pytest's 5 or cargo's 101)
fi
log "all passed"
echo "tests: $passed passed, $failed failed"
exit 0
