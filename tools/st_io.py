"""Byte-stable safetensors writer shared by the fixture generators.

safetensors.torch.save_file serialises the `__metadata__` map in a random
order, so regenerating a fixture changes its bytes even when nothing else
does. This writer emits the same format with a deterministic header
(metadata keys sorted, tensors ordered by element size then name, header
padded to 8 bytes so every tensor's data is aligned). Files written here are
read back with the official `safetensors` loader as a check.
"""

import json
import struct

import torch
from safetensors import safe_open

_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    return t.numpy().tobytes()  # little-endian on every platform we run on


def write_safetensors(path, tensors, metadata=None, verify=True):
    names = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    blobs = []
    offset = 0
    for name in names:
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        data = _tensor_bytes(t)
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((-len(hbytes)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)
    if verify:
        _verify(path, tensors, metadata or {})


def _verify(path, tensors, metadata):
    with safe_open(path, framework="pt") as f:
        assert set(f.keys()) == set(tensors), path
        got_meta = f.metadata() or {}
        assert got_meta == {str(k): str(v) for k, v in metadata.items()}, path
        for k, t in tensors.items():
            u = f.get_tensor(k)
            assert u.dtype == t.dtype and u.shape == t.shape, (path, k)
            assert torch.equal(u, t.detach().cpu()), (path, k)
