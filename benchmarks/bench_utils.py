"""Shared pieces of the benchmarks: random weight matrices in each storage format, the shapes we care about."""

from __future__ import annotations

import numpy as np

from franken_rt.checkpoint.types import BLOCK_LAYOUT, DType

# (rows, cols) of weight matrices: SmolLM2-135M's and a 7B LLaMA's
SMOL_SHAPES = [(576, 576), (1536, 576), (576, 1536), (49152, 576)]
LLAMA7B_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]
QUANT = [DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q3_0]


def random_matrix(dtype: DType, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Stored bytes (rows, bytes per row) of a random matrix: random codes, sane f16 scales. Fast at 7B sizes,
    where quantizing real floats would take longer than the benchmark."""
    rng = np.random.default_rng(seed)
    block, size = BLOCK_LAYOUT[dtype]
    if dtype == DType.F32:
        return rng.standard_normal((rows, cols), dtype=np.float32).view(np.uint8)
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    scales = (0.01 + 0.02 * rng.random((rows, cols // block))).astype("<f2").view(np.uint8).reshape(rows, -1, 2)
    raw[:, :, 0:2] = scales
    if dtype == DType.Q4_1:
        raw[:, :, 2:4] = (-0.1 * rng.random((rows, cols // block))).astype("<f2").view(np.uint8).reshape(rows, -1, 2)
    return raw.reshape(rows, -1)


def model_layout(path: str, dtype: DType, w: np.ndarray) -> tuple[np.ndarray, bool]:
    """The matrix as the model multiplies it on this kernel path: (bytes, interleaved)."""
    from franken_rt import _core

    if not _core.model_interleaves(path, int(dtype)) or w.shape[0] % 8:  # the model keeps rows as stored
        return w, False
    return _core.repack_x8(int(dtype), w, w.shape[1] // BLOCK_LAYOUT[dtype][1] * BLOCK_LAYOUT[dtype][0]), True
