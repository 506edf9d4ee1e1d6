#!/usr/bin/env python3
"""Summarizes a tools/side_by_side.sh directory as the markdown table of docs/training.md:
per (norm, batch): final and best validation error (%) of ours and of the PyTorch mirror,
mean +- sample standard deviation over the seeds (the seeds' values in brackets), and
whether the means differ by more than twice their standard error (sqrt(sd_a^2/n_a +
sd_b^2/n_b)). Standard library only."""

import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main() -> None:
    root = Path(sys.argv[1])
    runs = defaultdict(list)
    for m in sorted(root.glob("*/metrics.json")):
        parts = m.parent.name.split("-")
        if m.parent.is_symlink() or len(parts) != 4:
            continue  # `last`, the link ours makes to its newest run
        impl, norm, batch, seed = parts
        d = json.loads(m.read_text())
        runs[(norm, int(batch[1:]), impl)].append(
            (100 - d["valid_accuracy"], 100 - d["best_valid_accuracy"], d["total_seconds"])
        )

    def cell(values):
        mean = statistics.fmean(values)
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        if len(values) == 1:
            return mean, sd, f"{mean:.1f} (one seed)"
        return mean, sd, f"{mean:.1f} ± {sd:.1f} ({', '.join(f'{v:.1f}' for v in values)})"

    print("| norm | batch | ours final | PyTorch final | ours best | PyTorch best | final: gap / 2 s.e. |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    keys = sorted({(n, b) for n, b, _ in runs}, key=lambda k: (k[0], -k[1]))
    for norm, batch in keys:
        ours, torch = runs.get((norm, batch, "ours"), []), runs.get((norm, batch, "torch"), [])
        if not ours or not torch:
            continue
        of, tf = cell([r[0] for r in ours]), cell([r[0] for r in torch])
        ob, tb = cell([r[1] for r in ours]), cell([r[1] for r in torch])
        se = math.sqrt(of[1] ** 2 / len(ours) + tf[1] ** 2 / len(torch))
        gap = of[0] - tf[0]
        verdict = f"{gap:+.1f} / {2 * se:.1f}" + (" (outside)" if abs(gap) > 2 * se else "")
        if math.isnan(se):
            verdict = f"{gap:+.1f} / (needs two seeds)"
        print(f"| {norm.upper()} | {batch} | {of[2]} | {tf[2]} | {ob[2]} | {tb[2]} | {verdict} |")
    secs = {k: statistics.fmean(r[2] for r in v) for k, v in runs.items()}
    print()
    print("mean wall seconds per run: " + ", ".join(
        f"{n}-b{b} {i} {s:.0f}" for (n, b, i), s in sorted(secs.items())))


if __name__ == "__main__":
    main()
