#!/usr/bin/env bash
# The whole suite: lint, unit and in-process tests, then the tests that need real services
# (a local Kubernetes control plane and helm, built from Go modules; PostgreSQL from Debian's
# packages).
# Installs what is missing, idempotently, and says clearly what it cannot install.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
t0=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }

step "checking toolchain"
command -v cargo >/dev/null || { echo "error: cargo not found; install Rust 1.95 (rustup)" >&2; exit 2; }
scripts/install-deps.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "throwaway PostgreSQL"
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/sidereal-pg.XXXXXX")
cleanup() {
  scripts/postgres.sh stop "$pg_dir" || true
  [ -n "${cluster_up:-}" ] && e2e/scripts/cluster.sh down || true
}
trap cleanup EXIT
SIDEREAL_TEST_DATABASE_URL=$(scripts/postgres.sh start "$pg_dir")
export SIDEREAL_TEST_DATABASE_URL SIDEREAL_TEST_PG_DIR=$pg_dir

step "local control plane"
bins=$(e2e/scripts/build-control-plane.sh)
export SIDEREAL_CP_BIN=$bins
cluster_up=1
e2e/scripts/cluster.sh up

step "helm (built from its Go module, cached)"
SIDEREAL_HELM=$(e2e/scripts/build-helm.sh)
export SIDEREAL_HELM
KUBECONFIG=$(e2e/scripts/cluster.sh kubeconfig)
export KUBECONFIG

# One cargo invocation for every test, so features resolve once and nothing is rebuilt:
# unit, property, in-process fleet, store conformance (Postgres + SQLite), real processes,
# and the e2e suite against the local control plane.
step "all tests"
cargo test --workspace --locked

# The README's install command, as typed, against the real API server.
step "sidereal crdgen | kubectl apply --server-side -f - (real API server)"
"$CARGO_TARGET_DIR/debug/sidereal" crdgen | kubectl apply --server-side -f -

# The chart on real containers: the image from the Dockerfile, a real kubelet node, the steps
# e2e/kind.sh runs on kind (e2e/scripts/node-e2e.sh; its own control plane, cleaned up).
step "the chart on a real node (containerd, runc, kubelet)"
e2e/scripts/cluster.sh down
cluster_up=
e2e/scripts/node-e2e.sh "$CARGO_TARGET_DIR/debug/sidereal"

step "all tests passed"
