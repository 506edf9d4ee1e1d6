#!/usr/bin/env python3
"""Per-step training losses of ours and the mirror, side by side: ours' `train/epoch-N/Loss.log`
(one `loss,1` line per step, then the epoch's `mean,final` line, skipped) against the mirror's
`steps.csv`. Standard library only.

    python3 tools/compare_steps.py runs/ours runs/torch [--all]

Prints the step, both losses and their difference at a few steps (every step with --all), and
the first step at which they differ by more than 1e-6.
"""

import csv
import sys
from pathlib import Path


def ours_losses(run: Path) -> list[float]:
    losses, epoch = [], 1
    while (log := run / "train" / f"epoch-{epoch}" / "Loss.log").exists():
        for line in log.read_text().splitlines():
            value, tag = line.rsplit(",", 1)
            if tag != "final":
                losses.append(float(value))
        epoch += 1
    return losses


def main():
    ours = ours_losses(Path(sys.argv[1]))
    with open(Path(sys.argv[2]) / "steps.csv") as f:
        torch = [float(r["loss"]) for r in csv.DictReader(f)]
    n = min(len(ours), len(torch))
    if n == 0:
        raise SystemExit("no steps to compare")
    every = "--all" in sys.argv
    shown = range(n) if every else sorted({i for i in (0, 1, 2, 4, 9, 14, 19, 29, 49, 99, 199, 499, 999, n - 1) if i < n})
    for i in shown:
        print(f"step {i + 1:5d}  ours {ours[i]:.6f}  mirror {torch[i]:.6f}  diff {ours[i] - torch[i]:+.2e}")
    first = next((i for i in range(n) if abs(ours[i] - torch[i]) > 1e-6), None)
    print(f"{n} steps; first difference above 1e-6: {'none' if first is None else f'step {first + 1}'}")


if __name__ == "__main__":
    main()
