#!/bin/sh
# The trial Postgres image of the local real node (built from Debian's packages by
# e2e/scripts/build-images.sh): the subset of the official image's contract that the chart
# uses. POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD and PGDATA; the first start creates the
# cluster, every start serves it on every address with password authentication.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
bin=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: POSTGRES_PASSWORD is empty; the database would be open to anyone" >&2
    exit 1
  fi
  # Only sh and postgres are in the image: initdb creates PGDATA, the password goes by a pipe.
  printf '%s' "$POSTGRES_PASSWORD" | "$bin/initdb" -D "$PGDATA" -U "$POSTGRES_USER" \
    --pwfile=/dev/stdin -E UTF8 --no-locale --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    "$bin/postgres" --single -D "$PGDATA" -j postgres <<SQL >/dev/null
CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER";
SQL
  fi
  echo "initialised $PGDATA: user $POSTGRES_USER, database $POSTGRES_DB"
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' -c jit=off \
  -c unix_socket_directories=/var/run/postgresql
