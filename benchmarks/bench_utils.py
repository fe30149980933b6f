"""Shared pieces of the benchmarks: random weight matrices in each storage format, the shapes we care about."""

from __future__ import annotations

import numpy as np

from franken_rt.formats import DType, format_of, quantized_types
from franken_rt.quant.formats import random_blocks

# (rows, cols) of weight matrices: SmolLM2-135M's and a 7B LLaMA's
SMOL_SHAPES = [(576, 576), (1536, 576), (576, 1536), (49152, 576)]
LLAMA7B_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]
QUANT = quantized_types()  # every quantized format of the registry


def random_matrix(dtype: DType, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Stored bytes (rows, bytes per row) of a random matrix: random codes, sane f16 scales. Fast at 7B sizes,
    where quantizing real floats would take longer than the benchmark."""
    rng = np.random.default_rng(seed)
    if dtype == DType.F32:
        return rng.standard_normal((rows, cols), dtype=np.float32).view(np.uint8)
    return random_blocks(dtype, rows, cols, rng)


def model_layout(path: str, dtype: DType, w: np.ndarray) -> tuple[np.ndarray, bool]:
    """The matrix as the model multiplies it on this kernel path: (bytes, interleaved)."""
    from franken_rt import _core

    if not _core.testing.model_interleaves(path, int(dtype)) or w.shape[0] % 8:  # the model keeps rows as stored
        return w, False
    f = format_of(dtype)
    return _core.testing.repack_x8(int(dtype), w, w.shape[1] // f.block_bytes * f.block_elems), True
