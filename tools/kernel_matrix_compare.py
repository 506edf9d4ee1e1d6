#!/usr/bin/env python3
"""Compares rounds of `crates/gn-module/benches/kernel_matrix.rs` (standard library only).

    python3 tools/kernel_matrix_compare.py OLD_1.tsv OLD_2.tsv ... -- NEW_1.tsv NEW_2.tsv ...

Per row: the median over the rounds of each side's per-round median, and new / old. Prints the
geometric mean of the ratios per round pair and overall, the rows more than 5% slower, and a
summary per (backend, dtype, layout, pass). `--rows` prints every row's ratio as a TSV.
"""
import math
import statistics
import sys
from collections import defaultdict


def read(path):
    rows = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            # The first line may carry cargo's "test kernel_matrix ..." prefix.
            if len(parts) != 8 or parts[-2].endswith("median_us"):
                continue
            key = tuple(parts[:6])
            rows[key] = (float(parts[6]), float(parts[7]))
    return rows


def geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main(argv):
    show_rows = "--rows" in argv
    argv = [a for a in argv if a != "--rows"]
    if "--" not in argv:
        sys.exit(__doc__)
    split = argv.index("--")
    old = [read(p) for p in argv[:split]]
    new = [read(p) for p in argv[split + 1:]]
    keys = [k for k in old[0] if all(k in r for r in old + new)]
    if not keys:
        sys.exit("no rows in common")
    for i, (o, n) in enumerate(zip(old, new)):
        print(f"round {i + 1}: geomean new/old {geomean(n[k][0] / o[k][0] for k in keys):.3f}")
    ratio = {}
    for k in keys:
        om = statistics.median(r[k][0] for r in old)
        nm = statistics.median(r[k][0] for r in new)
        ratio[k] = (nm / om, om, nm)
    print(f"all rounds: geomean of per-row medians new/old {geomean(r[0] for r in ratio.values()):.3f}"
          f" over {len(keys)} rows; {sum(r[0] > 1.05 for r in ratio.values())} rows > 1.05,"
          f" {sum(r[0] < 0.95 for r in ratio.values())} rows < 0.95")
    groups = defaultdict(list)
    for k, r in ratio.items():
        backend, dtype, _shape, layout, _act, pas = k
        groups[(backend, dtype, layout, pas)].append(r[0])
    print("\nbackend\tdtype\tlayout\tpass\tgeomean\tmax")
    for g, rs in sorted(groups.items()):
        print("\t".join(g) + f"\t{geomean(rs):.3f}\t{max(rs):.3f}")
    if show_rows:
        print("\nbackend\tdtype\tshape\tlayout\tact\tpass\told_us\tnew_us\tnew/old")
        for k in keys:
            r, om, nm = ratio[k]
            print("\t".join(k) + f"\t{om:.1f}\t{nm:.1f}\t{r:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
