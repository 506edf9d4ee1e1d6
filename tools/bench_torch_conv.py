#!/usr/bin/env python3
"""PyTorch's side of `cargo bench --bench conv`: the same 3x3 convolutions (stride 1, padding 1,
no bias), forward and forward + backward (input and weight gradients of the output's sum), median
of 20 runs after 3 warm-ups. Pinned: torch==2.15.0 (tools/requirements.txt), CPU.

    python tools/bench_torch_conv.py --threads 2
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from malloc_settings import keep_freed_memory

SHAPES = [(64, 32, 32), (64, 128, 8)]


def median_ms(f, runs=20, warmup=3):
    for _ in range(warmup):
        f()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print("allocator:", keep_freed_memory())
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} threads")
    for n, ch, side in SHAPES:
        x = torch.randn(n, ch, side, side)
        w = torch.randn(ch, ch, 3, 3)
        with torch.no_grad():
            fwd = median_ms(lambda: F.conv2d(x, w, padding=1))
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

        def fwd_bwd():
            xg.grad = wg.grad = None
            F.conv2d(xg, wg, padding=1).sum().backward()

        both = median_ms(fwd_bwd)
        print(f"conv3x3/torch/{n}x{ch}x{side}x{side}: forward {fwd:.2f} ms, forward_backward {both:.2f} ms")


if __name__ == "__main__":
    main()
