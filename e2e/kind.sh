#!/usr/bin/env bash
# The e2e suite against a kind cluster running the real image and chart, on a machine with
# Docker and kind:
#   e2e/kind.sh            build the image, create the cluster, install, test, clean up
#   KEEP=1 e2e/kind.sh     leave the cluster up afterwards (kind delete cluster --name sidereal)
# It builds the image from the Dockerfile, loads it into kind, runs the chart end to end with it
# (e2e/scripts/chart-e2e.sh: install, the world up, bots, a shard pod killed, an upgrade with
# bots flying, uninstall), then the suite `make test` runs against the local control plane,
# through KUBECONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${KIND_CLUSTER:-sidereal}
image=${IMAGE:-sidereal:e2e}
ns=${NAMESPACE:-sidereal}
for tool in docker kind kubectl helm cargo jq curl; do
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

echo "==> the chart end to end: the same steps e2e/scripts/node-e2e.sh runs on the local real node"
# The "new version" helm upgrade rolls to: the same build under another name.
docker tag "$image" "${image}-next"
kind load docker-image "${image}-next" --name "$name"
HELM=$(command -v helm) NAMESPACE="$ns" e2e/scripts/chart-e2e.sh "$image" "${image}-next"

echo "==> the e2e suite against the kind cluster (KUBECONFIG=$KUBECONFIG)"
# The chart tests need helm; the rest use their own namespaces and the installed CRDs.
source scripts/env.sh
SIDEREAL_HELM=$(command -v helm) cargo test -p sidereal-e2e --locked
echo "==> kind e2e passed"
