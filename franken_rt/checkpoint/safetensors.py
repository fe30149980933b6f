"""Safetensors headers, read by hand so tensors can be memory-mapped in any dtype (bf16 included) and every field
checked: 8-byte little-endian header length, a JSON header, then the tensor bytes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from franken_rt.checkpoint.types import DType, TensorInfo
from franken_rt.config import _is_int
from franken_rt.errors import FrankenError

SAFETENSORS_DTYPES = {"F32": DType.F32, "F16": DType.F16, "BF16": DType.BF16}
MAX_HEADER = 100 << 20  # the format's own limit


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor name -> TensorInfo for one .safetensors file, with offsets absolute in the file."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            head = f.read(8)
            if len(head) < 8:
                raise FrankenError(f"{path}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise FrankenError(f"{path}: not a safetensors file (bad header length)")
            raw = f.read(n)
    except OSError as e:
        raise FrankenError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise FrankenError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise FrankenError(f"{path}: not a safetensors file (header is not an object)")
    base = 8 + n
    out: dict[str, TensorInfo] = {}
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FrankenError(f"{path}: tensor {name}: malformed header entry") from None
        if not isinstance(shape, list) or not all(_is_int(v) for v in (*shape, begin, end)):
            raise FrankenError(f"{path}: tensor {name}: shape and data_offsets must be integers")
        shape = tuple(shape)
        if not isinstance(dtype_name, str) or dtype_name not in SAFETENSORS_DTYPES:
            raise FrankenError(f"{path}: tensor {name} has unsupported dtype {dtype_name}")
        dtype = SAFETENSORS_DTYPES[dtype_name]
        if not 1 <= len(shape) <= 4 or any(not 0 < d <= 1 << 40 for d in shape):
            raise FrankenError(f"{path}: tensor {name} has an empty, negative or absurd shape {list(shape)}")
        info = TensorInfo(name, Path(path), base + begin, dtype, shape)
        if not 0 <= begin <= end or end - begin != info.nbytes or base + end > size:
            raise FrankenError(f"{path}: tensor {name}: byte range does not match its shape or the file")
        spans.append((begin, end, name))
        out[name] = info
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise FrankenError(f"{path}: tensors {a} and {b} overlap")
    return out
