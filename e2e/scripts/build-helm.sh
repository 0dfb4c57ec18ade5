#!/usr/bin/env bash
# Builds helm from its Go module (no prebuilt download) into a cache folder keyed by version,
# and prints the binary's path. A second run with the same version builds nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${SIDEREAL_CACHE:-$HOME/.cache/sidereal}
out="$cache/helm-$HELM_VERSION"
if [ -x "$out/bin/helm" ]; then echo "$out/bin/helm"; exit 0; fi
command -v go >/dev/null || { echo "error: Go toolchain not found; install Go >= 1.24 (e.g. apt-get install golang) to build helm" >&2; exit 2; }
if [ "$(go env GOPROXY | cut -d, -f1)" != off ] && ! go mod download -json "helm.sh/helm/v3@$HELM_VERSION" >/dev/null 2>&1; then
  echo "error: cannot download helm.sh/helm/v3@$HELM_VERSION from GOPROXY=$(go env GOPROXY); helm is built from its Go module" >&2
  exit 2
fi
mkdir -p "$out/bin" "$out/src"
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0
src="$out/src"
go_line=$(sed -n 's/^go //p' "$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')")
printf 'module sidereal.dev/helm\n\ngo %s\n\nrequire helm.sh/helm/v3 %s\n' "$go_line" "$HELM_VERSION" > "$src/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n' > "$src/tools.go"
start=$(date +%s)
echo "building helm $HELM_VERSION" >&2
(cd "$src" && go mod tidy -e >/dev/null 2>&1 || true
 go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$out/bin/helm.tmp" helm.sh/helm/v3/cmd/helm) \
  && mv "$out/bin/helm.tmp" "$out/bin/helm" \
  || { echo "error: building helm $HELM_VERSION failed (see output above)" >&2; exit 1; }
echo "helm built in $(( $(date +%s) - start ))s" >&2
echo "$out/bin/helm"
