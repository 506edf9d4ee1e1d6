#!/usr/bin/env bash
# Memcheck: gn-module's CPU kernel unit tests (src/cpu, the backend adapters flex.rs and
# ndarray.rs left out) under valgrind's memcheck, once on the path the CPU selects (AVX2, FMA
# and F16C where it has them, macerator's x86-64 v3: valgrind emulates AVX2 but not AVX-512)
# and once on the portable path (GN_BURN_CPU_BASELINE=1: macerator's scalar backend). Any
# invalid read or write, use of uninitialized memory or failed test fails the script. The kernels' own tests and cpu/memcheck_cases.rs (small cases
# of every element type, memory order, activation and path) run in release mode, the code that
# ships; a few minutes in all.
set -euo pipefail
cd "$(dirname "$0")/.."

# The target directory is cargo's usual one, or the one .ci/run exports (CARGO_TARGET_DIR).
# Arguments go to cargo (.ci/run passes its feature set, so that its build is reused):
#   bash .ci/memcheck.sh [--features wgpu-tests]
cargo_args=("$@")

started=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - started ))s)"; }

step "installing valgrind"
if ! command -v valgrind >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends valgrind
fi
valgrind --version

step "building the library tests: cargo test --release --workspace --lib --no-run ${cargo_args[*]}"
# The test binary of gn-module's library (the only --lib test target named gn_module).
bin=$(cargo test --release --workspace --lib --no-run "${cargo_args[@]}" --message-format=json \
    | grep '"reason":"compiler-artifact"' | grep '"name":"gn_module"' \
    | grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//' | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "gn-module's library test binary not found" >&2
    exit 1
fi
echo "test binary: $bin"

# The kernel tests: everything under cpu:: except the backend adapters.
filter=(cpu:: --skip cpu::flex --skip cpu::ndarray)
memcheck() {
    valgrind --tool=memcheck --error-exitcode=1 --leak-check=no --quiet "$bin" "${filter[@]}" "$@"
}

step "memcheck on the path this CPU selects"
# The dispatch test prints the level (valgrind reports its own CPU features to the program).
memcheck --nocapture 2>&1 | tee /tmp/gn-memcheck-native.log
if grep -qw avx2 /proc/cpuinfo && ! grep -q "CPU kernels dispatch to V3" /tmp/gn-memcheck-native.log; then
    echo "warning: this CPU has AVX2 but the kernels ran the portable path under valgrind" >&2
fi

step "memcheck on the portable path: GN_BURN_CPU_BASELINE=1"
GN_BURN_CPU_BASELINE=1 memcheck --nocapture 2>&1 | tee /tmp/gn-memcheck-baseline.log
grep -q "CPU kernels dispatch to Scalar" /tmp/gn-memcheck-baseline.log

step "done"
