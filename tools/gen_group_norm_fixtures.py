#!/usr/bin/env python3
"""Generate Group Normalization reference fixtures.

Writes one safetensors file per case to crates/gn-module/tests/fixtures/group_norm/<case>.safetensors.

Tensors in every file:
  x            float32  input
  gamma, beta  float32  [C] affine parameters (absent when affine=False)
  dy           float32  upstream gradient, same shape as x
  y            float64  reference forward output
  dx           float64  reference d(sum(y*dy))/dx
  dgamma/dbeta float64  reference parameter gradients (absent when affine=False)
  y_torch_f32  float32  PyTorch's own float32 forward output

The references are computed by PyTorch in float64 from the float32 inputs
upcast to float64 (so they are, to a few f64 ulps, exact for those f32
values), using an explicit shifted two-pass group norm differentiated by autograd, and
cross-checked against torch's float64 F.group_norm (agreement < 1e-9 relative).

Metadata (string map): num_groups, eps (Python repr), affine ("true"/"false"),
description.

Usage: python tools/gen_group_norm_fixtures.py [--out DIR]
"""

import argparse
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from st_io import write_safetensors

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "crates", "gn-module", "tests", "fixtures", "group_norm")
MAX_FILE_BYTES = 200 * 1024


@dataclass
class Case:
    name: str
    shape: tuple
    groups: int
    seed: int
    description: str
    eps: float = 1e-5
    affine: bool = True
    # Optional custom input generator: (shape, generator) -> float32 tensor.
    make_x: Optional[Callable] = field(default=None)


def make_large_offset(shape, gen):
    # Mean ~1000, std ~0.01: mean/std ratio ~1e5. Computed in float32 on purpose.
    noise = torch.randn(shape, generator=gen, dtype=torch.float32)
    return torch.tensor(1000.0, dtype=torch.float32) + torch.tensor(0.01, dtype=torch.float32) * noise


MIXED_OFFSETS = [-5000.0, 30.0, 1.0e4, 0.5]
MIXED_SPREADS = [0.01, 10.0, 0.1, 1.0]


def make_mixed_offset(shape, gen):
    # shape = [N, C, H, W] with G = 4 groups; each (sample, group) gets its own
    # large offset and spread. Sample 1 uses the offsets in reverse order so the
    # two samples differ.
    n, c = shape[0], shape[1]
    groups = len(MIXED_OFFSETS)
    cpg = c // groups
    x = torch.randn(shape, generator=gen, dtype=torch.float32)
    for i in range(n):
        offs = MIXED_OFFSETS if i % 2 == 0 else MIXED_OFFSETS[::-1]
        spreads = MIXED_SPREADS if i % 2 == 0 else MIXED_SPREADS[::-1]
        for g in range(groups):
            sl = slice(g * cpg, (g + 1) * cpg)
            x[i, sl] = torch.tensor(offs[g], dtype=torch.float32) + torch.tensor(
                spreads[g], dtype=torch.float32
            ) * x[i, sl]
    return x


CASES = [
    Case("rank2", (6, 12), 3, 1001, "rank-2 input [N, C]"),
    Case("rank3", (3, 10, 7), 5, 1002, "rank-3 input [N, C, L]"),
    Case("rank4", (2, 8, 5, 6), 4, 1003, "rank-4 input [N, C, H, W]"),
    Case("rank5", (2, 6, 3, 4, 5), 3, 1004, "rank-5 input [N, C, D, H, W]"),
    Case("rank6", (2, 4, 2, 3, 2, 3), 2, 1005, "rank-6 input"),
    Case("groups1", (3, 8, 4, 4), 1, 1006, "G=1 (LayerNorm-like over C,H,W)"),
    Case("groups_eq_c", (3, 8, 4, 4), 8, 1007, "G=C (InstanceNorm-like)"),
    Case("odd", (5, 15, 3, 7), 5, 1008, "odd sizes, eps=1e-3", eps=1e-3),
    Case("no_affine", (2, 6, 9), 2, 1009, "affine=False", affine=False),
    # [2,64,8,8] would be ~229 KB with all tensors; 7x7 keeps it under 200 KB.
    Case("wide", (2, 64, 7, 7), 32, 1010, "C=64, G=32 (ResNet-style), 7x7 spatial"),
    Case("spatial1", (4, 16, 1, 1), 4, 1011, "HW=1, C/G=4"),
    Case(
        "large_offset",
        (2, 8, 16, 16),
        2,
        1012,
        "x = 1000 + 0.01*randn (f32): mean/std ~1e5, naive f32 variance is inaccurate",
        make_x=make_large_offset,
    ),
    Case(
        "mixed_offset",
        (2, 8, 6, 6),
        4,
        1013,
        "per-(sample,group) offsets %s spreads %s (sample 1 reversed)"
        % (MIXED_OFFSETS, MIXED_SPREADS),
        make_x=make_mixed_offset,
    ),
]


def group_norm_two_pass(x, groups, weight, bias, eps):
    """Group norm written out with a shifted two-pass variance (float64 reference)."""
    n, c = x.shape[0], x.shape[1]
    xs = x.reshape(n, groups, -1)
    # Shift each group by one of its own (f32-exact) values first: group norm is
    # shift-invariant, the subtraction is exact in f64 for f32 inputs of similar
    # magnitude, and it keeps the mean's rounding error relative to the spread
    # rather than to the offset (matters for large_offset / mixed_offset).
    xs = xs - xs[..., :1].detach()
    mean = xs.mean(dim=-1, keepdim=True)
    centered = xs - mean
    var = (centered * centered).mean(dim=-1, keepdim=True)
    y = (centered / torch.sqrt(var + eps)).reshape(x.shape)
    bshape = (1, c) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    return y


def build_case(case: Case):
    torch.manual_seed(case.seed)
    gen = torch.Generator().manual_seed(case.seed)
    c = case.shape[1]
    assert c % case.groups == 0, case.name

    if case.make_x is not None:
        x = case.make_x(case.shape, gen)
    else:
        x = torch.randn(case.shape, generator=gen, dtype=torch.float32)
    x = x.to(torch.float32).contiguous()
    dy = torch.randn(case.shape, generator=gen, dtype=torch.float32)

    gamma = beta = None
    if case.affine:
        gamma = (1.0 + 0.5 * torch.randn(c, generator=gen, dtype=torch.float32)).contiguous()
        beta = (0.3 * torch.randn(c, generator=gen, dtype=torch.float32)).contiguous()

    # float64 reference from the exact f32 values: explicit two-pass formula
    # (mean, then mean of squared deviations) differentiated by autograd.
    x64 = x.double().requires_grad_(True)
    g64 = gamma.double().requires_grad_(True) if gamma is not None else None
    b64 = beta.double().requires_grad_(True) if beta is not None else None
    y64 = group_norm_two_pass(x64, case.groups, g64, b64, case.eps)
    (y64 * dy.double()).sum().backward()

    # Cross-check against torch's own float64 F.group_norm. Torch's kernel
    # loses a little accuracy when |mean| >> std (it is ~1e-11 off on the
    # offset cases), which is why it is not the stored reference.
    xc = x.double().requires_grad_(True)
    gc = gamma.double().requires_grad_(True) if gamma is not None else None
    bc = beta.double().requires_grad_(True) if beta is not None else None
    yc = F.group_norm(xc, case.groups, gc, bc, case.eps)
    (yc * dy.double()).sum().backward()
    check = [(y64, yc), (x64.grad, xc.grad)]
    if case.affine:
        check += [(g64.grad, gc.grad), (b64.grad, bc.grad)]
    for ref, other in check:
        rel = ((ref - other).abs().max() / ref.abs().max()).item()
        assert rel < 1e-9, (case.name, rel)

    # PyTorch float32 forward (and backward, for reporting only).
    x32 = x.clone().requires_grad_(True)
    y32 = F.group_norm(x32, case.groups, gamma, beta, case.eps)
    (y32 * dy).sum().backward()

    tensors = {
        "x": x,
        "dy": dy.contiguous(),
        "y": y64.detach().contiguous(),
        "dx": x64.grad.detach().contiguous(),
        "y_torch_f32": y32.detach().contiguous(),
    }
    if case.affine:
        tensors["gamma"] = gamma
        tensors["beta"] = beta
        tensors["dgamma"] = g64.grad.detach().contiguous()
        tensors["dbeta"] = b64.grad.detach().contiguous()

    metadata = {
        "num_groups": str(case.groups),
        "eps": repr(float(case.eps)),
        "affine": "true" if case.affine else "false",
        "description": case.description,
    }

    y_ref = tensors["y"]
    rel_y = ((y32.detach().double() - y_ref).abs().max() / y_ref.abs().max()).item()
    dx_ref = tensors["dx"]
    rel_dx = ((x32.grad.double() - dx_ref).abs().max() / dx_ref.abs().max()).item()
    return tensors, metadata, rel_y, rel_dx


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}; writing to {args.out}")
    for case in CASES:
        tensors, metadata, rel_y, rel_dx = build_case(case)
        path = os.path.join(args.out, f"{case.name}.safetensors")
        write_safetensors(path, tensors, metadata)
        size = os.path.getsize(path)
        if size >= MAX_FILE_BYTES:
            raise SystemExit(f"{path} is {size} bytes (limit {MAX_FILE_BYTES})")
        print(
            f"{case.name:13s} shape={list(case.shape)!s:22s} G={case.groups:<3d} eps={case.eps!r:7s} "
            f"affine={str(case.affine).lower():5s} size={size:7d}B "
            f"torch_f32 rel err: y={rel_y:.3e} dx={rel_dx:.3e}"
        )


if __name__ == "__main__":
    main()
