.PHONY: test run crdgen lint bench
SHELL := /bin/bash

# Every test: installs what is missing, builds the local control plane (cached), runs all suites.
test:
	./scripts/test.sh

run:
	source scripts/env.sh && cargo run --release --bin sidereal -- crdgen

# Regenerate the committed CRD YAML after changing crds/src.
crdgen:
	source scripts/env.sh && cargo run -q --bin sidereal -- crdgen --out crds/generated

lint:
	source scripts/env.sh && cargo fmt --all -- --check && cargo clippy --workspace --all-targets -- -D warnings
