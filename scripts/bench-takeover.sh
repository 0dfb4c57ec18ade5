#!/usr/bin/env bash
# Takeover by a standby replication, with players flying: `sidereal up --standby` (SQLite, two
# shards, one gateway) and light bots flying through the gateway; kill -9 the leader N times
# (`up` promotes the standby and starts a new one behind it). For each kill, the time until the
# new leader accepts a placement change (PUT /v1/placement: both shards resumed onto it); then
# what the bots saw over all the kills: disconnects, the longest pause between world updates,
# the slowest command to show; and whether any shard process had to be restarted.
# Prints each takeover and p50/max; reports, never fails on a slow machine. SIDEREAL_BIN picks
# the binary (the release build by default). Uses up's default ports (7700...).
# Usage: [SIGNAL=TERM] scripts/bench-takeover.sh [kills] [entities] [players]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
kills=${1:-10}
entities=${2:-20000}
players=${3:-20}
signal=${SIGNAL:-9} # SIGNAL=TERM: a graceful stop (a rollout), handing over without the lease
bin="${SIDEREAL_BIN:-$CARGO_TARGET_DIR/release/sidereal}"
[ -x "$bin" ] || cargo build --release --locked --bin sidereal
data=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; sleep 1; rm -rf "$data"' EXIT
export RUST_LOG=warn
"$bin" up --data "$data" --shards 2 --no-autoscale --entities "$entities" --gateways 1 \
  --standby --max-sessions-per-address 100000 >/dev/null 2>"$data/up.log" &
pids+=($!)
base=http://127.0.0.1:7700
metric() { curl -sf "$1/metrics" | awk -v m="$2" '$1 == m {print $2}' || true; }
for _ in $(seq 1 120); do
  [ "$(metric http://127.0.0.1:9200 sidereal_gateway_linked)" = "1" ] && break
  sleep 0.5
done
auth=(-H "Authorization: Bearer $(cat "$data/control-token")")
accepted() { # the current placement again, one generation on
  local body
  body=$(curl -sf "${auth[@]}" "$base/v1/placement" | python3 -c '
import json, sys
p = json.load(sys.stdin)
p["generation"] += 1
print(json.dumps(p))' 2>/dev/null) || return 1
  curl -sf -X PUT "${auth[@]}" -H 'content-type: application/json' -d "$body" \
    "$base/v1/placement" >/dev/null 2>&1
}
until accepted; do sleep 0.2; done
"$bin" bot --count "$players" --full-bots 0 --http "$base" --duration "$((kills * 8 + 40))" \
  >"$data/bots.log" 2>&1 &
bots=$!
pids+=($bots)
for _ in $(seq 1 120); do
  [ "$(metric http://127.0.0.1:9200 sidereal_gateway_players)" = "$players" ] && break
  sleep 0.5
done
shards_before=$(pgrep -f "sidereal shard --id" | sort | tr '\n' ' ')
times=()
for i in $(seq 1 "$kills"); do
  sleep 4 # a standby opens the store and waits behind the live lease
  # The leader is whoever holds the control port (a promoted standby keeps --standby in its
  # command line).
  leader=$(ss -Hltnp 'sport = :7700' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  kill "-$signal" "$leader"
  t0=$(date +%s%N)
  until accepted; do sleep 0.02; done
  t=$(( ($(date +%s%N) - t0) / 1000000 ))
  # What the new leader read on taking the store: a warm standby, only the last changes.
  read_rows=$(metric "$base" sidereal_store_rows_read_at_start)
  restore_s=$(metric "$base" sidereal_store_restore_seconds)
  echo "kill $i: placement accepted again after $t ms (the new leader read ${read_rows:-?} rows from the store, restored in ${restore_s:-?} s)"
  times+=("$t")
done
shards_after=$(pgrep -f "sidereal shard --id" | sort | tr '\n' ' ')
printf '%s\n' "${times[@]}" | sort -n | awk -v e="$entities" -v s="$signal" '{a[NR]=$1} END {printf "takeover over %d kills -%s (%d entities): p50 %d ms, max %d ms\n", NR, s, e, a[int((NR+1)/2)], a[NR]}'
[ "$shards_before" = "$shards_after" ] && echo "shard processes: the same throughout (none restarted)" \
  || echo "shard processes: before $shards_before, after $shards_after"
wait "$bots" || true
grep '^SWARM' "$data/bots.log" || tail -5 "$data/bots.log"
