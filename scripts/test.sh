#!/usr/bin/env bash
# The test command of the README: sets up what the tests need on a fresh machine, then runs every
# test of the workspace (unit, integration, file tests, property tests, examples, doc tests).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi

# Kernels run in tests through the interpreter, so the test profile is optimised (see Cargo.toml).
cargo test --workspace --locked "$@"
