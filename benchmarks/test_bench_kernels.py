"""Matrix-vector (decode) and matrix-matrix (prompt) products per format and SIMD path, at SmolLM2's and a 7B
model's shapes, beside numpy's float32 BLAS product of the same shape, each in the layout the model multiplies
(interleaved where the path has it). Reports only: test_gates.py gates."""

from __future__ import annotations

import numpy as np
import pytest
from bench_utils import LLAMA7B_SHAPES, QUANT, SMOL_SHAPES, model_layout, random_matrix

from franken_rt import _core
from franken_rt.formats import whole_blocks

PATHS = _core.available_kernels()


@pytest.mark.parametrize("shape", SMOL_SHAPES + LLAMA7B_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", QUANT, ids=lambda d: d.name)
@pytest.mark.parametrize("path", PATHS)
def test_matvec(benchmark, path: str, dtype, shape: tuple[int, int]) -> None:  # noqa: ANN001
    shape = (shape[0], whole_blocks(dtype, shape[1]))  # superblock formats: whole 256-element blocks
    if path == "scalar" and shape[0] * shape[1] > 5_000_000:
        shape = (shape[0] // 8, shape[1])  # the scalar path at 7B sizes takes seconds per call
    w, interleaved = model_layout(path, dtype, random_matrix(dtype, *shape))
    x = np.random.default_rng(1).standard_normal(shape[1]).astype(np.float32)
    benchmark.extra_info["MAC"] = shape[0] * shape[1]
    benchmark.extra_info["interleaved"] = interleaved
    out = benchmark(_core.testing.kernel_matvec, path, int(dtype), w, x, interleaved)
    assert out.shape == (shape[0],) and np.isfinite(out).all()


@pytest.mark.parametrize("shape", SMOL_SHAPES[:3] + LLAMA7B_SHAPES[:1], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", QUANT, ids=lambda d: d.name)
@pytest.mark.parametrize("path", PATHS)
def test_matmat_64_tokens(benchmark, path: str, dtype, shape: tuple[int, int]) -> None:  # noqa: ANN001
    shape = (shape[0], whole_blocks(dtype, shape[1]))
    if path == "scalar":
        shape = (shape[0] // 4, shape[1])
    w, interleaved = model_layout(path, dtype, random_matrix(dtype, *shape))
    x = np.random.default_rng(1).standard_normal((64, shape[1])).astype(np.float32)
    benchmark.extra_info["MAC"] = 64 * shape[0] * shape[1]
    benchmark.extra_info["interleaved"] = interleaved
    out = benchmark(_core.testing.kernel_gemmq, path, int(dtype), w, x, interleaved)
    assert out.shape == (64, shape[0])


@pytest.mark.parametrize("shape", SMOL_SHAPES + LLAMA7B_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_numpy_f32_matvec(benchmark, shape: tuple[int, int]) -> None:  # noqa: ANN001
    w = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    x = np.random.default_rng(1).standard_normal(shape[1]).astype(np.float32)
    out = benchmark(np.dot, w, x)
    assert out.shape == (shape[0],)
