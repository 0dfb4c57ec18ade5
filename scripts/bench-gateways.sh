#!/usr/bin/env bash
# Gateway cost per player: `sidereal up` with replication's own game port (0 gateways) and with
# 1, 2 and 4 `sidereal gateway` processes (GATEWAYS="0 1 2 4" by default), the same light bots
# each time; CPU of replication and of the gateways read from /proc over the middle of the
# flight. Reports, never fails on a slow machine. SIDEREAL_BIN picks another binary (the release
# build by default). Usage: scripts/bench-gateways.sh [players] [entities] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
players=${1:-100}
entities=${2:-5000}
seconds=${3:-30}
bin="${SIDEREAL_BIN:-$CARGO_TARGET_DIR/release/sidereal}"
[ -x "$bin" ] || cargo build --release --locked --bin sidereal
hz=$(getconf CLK_TCK)

cpu_ticks() { # summed utime+stime of the given pids
  local t=0
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
metric() { # sum of metric $1 over the /metrics URLs after it
  local name=$1 sum=0
  shift
  for u in "$@"; do
    v=$(curl -sf "$u/metrics" | awk -v m="$name" '$1 == m {print $2}' || true)
    sum=$(awk -v a="$sum" -v b="${v:-0}" 'BEGIN {print a + b}')
  done
  echo "$sum"
}

for gateways in ${GATEWAYS:-0 1 2 4}; do
  data=$(mktemp -d)
  "$bin" up --data "$data" --shards 2 --no-autoscale --entities "$entities" \
    --gateways "$gateways" --max-sessions-per-address 100000 >/dev/null 2>"$data/up.log" &
  up=$!
  for _ in $(seq 1 120); do
    curl -sf http://127.0.0.1:7700/healthz >/dev/null 2>&1 && break
    sleep 0.5
  done
  urls=()
  for i in $(seq 0 $((gateways - 1))); do urls+=("http://127.0.0.1:$((9200 + i))"); done
  for _ in $(seq 1 120); do
    [ "$(metric sidereal_gateway_linked "${urls[@]}")" = "$gateways" ] && break
    sleep 0.5
  done
  sleep 3 # placement
  # Logins are rate-limited per address: the bots take a while to be all in (about 30 s for
  # 100). Measured once every player is connected (or after 45 s, whatever is in by then).
  "$bin" bot --count "$players" --full-bots 0 --http http://127.0.0.1:7700 \
    --duration "$((seconds + 50))" >"$data/bots.log" 2>&1 &
  bots=$!
  for _ in $(seq 1 90); do
    [ "$(metric sidereal_players_connected http://127.0.0.1:7700)" -ge "$players" ] && break
    sleep 0.5
  done
  sleep 3
  repl=$(pgrep -f "sidereal replication" | head -1)
  gws=$(pgrep -f "sidereal gateway" || true)
  if [ "$gateways" = 0 ]; then src=(http://127.0.0.1:7700); else src=("${urls[@]}"); fi
  echo "  replication pid $repl, gateway pids: $(echo $gws)"
  r0=$(cpu_ticks "$repl"); g0=$(cpu_ticks $gws)
  u0=$(metric sidereal_game_state_updates_total "${src[@]}")
  e0=$(metric sidereal_game_entity_updates_total "${src[@]}")
  window=$seconds
  connected=$(metric sidereal_players_connected http://127.0.0.1:7700)
  sleep "$window"
  r1=$(cpu_ticks "$repl"); g1=$(cpu_ticks $gws)
  u1=$(metric sidereal_game_state_updates_total "${src[@]}")
  e1=$(metric sidereal_game_entity_updates_total "${src[@]}")
  wait "$bots" || true
  swarm=$(grep '^SWARM' "$data/bots.log" || echo "SWARM (none)")
  kill "$up" 2>/dev/null || true
  wait "$up" 2>/dev/null || true
  awk -v g="$gateways" -v p="$connected" -v w="$window" -v hz="$hz" \
    -v r="$((r1 - r0))" -v gw="$((g1 - g0))" -v u="$(awk -v a="$u1" -v b="$u0" 'BEGIN{print a-b}')" \
    -v e="$(awk -v a="$e1" -v b="$e0" 'BEGIN{print a-b}')" 'BEGIN {
      rc = r / hz / w * 100; gc = gw / hz / w * 100;
      per = (g == 0 ? rc : gc) / 100 / (u > 0 ? u / w : 1) * 1e6;
      printf "gateways=%d players_in=%d replication_cpu=%.1f%% gateways_cpu=%.1f%% updates_per_s=%.0f in_view=%.0f us_per_player_update=%.1f\n",
        g, p, rc, gc, u / w, (u > 0 ? e / u : 0), per }'
  echo "  $swarm"
  rm -rf "$data"
done
