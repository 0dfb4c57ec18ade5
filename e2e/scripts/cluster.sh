#!/usr/bin/env bash
# Starts and stops a local Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok-controller with fake nodes) as plain processes
# through `kwokctl --runtime binary`, using only binaries built by build-control-plane.sh.
#   cluster.sh up | down | kubeconfig | status
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
cache=${SIDEREAL_CACHE:-$HOME/.cache/sidereal}
name=${SIDEREAL_CLUSTER:-sidereal-e2e}
nodes=${SIDEREAL_FAKE_NODES:-3}
# kwokctl keeps each cluster's files (pids, certs, logs) here; outside the clone.
export KWOK_WORKDIR=${KWOK_WORKDIR:-$cache/kwok}
kubeconfig="$KWOK_WORKDIR/$name.kubeconfig"

bin=${SIDEREAL_CP_BIN:-}
if [ -z "$bin" ]; then bin=$("$here/build-control-plane.sh"); fi
kwokctl="$bin/kwokctl"
# Never let kwokctl download anything: every component comes from $bin, kubectl from PATH.
export KWOK_KUBECTL_BINARY=${KWOK_KUBECTL_BINARY:-$(command -v kubectl || echo /nonexistent/kubectl)}

down() {
  "$kwokctl" delete cluster --name "$name" >/dev/null 2>&1 || true
  # Belt and braces after a crash of kwokctl itself: kill anything still running from this cluster's dir.
  pkill -f "$KWOK_WORKDIR/clusters/$name/" 2>/dev/null || true
  rm -rf "$KWOK_WORKDIR/clusters/$name" "$kubeconfig"
}

up() {
  down # a run that was killed may have left a cluster behind
  mkdir -p "$KWOK_WORKDIR"
  local t0; t0=$(date +%s)
  if ! "$kwokctl" create cluster --name "$name" --runtime binary \
      --etcd-binary "$bin/etcd" \
      --kube-apiserver-binary "$bin/kube-apiserver" \
      --kube-controller-manager-binary "$bin/kube-controller-manager" \
      --kube-scheduler-binary "$bin/kube-scheduler" \
      --kwok-controller-binary "$bin/kwok" \
      --disable-qps-limits \
      --config "$here/kwokctl.yaml" \
      --kubeconfig "$kubeconfig" \
      --wait 3m --quiet-pull >&2; then
    echo "error: the local control plane did not start; component logs:" >&2
    tail -n 30 "$KWOK_WORKDIR/clusters/$name"/logs/*.log >&2 2>/dev/null || true
    down
    exit 1
  fi
  "$kwokctl" scale node --name "$name" --replicas "$nodes" >&2
  KUBECONFIG="$kubeconfig" kubectl wait --for=condition=Ready node --all --timeout=120s >&2
  echo "local control plane $K8S_VERSION up in $(( $(date +%s) - t0 ))s with $nodes kwok nodes; KUBECONFIG=$kubeconfig" >&2
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  kubeconfig) echo "$kubeconfig" ;;
  status) KUBECONFIG="$kubeconfig" kubectl get --raw /readyz && echo && KUBECONFIG="$kubeconfig" kubectl get nodes ;;
  *) echo "usage: $0 up|down|kubeconfig|status" >&2; exit 2 ;;
esac
