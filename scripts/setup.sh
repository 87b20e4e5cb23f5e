#!/usr/bin/env bash
# Idempotent developer/CI setup for shardex's tests:
#   - .venv in the repo with requirements-dev.txt installed (skipped when the stamp matches)
#   - PostgreSQL server binaries (apt-get) if no initdb/pg_ctl can be found
# Env: SHARDEX_BOOTSTRAP_PYTHON (interpreter used to create .venv; default python3.11, then python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
REQ="$REPO/requirements-dev.txt"
STAMP="$VENV/.shardex-requirements.stamp"

log() { printf 'setup: %s\n' "$*" >&2; }

# ---------------------------------------------------------------- Python venv
pick_python() {
    if [[ -n "${SHARDEX_BOOTSTRAP_PYTHON:-}" ]]; then
        echo "$SHARDEX_BOOTSTRAP_PYTHON"; return
    fi
    local c
    for c in python3.11 python3; do
        if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return; fi
    done
    log "no python3 found (set SHARDEX_BOOTSTRAP_PYTHON)"; exit 1
}

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    PY="$(pick_python)"
    log "creating $VENV with $PY"
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV"; then
        # Debian's python without python3-venv: fall back to virtualenv
        log "python -m venv failed; trying virtualenv"
        rm -rf "$VENV"
        "$PY" -m pip install --quiet --user virtualenv 2>/dev/null \
            || "$PY" -m pip install --quiet --user --break-system-packages virtualenv
        "$PY" -m virtualenv "$VENV"
    fi
fi

want="$( { cat "$REQ"; "$VENV/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" == "$have" ]] \
    && "$VENV/bin/python" -c 'import pytest, xdist, pytest_django, django, psycopg, pytest_rerunfailures, pytest_timeout' >/dev/null 2>&1; then
    log "venv up to date ($VENV)"
else
    log "installing $REQ into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    echo "$want" >"$STAMP"
fi

# ---------------------------------------------------------------- PostgreSQL
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ "${SHARDEX_SKIP_PG_INSTALL:-0}" == 1 ]]; then
    log "PostgreSQL: skipped (SHARDEX_SKIP_PG_INSTALL=1; only the Django tests need it)"
elif bin="$(find_pg_bin)"; then
    log "PostgreSQL binaries: $bin"
else
    if [[ $EUID -ne 0 ]]; then
        log "PostgreSQL (initdb/pg_ctl) not found and not root: install the 'postgresql' package"; exit 1
    fi
    log "installing PostgreSQL with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends postgresql
    bin="$(find_pg_bin)" || { log "postgresql installed but initdb not found"; exit 1; }
    log "PostgreSQL binaries: $bin"
fi
