#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests: initdb in a temp dir, a random port, torn down by
# `stop`. Installs Debian's postgresql package if no server binaries are found.
#   postgres.sh start DIR   -> prints the DATABASE_URL
#   postgres.sh stop DIR | pause DIR | resume DIR
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop|pause|resume DIR}
dir=${2:?usage: postgres.sh start|stop|pause|resume DIR}

find_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1
}
bin=$(find_bin)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL from Debian's packages" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
      || { echo "error: apt-get install postgresql failed; install PostgreSQL server binaries and rerun" >&2; exit 2; }
    bin=$(find_bin)
  else
    echo "error: PostgreSQL server binaries not found (Debian: apt-get install postgresql)" >&2; exit 2
  fi
fi
# PostgreSQL refuses to run as root: run it as the postgres user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}
data="$dir/pgdata"
case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    echo "$port" > "$dir/port"
    as_pg "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop) [ -d "$data" ] && as_pg "$bin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$dir" ;;
  pause) as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null ;;
  resume)
    port=$(cat "$dir/port")
    as_pg "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
    ;;
  *) echo "usage: postgres.sh start|stop|pause|resume DIR" >&2; exit 2 ;;
esac
