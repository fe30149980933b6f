"""Tensor bytes as numpy arrays, memory-mapped: used by writers and tests, never by the runtime's hot path.

`rows` (a slice of the tensor seen as 2-D: prod(shape[:-1]) rows of shape[-1]) maps only those rows, so reading a
tensor chunk by chunk keeps one chunk's pages resident, not the whole tensor's."""

from __future__ import annotations

import math

import numpy as np

from franken_rt.checkpoint.types import DType, TensorInfo, nbytes_of
from franken_rt.errors import FrankenError


def _mapped(t: TensorInfo, dtype: str | type, row_items: int, rows: slice | None) -> np.ndarray:
    """The tensor's stored items, `row_items` per row: shape (rows..., row_items) whole, (n, row_items) for `rows`."""
    if rows is None:
        return np.memmap(t.file, dtype=dtype, mode="r", offset=t.offset, shape=(*t.shape[:-1], row_items))
    start, stop, step = rows.indices(math.prod(t.shape[:-1]))
    if step != 1 or stop <= start:
        raise ValueError(f"tensor {t.name}: rows must be a non-empty range, got {rows}")
    item = np.dtype(dtype).itemsize
    return np.memmap(t.file, dtype=dtype, mode="r", offset=t.offset + start * row_items * item,
                     shape=(stop - start, row_items))


def raw_array(t: TensorInfo, rows: slice | None = None) -> np.ndarray:
    """The stored bytes, shape (rows..., bytes per row), without copying; with `rows`, (those rows, bytes per row)."""
    return _mapped(t, np.uint8, nbytes_of(t.dtype, (t.shape[-1],)), rows)


def float_array(t: TensorInfo, rows: slice | None = None) -> np.ndarray:
    """A float tensor (F32, F16, BF16) as float32 (a copy for F16/BF16); with `rows`, those rows (n, shape[-1]).
    Quantized tensors need their codec: franken_rt.quant.tensors.float_array decodes any type."""
    cols = t.shape[-1]
    if t.dtype == DType.F32:
        return _mapped(t, "<f4", cols, rows)
    if t.dtype == DType.F16:
        return _mapped(t, "<f2", cols, rows).astype(np.float32)
    if t.dtype == DType.BF16:
        bits = _mapped(t, "<u2", cols, rows).astype(np.uint32)
        bits <<= 16  # in place: one float32-sized array, not two
        return bits.view(np.float32)
    raise FrankenError(f"tensor {t.name} is {t.dtype.name}: decoding it needs franken_rt.quant")
