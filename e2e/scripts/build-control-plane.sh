#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kwok and kwokctl from
# their Go modules (no prebuilt downloads) into a cache folder keyed by version, and prints it.
# A second run with the same versions builds nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${SIDEREAL_CACHE:-$HOME/.cache/sidereal}
out="$cache/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
bins=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok kwokctl)

done_already=1
for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || done_already=0; done
if [ "$done_already" = 1 ]; then echo "$out/bin"; exit 0; fi

command -v go >/dev/null || { echo "error: Go toolchain not found; install Go >= 1.24 (e.g. apt-get install golang) to build the control plane" >&2; exit 2; }
proxy=$(go env GOPROXY | cut -d, -f1)
if [ "$proxy" != "off" ] && ! go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" >/dev/null 2>&1; then
  echo "error: cannot download Go modules from GOPROXY=$(go env GOPROXY); the control plane is built from Go modules and needs the module proxy (or a warm module cache)" >&2
  exit 2
fi

mkdir -p "$out/bin" "$out/src"
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)

# --- Kubernetes: a wrapper module that pins every k8s.io staging module to the published tag.
k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
staging_version="v0.${K8S_VERSION#v1.}"
src="$out/src/kubernetes"; mkdir -p "$src"
kmod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
{
  echo "module sidereal.dev/controlplane"
  echo
  echo "go $(sed -n 's/^go //p' "$kmod")"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$kmod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
} > "$src/go.mod"
cat > "$src/tools.go" <<GO
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
ver_pkg=k8s.io/component-base/version
ld="-s -w -X $ver_pkg.gitVersion=$K8S_VERSION -X $ver_pkg.gitMajor=1 -X $ver_pkg.gitMinor=$k8s_minor -X $ver_pkg.gitTreeState=clean -X $ver_pkg.buildDate=1970-01-01T00:00:00Z"
ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"
(cd "$src" && go mod tidy -e >/dev/null 2>&1 || true
 for b in kube-apiserver kube-controller-manager kube-scheduler; do
   [ -x "$out/bin/$b" ] && continue
   echo "building $b $K8S_VERSION" >&2
   go build -trimpath -ldflags "$ld" -o "$out/bin/$b.tmp" "k8s.io/kubernetes/cmd/$b" && mv "$out/bin/$b.tmp" "$out/bin/$b"
 done)

# --- etcd: server module built through a wrapper (its own replace directives are local paths).
src="$out/src/etcd"; mkdir -p "$src"
printf 'module sidereal.dev/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$src/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$src/tools.go"
(cd "$src" && go mod tidy -e >/dev/null 2>&1 || true
 if [ ! -x "$out/bin/etcd" ]; then
   echo "building etcd $ETCD_VERSION" >&2
   go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=sidereal" -o "$out/bin/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$out/bin/etcd.tmp" "$out/bin/etcd"
 fi)

# --- kwok and kwokctl.
src="$out/src/kwok"; mkdir -p "$src"
printf 'module sidereal.dev/kwok\n\ngo 1.26.0\n\nrequire sigs.k8s.io/kwok %s\n' "$KWOK_VERSION" > "$src/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "sigs.k8s.io/kwok/cmd/kwok"\n\t_ "sigs.k8s.io/kwok/cmd/kwokctl"\n)\n' > "$src/tools.go"
(cd "$src" && go mod tidy -e >/dev/null 2>&1 || true
 for b in kwok kwokctl; do
   [ -x "$out/bin/$b" ] && continue
   echo "building $b $KWOK_VERSION" >&2
   go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$K8S_VERSION" -o "$out/bin/$b.tmp" "sigs.k8s.io/kwok/cmd/$b" && mv "$out/bin/$b.tmp" "$out/bin/$b"
 done)

for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || { echo "error: building $b failed (see output above)" >&2; exit 1; }; done
echo "control plane built in $(( $(date +%s) - start ))s" >&2
echo "$out/bin"
