"""Tensor bytes as numpy arrays, memory-mapped: used by writers and tests, never by the runtime's hot path."""

from __future__ import annotations

import numpy as np

from franken_rt.checkpoint.types import DType, TensorInfo, nbytes_of
from franken_rt.errors import FrankenError


def raw_array(t: TensorInfo) -> np.ndarray:
    """The stored bytes, shape (rows..., bytes per row), without copying."""
    row_bytes = nbytes_of(t.dtype, (t.shape[-1],))
    return np.memmap(t.file, dtype=np.uint8, mode="r", offset=t.offset, shape=(*t.shape[:-1], row_bytes))


def float_array(t: TensorInfo) -> np.ndarray:
    """A float tensor (F32, F16, BF16) as float32 (a copy for F16/BF16). Quantized tensors need their codec:
    franken_rt.quant.tensors.float_array decodes any type."""
    if t.dtype == DType.F32:
        return np.memmap(t.file, dtype="<f4", mode="r", offset=t.offset, shape=t.shape)
    if t.dtype == DType.F16:
        return np.memmap(t.file, dtype="<f2", mode="r", offset=t.offset, shape=t.shape).astype(np.float32)
    if t.dtype == DType.BF16:
        bits = np.memmap(t.file, dtype="<u2", mode="r", offset=t.offset, shape=t.shape)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    raise FrankenError(f"tensor {t.name} is {t.dtype.name}: decoding it needs franken_rt.quant")
