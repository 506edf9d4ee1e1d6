#!/usr/bin/env python3
"""The PyTorch mirror of gn-burn's training engine (crates/training, the `train` example).

Pinned versions (tools/requirements.txt): torch==2.15.0, numpy==2.4.6, pillow (image folders),
CPU only.

Given the same options as the `train` program (or a run's `config.json`), it trains the same
thing and writes a `metrics.json` of the same shape:

- data: the `synthetic` generator reimplemented bit for bit (SplitMix64 streams from
  `(seed, split, index)`, the same f32 arithmetic; transcendental functions are computed in
  f64 and rounded to f32, which is what a correctly rounded libm gives, so a pixel can differ
  in the rare case where Rust's libm is off by one ulp at a rounding boundary; the per-channel
  normalization estimated from the data matches `config.json` to the printed digits), the
  image folder reader (PNG/JPEG, RGB, shorter side resized + centre crop; exact when the files
  already have the requested size, otherwise PIL's bilinear filter stands in for the `image`
  crate's Triangle filter) and CIFAR-10's binary batches; `--limit-train/--limit-valid` take
  every k-th item as ours does;
- normalization: estimated from up to 2000 training items as ours (CIFAR-10: the fixed
  constants);
- order and augmentation: the same per-epoch permutation and the same per-item crop offsets
  and flips, drawn from the same SplitMix64 streams (so the batches are identical to ours);
- model: ResNet-18..152 (basic/bottleneck, v1.5), CIFAR or ImageNet stem, base width, GN with
  the same groups rule (a layer with fewer channels than G gets one channel per group), BN
  (momentum 0.1, eps 1e-5), zero-initialized last gamma of each residual branch;
- init: convolutions Kaiming normal, fan_out, std sqrt(2 / (out_channels * kh * kw)); norm
  gamma 1, beta 0; the classifier PyTorch's nn.Linear default (U(-1/sqrt(fan_in), ..) for
  weight and bias), which is also what burn's LinearConfig default draws;
- optimizer: SGD, momentum 0.9 without dampening, no Nesterov, L2 weight decay added to the
  gradient of every parameter (norm gamma/beta and biases included), as burn's SgdConfig with
  WeightDecayConfig; or AdamW;
- schedule: peak lr = lr * batch / 256, linear warmup over round(warmup_epochs * steps) steps
  (step s gets peak * (s + 1) / warmup), then cosine to 0 (or step /10 at 30/60/80%),
  evaluated per optimizer step as ours;
- evaluation: after each epoch, eval mode (BN with running statistics), top-1/top-5 accuracy
  and mean cross-entropy over the validation set.

What cannot be made identical: the initial weights (torch's generator is not burn's; the
distributions are the same), and BatchNorm's running variance (PyTorch stores the unbiased
batch variance, burn the biased one: a factor n/(n-1) with n = batch * H * W, at most 1.03
for batch 2 at 4x4). Floating-point summation order differs in every kernel.

    python tools/torch_train_reference.py --norm bn --batch-size 2 --base-width 8 \
        --epochs 3 --synthetic-train 1000 --synthetic-valid 300 --out runs/torch-bn-b2
    python tools/torch_train_reference.py --config runs/last/config.json --out runs/torch
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
SEED0 = 0x853C49E6748FEA9B
SHUFFLE_TAG = 0x53485546
f32 = np.float32


# ----------------------------------------------------------------------------- SplitMix64
class Rng:
    """SplitMix64, as src/data/rng.rs (scalar)."""

    def __init__(self, parts):
        self.s = SEED0
        for p in parts:
            self.s ^= p & M64
            self.next_u64()

    def next_u64(self) -> int:
        self.s = (self.s + GOLDEN) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next_u64() % max(n, 1)

    def unit_f64(self) -> float:
        """Uniform in [0, 1) with 53 bits (the flip draw)."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def permutation(self, n: int) -> list[int]:
        p = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            p[i], p[j] = p[j], p[i]
        return p


class VecRng:
    """SplitMix64 streams, one per row (vectorized over images)."""

    def __init__(self, parts_rows: np.ndarray):
        # parts_rows: [N, P] uint64
        n = parts_rows.shape[0]
        self.s = np.full(n, SEED0, dtype=np.uint64)
        for k in range(parts_rows.shape[1]):
            self.s ^= parts_rows[:, k].astype(np.uint64)
            self.next_u64()

    def next_u64(self) -> np.ndarray:
        with np.errstate(over="ignore"):
            self.s = self.s + np.uint64(GOLDEN)
            z = self.s
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return z ^ (z >> np.uint64(31))

    def uniform(self) -> np.ndarray:
        return (self.next_u64() >> np.uint64(40)).astype(f32) / f32(1 << 24)

    def range(self, lo: float, hi: float) -> np.ndarray:
        lo, hi = f32(lo), f32(hi)
        return lo + (hi - lo) * self.uniform()

    def normal(self) -> np.ndarray:
        u1 = np.maximum(self.uniform(), f32(1e-7))
        u2 = self.uniform()
        ln = np.log(u1.astype(np.float64)).astype(f32)
        r = np.sqrt(f32(-2.0) * ln)
        ang = f32(2.0) * f32(math.pi) * u2
        return r * np.cos(ang.astype(np.float64)).astype(f32)


# ----------------------------------------------------------------------------- data
def synthetic(len_: int, size: int, seed: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """src/data/synthetic.rs: `len_` images [N, 3, size, size] uint8 and labels."""
    idx = np.arange(len_, dtype=np.uint64)
    parts = np.stack([np.full(len_, seed, np.uint64), np.full(len_, split, np.uint64), idx], 1)
    rng = VecRng(parts)
    labels = (np.arange(len_) % 10).astype(np.int64)
    bg = np.stack([rng.uniform() for _ in range(3)], 1)
    fg = np.stack([rng.uniform() for _ in range(3)], 1)
    contrast = np.zeros(len_, f32)
    for c in range(3):
        contrast = contrast + np.abs(fg[:, c] - bg[:, c])
    low = contrast < f32(0.6)
    pushed = np.where(bg > f32(0.5), bg - f32(0.5), bg + f32(0.5)).astype(f32)
    fg = np.where(low[:, None], pushed, fg)
    cx = rng.range(0.35, 0.65)
    cy = rng.range(0.35, 0.65)
    radius = rng.range(0.2, 0.34)
    angle = rng.range(0.0, 2 * math.pi)  # TAU as f32
    jitter = rng.range(-0.2, 0.2)
    period = rng.range(0.09, 0.16)
    noise = rng.range(0.02, 0.08)

    n = size
    coords = (np.arange(n, dtype=f32) + f32(0.5)) / f32(n)
    u = np.broadcast_to(coords[None, None, :], (len_, n, n))
    v = np.broadcast_to(coords[None, :, None], (len_, n, n))
    col = lambda a: a[:, None, None]  # noqa: E731
    dx, dy = u - col(cx), v - col(cy)
    r = col(radius)
    dist = np.sqrt(dx * dx + dy * dy)

    def sincos(a):
        a64 = a.astype(np.float64)
        return np.sin(a64).astype(f32), np.cos(a64).astype(f32)

    def rotate(a):
        s, c = sincos(a)
        s, c = col(s), col(c)
        return (dx * c + dy * s) / r, (-dx * s + dy * c) / r

    in_patch = (np.abs(dx) < r) & (np.abs(dy) < r)
    inside = np.zeros((len_, n, n), bool)
    lab = col(labels)
    inside |= (lab == 0) & (dist < r)
    inside |= (lab == 1) & (dist < r) & (dist > f32(0.6) * r)
    a, b = rotate(angle)
    inside |= (lab == 2) & (np.abs(a) < f32(0.75)) & (np.abs(b) < f32(0.75))
    s3 = np.sqrt(f32(3.0))
    inside |= (lab == 3) & (b > f32(-0.5)) & ((s3 * a - b) < f32(1.0)) & ((-s3 * a - b) < f32(1.0))
    for cls, base in ((4, f32(0.0)), (5, f32(math.pi / 4))):
        a, b = rotate(base + f32(0.3) * jitter)
        bars = ((np.abs(a) < f32(1.0)) & (np.abs(b) < f32(0.28))) | (
            (np.abs(b) < f32(1.0)) & (np.abs(a) < f32(0.28))
        )
        inside |= (lab == cls) & bars
    p = col(period)
    fv = np.floor(v / p).astype(np.int64)
    fu = np.floor(u / p).astype(np.int64)
    inside |= (lab == 6) & in_patch & (fv % 2 == 0)
    inside |= (lab == 7) & in_patch & (fu % 2 == 0)
    inside |= (lab == 8) & in_patch & ((fu + fv) % 2 == 0)
    p13 = col(period * f32(1.3))
    qu, qv = u / p13, v / p13
    gu = (qu - np.trunc(qu)) - f32(0.5)
    gv = (qv - np.trunc(qv)) - f32(0.5)
    inside |= (lab == 9) & in_patch & (np.sqrt(gu * gu + gv * gv) < f32(0.28))

    base = np.where(inside[:, None], fg[:, :, None, None], bg[:, :, None, None]).astype(f32)
    # Noise: per pixel (row-major), per channel, one normal each, in that order.
    normals = np.empty((len_, n * n, 3), f32)
    for k in range(n * n):
        for c in range(3):
            normals[:, k, c] = rng.normal()
    normals = normals.reshape(len_, n, n, 3).transpose(0, 3, 1, 2)
    value = np.clip(base + col(noise)[:, None] * normals, f32(0.0), f32(1.0))
    # Rust's f32::round rounds half away from zero (numpy's np.round: half to even).
    scaled = value * f32(255.0)
    low_ = np.floor(scaled)
    pixels = np.where(scaled - low_ >= f32(0.5), low_ + 1, low_).astype(np.uint8)
    return pixels, labels


def read_folder_split(d: Path, classes: list[str], size: int):
    from PIL import Image

    xs, ys = [], []
    for label, cls in enumerate(classes):
        cdir = d / cls
        if not cdir.is_dir():
            continue
        files = sorted(
            p for p in cdir.iterdir() if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg")
        )
        for f in files:
            img = Image.open(f).convert("RGB")
            w, h = img.size
            if (w, h) != (size, size):
                scale = size / min(w, h)
                nw, nh = max(round(w * scale), size), max(round(h * scale), size)
                img = img.resize((nw, nh), Image.BILINEAR)
                x0, y0 = (nw - size) // 2, (nh - size) // 2
                img = img.crop((x0, y0, x0 + size, y0 + size))
            xs.append(np.asarray(img, np.uint8).transpose(2, 0, 1))
            ys.append(label)
    return np.stack(xs), np.array(ys, np.int64)


def read_cifar(d: Path):
    if not (d / "test_batch.bin").exists() and (d / "cifar-10-batches-bin").is_dir():
        d = d / "cifar-10-batches-bin"

    def read(files):
        raw = np.concatenate([np.fromfile(d / f, np.uint8) for f in files]).reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32).copy(), raw[:, 0].astype(np.int64)

    return read([f"data_batch_{i}.bin" for i in range(1, 6)]), read(["test_batch.bin"])


def limit(x, y, n):
    if n is None or n >= len(y):
        return x, y
    step = len(y) // max(n, 1)
    idx = np.arange(n) * step
    return x[idx], y[idx]


def estimate_normalization(x: np.ndarray, max_items=2000):
    n = len(x)
    step = max(n // max(max_items, 1), 1)
    sel = x[0:n:step][:max_items].astype(np.float64) / 255.0
    # ours divides the u8 by 255 in f64 and sums sequentially; the mean agrees to ~1e-12
    mean = sel.mean(axis=(0, 2, 3))
    var = (sel * sel).mean(axis=(0, 2, 3)) - mean * mean
    std = np.maximum(np.sqrt(np.maximum(var, 0)).astype(np.float32), 1e-3)
    return mean.astype(np.float32), std


def augment(pixels: np.ndarray, size: int, seed: int, epoch: int, index: int, pad: int, flip_prob: float):
    """src/data/augment.rs for one `3 x size x size` image."""
    rng = Rng([seed, epoch, index])
    if pad > 0:
        ox, oy = rng.below(2 * pad + 1), rng.below(2 * pad + 1)
    else:
        ox, oy = 0, 0
    flip = flip_prob > 0 and rng.unit_f64() < flip_prob
    padded = np.zeros((3, size + 2 * pad, size + 2 * pad), np.uint8)
    padded[:, pad : pad + size, pad : pad + size] = pixels
    out = padded[:, oy : oy + size, ox : ox + size]
    if flip:
        # ours samples source column (size-1-x) + ox - pad: flip after the crop.
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


# ----------------------------------------------------------------------------- model
def groups_for(norm: str, groups: int, group_size, channels: int) -> int:
    if group_size:
        return 1 if channels < group_size else channels // group_size
    return channels if channels < groups else groups


def Norm(kind, channels, groups, group_size, eps, zero):  # noqa: N802
    """BatchNorm2d (momentum 0.1) or GroupNorm, gamma 1 (0 when `zero`), beta 0."""
    if kind == "bn":
        n = nn.BatchNorm2d(channels, eps=eps, momentum=0.1)
    else:
        n = nn.GroupNorm(groups_for(kind, groups, group_size, channels), channels, eps=eps)
    nn.init.constant_(n.weight, 0.0 if zero else 1.0)
    nn.init.zeros_(n.bias)
    return n


def conv(cin, cout, k, stride):
    c = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
    nn.init.kaiming_normal_(c.weight, mode="fan_out", nonlinearity="relu")
    return c


class Block(nn.Module):
    def __init__(self, o, cin, width, stride, bottleneck):
        super().__init__()
        mk = lambda ch, zero=False: Norm(o.norm, ch, o.groups, o.group_size, 1e-5, zero)  # noqa: E731
        exp = 4 if bottleneck else 1
        cout = width * exp
        self.bottleneck = bottleneck
        if bottleneck:
            self.conv1, self.bn1 = conv(cin, width, 1, 1), mk(width)
            self.conv2, self.bn2 = conv(width, width, 3, stride), mk(width)
            self.conv3, self.bn3 = conv(width, cout, 1, 1), mk(cout, True)
        else:
            self.conv1, self.bn1 = conv(cin, width, 3, stride), mk(width)
            self.conv2, self.bn2 = conv(width, width, 3, 1), mk(width, True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride), mk(cout))

    def forward(self, x):
        s = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        if self.bottleneck:
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
        else:
            out = self.bn2(self.conv2(out))
        return F.relu(out + s)


LAYERS = {
    "resnet18": ([2, 2, 2, 2], False),
    "resnet34": ([3, 4, 6, 3], False),
    "resnet50": ([3, 4, 6, 3], True),
    "resnet101": ([3, 4, 23, 3], True),
    "resnet152": ([3, 8, 36, 3], True),
}


class ResNet(nn.Module):
    def __init__(self, o, num_classes, image_size):
        super().__init__()
        layers, bottleneck = LAYERS[o.model]
        w = o.base_width
        stem = o.stem or ("cifar" if image_size < 64 else "imagenet")
        if stem == "imagenet":
            self.conv1, self.maxpool = conv(3, w, 7, 2), nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1, self.maxpool = conv(3, w, 3, 1), nn.Identity()
        self.bn1 = Norm(o.norm, w, o.groups, o.group_size, 1e-5, False)
        cin, stages = w, []
        for i, n in enumerate(layers):
            blocks = []
            for j in range(n):
                blocks.append(Block(o, cin, w << i, (1 if i == 0 else 2) if j == 0 else 1, bottleneck))
                cin = (w << i) * (4 if bottleneck else 1)
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)  # PyTorch's default init, as torchvision

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ----------------------------------------------------------------------------- schedule
def lr_at(step, peak, warmup, total, decay):
    warmup = min(warmup, total)
    total = max(total, 1)
    if step < warmup:
        return peak * (step + 1) / warmup
    if decay == "cosine":
        span = max(total - warmup, 1)
        t = min((step - warmup) / span, 1.0)
        return 0.5 * peak * (1 + math.cos(math.pi * t))
    passed = sum(step >= f * total for f in (0.3, 0.6, 0.8))
    return peak * 0.1**passed


# ----------------------------------------------------------------------------- main
DEFAULTS = dict(
    model="resnet18", norm="gn", groups=32, group_size=None, base_width=16, stem=None,
    dataset="synthetic", data_dir=None, image_size=None, batch_size=32, epochs=6, lr=0.8,
    momentum=0.9, weight_decay=1e-4, optimizer="sgd", schedule="cosine", warmup_epochs=1.0,
    seed=42, synthetic_train=5000, synthetic_valid=1000, limit_train=None, limit_valid=None,
    flip_prob=0.5, crop_pad=None, no_augment=False,
)


def parse(extra=None):
    """The mirror's options; `extra(parser)` adds a caller's own (tools/torch_step_profile.py)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, help="a run's config.json: its options are the defaults")
    if extra:
        extra(ap)
    else:
        ap.add_argument("--out", type=Path, required=True, help="directory for metrics.json")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_THREADS", "2")))
    ap.add_argument("--torch-seed", type=int, default=None, help="init seed (default: --seed)")
    ap.add_argument("--save-init", type=Path,
                    help="write the initial weights (.safetensors, torchvision layout) before training: "
                         "ours starts from them with --init-weights")
    ap.add_argument("--init-weights", type=Path,
                    help="start from these weights (a --save-init file, or ours' model.safetensors)")
    ap.add_argument("--dump-stats", action="store_true",
                    help="write bn_stats.json: per-layer running vs batch statistics per epoch")
    for k, v in DEFAULTS.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            ap.add_argument(flag, action="store_true", default=None)
        elif v is None:
            ap.add_argument(flag, default=None)
        else:
            ap.add_argument(flag, type=type(v), default=None)
    a = ap.parse_args()
    opts = dict(DEFAULTS)
    if a.config:
        saved = json.loads(a.config.read_text())["options"]
        opts.update({k: saved[k] for k in DEFAULTS if k in saved})
    for k in DEFAULTS:
        v = getattr(a, k)
        if v is not None:
            opts[k] = v
    for k in ("group_size", "image_size", "limit_train", "limit_valid", "crop_pad"):
        if opts[k] is not None:
            opts[k] = int(opts[k])
    o = argparse.Namespace(**opts)
    o.norm = {"burn-gn": "gn"}.get(o.norm, o.norm)
    return a, o


def make_optimizer(o, model, peak):
    if o.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=peak, momentum=o.momentum, dampening=0,
                               weight_decay=o.weight_decay, nesterov=False)
    return torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=o.weight_decay, eps=1e-8)


def open_data(o):
    """The recipe's data: (xtr, ytr, xva, yva, size, mean, std, num_classes, normalize)."""
    if o.dataset == "synthetic":
        size = o.image_size or 32
        xtr, ytr = synthetic(o.synthetic_train, size, o.seed, 0)
        xva, yva = synthetic(o.synthetic_valid, size, o.seed, 1)
    elif o.dataset == "folder":
        size = o.image_size or 64
        d = Path(o.data_dir)
        classes = sorted(p.name for p in (d / "train").iterdir() if p.is_dir())
        vd = d / "valid" if (d / "valid").is_dir() else d / "val"
        xtr, ytr = read_folder_split(d / "train", classes, size)
        xva, yva = read_folder_split(vd, classes, size)
    else:
        (xtr, ytr), (xva, yva) = read_cifar(Path(o.data_dir))
        size = 32
        if o.image_size not in (None, 32):
            raise SystemExit("the mirror reads CIFAR-10 at 32x32 only")
    xtr, ytr = limit(xtr, ytr, o.limit_train)
    xva, yva = limit(xva, yva, o.limit_valid)
    if o.dataset == "cifar10":
        mean = np.array([0.4914, 0.4822, 0.4465], f32)
        std = np.array([0.2470, 0.2435, 0.2616], f32)
    else:
        mean, std = estimate_normalization(xtr)
    num_classes = int(max(ytr.max(), yva.max()) + 1) if o.dataset != "synthetic" else 10

    def normalize(px: np.ndarray) -> torch.Tensor:
        v = (px.astype(f32) / f32(255.0) - mean[None, :, None, None]) / std[None, :, None, None]
        return torch.from_numpy(v.astype(f32))

    return xtr, ytr, xva, yva, size, mean, std, num_classes, normalize


def main():
    a, o = parse()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.torch_seed if a.torch_seed is not None else o.seed)
    started = time.time()

    xtr, ytr, xva, yva, size, mean, std, num_classes, normalize = open_data(o)
    pad = (size // 8) if o.crop_pad is None else o.crop_pad
    model = ResNet(o, num_classes, size)
    if a.init_weights:
        from safetensors.torch import load_file

        missing, unexpected = model.load_state_dict(load_file(str(a.init_weights)), strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise SystemExit(f"{a.init_weights}: missing {missing}, unexpected {unexpected}")
    if a.save_init:
        save_weights(model, a.save_init)
    bs = o.batch_size
    steps_per_epoch = math.ceil(len(ytr) / bs)
    total = steps_per_epoch * o.epochs
    warmup = int(round(o.warmup_epochs * steps_per_epoch))
    peak = o.lr * bs / 256
    opt = make_optimizer(o, model, peak)

    xva_t, yva_t = normalize(xva), torch.from_numpy(yva)
    epochs, step, stats, steps = [], 0, [], []
    prev = time.time()
    for epoch in range(o.epochs):
        model.train()
        order = Rng([o.seed, SHUFFLE_TAG, epoch]).permutation(len(ytr))
        tl = tc = t5 = 0.0
        lrs = []
        for b0 in range(0, len(order), bs):
            idx = order[b0 : b0 + bs]
            if o.no_augment:
                px = xtr[idx]
            else:
                px = np.stack([augment(xtr[i], size, o.seed, epoch, i, pad, o.flip_prob) for i in idx])
            x, y = normalize(px), torch.from_numpy(ytr[idx])
            lr = lr_at(step, peak, warmup, total, o.schedule)
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            lrs.append(lr)
            steps.append((epoch + 1, step, loss.item(), lr))
            with torch.no_grad():
                n = len(idx)
                tl += loss.item() * n
                tc += (logits.argmax(1) == y).sum().item()
                t5 += (logits.topk(min(5, logits.shape[1]), 1).indices == y[:, None]).any(1).sum().item()
        model.eval()
        vl = vc = v5 = 0.0
        with torch.no_grad():
            for b0 in range(0, len(yva), bs):
                x, y = xva_t[b0 : b0 + bs], yva_t[b0 : b0 + bs]
                logits = model(x)
                vl += F.cross_entropy(logits, y, reduction="sum").item()
                vc += (logits.argmax(1) == y).sum().item()
                v5 += (logits.topk(min(5, logits.shape[1]), 1).indices == y[:, None]).any(1).sum().item()
        if a.dump_stats and o.norm == "bn":
            stats.append(bn_stats(model, normalize(xtr[order[:bs]]), epoch + 1))
        now = time.time()
        nt, nv = len(ytr), len(yva)
        epochs.append(dict(
            epoch=epoch + 1, train_loss=tl / nt, train_accuracy=100 * tc / nt, train_top5=100 * t5 / nt,
            valid_loss=vl / nv, valid_accuracy=100 * vc / nv, valid_top5=100 * v5 / nv,
            learning_rate=sum(lrs) / len(lrs), seconds=now - prev,
        ))
        prev = now
        e = epochs[-1]
        print(f"epoch {e['epoch']}/{o.epochs} train loss {e['train_loss']:.4f} acc {e['train_accuracy']:.2f}"
              f"  valid loss {e['valid_loss']:.4f} acc {e['valid_accuracy']:.2f}  {e['seconds']:.1f}s", flush=True)
    best = max(epochs, key=lambda e: (e["valid_accuracy"], -e["epoch"]))
    metrics = dict(epochs=epochs, valid_accuracy=epochs[-1]["valid_accuracy"],
                   best_valid_accuracy=best["valid_accuracy"], best_epoch=best["epoch"],
                   total_seconds=time.time() - started)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (a.out / "config.json").write_text(json.dumps(dict(
        options=vars(o), normalization=dict(mean=mean.tolist(), std=std.tolist()),
        image_size=size, mirror="tools/torch_train_reference.py", torch=torch.__version__), indent=2))
    # Per optimizer step, as ours' train/epoch-N/Loss.log: epoch, step, batch loss, lr.
    (a.out / "steps.csv").write_text("epoch,step,loss,lr\n" + "".join(
        f"{e},{s},{l!r},{r!r}\n" for e, s, l, r in steps))
    save_weights(model, a.out / "model.safetensors")
    if stats:
        (a.out / "bn_stats.json").write_text(json.dumps(stats, indent=1))


def save_weights(model, path: Path):
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}, str(path))


def bn_stats(model, x, epoch):
    """Per BN layer: the running mean/var against the statistics of one training batch."""
    out, hooks = [], []
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            def hook(mod, inp, _o, name=name):
                t = inp[0]
                bm, bv = t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False)
                out.append(dict(layer=name, epoch=epoch,
                                mean_gap=(mod.running_mean - bm).abs().mean().item(),
                                var_ratio=(mod.running_var / bv.clamp_min(1e-12)).mean().item()))
            hooks.append(m.register_forward_hook(hook))
    model.train()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(x)
    model.load_state_dict(saved)
    for h in hooks:
        h.remove()
    return out


if __name__ == "__main__":
    main()
