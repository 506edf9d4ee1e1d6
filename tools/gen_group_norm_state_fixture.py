#!/usr/bin/env python3
"""Generate PyTorch state-dict fixtures for loading a GroupNorm into burn.

Writes to crates/gn-module/tests/fixtures/group_norm/:
  torch_state.pt              torch.save(Net().state_dict()); keys norm.weight, norm.bias
  torch_groupnorm_bare.pt     torch.save(nn.GroupNorm(4, 8).state_dict()); keys weight, bias
                              (same values as Net.norm)
  torch_state_io.safetensors  x [2, 8, 3, 3] float32, y float64 (the module's output
                              computed in float64 from x upcast), weight/bias float32 copies
                              Metadata: num_groups, num_channels, eps, prefix.

Usage: python tools/gen_group_norm_state_fixture.py [--out DIR]
"""

import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from st_io import write_safetensors

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "crates", "gn-module", "tests", "fixtures", "group_norm")

NUM_GROUPS = 4
NUM_CHANNELS = 8


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.GroupNorm(NUM_GROUPS, NUM_CHANNELS)

    def forward(self, x):
        return self.norm(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(2024)
    gen = torch.Generator().manual_seed(2024)

    net = Net()
    with torch.no_grad():
        net.norm.weight.copy_(1.0 + 0.5 * torch.randn(NUM_CHANNELS, generator=gen))
        net.norm.bias.copy_(0.3 * torch.randn(NUM_CHANNELS, generator=gen))
    x = torch.randn(2, NUM_CHANNELS, 3, 3, generator=gen, dtype=torch.float32)

    sd = net.state_dict()
    assert sorted(sd) == ["norm.bias", "norm.weight"], sorted(sd)
    path_state = os.path.join(args.out, "torch_state.pt")
    torch.save(sd, path_state)

    bare = nn.GroupNorm(NUM_GROUPS, NUM_CHANNELS)
    bare.load_state_dict(net.norm.state_dict())
    bare_sd = bare.state_dict()
    assert sorted(bare_sd) == ["bias", "weight"], sorted(bare_sd)
    path_bare = os.path.join(args.out, "torch_groupnorm_bare.pt")
    torch.save(bare_sd, path_bare)

    # Reference output in float64 (module upcast, input upcast).
    net64 = Net()
    net64.load_state_dict(sd)
    net64 = net64.double().eval()
    with torch.no_grad():
        y = net64(x.double())
        y_check = F.group_norm(x.double(), NUM_GROUPS, sd["norm.weight"].double(), sd["norm.bias"].double(), 1e-5)
    assert torch.equal(y, y_check)

    io = {
        "x": x,
        "y": y.contiguous(),
        "weight": sd["norm.weight"].detach().clone(),
        "bias": sd["norm.bias"].detach().clone(),
    }
    meta = {
        "num_groups": str(NUM_GROUPS),
        "num_channels": str(NUM_CHANNELS),
        "eps": repr(float(net.norm.eps)),
        "prefix": "norm",
        "description": "Net.norm = nn.GroupNorm(4, 8); y = Net(x) in float64",
    }
    path_io = os.path.join(args.out, "torch_state_io.safetensors")
    write_safetensors(path_io, io, meta)

    # Round-trip check of the pickles.
    for p, keys in [(path_state, ["norm.bias", "norm.weight"]), (path_bare, ["bias", "weight"])]:
        loaded = torch.load(p, weights_only=True)
        assert sorted(loaded) == keys, (p, sorted(loaded))
        for k in keys:
            assert loaded[k].dtype == torch.float32

    for p in (path_state, path_bare, path_io):
        print(f"{os.path.relpath(p, REPO_ROOT)}: {os.path.getsize(p)} bytes")
    print("weight:", [round(v, 4) for v in sd["norm.weight"].tolist()])
    print("bias:  ", [round(v, 4) for v in sd["norm.bias"].tolist()])


if __name__ == "__main__":
    main()
