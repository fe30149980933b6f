"""Tensors between storage types: any stored tensor decoded to float32 with its format's codec, and the converter's
TensorBytes (franken_rt/checkpoint/gguf_writer.py) that re-encodes each tensor in the type it is written as."""

from __future__ import annotations

import numpy as np

from franken_rt.checkpoint import tensors
from franken_rt.checkpoint.gguf_writer import TensorBytes, as_stored, in_gguf_layout
from franken_rt.checkpoint.types import Checkpoint, DType, TensorInfo
from franken_rt.formats import format_of
from franken_rt.quant.formats import dequantize, encode


def float_array(t: TensorInfo) -> np.ndarray:
    """Any stored tensor as float32 (memory-mapped for F32, decoded for the others)."""
    if not format_of(t.dtype).quantized:
        return tensors.float_array(t)
    return dequantize(tensors.raw_array(t), t.dtype, t.shape)


def transcoder(rounding: str = "rtn", importance: dict[str, np.ndarray] | None = None) -> TensorBytes:
    """Each tensor as stored, or decoded, put in GGUF's layout and encoded in its output type. `rounding`: "rtn" or
    "search" for the 3/4-bit types; `importance`: per-column weights of that search, by tensor name
    (franken_rt.surgery.importance)."""

    def tensor_bytes(ckpt: Checkpoint, name: str, t: TensorInfo, d: DType) -> np.ndarray:
        same = as_stored(ckpt, name, t, d)
        if same is not None:
            return same
        # q/k permutations move rows, never the columns the importance weighs
        return encode(in_gguf_layout(ckpt, name, float_array(t)), d, rounding, (importance or {}).get(name))

    return tensor_bytes
