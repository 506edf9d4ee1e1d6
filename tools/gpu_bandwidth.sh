#!/usr/bin/env bash
# The GPU target of the fused GroupNorm: the forward's bandwidth (x read once, y written once,
# over its time, calls queued back to back) on [8,256,56,56] and [1,512,64,64], G = 32, f32
# and f16, as a share of the device's peak memory bandwidth.
#
#   tools/gpu_bandwidth.sh PEAK_GB_PER_S [BENCH_BINARY]
#
# PEAK_GB_PER_S: the device's memory bandwidth in GB/s (10^9 bytes), e.g. 4800 for an H200.
# BENCH_BINARY: a `group_norm` bench built elsewhere (`cargo bench --workspace --bench group_norm
# --features cuda --no-run` prints its path); without it, this builds one with the features in
# GN_FEATURES (default `cuda`; `wgpu` or `vulkan` run it through Vulkan). Both the bench's
# `cuda` and `wgpu` devices are measured when compiled in.
set -euo pipefail
cd "$(dirname "$0")/.."

peak=${1:?usage: tools/gpu_bandwidth.sh PEAK_GB_PER_S [BENCH_BINARY]}
bench=${2:-}
if [ -z "$bench" ]; then
    features=${GN_FEATURES:-cuda}
    bench=$(cargo bench --workspace --bench group_norm --features "$features" --no-run 2>&1 |
        sed -n 's/.*Executable .*benches\/group_norm.rs (\(.*\))/\1/p')
    [ -x "$bench" ] || { echo "could not build the group_norm bench with --features $features" >&2; exit 1; }
fi

export GN_BENCH_SHAPES=8x256x56x56,1x512x64x64
"$bench" --bench '(cuda|wgpu)/F(32|16)/.*/gn_module/forward$' --warm-up-time 3 \
    --measurement-time 5 --noplot 2>&1 |
    awk -v peak="$peak" '
        /^group_norm\// { name = $1 }
        /thrpt:/ && name != "" && $0 !~ /%/ {
            # The median estimate and its unit: "thrpt:  [lo u mid u hi u]".
            value = $4; unit = $5
            scale = (unit ~ /^TiB/) ? 2^40 : (unit ~ /^GiB/) ? 2^30 : (unit ~ /^MiB/) ? 2^20 : 2^10
            gbs = value * scale / 1e9
            printf "%-55s %9.1f GB/s  %5.1f%% of %s GB/s\n", name, gbs, 100 * gbs / peak, peak
            name = ""
        }
        /panicked|[Ee]rror/ { print }'
