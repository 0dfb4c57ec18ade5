#!/usr/bin/env bash
# The chart on real containers on this machine, the closest thing to kind that runs here: a
# local control plane (cluster.sh) of its own, a real node (node.sh: containerd, runc, kubelet,
# kube-proxy, CoreDNS) beside one kwok node (cordoned: every pod must run for real), the images
# built from the repository's Dockerfile with no registry (build-images.sh), then the steps
# e2e/kind.sh runs on kind (chart-e2e.sh). Cleans up after itself.
#   node-e2e.sh [path/to/sidereal]   (default: the debug binary `cargo build` makes)
#   KEEP=1 node-e2e.sh               leave the cluster and the node up afterwards
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
source scripts/env.sh
binary=${1:-$CARGO_TARGET_DIR/debug/sidereal}
if [ $# -eq 0 ]; then cargo build --locked --bin sidereal >&2; fi
export SIDEREAL_CLUSTER=sidereal-node SIDEREAL_FAKE_NODES=1
t0=$(date +%s)
cleanup() {
  if [ -n "${KEEP:-}" ]; then echo "KEEP: the cluster and node stay up (node.sh down; cluster.sh down)" >&2; return; fi
  "$here/node.sh" down || true
  "$here/cluster.sh" down || true
}
trap cleanup EXIT

echo "==> images from the Dockerfile, no registry" >&2
images=$("$here/build-images.sh" "$binary" sidereal:e2e)
echo "==> a local control plane and a real node" >&2
export SIDEREAL_CP_BIN=${SIDEREAL_CP_BIN:-$("$here/build-control-plane.sh")}
"$here/cluster.sh" up
KUBECONFIG=$("$here/cluster.sh" kubeconfig)
export KUBECONFIG
"$here/node.sh" up "$images"
kubectl cordon -l type=kwok >&2
# The "new version" helm upgrade rolls to: the same build under another name, as a registry
# would hold it.
"$here/node.sh" ctr images tag docker.io/library/sidereal:e2e docker.io/library/sidereal:e2e-next >/dev/null
# kube-router enforces NetworkPolicies on the node: the steps probe them.
PROBE_IMAGE=sidereal.local/probe:1 HELM=${SIDEREAL_HELM:-$("$here/build-helm.sh")} "$here/chart-e2e.sh" sidereal:e2e sidereal:e2e-next \
  --set postgres.image=sidereal.local/postgres:15-debian12
echo "==> real-node e2e passed in $(( $(date +%s) - t0 ))s" >&2
