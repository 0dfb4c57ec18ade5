.PHONY: test run crdgen lint bench
SHELL := /bin/bash

# Every test: installs what is missing, builds the local control plane (cached), runs all suites.
test:
	./scripts/test.sh

# The whole fleet as local processes on embedded defaults.
run:
	source scripts/env.sh && cargo run --release --bin sidereal -- up

# Benchmarks print numbers (see docs/benchmarks.md); they never fail.
bench:
	source scripts/env.sh && cargo bench -p sidereal-replication --bench fleet
	./scripts/bench-store.sh

# Regenerate the committed CRD YAML after changing crds/src.
crdgen:
	source scripts/env.sh && cargo run -q --bin sidereal -- crdgen --out crds/generated

lint:
	source scripts/env.sh && cargo fmt --all -- --check && cargo clippy --workspace --all-targets -- -D warnings
