#!/usr/bin/env python3
"""PyTorch CPU ResNet-50 throughput: GroupNorm (timm resnet50_gn) vs BatchNorm (timm resnet50).

For each model and input config it measures
  - train: one SGD step (momentum 0.9, lr 0.01), cross-entropy on random data/labels,
           model in train() mode;
  - infer: forward only, eval() mode under torch.no_grad().
Throughput is batch / median step time, in images/s, after --warmup untimed steps.
Models are created with timm.create_model(name, pretrained=False): no download.

Prints machine info and a markdown table.

Usage:
  python tools/bench_torch_resnet.py [--threads N] [--iters 10] [--warmup 2]
         [--models resnet50_gn,resnet50] [--configs 8x224,32x32] [--num-classes 1000]
"""

import argparse
import os
import platform
import statistics
import time

from malloc_settings import keep_freed_memory

import torch
import torch.nn as nn

import timm

DEFAULT_MODELS = "resnet50_gn,resnet50"
DEFAULT_CONFIGS = "8x224,32x32"  # BATCHxSIZE


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median_time(step, warmup, iters):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(model_name, batch, size, num_classes, warmup, iters):
    gen = torch.Generator().manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
    x = torch.randn(batch, 3, size, size, generator=gen)
    target = torch.randint(0, num_classes, (batch,), generator=gen)

    # Training step.
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), target)
        loss.backward()
        opt.step()

    t_train = median_time(train_step, warmup, iters)

    # Inference.
    model.eval()

    def infer_step():
        with torch.no_grad():
            model(x)

    t_infer = median_time(infer_step, warmup, iters)
    return batch / t_train, batch / t_infer, t_train * 1e3, t_infer * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--iters", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated timm model names")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated BATCHxSIZE list")
    ap.add_argument("--num-classes", type=int, default=1000)
    args = ap.parse_args()
    malloc = keep_freed_memory()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print("## PyTorch CPU ResNet-50 throughput (GroupNorm vs BatchNorm)\n")
    print(f"- torch: {torch.__version__}, timm: {timm.__version__}")
    print(f"- allocator: {malloc}")
    print(f"- threads: {torch.get_num_threads()} (os.cpu_count() = {os.cpu_count()})")
    print(f"- processor: {cpu_model()}; machine: {platform.machine()}; {platform.platform()}")
    print(f"- timing: median of {args.iters} steps after {args.warmup} warmup steps; "
          f"train = SGD(momentum 0.9) + cross-entropy, infer = eval + no_grad; float32\n")
    print("| model | batch | input | train img/s | train ms/step | infer img/s | infer ms/step |")
    print("|---|---|---|---|---|---|---|")
    for cfg in args.configs.split(","):
        batch, size = (int(v) for v in cfg.split("x"))
        for name in args.models.split(","):
            try:
                tr, inf, tr_ms, inf_ms = bench(name, batch, size, args.num_classes, args.warmup, args.iters)
            except (RuntimeError, ValueError) as e:  # e.g. BatchNorm training with batch 1 at 1x1
                print(f"| {name} | {batch} | {size}x{size} | failed: {str(e).splitlines()[0][:80]} | | | |",
                      flush=True)
                continue
            print(f"| {name} | {batch} | {size}x{size} | {tr:.1f} | {tr_ms:.1f} | {inf:.1f} | {inf_ms:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
