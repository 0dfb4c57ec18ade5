# Shared settings for the project's scripts. Heavy build outputs live outside the clone,
# keyed by toolchain/version, so a fresh clone (CI) reuses them.
SIDEREAL_CACHE=${SIDEREAL_CACHE:-$HOME/.cache/sidereal}
export SIDEREAL_CACHE
rust_key=$(rustc --version 2>/dev/null | awk '{print $2}')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$SIDEREAL_CACHE/target-rust-${rust_key:-unknown}}
