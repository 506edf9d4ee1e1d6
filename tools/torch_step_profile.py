#!/usr/bin/env python3
"""Where the PyTorch mirror's training time goes, phase by phase: the counterpart of
`cargo run --release --example step_profile` (crates/training/src/profile.rs).

Pinned versions as tools/torch_train_reference.py (torch==2.15.0, numpy==2.4.6), CPU. Takes the
mirror's options (the `train` program's recipe), runs `--warmup-steps` unmeasured steps, then
times `--steps` training steps phase by phase (batch preparation: order, crops/flips,
normalization, tensor; forward with the loss; backward; optimizer step; metrics read back:
loss, top-1, top-5), one validation pass and one checkpoint (model and optimizer state
written and fsynced), and prints milliseconds per step and the epoch they add up to. With
`--ops N`, torch.profiler's table of the N most expensive operators over the measured steps
(self CPU time), for the time by layer type.

    python tools/torch_step_profile.py --dataset folder --data-dir runs/digits32 --image-size 32 \\
        --base-width 32 --batch-size 64 --threads 2 --steps 20 --ops 25
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_train_reference as ref  # noqa: E402
from malloc_settings import keep_freed_memory  # noqa: E402


def extra(ap):
    ap.add_argument("--steps", type=int, default=20, help="training steps to measure")
    ap.add_argument("--warmup-steps", type=int, default=3, help="unmeasured steps before them")
    ap.add_argument("--ops", type=int, default=0, help="print the N most expensive operators")


PHASES = ("data", "forward", "backward", "optimizer", "metrics")


def read_metrics(loss, logits, y):
    k = min(5, logits.shape[1])
    return (loss.item(), (logits.argmax(1) == y).sum().item(),
            (logits.topk(k, 1).indices == y[:, None]).any(1).sum().item())


def main():
    a, o = ref.parse(extra)
    print("allocator:", keep_freed_memory())
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.torch_seed if a.torch_seed is not None else o.seed)
    xtr, ytr, xva, yva, size, _mean, _std, num_classes, normalize = ref.open_data(o)
    pad = (size // 8) if o.crop_pad is None else o.crop_pad
    model = ref.ResNet(o, num_classes, size)
    bs = o.batch_size
    steps_per_epoch = math.ceil(len(ytr) / bs)
    total = steps_per_epoch * o.epochs
    warmup = int(round(o.warmup_epochs * steps_per_epoch))
    peak = o.lr * bs / 256
    opt = ref.make_optimizer(o, model, peak)

    def batches():
        epoch = 0
        while True:
            order = ref.Rng([o.seed, ref.SHUFFLE_TAG, epoch]).permutation(len(ytr))
            for b0 in range(0, len(order), bs):
                yield epoch, order[b0: b0 + bs]
            epoch += 1

    train = dict.fromkeys(PHASES, 0.0)
    source = batches()
    profiler = None
    model.train()
    for step in range(a.warmup_steps + a.steps):
        if step == a.warmup_steps and a.ops:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profiler.__enter__()
        t = [time.perf_counter()]
        epoch, idx = next(source)
        if o.no_augment:
            px = xtr[idx]
        else:
            px = np.stack([ref.augment(xtr[i], size, o.seed, epoch, i, pad, o.flip_prob) for i in idx])
        x, y = normalize(px), torch.from_numpy(ytr[idx])
        t.append(time.perf_counter())
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        for g in opt.param_groups:
            g["lr"] = ref.lr_at(step, peak, warmup, total, o.schedule)
        opt.step()
        t.append(time.perf_counter())
        with torch.no_grad():
            read_metrics(loss, logits, y)
        t.append(time.perf_counter())
        if step >= a.warmup_steps:
            for name, t0, t1 in zip(PHASES, t, t[1:]):
                train[name] += t1 - t0
    if profiler is not None:
        profiler.__exit__(None, None, None)

    valid = dict.fromkeys(PHASES, 0.0)
    model.eval()
    nvalid = 0
    with torch.no_grad():
        for b0 in range(0, len(yva), bs):
            t0 = time.perf_counter()
            x, y = normalize(xva[b0: b0 + bs]), torch.from_numpy(yva[b0: b0 + bs])
            t1 = time.perf_counter()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            t2 = time.perf_counter()
            read_metrics(loss, logits, y)
            t3 = time.perf_counter()
            valid["data"] += t1 - t0
            valid["forward"] += t2 - t1
            valid["metrics"] += t3 - t2
            nvalid += 1

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        for name, state in (("model", model.state_dict()), ("optim", opt.state_dict())):
            path = os.path.join(d, name + ".pt")
            with open(path, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
        checkpoint = time.perf_counter() - t0

    print(f"torch {torch.__version__}, {a.threads} threads")
    print("ms per batch   data  forward backward optimizer metrics   total")
    for name, phases, n in (("train", train, a.steps), ("valid", valid, nvalid)):
        ms = [1000 * phases[p] / n for p in PHASES]
        print(f"{name:<10} " + " ".join(f"{v:8.1f}" for v in ms) + f" {sum(ms):8.1f}")
    epoch_s = sum(train.values()) / a.steps * steps_per_epoch + sum(valid.values()) + checkpoint
    print(f"checkpoint {1000 * checkpoint:.1f} ms; one epoch ({steps_per_epoch} steps of {bs}, "
          f"{nvalid} validation batches, a checkpoint) adds up to {epoch_s:.2f} s")
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.ops))


if __name__ == "__main__":
    main()
