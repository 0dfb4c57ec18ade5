#!/usr/bin/env bash
# Takeover by a standby replication: a leader and a standby (`--standby`) on one SQLite store
# and the same addresses, and a shard kept running (restarted when it exits, as `sidereal up`
# does); kill -9 the leader, time until the standby accepts a placement change
# (PUT /v1/placement: the shard has linked to it again). The standby then leads, a new standby
# starts, and again, N times.
# Prints each takeover and p50/max; reports, never fails on a slow machine. SIDEREAL_BIN picks
# the binary (the release build by default). Usage: scripts/bench-takeover.sh [kills] [entities]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
kills=${1:-10}
entities=${2:-20000}
bin="${SIDEREAL_BIN:-$CARGO_TARGET_DIR/release/sidereal}"
[ -x "$bin" ] || cargo build --release --locked --bin sidereal
data=$(mktemp -d)
pids=()
trap 'kill -9 "${pids[@]}" 2>/dev/null || true; pkill -9 -f "shard --id shard-0 --replication 127.0.0.1:$link" || true; rm -rf "$data"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(port); link=$(port)
export SIDEREAL_SHARD_SECRET=bench-takeover-secret-0123456789 SIDEREAL_CONTROL_TOKEN=bench-takeover-token RUST_LOG=warn
start() { # start [--standby]: a replication on the shared store and addresses
  "$bin" replication --http "127.0.0.1:$http" --link "127.0.0.1:$link" --seed-entities "$entities" \
    --world s2-xm1-y0,s2-x0-y0 --data "$data" --no-game "$@" >/dev/null 2>>"$data/log" &
  pids+=($!)
  echo $!
}
auth=(-H "Authorization: Bearer $SIDEREAL_CONTROL_TOKEN")
next_placement() { # the current placement, one generation on, every root on shard-0
  curl -sf "${auth[@]}" "http://127.0.0.1:$http/v1/placement" | python3 -c '
import json, sys
p = json.load(sys.stdin)
p["generation"] += 1
p["sectors"] = {r: "shard-0" for r in (p.get("world") or ["s2-xm1-y0", "s2-x0-y0"])}
print(json.dumps(p))'
}
accepted() {
  local body
  body=$(next_placement 2>/dev/null) || return 1
  curl -sf -X PUT "${auth[@]}" -H 'content-type: application/json' -d "$body" \
    "http://127.0.0.1:$http/v1/placement" >/dev/null 2>&1
}
leader=$(start)
( while true; do
    "$bin" shard --id shard-0 --replication "127.0.0.1:$link" --metrics 127.0.0.1:0 \
      >/dev/null 2>>"$data/log" || true
    sleep 0.1
  done ) &
pids+=($!)
until accepted; do sleep 0.05; done
times=()
for i in $(seq 1 "$kills"); do
  standby=$(start --standby)
  sleep 2 # the standby opens the store and waits behind a live lease
  kill -9 "$leader"
  t0=$(date +%s%N)
  until accepted; do sleep 0.02; done
  t=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "kill $i: placement accepted again after $t ms"
  times+=("$t")
  leader=$standby
done
printf '%s\n' "${times[@]}" | sort -n | awk -v e="$entities" '{a[NR]=$1} END {printf "takeover over %d kills (%d entities): p50 %d ms, max %d ms\n", NR, e, a[int((NR+1)/2)], a[NR]}'
