#!/usr/bin/env bash
# Builds what the local real node (node.sh) runs beside Debian's containerd and runc: kubelet
# and kube-proxy from the same Kubernetes Go module as the control plane, and CoreDNS from its
# Go module, and kube-router (its NetworkPolicy controller only) from its Go module, into a cache
# folder keyed by version, and prints it. A second run builds nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${SIDEREAL_CACHE:-$HOME/.cache/sidereal}
out="$cache/node/k8s-$K8S_VERSION-coredns-$COREDNS_VERSION-kube-router-$KUBE_ROUTER_VERSION"
bins=(kubelet kube-proxy coredns kube-router)
done_already=1
for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || done_already=0; done
if [ "$done_already" = 1 ]; then echo "$out/bin"; exit 0; fi

command -v go >/dev/null || { echo "error: Go toolchain not found; install Go >= 1.24 (e.g. apt-get install golang) to build the node" >&2; exit 2; }
# The control plane's wrapper module pins every k8s.io staging module to the published tag.
cp_bin=${SIDEREAL_CP_BIN:-$("$here/build-control-plane.sh")}
k8s_src="$(dirname "$cp_bin")/src/kubernetes"
[ -f "$k8s_src/go.mod" ] || { echo "error: $k8s_src/go.mod is missing; run build-control-plane.sh first" >&2; exit 2; }
mkdir -p "$out/bin" "$out/src"
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)
k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
ver_pkg=k8s.io/component-base/version
ld="-s -w -X $ver_pkg.gitVersion=$K8S_VERSION -X $ver_pkg.gitMajor=1 -X $ver_pkg.gitMinor=$k8s_minor -X $ver_pkg.gitTreeState=clean -X $ver_pkg.buildDate=1970-01-01T00:00:00Z"
(cd "$k8s_src"
 for b in kubelet kube-proxy; do
   [ -x "$out/bin/$b" ] && continue
   echo "building $b $K8S_VERSION" >&2
   go build -trimpath -ldflags "$ld" -o "$out/bin/$b.tmp" "k8s.io/kubernetes/cmd/$b" && mv "$out/bin/$b.tmp" "$out/bin/$b"
 done)
if [ ! -x "$out/bin/coredns" ]; then
  echo "building coredns $COREDNS_VERSION" >&2
  (cd "$out/src" && GOBIN="$out/src/bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION" \
    && mv "$out/src/bin/coredns" "$out/bin/coredns")
fi
if [ ! -x "$out/bin/kube-router" ]; then
  echo "building kube-router $KUBE_ROUTER_VERSION" >&2
  (cd "$out/src" && GOBIN="$out/src/bin" go install -trimpath -ldflags "-s -w" "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION" \
    && mv "$out/src/bin/kube-router" "$out/bin/kube-router")
fi
for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || { echo "error: building $b failed (see above)" >&2; exit 1; }; done
echo "node binaries built in $(( $(date +%s) - start ))s" >&2
echo "$out/bin"
