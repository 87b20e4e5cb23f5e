#!/usr/bin/env bash
# Headless Chromium for the timeline's browser test and benchmark (issue 10).
#   scripts/chromium.sh install   make sure a chromium exists (Debian's package via apt-get, as root)
#   scripts/chromium.sh bin       print the chromium path (exit 1 when there is none)
# SHARDEX_CHROMIUM names another binary (a Chrome, chromium-headless-shell...).
set -euo pipefail

log() { printf 'chromium.sh: %s\n' "$*" >&2; }

find_bin() {
    if [[ -n "${SHARDEX_CHROMIUM:-}" && -x "$SHARDEX_CHROMIUM" ]]; then
        echo "$SHARDEX_CHROMIUM"; return 0
    fi
    local c
    for c in chromium chromium-browser google-chrome; do
        if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
    done
    for c in /usr/bin/chromium /usr/lib/chromium/chromium; do
        if [[ -x "$c" ]]; then echo "$c"; return 0; fi
    done
    return 1
}

install() {
    local bin
    if bin="$(find_bin)"; then
        log "chromium: $bin ($("$bin" --version 2>/dev/null || echo 'version unknown'))"
        return 0
    fi
    if [[ $EUID -ne 0 ]]; then
        log "chromium not found and not root: install Debian's 'chromium' package (apt-get install chromium)"
        exit 1
    fi
    log "installing chromium with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    local rc=0
    { apt-get update && apt-get install -y --no-install-recommends chromium fonts-dejavu-core; } || rc=$?
    (( rc == 0 )) || { log "apt-get install chromium failed ($rc)"; exit "$rc"; }
    bin="$(find_bin)" || { log "chromium installed but not found"; exit 1; }
    log "chromium: $bin ($("$bin" --version 2>/dev/null || echo 'version unknown'))"
}

case "${1:-}" in
    install) install ;;
    bin) find_bin || { log "chromium not found: run scripts/setup.sh"; exit 1; } ;;
    *) echo "usage: $0 install|bin" >&2; exit 2 ;;
esac
