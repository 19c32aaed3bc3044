#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every unit, conformance and
# end-to-end test. Everything builds in the release profile only, so the bundled DuckDB is
# compiled once (≈ 28 min cold on 2 cores); the target dir defaults to a cache outside the
# clone so later runs are warm.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}"
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (release profile, all targets, -D warnings)"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo test (release profile)"
cargo test --release --workspace
