#!/usr/bin/env bash
# Installs what the tests need and is not built from source: kubectl, Go (for the control
# plane), curl and psql (process tests), promtool (Debian's prometheus package: every
# /metrics endpoint is checked with `promtool check metrics`), chromium (the sector map is
# loaded in a headless browser), and the real node's parts (containerd, runc, the CNI plugins,
# buildah, iptables, conntrack, jq). The PostgreSQL server is installed by postgres.sh.
# Idempotent: does nothing when everything is present.
set -euo pipefail
need=()
command -v kubectl >/dev/null || need+=(kubectl)
command -v go >/dev/null || need+=(golang-go)
command -v curl >/dev/null || need+=(curl)
command -v psql >/dev/null || need+=(postgresql-client)
command -v promtool >/dev/null || need+=(prometheus)
# The live sector map is checked in a real browser.
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
# The real node (e2e/scripts/node.sh): containers, their network, and the image builder.
command -v jq >/dev/null || need+=(jq)
command -v containerd >/dev/null || need+=(containerd)
[ -x /usr/sbin/runc ] || [ -x /usr/bin/runc ] || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v buildah >/dev/null || need+=(buildah)
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "error: missing ${need[*]}; install them (Debian: apt-get install ${need[*]}) and rerun" >&2
  exit 2
fi
echo "installing ${need[*]} from Debian's packages" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || {
  echo "error: apt-get install ${need[*]} failed; install them by hand and rerun" >&2; exit 2; }
