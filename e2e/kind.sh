#!/usr/bin/env bash
# The e2e suite against a kind cluster running the real image and chart, on a machine with
# Docker and kind:
#   e2e/kind.sh            build the image, create the cluster, install, test, clean up
#   KEEP=1 e2e/kind.sh     leave the cluster up afterwards (kind delete cluster --name sidereal)
# It builds the image from the Dockerfile, loads it into kind, installs the chart with it
# (CRDs included), then runs the same suite `make test` runs against the local control plane,
# through KUBECONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${KIND_CLUSTER:-sidereal}
image=${IMAGE:-sidereal:e2e}
ns=${NAMESPACE:-sidereal}
for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required for the kind e2e (install it and rerun)" >&2; exit 2; }
done
kubeconfig=$(mktemp "${TMPDIR:-/tmp}/sidereal-kind.XXXXXX")
cleanup() {
  if [ -z "${KEEP:-}" ]; then kind delete cluster --name "$name" >/dev/null 2>&1 || true; fi
  rm -f "$kubeconfig"
}
trap cleanup EXIT

echo "==> docker build -t $image ."
docker build -t "$image" .
echo "==> kind create cluster --name $name"
kind delete cluster --name "$name" >/dev/null 2>&1 || true
kind create cluster --name "$name" --kubeconfig "$kubeconfig" --wait 2m
export KUBECONFIG=$kubeconfig
echo "==> kind load docker-image $image"
kind load docker-image "$image" --name "$name"

echo "==> helm install (the image above, CRDs from the chart, a trial Postgres)"
helm install sidereal charts/sidereal --namespace "$ns" --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never \
  --set postgres.enabled=true --set gameService.type=NodePort \
  --wait --timeout 5m
kubectl -n "$ns" get pods,svc,sectors,shardpools

echo "==> the operator takes the world up: every root Sector Ready"
kubectl -n "$ns" wait --for=condition=Ready sector --all --timeout=5m
kubectl -n "$ns" get sectors,shardpools,pods -o wide

echo "==> bots fly in the cluster"
kubectl -n "$ns" run bots --rm -i --restart=Never --image="$image" --image-pull-policy=Never -- \
  bot --count 10 --duration 20 --http "http://sidereal-replication-game.$ns.svc:7704" | tee /dev/stderr | grep -q "disconnects=0"

echo "==> the e2e suite against the kind cluster (KUBECONFIG=$KUBECONFIG)"
# The chart tests need helm; the rest use their own namespaces and the installed CRDs.
source scripts/env.sh
SIDEREAL_HELM=$(command -v helm) cargo test -p sidereal-e2e --locked
echo "==> kind e2e passed"
