#!/usr/bin/env bash
# Checkpoint throughput and restore time on a throwaway Postgres and on SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
dir=$(mktemp -d "${TMPDIR:-/tmp}/sidereal-bench-pg.XXXXXX")
trap 'scripts/postgres.sh stop "$dir"' EXIT
SIDEREAL_BENCH_DATABASE_URL=$(scripts/postgres.sh start "$dir") cargo bench -p sidereal-replication --bench store
