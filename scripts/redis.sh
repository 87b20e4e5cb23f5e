#!/usr/bin/env bash
# redis-server for shardex's shared-queue tests and benchmarks (issue 8).
#   scripts/redis.sh install   make sure redis-server exists (Debian's package via apt-get, as root)
#   scripts/redis.sh bin       print the redis-server path (exit 1 when there is none)
# The tests start their own private servers (127.0.0.1, a free port, a temp dir, no persistence):
# the package's own service must not run on the default port, so the install keeps it from
# starting and leaves it disabled.
set -euo pipefail

log() { printf 'redis.sh: %s\n' "$*" >&2; }

find_bin() {
    if [[ -n "${SHARDEX_REDIS_SERVER:-}" && -x "$SHARDEX_REDIS_SERVER" ]]; then
        echo "$SHARDEX_REDIS_SERVER"; return 0
    fi
    if command -v redis-server >/dev/null 2>&1; then command -v redis-server; return 0; fi
    local d
    for d in /usr/bin /usr/sbin /usr/local/bin; do
        if [[ -x "$d/redis-server" ]]; then echo "$d/redis-server"; return 0; fi
    done
    return 1
}

# The packaged service, if any: stopped and disabled (our tests never use it).
disable_service() {
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl disable --now redis-server.service >/dev/null 2>&1 || true
    fi
    if [[ -x /etc/init.d/redis-server ]]; then
        /etc/init.d/redis-server stop >/dev/null 2>&1 || true
        if command -v update-rc.d >/dev/null 2>&1; then update-rc.d redis-server disable >/dev/null 2>&1 || true; fi
    fi
}

install() {
    local bin
    if bin="$(find_bin)"; then
        log "redis-server: $bin ($("$bin" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'))"
        return 0
    fi
    if [[ $EUID -ne 0 ]]; then
        log "redis-server not found and not root: install Debian's 'redis-server' package (apt-get install redis-server)"
        exit 1
    fi
    log "installing redis-server with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d exit 101 keeps the package's postinst from starting its service.
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    { apt-get update && apt-get install -y --no-install-recommends redis-server; } || rc=$?
    if (( made_policy )); then rm -f /usr/sbin/policy-rc.d; fi
    (( rc == 0 )) || { log "apt-get install redis-server failed ($rc)"; exit "$rc"; }
    disable_service
    bin="$(find_bin)" || { log "redis-server installed but not found"; exit 1; }
    log "redis-server: $bin"
}

case "${1:-}" in
    install) install ;;
    bin) find_bin || { log "redis-server not found: run scripts/setup.sh"; exit 1; } ;;
    *) echo "usage: $0 install|bin" >&2; exit 2 ;;
esac
