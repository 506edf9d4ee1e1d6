#!/usr/bin/env python3
"""BatchNorm diagnosis of a finished run, ours (`model.safetensors` + `config.json` of the
artifact directory) or the PyTorch mirror's (the same two files in its --out directory).

The trained weights are loaded into the mirror's ResNet (same key layout), and the script
reports:
- per BN layer, the running statistics the run ended with against the population
  statistics of that layer's input over the whole training set (no augmentation, same
  weights): |running mean - population mean| / population std, and running var /
  population var, averaged over channels; and the spread of the per-batch statistics at the
  run's batch size (std over batches of the batch mean, in population stds) — the noise that
  training-mode BN injects;
- per BN layer, the running variance against the mean of the batch variances that training-mode
  batches of the run's size give with the final weights (what the running variance is an
  exponential average of: about 1 when the running statistics are updated as PyTorch does);
- validation error three ways: eval mode with the run's running statistics (what the
  programs report), eval mode with the population statistics recomputed ("precise BN"), and
  training-mode BN over validation batches of the run's batch size.

Pinned versions: tools/requirements.txt.

    python tools/bn_diagnose.py runs/ours-bn-b2 [--json out.json]
"""

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_train_reference as ref  # noqa: E402


def load(run: Path):
    cfg = json.loads((run / "config.json").read_text())
    o = dict(ref.DEFAULTS)
    o.update({k: v for k, v in cfg["options"].items() if k in ref.DEFAULTS})
    o = argparse.Namespace(**o)
    o.norm = {"burn-gn": "gn"}.get(o.norm, o.norm)
    if o.dataset == "synthetic":
        size = o.image_size or 32
        xtr, ytr = ref.synthetic(o.synthetic_train, size, o.seed, 0)
        xva, yva = ref.synthetic(o.synthetic_valid, size, o.seed, 1)
    else:
        size = o.image_size or 64
        d = Path(o.data_dir)
        classes = sorted(p.name for p in (d / "train").iterdir() if p.is_dir())
        xtr, ytr = ref.read_folder_split(d / "train", classes, size)
        xva, yva = ref.read_folder_split(d / "valid", classes, size)
    xtr, ytr = ref.limit(xtr, ytr, o.limit_train)
    xva, yva = ref.limit(xva, yva, o.limit_valid)
    n = cfg["normalization"]
    mean, std = np.array(n["mean"], np.float32), np.array(n["std"], np.float32)
    norm = lambda px: torch.from_numpy(  # noqa: E731
        ((px.astype(np.float32) / 255.0 - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)
    )
    model = ref.ResNet(o, int(max(ytr.max(), yva.max()) + 1), size)
    from safetensors.torch import load_file

    state = load_file(str(run / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"weights do not match the mirror's model: missing {missing}, unexpected {unexpected}")
    return o, model, norm(xtr), torch.from_numpy(ytr), norm(xva), torch.from_numpy(yva)


def error(model, x, y, bs):
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(y), bs):
            wrong += (model(x[i : i + bs]).argmax(1) != y[i : i + bs]).sum().item()
    return 100.0 * wrong / len(y)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    o, model, xtr, ytr, xva, yva = load(a.run)
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        raise SystemExit("no BatchNorm layers in this run")
    # Inputs of every BN layer: population sums over the training set, and per-batch means.
    acc = {n: [0.0, 0.0, 0] for n, _ in bns}
    batch_means = {n: [] for n, _ in bns}
    hooks = []
    for name, m in bns:
        def hook(mod, inp, _out, name=name):
            t = inp[0].double()
            acc[name][0] = acc[name][0] + t.sum((0, 2, 3))
            acc[name][1] = acc[name][1] + (t * t).sum((0, 2, 3))
            acc[name][2] += t.shape[0] * t.shape[2] * t.shape[3]
            if t.shape[0] == o.batch_size:
                batch_means[name].append(t.mean((0, 2, 3)))
        hooks.append(m.register_forward_hook(hook))
    model.eval()  # eval-mode forward: inputs of layer k depend on the running stats of layers < k
    with torch.no_grad():
        for i in range(0, len(ytr), o.batch_size):
            model(xtr[i : i + o.batch_size])
    for h in hooks:
        h.remove()
    layers = []
    for name, m in bns:
        s, ss, n = acc[name]
        pm, pv = s / n, ss / n - (s / n) ** 2
        psd = pv.clamp_min(1e-12).sqrt()
        bm = torch.stack(batch_means[name])
        layers.append(dict(
            layer=name,
            mean_gap=((m.running_mean.double() - pm).abs() / psd).mean().item(),
            var_ratio=(m.running_var.double() / pv.clamp_min(1e-12)).mean().item(),
            batch_mean_spread=(bm.std(0) / psd).mean().item(),
        ))
    # What the running statistics are an average of: the statistics of training-mode batches
    # (each layer normalized by its own batch statistics, as in training; momentum 0 keeps the
    # running statistics as they are).
    trainmode = copy.deepcopy(model)
    tm_bns = dict((n, m) for n, m in trainmode.named_modules() if isinstance(m, nn.BatchNorm2d))
    tm_var = {n: [] for n in tm_bns}
    tm_mean = {n: [] for n in tm_bns}
    hooks = []
    for name, m in tm_bns.items():
        m.momentum = 0.0

        def hook(mod, inp, _out, name=name):
            t = inp[0].double()
            if t.shape[0] == o.batch_size:
                tm_mean[name].append(t.mean((0, 2, 3)))
                tm_var[name].append(t.var((0, 2, 3), unbiased=False))
        hooks.append(m.register_forward_hook(hook))
    trainmode.train()
    with torch.no_grad():
        for i in range(0, len(ytr), o.batch_size):
            trainmode(xtr[i : i + o.batch_size])
    for h in hooks:
        h.remove()
    for entry, (name, m) in zip(layers, bns):
        bv = torch.stack(tm_var[name]).mean(0)
        bm = torch.stack(tm_mean[name]).mean(0)
        entry["var_ratio_to_batch_var"] = (m.running_var.double() / bv.clamp_min(1e-12)).mean().item()
        entry["mean_gap_to_batch_mean"] = (
            (m.running_mean.double() - bm).abs() / bv.clamp_min(1e-12).sqrt()).mean().item()
    e_running = error(model, xva, yva, 256)
    # Precise BN: population statistics (cumulative average over the training set).
    precise = copy.deepcopy(model)
    for m in precise.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    precise.train()
    with torch.no_grad():
        for i in range(0, len(ytr), 256):
            precise(xtr[i : i + 256])
    precise.eval()
    e_precise = error(precise, xva, yva, 256)
    batchmode = copy.deepcopy(model)
    batchmode.train()
    e_batch = error(batchmode, xva, yva, o.batch_size)
    out = dict(run=str(a.run), batch_size=o.batch_size, layers=layers,
               valid_error_running=e_running, valid_error_precise_bn=e_precise,
               valid_error_batch_stats=e_batch)
    print(f"{a.run}: batch {o.batch_size}; valid error: running stats {e_running:.1f}%, "
          f"precise BN {e_precise:.1f}%, batch stats (train mode, batch {o.batch_size}) {e_batch:.1f}%")
    print(f"{'layer':24} {'|mean gap|/std':>14} {'run var/pop var':>15} {'batch-mean spread':>18}"
          f" {'run var/mean batch var':>22}")
    for l in layers:
        print(f"{l['layer']:24} {l['mean_gap']:14.3f} {l['var_ratio']:15.3f} {l['batch_mean_spread']:18.3f}"
              f" {l['var_ratio_to_batch_var']:22.3f}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
