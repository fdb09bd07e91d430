#!/usr/bin/env bash
# A throwaway PostgreSQL for the backend tests: one cluster in DIR, owned by
# the `postgres` system user (PostgreSQL refuses to run as root), listening on
# 127.0.0.1:PORT only, trust authentication, no fsync (test data is disposable).
#
#   scripts/services/postgres.sh start DIR [PORT]   (PORT default 15432)
#   scripts/services/postgres.sh stop DIR
#   scripts/services/postgres.sh restart DIR        (same data, same port)
#
# Prints the connection URL on start. Run as root (CI) or as `postgres`.
set -euo pipefail

action=${1:?usage: postgres.sh start|stop|restart DIR [PORT]}
dir=${2:?usage: postgres.sh start|stop|restart DIR [PORT]}
port=${3:-15432}

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bindir" ]; then
  echo "postgres.sh: no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)" >&2
  exit 1
fi

as_postgres() {
  if [ "$(id -un)" = postgres ]; then sh -c "$1"; else su postgres -s /bin/sh -c "$1"; fi
}

start() {
  as_postgres "'$bindir/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t 60 \
    -o \"-k '$dir' -p $port -c listen_addresses=127.0.0.1 -c fsync=off \
    -c full_page_writes=off -c max_connections=200\" start" >/dev/null
}

case "$action" in
  start)
    rm -rf "$dir"
    mkdir -p "$dir"
    # The server user must own its directory and reach it through its parents.
    chown postgres:postgres "$dir" 2>/dev/null || true
    chmod 755 "$(dirname "$dir")" 2>/dev/null || true
    as_postgres "'$bindir/initdb' -D '$dir/data' -U postgres --auth=trust \
      -E UTF8 --locale=C.UTF-8 --no-sync >'$dir/initdb.log' 2>&1" || {
      cat "$dir/initdb.log" >&2
      exit 1
    }
    echo "$port" >"$dir/port"
    start
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  restart)
    as_postgres "'$bindir/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null 2>&1 || true
    port=$(cat "$dir/port")
    start
    ;;
  stop)
    [ -d "$dir/data" ] || exit 0
    as_postgres "'$bindir/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null 2>&1 || true
    ;;
  *)
    echo "postgres.sh: unknown action '$action' (start, stop, restart)" >&2
    exit 2
    ;;
esac
