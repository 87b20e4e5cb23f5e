#!/usr/bin/env bash
# The embedded plugin's own checks: ruff (lint + format), then its pytester tests under the
# newest pytest (.venv) and the oldest supported one (.venv-pytest7). Run scripts/setup.sh first.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PLUGIN="$REPO/crates/agent/src/plugin"
cd "$PLUGIN"

status=0
run() {
    printf 'test_python.sh: %s\n' "$*" >&2
    "$@" || status=1
}

run "$REPO/.venv/bin/ruff" check .
run "$REPO/.venv/bin/ruff" format --check .
for venv in .venv .venv-pytest7; do
    # -p no:cacheprovider: nothing written into the source tree; PYTHONDONTWRITEBYTECODE likewise.
    run env PYTHONDONTWRITEBYTECODE=1 "$REPO/$venv/bin/python" -m pytest tests -p no:cacheprovider -q
done
exit "$status"
