#!/usr/bin/env bash
# The chart end to end on a cluster whose nodes run real containers: the steps e2e/kind.sh
# runs on kind and e2e/scripts/node-e2e.sh runs on the local real node, so the path users take
# is the path tested.
#   chart-e2e.sh IMAGE NEXT_IMAGE [helm install args...]
# IMAGE must be loadable by the nodes (pullPolicy Never); NEXT_IMAGE is the same build under
# another name, the "new version" `helm upgrade` rolls to. KUBECONFIG names the cluster;
# HELM (default: helm) and NAMESPACE (default: sidereal) may be set.
#  1. helm install: HA replication (two replicas) on the trial Postgres, two gateways; every
#     pod Running and Ready from a started container.
#  2. The operator takes every root Sector up on shard pods it creates from the pool template.
#     Where the cluster enforces NetworkPolicies (PROBE_IMAGE set, e.g. node-e2e.sh), a pod
#     outside the allowed set cannot reach replication's control port; the operator's can.
#  3. Bots, in a pod, log in and fly through the game Service.
#  4. A shard pod killed: its sectors move, no durable entity lost or doubled.
#  5. helm upgrade to NEXT_IMAGE with bots flying: every Deployment and every shard pod rolls,
#     no bot disconnected, no durable entity lost.
#  6. helm uninstall leaves only what docs/operations.md says it leaves.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
image=${1:?usage: chart-e2e.sh IMAGE NEXT_IMAGE [helm args...]}
next_image=${2:?usage: chart-e2e.sh IMAGE NEXT_IMAGE [helm args...]}
shift 2
helm=${HELM:-helm}
ns=${NAMESPACE:-sidereal}
release=sidereal
t0=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - t0 ))" >&2; }
k() { kubectl -n "$ns" "$@"; }

diagnose() {
  echo "---- diagnostics ----" >&2
  k get pods,svc,sectors,shardpools -o wide >&2 || true
  k get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 30 >&2 || true
  local p
  for p in $(k get pods -o name 2>/dev/null); do
    echo "---- $p" >&2
    k logs "$p" --all-containers --tail=25 >&2 2>/dev/null || true
  done
}
fail() { echo "error: $*" >&2; diagnose; exit 1; }
# A port-forward of control_api interrupted by a failure goes with the script.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

# Waits for a condition (a shell function or command) with a deadline.
until_true() {
  local what=$1 seconds=$2; shift 2
  local deadline=$(( $(date +%s) + seconds ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${seconds}s"
    sleep 1
  done
}

# Every pod of the release Running and Ready, each from a started container.
all_pods_ready() {
  local pods; pods=$(k get pods -l 'app.kubernetes.io/name!=sidereal-bots' -o json)
  [ "$(jq '.items | length' <<<"$pods")" -gt 0 ] || return 1
  jq -e '[.items[] | select(.status.phase == "Succeeded" | not)] | all(
      .status.phase == "Running"
      and ((.status.conditions // []) | any(.type == "Ready" and .status == "True"))
      and ((.status.containerStatuses // []) | length > 0 and all(.state.running.startedAt != null and (.containerID // "" | startswith("containerd://")))))' \
    <<<"$pods" >/dev/null
}

# replication's control API (port 7700, bearer token), on the leader's pod, through a
# port-forward opened for the call: a takeover moves the leader. ROLE=standby asks a standby.
control_api() {
  local path=$1 pod port pf out=""
  pod=$(k get pods -l "app.kubernetes.io/name=sidereal-replication,sidereal.dev/role=${ROLE:-leader}" -o name | head -1)
  [ -n "$pod" ] || return 1
  port=$(( 20000 + RANDOM % 20000 ))
  k port-forward "$pod" "$port:7700" >/dev/null 2>&1 &
  pf=$!
  local deadline=$(( $(date +%s) + 10 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if out=$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port$path" 2>/dev/null); then break; fi
    out=""
    sleep 0.3
  done
  kill "$pf" 2>/dev/null || true
  wait "$pf" 2>/dev/null || true
  [ -n "$out" ] && printf '%s' "$out"
}

# Durable entities (ships and asteroids: what the store keeps) as sorted ids, each with its
# owner; none may be in transit.
durable_ids() {
  control_api /v1/entities | jq -r '.entities[] | select(.kind == "Ship" or .kind == "Asteroid") | .id' | sort
}
settled() {
  local entities; entities=$(control_api /v1/entities) || return 1
  jq -e '.entities | length > 0 and all(.inTransit | not)' <<<"$entities" >/dev/null
}

shards_ready() {
  k get pods -l app.kubernetes.io/name=sidereal-shard -o json \
    | jq -e --arg gone "${1:-}" '[.items[] | select(.metadata.name != $gone)] | length > 0 and all(.status.containerStatuses[0].ready)' >/dev/null
}
bots_done() { k get pod "$1" -o jsonpath='{.status.phase}' | grep -qE 'Succeeded|Failed'; }
bots_connected() { k logs "$1" 2>/dev/null | grep -q 'connected'; }

# Runs bots in a pod.
start_bots() {
  local name=$1 count=$2 seconds=$3
  k delete pod "$name" --ignore-not-found --wait=true >/dev/null
  k run "$name" --restart=Never --image="$image" --image-pull-policy=Never --labels=app.kubernetes.io/name=sidereal-bots -- \
    bot --count "$count" --duration "$seconds" --prefix "$name" --http "http://$release-gateway-game.$ns.svc:7704" >/dev/null
}
# Waits for a bot pod to finish and prints its SWARM report.
bots_report() {
  local name=$1 seconds=$2
  until_true "bots $name finished" "$seconds" bots_done "$name"
  local report; report=$(k logs "$name" | grep '^SWARM' || true)
  [ -n "$report" ] || { k logs "$name" >&2; fail "bots $name printed no SWARM report"; }
  [ "$(k get pod "$name" -o jsonpath='{.status.phase}')" = Succeeded ] || fail "bots $name failed: $report"
  printf '%s\n' "$report"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# ---- 1. install ------------------------------------------------------------------------------
step "helm install $release ($image, HA replication on the trial Postgres, two gateways)"
"$helm" install "$release" "$root/charts/sidereal" --namespace "$ns" --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never \
  --set postgres.enabled=true --set replication.replicas=2 \
  --set gateways.enabled=true --set gateways.autoscaling.enabled=false --set gameService.type=NodePort \
  -f "$here/small-node.values.yaml" "$@" --wait --timeout 5m >/dev/null || fail "helm install did not become ready"
until_true "every pod Running and Ready from a started container" 120 all_pods_ready
token=$(k get secret sidereal-control -o jsonpath='{.data.token}' | base64 -d)
k get pods -o wide >&2

# As docs/operations.md says (Install): once the game Service has an address, connect tokens
# name it. Players then reach whichever gateways are live, so a rollout of the gateways cannot
# leave a token naming only gone pods. Bots run in the cluster: the ClusterIP is their address.
step "connect tokens name the game Service (helm upgrade --set replication.publicGameAddresses): the pods roll"
game_ip=$(k get svc "$release-gateway-game" -o jsonpath='{.spec.clusterIP}')
before_uids=$(k get pods -l 'app.kubernetes.io/name in (sidereal-replication,sidereal-gateway)' -o jsonpath='{.items[*].metadata.uid}')
"$helm" upgrade "$release" "$root/charts/sidereal" --namespace "$ns" --reuse-values \
  --set "replication.publicGameAddresses={$game_ip:7702}" --wait --timeout 5m >/dev/null || fail "helm upgrade did not become ready"
replaced() {
  k get pods -l 'app.kubernetes.io/name in (sidereal-replication,sidereal-gateway)' -o json \
    | jq -e --arg old "$before_uids" '($old | split(" ")) as $olds | .items | length > 0 and all(.metadata.uid as $u | $olds | index($u) | not)' >/dev/null \
    && all_pods_ready
}
until_true "replication and gateway pods replaced" 180 replaced

# ---- 2. the world up on shard pods the operator made -------------------------------------------
step "the operator takes every root Sector up on shard pods from the pool template"
k wait --for=condition=Ready sector --all --timeout=5m >/dev/null || fail "the root Sectors are not Ready"
until_true "shard pods Running and Ready" 120 shards_ready
until_true "every leaf sector placed, no entity in transit" 60 settled
status=$(control_api /v1/status)
echo "$status" | jq -c '{shardsConnected, leafSectors, entities, players, store, storeHealthy}' >&2
[ "$(jq -r .store <<<"$status")" = postgres ] || fail "replication does not keep the world in the trial Postgres: $status"
# The standby replica follows the store while it waits: every stored entity, read moments ago.
stored=$(durable_ids | wc -l)
standby_follows() {
  local m; m=$(ROLE=standby control_api /metrics) || return 1
  awk -v n="$stored" '$1 == "sidereal_standby_followed_entities" && $2 > 0 && $2 >= n * 0.9 {e=1}
      $1 == "sidereal_standby_follow_age_seconds" && $2 < 5 {a=1} END {exit !(e && a)}' <<<"$m"
}
until_true "the standby replica following the store ($stored entities)" 60 standby_follows

# ---- NetworkPolicies, where the cluster enforces them (PROBE_IMAGE: a TCP probe image) ------
if [ -n "${PROBE_IMAGE:-}" ]; then
  step "NetworkPolicies enforced: only the operator reaches replication's control port"
  # Runs the probe in a pod with these labels for SECONDS; prints what it said ("reached" or
  # "unreachable"). A policy controller admits a new pod once it has seen it start: the probe
  # keeps trying, so "unreachable" means for the whole window.
  probe() {
    local name=$1 labels=$2 target=$3 seconds=$4
    k delete pod "$name" --ignore-not-found --wait=true >/dev/null
    k run "$name" --restart=Never --image="$PROBE_IMAGE" --image-pull-policy=Never \
      --labels="app.kubernetes.io/name=${labels:-sidereal-probe}" -- "$target" "$seconds" >/dev/null
    until_true "probe $name finished" 60 bots_done "$name"
    k logs "$name"
    k delete pod "$name" --wait=false >/dev/null
  }
  control="$release-replication.$ns.svc:7700"
  out=$(probe np-stranger "" "$control" 10)
  [[ $out == unreachable* ]] || fail "a pod outside the allowed set reached replication's control port: $out"
  operator_out=$(probe np-operator "sidereal-operator,app.kubernetes.io/instance=$release" "$control" 30)
  [[ $operator_out == reached* ]] || fail "a pod with the operator's labels could not reach the control port: $operator_out"
  out=$(probe np-player "" "$release-gateway-game.$ns.svc:7704" 30)
  [[ $out == reached* ]] || fail "the login port must stay open to anyone: $out"
  echo "control port 7700: a stranger pod refused for 10 s; a pod with the operator's labels $operator_out" >&2
fi

# ---- 3. bots fly ---------------------------------------------------------------------------------
step "bots fly through the game Service"
start_bots bots-a 10 20
report=$(bots_report bots-a 120)
echo "$report" >&2
[ "$(field connected "$report")" = 10 ] && [ "$(field disconnects "$report")" = 0 ] && [ "$(field moved "$report")" -gt 0 ] \
  || fail "bots did not all connect and fly: $report"

# ---- 4. a shard pod killed -----------------------------------------------------------------------
step "a shard pod killed: its sectors move, nothing lost"
before=$(durable_ids)
[ -n "$before" ] || fail "no durable entity to follow"
victim=$(k get pods -l app.kubernetes.io/name=sidereal-shard -o jsonpath='{.items[0].metadata.name}')
k delete pod "$victim" --grace-period=0 --force >/dev/null 2>&1
until_true "a shard pod to replace $victim" 120 shards_ready "$victim"
k wait --for=condition=Ready sector --all --timeout=3m >/dev/null || fail "Sectors not Ready after the kill"
until_true "every entity owned again, none in transit" 90 settled
after=$(durable_ids)
[ "$before" = "$after" ] || fail "durable entities changed across the kill: $(diff <(echo "$before") <(echo "$after") | head -5)"
echo "$(wc -l <<<"$after") durable entities, the same ids before and after killing $victim" >&2

# ---- 5. helm upgrade rolls everything, bots flying -----------------------------------------------
step "helm upgrade to $next_image with bots flying: every pod rolls"
before=$(durable_ids)
old_pods=$(k get pods -l 'app.kubernetes.io/name in (sidereal-operator,sidereal-replication,sidereal-gateway,sidereal-shard)' -o jsonpath='{.items[*].metadata.uid}')
start_bots bots-b 10 150
until_true "bots-b connected" 60 bots_connected bots-b
"$helm" upgrade "$release" "$root/charts/sidereal" --namespace "$ns" --reuse-values \
  --set image.repository="${next_image%:*}" --set image.tag="${next_image##*:}" --wait --timeout 5m >/dev/null \
  || fail "helm upgrade did not become ready"
rolled() {
  local pods; pods=$(k get pods -l 'app.kubernetes.io/name in (sidereal-operator,sidereal-replication,sidereal-gateway,sidereal-shard)' -o json)
  jq -e --arg old "$old_pods" --arg img "$next_image" '
      ($old | split(" ")) as $olds
      | .items | length > 0
        and all(.metadata.uid as $u | $olds | index($u) | not)
        and all(.spec.containers[0].image | endswith($img))' <<<"$pods" >/dev/null && all_pods_ready
}
until_true "every operator, replication, gateway and shard pod replaced by one of $next_image" 240 rolled
k wait --for=condition=Ready sector --all --timeout=3m >/dev/null || fail "Sectors not Ready after the upgrade"
until_true "every entity owned, none in transit" 90 settled
report=$(bots_report bots-b 240)
echo "$report" >&2
[ "$(field connected "$report")" = 10 ] && [ "$(field disconnects "$report")" = 0 ] && [ "$(field latency_samples "$report")" -gt 0 ] \
  || fail "bots were disconnected by the upgrade: $report"
after=$(durable_ids)
missing=$(comm -23 <(echo "$before") <(echo "$after") | wc -l)
[ "$missing" = 0 ] || fail "$missing durable entities lost in the upgrade"
echo "upgrade: every pod rolled to $next_image; 0 of 10 bots disconnected ($(field reconnects "$report") reconnects to another gateway, longest pause $(field longest_gap_ms "$report") ms); $(wc -l <<<"$after") durable entities, none lost" >&2
k get pods -o wide >&2

# ---- 6. uninstall ----------------------------------------------------------------------------------
step "helm uninstall leaves only what it documents"
k delete pod bots-a bots-b --ignore-not-found >/dev/null
"$helm" uninstall "$release" --namespace "$ns" --wait --timeout 3m >/dev/null || fail "helm uninstall failed"
# What the release made, and what its pods made (shard pods, the operator's Lease), except the
# namespace's own (the root CA ConfigMap, the default ServiceAccount).
left() {
  k get all,configmaps,secrets,serviceaccounts,roles,rolebindings,networkpolicies,poddisruptionbudgets,persistentvolumeclaims,leases,sectors,shardpools \
    -o name 2>/dev/null | grep -vE '^(configmap/kube-root-ca.crt|serviceaccount/default)$' || true
}
# docs/operations.md, "Uninstall": the operator's leader Lease stays (its pods made it), and so
# do the CRDs (helm never deletes what a chart's crds/ installed).
documented='^lease.coordination.k8s.io/sidereal-operator$'
nothing_left() { [ -z "$(left | grep -vE "$documented")" ]; }
deadline=$(( $(date +%s) + 120 ))
until nothing_left; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "helm uninstall left behind: $(left | grep -vE "$documented" | tr '\n' ' ')"
  sleep 1
done
kubectl get crd sectors.sidereal.dev shardpools.sidereal.dev >/dev/null || fail "helm uninstall deleted the CRDs (it should never)"
echo "left behind, as documented: $(left | tr '\n' ' ')and the CRDs" >&2
step "chart e2e passed"
