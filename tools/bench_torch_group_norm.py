#!/usr/bin/env python3
"""Time PyTorch CPU nn.GroupNorm(32, C): forward, and forward + backward.

For each shape and dtype: warm up, then take the median of --repeats timed
runs. forward+backward computes y = gn(x) and y.backward(dy) (gradients for
x, weight and bias) with a preallocated dy; the "ones seed" column seeds the
backward with a fresh torch.ones_like(y) instead, as burn's y.backward() does. A dtype whose GroupNorm the CPU build does not support
is reported as "unsupported" instead of aborting the run.

Prints machine info and a markdown table.

Usage:
  python tools/bench_torch_group_norm.py [--threads N] [--warmup 3] [--repeats 10]
         [--shapes 8x256x56x56,2x2048x7x7] [--dtypes float32,bfloat16]
         [--channels-last] [--activation silu]

--channels-last times x (and dy) in torch.channels_last memory format, as
GN_BENCH_LAYOUT=channels_last does in `cargo bench --workspace --bench group_norm`.
--activation silu (or relu) times GroupNorm followed by F.silu (F.relu), as
GN_BENCH_ACTIVATION=silu does there.
"""

import argparse
import os
import platform
import statistics
import time

from malloc_settings import keep_freed_memory

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_SHAPES = "8x256x56x56,32x64x32x32,2x2048x7x7,1x512x64x64"
DEFAULT_DTYPES = "float32,float16,bfloat16"
NUM_GROUPS = 32


def parse_shapes(s):
    return [tuple(int(v) for v in part.split("x")) for part in s.split(",") if part]


def cpu_model():
    name = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or "unknown"


def time_fn(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


ACTIVATIONS = {"none": lambda y: y, "relu": F.relu, "silu": F.silu}


def bench_one(shape, dtype, warmup, repeats, channels_last, activation="none"):
    c = shape[1]
    norm = nn.GroupNorm(NUM_GROUPS, c).to(dtype)
    act = ACTIVATIONS[activation]

    def gn(v):
        return act(norm(v))

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(dtype)
    dy = torch.randn(shape, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        dy = dy.contiguous(memory_format=torch.channels_last)

    def fwd():
        with torch.no_grad():
            gn(x)

    xg = x.clone().requires_grad_(True)

    def fwd_bwd():
        xg.grad = None
        norm.zero_grad(set_to_none=True)
        y = gn(xg)
        y.backward(dy)

    def fwd_bwd_ones():
        # What burn's `y.backward()` does: seed with a fresh tensor of ones of y's shape.
        xg.grad = None
        norm.zero_grad(set_to_none=True)
        y = gn(xg)
        y.backward(torch.ones_like(y))  # ones_like keeps y's memory format

    results = []
    for fn in (fwd, fwd_bwd, fwd_bwd_ones):
        try:
            fn()  # probe support before timing
            results.append(f"{time_fn(fn, warmup, repeats):.3f}")
        except (RuntimeError, NotImplementedError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            results.append(f"unsupported ({msg[:60]})")
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated NxCxHxW list")
    ap.add_argument("--dtypes", default=DEFAULT_DTYPES)
    ap.add_argument("--channels-last", action="store_true", help="x and dy in torch.channels_last")
    ap.add_argument("--activation", default="none", choices=sorted(ACTIVATIONS), help="applied after GroupNorm")
    args = ap.parse_args()
    malloc = keep_freed_memory()

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print("## PyTorch CPU nn.GroupNorm(32, C) benchmark\n")
    print(f"- torch: {torch.__version__}")
    print(f"- allocator: {malloc}")
    print(f"- threads: {torch.get_num_threads()} (os.cpu_count() = {os.cpu_count()})")
    print(f"- processor: {cpu_model()}; machine: {platform.machine()}; {platform.platform()}")
    print(f"- layout: {'channels_last' if args.channels_last else 'contiguous (NCHW)'}")
    print(f"- activation after GroupNorm: {args.activation}")
    print(f"- timing: median of {args.repeats} runs after {args.warmup} warmup runs\n")
    print("| shape | dtype | fwd ms | fwd+bwd ms | fwd+bwd ms (ones seed) |")
    print("|---|---|---|---|---|")
    for shape in parse_shapes(args.shapes):
        for dname in args.dtypes.split(","):
            dtype = getattr(torch, dname)
            fwd_ms, fb_ms, fb1_ms = bench_one(
                shape, dtype, args.warmup, args.repeats, args.channels_last, args.activation
            )
            shape_s = "[" + ", ".join(str(v) for v in shape) + "]"
            print(f"| {shape_s} | {dname} | {fwd_ms} | {fb_ms} | {fb1_ms} |", flush=True)


if __name__ == "__main__":
    main()
