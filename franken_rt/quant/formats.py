"""Numpy reference codecs of the block formats (the byte layouts are ggml's, defined in csrc/kernels/formats.h
for the core). Decoding uses the `gguf` package's reference implementation."""

from __future__ import annotations

import gguf
import numpy as np

from franken_rt.checkpoint.types import DType


def dequantize(raw: np.ndarray, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    """Stored bytes (rows, bytes per row) of a tensor -> float32 array of `shape`."""
    out = gguf.quants.dequantize(np.asarray(raw), gguf.GGMLQuantizationType(int(dtype)))
    return np.asarray(out, dtype=np.float32).reshape(shape)


def quantize(x: np.ndarray, dtype: DType) -> np.ndarray:
    """float32 (rows, cols) -> stored bytes (rows, bytes per row), round-to-nearest as ggml's reference."""
    return np.asarray(gguf.quants.quantize(np.asarray(x, dtype=np.float32), gguf.GGMLQuantizationType(int(dtype))))


def encode(x: np.ndarray, dtype: DType) -> np.ndarray:
    """float array -> its bytes in `dtype` (any storage type), shape (rows..., bytes per row)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == DType.F32:
        return x.view(np.uint8)
    if dtype == DType.F16:
        return x.astype("<f2").view(np.uint8)
    return quantize(x, dtype)
