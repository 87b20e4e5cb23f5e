#!/usr/bin/env bash
# A private PostgreSQL for shardex's tests.
#   scripts/pg.sh start    initdb if needed, start, wait until ready, ensure role + db (idempotent)
#   scripts/pg.sh stop     fast shutdown (no-op when not running)
#   scripts/pg.sh status   exit 0 when running, 3 when not
#   scripts/pg.sh env      print `export SHARDEX_PG_...` lines (eval "$(scripts/pg.sh env)")
# Listens on 127.0.0.1:${SHARDEX_PG_PORT:-54329}; data in <repo>/.pg/data, socket in <repo>/.pg/sock.
# initdb refuses root, so as root the server runs as the system user `shardexpg` (created if missing).
# Role `shardex` (password `shardex`, CREATEDB) owns database `shardex_app`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${SHARDEX_PG_PORT:-54329}"
HOST=127.0.0.1
APP_USER=shardex
APP_PASSWORD=shardex
APP_DB=shardex_app
ADMIN=shardex_admin
PG_OS_USER=shardexpg

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cmd="${1:-}"
case "$cmd" in
    start|stop|status|env) ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac

if [[ "$cmd" == env ]]; then
    cat <<ENV
export SHARDEX_PG_HOST=$HOST
export SHARDEX_PG_PORT=$PORT
export SHARDEX_PG_USER=$APP_USER
export SHARDEX_PG_PASSWORD=$APP_PASSWORD
export SHARDEX_PG_DB=$APP_DB
ENV
    exit 0
fi

BIN="$(find_pg_bin)" || die "PostgreSQL binaries not found: run scripts/setup.sh"

# --- who runs the server, and where its files live
if [[ $EUID -eq 0 ]]; then
    if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        log "creating system user $PG_OS_USER"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_OS_USER" 2>/dev/null \
            || useradd -r -M -s /bin/false "$PG_OS_USER"
    fi
    as_pg() { (cd / && exec 9>&- && runuser -u "$PG_OS_USER" -- "$@"); }
else
    as_pg() { (cd / && exec 9>&- && "$@"); }
fi

PGROOT="$REPO/.pg"
# The server user must be able to reach the repo (a clone under /root is not traversable by others).
if [[ $EUID -eq 0 ]] && ! (cd / && runuser -u "$PG_OS_USER" -- test -x "$REPO"); then
    PGROOT="/var/tmp/shardex-pg-$(printf '%s' "$REPO" | cksum | cut -d' ' -f1)"
    [[ "$cmd" == start ]] && log "$REPO is not reachable by $PG_OS_USER; using $PGROOT"
fi
DATA="$PGROOT/data"
LOGFILE="$PGROOT/server.log"
SOCK="$PGROOT/sock"
# unix socket paths are limited to 107 bytes
if (( ${#SOCK} + 20 > 100 )); then
    SOCK="/tmp/shardex-pg-sock-$(printf '%s' "$REPO" | cksum | cut -d' ' -f1)"
fi

pg_running() { [[ -f "$DATA/PG_VERSION" ]] && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

psql_admin() {
    "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U "$ADMIN" -d postgres "$@"
}

case "$cmd" in
status)
    if pg_running; then
        as_pg "$BIN/pg_ctl" -D "$DATA" status
        "$BIN/pg_isready" -h "$HOST" -p "$PORT" || true
        exit 0
    fi
    echo "not running (data dir $DATA)"
    exit 3
    ;;
stop)
    if pg_running; then
        as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
        log "stopped"
    else
        log "not running"
    fi
    exit 0
    ;;
esac

# ---------------------------------------------------------------- start
mkdir -p "$PGROOT" "$SOCK"
# serialise concurrent starts (fd 9 is closed in as_pg so the server does not inherit the lock)
exec 9>"$PGROOT/.lock"
flock -w 120 9 || die "timed out waiting for $PGROOT/.lock"
if [[ $EUID -eq 0 ]]; then
    chown "$PG_OS_USER" "$PGROOT" "$SOCK"
    [[ -d "$DATA" ]] && chown -R "$PG_OS_USER" "$DATA"
    touch "$LOGFILE" && chown "$PG_OS_USER" "$LOGFILE"
fi
chmod 700 "$SOCK"

if [[ ! -f "$DATA/PG_VERSION" ]]; then
    log "initdb $DATA"
    rm -rf "$DATA"
    mkdir -p "$DATA"
    [[ $EUID -eq 0 ]] && chown "$PG_OS_USER" "$DATA"
    chmod 700 "$DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U "$ADMIN" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C --no-sync --no-instructions >"$PGROOT/initdb.log" 2>&1 \
        || { cat "$PGROOT/initdb.log" >&2; die "initdb failed"; }
    echo "include_if_exists = 'shardex.conf'" >>"$DATA/postgresql.conf"
fi

# Rewritten at every start so that SHARDEX_PG_PORT and the socket location can change.
cat >"$DATA/shardex.conf" <<CONF
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 100
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
CONF
[[ $EUID -eq 0 ]] && chown "$PG_OS_USER" "$DATA/shardex.conf"

if ! pg_running; then
    if ! as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -t 60 start >/dev/null; then
        tail -n 30 "$LOGFILE" >&2 || true
        die "server failed to start (port $PORT in use? log: $LOGFILE)"
    fi
fi

for _ in $(seq 1 120); do
    if "$BIN/pg_isready" -q -h "$HOST" -p "$PORT" && "$BIN/pg_isready" -q -h "$SOCK" -p "$PORT"; then
        break
    fi
    sleep 0.25
done
"$BIN/pg_isready" -q -h "$HOST" -p "$PORT" || { tail -n 30 "$LOGFILE" >&2; die "server not ready on $HOST:$PORT"; }

if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$APP_USER'")" != 1 ]]; then
    psql_admin -c "CREATE ROLE $APP_USER LOGIN CREATEDB PASSWORD '$APP_PASSWORD'"
fi
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$APP_DB'")" != 1 ]]; then
    psql_admin -c "CREATE DATABASE $APP_DB OWNER $APP_USER"
fi
log "ready on $HOST:$PORT (data $DATA)"
