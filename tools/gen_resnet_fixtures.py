#!/usr/bin/env python3
"""Generate small-width ResNet reference fixtures from timm's ResNet.

Writes to crates/models/tests/fixtures/resnet/:
  resnet50_gn_w8.safetensors        float32 state dict (Bottleneck [3,4,6,3], GroupNorm(4))
  resnet18_gn_w8.pth                torch.save(state_dict) pickle (BasicBlock [2,2,2,2], GroupNorm(4))
  resnet50_bn_w8.safetensors        Bottleneck, BatchNorm2d (random running stats, eval mode)
  resnet18_bn_w8.safetensors        BasicBlock, BatchNorm2d
  resnet18_gn_w8_cifar.safetensors  BasicBlock, GroupNorm(4), CIFAR stem (3x3/1 conv, no maxpool)
  <name>_io.safetensors             x (float32 input), logits (float64), pooled (float64,
                                    the globally average-pooled features fed to fc)
                                    metadata: arch, norm, num_groups ("0" for BN), width, stem,
                                    num_classes, layers, block, eps, input_shape

All models use channels=(8, 16, 32, 64), an 8-channel stem, base_width=64 (so
the bottleneck width equals `planes`) and num_classes=10. The key layout is the
torchvision/timm one (conv1, bn1, layer1.0.conv1, ..., layerN.0.downsample.{0,1}, fc).

Reference logits are computed in eval mode in float64 (model.double()) from the
float32 weights and input upcast, so they are exact references for those f32
values.

Note on timm: with the default (non-"deep") stem, timm's ResNet ignores
`stem_width` and always builds a 64-channel 7x7 stem. To get an 8-channel stem
we build the ResNet, then replace conv1/bn1 and rebuild the stages with
timm.models.resnet.make_blocks(inplanes=8). Also, timm's get_norm_layer drops
the positional args of a functools.partial, so partial(nn.GroupNorm, 4) does not
work; timm.layers.GroupNorm (num_channels first) with num_groups=4 bound by
keyword is used instead (its parameters are the same weight/bias as nn.GroupNorm).

Usage: python tools/gen_resnet_fixtures.py [--out DIR]
"""

import argparse
import math
import os
from functools import partial

import torch
import torch.nn as nn

import timm
from timm.layers import GroupNorm
from timm.models.resnet import BasicBlock, Bottleneck, ResNet, make_blocks

from st_io import write_safetensors

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "crates", "models", "tests", "fixtures", "resnet")

CHANNELS = (8, 16, 32, 64)
WIDTH = 8  # stem width
NUM_CLASSES = 10
GN_GROUPS = 4
EPS = 1e-5
MAX_WEIGHTS_BYTES = 2 * 1024 * 1024
# Multiplier on the last BN weight of each residual branch (BN models only).
BN_BRANCH_SCALE = {"bottleneck": 0.25, "basic": 0.5}

MODELS = [
    # name, block, layers, norm, stem, input shape, weights format, seed
    ("resnet50_gn_w8", "bottleneck", (3, 4, 6, 3), "gn", "imagenet", (2, 3, 64, 64), "safetensors", 5001),
    ("resnet18_gn_w8", "basic", (2, 2, 2, 2), "gn", "imagenet", (2, 3, 64, 64), "pth", 5002),
    ("resnet50_bn_w8", "bottleneck", (3, 4, 6, 3), "bn", "imagenet", (2, 3, 64, 64), "safetensors", 5003),
    ("resnet18_bn_w8", "basic", (2, 2, 2, 2), "bn", "imagenet", (2, 3, 64, 64), "safetensors", 5004),
    ("resnet18_gn_w8_cifar", "basic", (2, 2, 2, 2), "gn", "cifar", (2, 3, 32, 32), "safetensors", 5005),
]


def build_model(block_name, layers, norm, stem):
    block = Bottleneck if block_name == "bottleneck" else BasicBlock
    if norm == "gn":
        norm_layer = partial(GroupNorm, num_groups=GN_GROUPS, eps=EPS)
    else:
        norm_layer = partial(nn.BatchNorm2d, eps=EPS)
    model = ResNet(
        block=block,
        layers=layers,
        num_classes=NUM_CLASSES,
        channels=CHANNELS,
        stem_width=WIDTH,  # ignored by timm for the plain 7x7 stem, see module docstring
        base_width=64,
        norm_layer=norm_layer,
        zero_init_last=False,
    )

    # Rebuild the stem at WIDTH channels, and the stages to take WIDTH inputs.
    if stem == "imagenet":
        model.conv1 = nn.Conv2d(3, WIDTH, kernel_size=7, stride=2, padding=3, bias=False)
        model.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    elif stem == "cifar":
        model.conv1 = nn.Conv2d(3, WIDTH, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        raise ValueError(stem)
    model.bn1 = norm_layer(WIDTH)
    stages, _ = make_blocks(
        (block,) * len(CHANNELS),
        CHANNELS,
        layers,
        WIDTH,
        cardinality=1,
        base_width=64,
        output_stride=32,
        reduce_first=1,
        avg_down=False,
        down_kernel_size=1,
        act_layer=nn.ReLU,
        norm_layer=norm_layer,
        aa_layer=None,
    )
    for name, module in stages:
        setattr(model, name, module)
    return model


@torch.no_grad()
def randomize(model, gen, norm):
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
            assert m.bias is None
        elif isinstance(m, nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(1.0 / m.in_features))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
        elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
            m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=gen))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    # Residual branches add up over the depth; in BN eval mode nothing
    # re-normalises (the running stats are random, not the batch's), so scale
    # the last norm of each residual branch down to keep the activations O(1)
    # (still random and non-trivial). Without this resnet50_bn's logits have
    # std ~100.
    if norm == "bn":
        for name, m in model.named_modules():
            if isinstance(m, Bottleneck):
                m.bn3.weight.mul_(BN_BRANCH_SCALE["bottleneck"])
            elif isinstance(m, BasicBlock):
                m.bn2.weight.mul_(BN_BRANCH_SCALE["basic"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, timm {timm.__version__}; writing to {args.out}")

    for name, block_name, layers, norm, stem, in_shape, fmt, seed in MODELS:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = build_model(block_name, layers, norm, stem)
        randomize(model, gen, norm)
        model.eval()
        x = torch.randn(in_shape, generator=gen, dtype=torch.float32)

        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        for k, v in sd.items():
            assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)

        # float64 reference from the exact f32 weights/input.
        model64 = build_model(block_name, layers, norm, stem)
        model64.load_state_dict(sd)
        model64 = model64.double().eval()
        with torch.no_grad():
            feats = model64.forward_features(x.double())
            pooled = model64.forward_head(feats, pre_logits=True)
            logits = model64.fc(pooled)
            logits_direct = model64(x.double())
            logits32 = model(x)
        assert torch.equal(logits, logits_direct)
        assert torch.isfinite(logits).all()
        lstd = logits.std().item()
        assert 0.1 <= lstd <= 10.0, (name, lstd)
        f32_rel = ((logits32.double() - logits).abs().max() / logits.abs().max()).item()

        if fmt == "pth":
            wpath = os.path.join(args.out, f"{name}.pth")
            torch.save(sd, wpath)
            back = torch.load(wpath, weights_only=True)
            assert sorted(back) == sorted(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
        else:
            wpath = os.path.join(args.out, f"{name}.safetensors")
            write_safetensors(wpath, sd, {"format": "pt"})
        wsize = os.path.getsize(wpath)
        assert wsize < MAX_WEIGHTS_BYTES, (wpath, wsize)

        meta = {
            "arch": "resnet50" if block_name == "bottleneck" else "resnet18",
            "block": block_name,
            "layers": ",".join(str(v) for v in layers),
            "norm": norm,
            "num_groups": str(GN_GROUPS if norm == "gn" else 0),
            "width": str(WIDTH),
            "channels": ",".join(str(c) for c in CHANNELS),
            "stem": stem,
            "num_classes": str(NUM_CLASSES),
            "eps": repr(EPS),
            "input_shape": ",".join(str(s) for s in in_shape),
            "weights": os.path.basename(wpath),
        }
        iopath = os.path.join(args.out, f"{name}_io.safetensors")
        write_safetensors(
            iopath,
            {"x": x, "logits": logits.contiguous(), "pooled": pooled.contiguous()},
            meta,
        )
        nparams = sum(v.numel() for k, v in sd.items() if v.is_floating_point())
        print(
            f"{name:22s} params={nparams:7d} keys={len(sd):3d} "
            f"{os.path.basename(wpath)}={wsize}B {os.path.basename(iopath)}={os.path.getsize(iopath)}B "
            f"logits std={lstd:.3f} max|.|={logits.abs().max().item():.3f} "
            f"torch f32 rel err={f32_rel:.2e}"
        )


if __name__ == "__main__":
    main()
