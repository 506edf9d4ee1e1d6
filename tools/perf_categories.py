#!/usr/bin/env python3
"""Shares of `perf record` samples by kind of work, for the step profiles in
docs/performance.md (standard library only).

    perf record -e cpu-clock -F 499 -o perf.data target/release/examples/step_profile ...
    perf report -i perf.data --no-children --sort dso,sym --stdio > report.txt
    python3 tools/perf_categories.py report.txt

The categories come from the leaf symbol (release builds have no frame pointers, and burn-flex's
rayon tasks do not show the op that spawned them in their stacks): matrix products (`gemm`) are
the convolutions' im2col + GEMM, the unnamed rayon closures are burn-flex's parallel op bodies
(mostly the convolutions' im2col / col2im and their backward loops, by the op timings).
"""

import re
import sys

CATEGORIES = [
    ("convolution GEMM (gemm crate microkernels, packing)", r"gemm"),
    ("convolution loops (flex conv3d / conv_transpose / im2col)", r"burn_flex::ops::conv|im2col|col2im|unfold"),
    ("unnamed rayon closures in flex ops (`FnMut::call_mut`)", r"FnMut.*call_mut|for_each::ForEachConsumer"),
    ("GroupNorm kernels (gn_module, macerator-dispatched)", r"gn_module|macerator"),
    ("flex elementwise / reductions / copies", r"burn_flex|burn_std|burn_backend|zip_apply"),
    ("memset / memcpy", r"mem(set|cpy|move)"),
    ("allocator (malloc / free)", r"malloc|free|calloc|realloc"),
    ("autodiff graph and optimizer", r"burn_autodiff|burn_optim|burn_core"),
    ("data (image decode, augmentation, batching)", r"training::data|fdeflate|png|image::|zune"),
    ("random init (model weights)", r"rand|chacha|Random"),
    ("kernel (page faults, scheduling, I/O)", r"\[k\]"),
]


def main():
    counts = {name: 0.0 for name, _ in CATEGORIES}
    counts["other"] = 0.0
    for line in open(sys.argv[1]):
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+(\[.\])\s+(.*)", line)
        if not m:
            continue
        share, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        text = f"{kind} {sym}" if kind == "[k]" else sym
        for name, pattern in CATEGORIES:
            if re.search(pattern, text):
                counts[name] += share
                break
        else:
            counts["other"] += share
    for name, share in sorted(counts.items(), key=lambda kv: -kv[1]):
        if share >= 0.05:
            print(f"| {name} | {share:.1f}% |")


if __name__ == "__main__":
    main()
