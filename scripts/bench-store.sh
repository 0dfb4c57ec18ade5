#!/usr/bin/env bash
# Checkpoint throughput, restore time and what a takeover reads, on a throwaway Postgres and on
# SQLite. `scripts/bench-store.sh takeover`: only the takeover reads.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
dir=$(mktemp -d "${TMPDIR:-/tmp}/sidereal-bench-pg.XXXXXX")
trap 'scripts/postgres.sh stop "$dir"' EXIT
SIDEREAL_BENCH_DATABASE_URL=$(scripts/postgres.sh start "$dir") cargo bench -p sidereal-replication --bench store -- "$@"
