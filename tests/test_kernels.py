"""Every kernel path against the scalar reference and a numpy dequantize-then-dot reference."""

from __future__ import annotations

import numpy as np
import pytest

from franken_rt import _core
from franken_rt.formats import FORMATS, DType, format_of, quantized_types, whole_blocks
from franken_rt.quant.formats import dequantize, encode, random_blocks

PATHS = _core.available_kernels()
FLOAT_TYPES = [DType(f.id) for f in FORMATS if not f.quantized]
QUANT_TYPES = quantized_types()  # every quantized format of the registry, written or only read


def sample_rows(w: np.ndarray, dtype: DType, rng: np.random.Generator) -> np.ndarray:
    """Stored bytes of float rows w: encoded where franken-convert writes the format, else (the formats only read,
    whose encoders are llama.cpp's) random blocks of the same shape."""
    if format_of(dtype).writable:
        return np.ascontiguousarray(encode(w, dtype))
    return random_blocks(dtype, w.shape[0], w.shape[1], rng)


def decode(raw: np.ndarray, dtype: DType, n: int) -> np.ndarray:
    if dtype == DType.F32:
        return raw.view("<f4").astype(np.float64)
    if dtype == DType.F16:
        return raw.view("<f2").astype(np.float64)
    if dtype == DType.BF16:
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return dequantize(raw[None, :], dtype, (n,)).astype(np.float64)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", FLOAT_TYPES + QUANT_TYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("n", [32, 64, 96, 576, 1536, 4128])
def test_dot_and_decode_match_reference(path: str, dtype: DType, n: int) -> None:
    rng = np.random.default_rng(n)
    if dtype in FLOAT_TYPES and n > 64:
        n += 7  # float rows need not be whole SIMD widths
    n = whole_blocks(dtype, n)
    w = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal(n).astype(np.float32)
    raw = sample_rows(w[None, :], dtype, rng)[0] if dtype not in FLOAT_TYPES else encode(w[None, :], dtype)[0]
    exact = decode(raw, dtype, n)
    got = _core.testing.kernel_to_f32(path, int(dtype), raw, n)
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-6)
    ref_dot = float(exact @ x.astype(np.float64))
    tol = 1e-4 * np.sqrt(n) * np.abs(exact).max() * np.abs(x).max()
    assert abs(_core.testing.kernel_dot(path, int(dtype), raw, x) - ref_dot) <= tol
    assert abs(_core.testing.kernel_dot("scalar", int(dtype), raw, x) - ref_dot) <= tol


def test_kernel_path_errors() -> None:
    with pytest.raises(_core.CoreError, match="not available"):
        _core.testing.kernel_dot("no-such-path", int(DType.F32), np.zeros(16, np.uint8), np.zeros(4, np.float32))
    with pytest.raises(_core.CoreError, match="row size"):
        _core.testing.kernel_dot("scalar", int(DType.Q8_0), np.zeros(10, np.uint8), np.zeros(32, np.float32))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", [32, 96, 576, 1536, 4128])
def test_activation_quantization(path: str, n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 3
    x[5] = 0.0
    d, s, q = _core.testing.kernel_quantize_act(path, x)
    blocks = x.reshape(-1, 32)
    np.testing.assert_allclose(d, np.abs(blocks).max(axis=1) / 127, rtol=1e-6)
    np.testing.assert_array_equal(q, np.rint(blocks / d[:, None]).astype(np.int8).ravel())
    np.testing.assert_allclose(s, d * q.reshape(-1, 32).sum(axis=1, dtype=np.int64), rtol=1e-6)
    ref = _core.testing.kernel_quantize_act("scalar", x)
    for ours, theirs in zip(ref, (d, s, q)):
        np.testing.assert_array_equal(ours, theirs)  # SIMD and scalar quantize identically


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", QUANT_TYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("n", [32, 96, 576, 1536, 4128])
def test_integer_dot_matches_reference(path: str, dtype: DType, n: int) -> None:
    rng = np.random.default_rng(n + int(dtype))
    n = whole_blocks(dtype, n)
    w = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal(n).astype(np.float32)
    raw = sample_rows(w[None, :], dtype, rng)[0]
    d, _, q = _core.testing.kernel_quantize_act(path, x)
    x_deq = (q.reshape(-1, 32).astype(np.float64) * d[:, None]).ravel()
    exact = float(decode(raw, dtype, n) @ x_deq)  # float64 of the very products the kernel forms
    got = _core.testing.kernel_dotq(path, int(dtype), raw, x)
    assert abs(got - exact) <= 1e-5 * np.sqrt(n) * (1 + abs(exact))
    assert abs(_core.testing.kernel_dotq("scalar", int(dtype), raw, x) - got) <= 1e-5 * np.sqrt(n) * (1 + abs(exact))
    # and the quantized activations cost little against the float dot product
    assert abs(got - float(decode(raw, dtype, n) @ x)) <= 0.02 * np.sqrt(n)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", QUANT_TYPES, ids=lambda d: d.name)
@pytest.mark.parametrize(("rows", "n_act", "n"), [(5, 1, 64), (7, 6, 96), (33, 13, 576)])
def test_matrix_matrix_matches_dots(path: str, dtype: DType, rows: int, n_act: int, n: int) -> None:
    rng = np.random.default_rng(rows * n_act)
    n = whole_blocks(dtype, n)
    w = rng.standard_normal((rows, n)).astype(np.float32)
    x = rng.standard_normal((n_act, n)).astype(np.float32)
    raw = sample_rows(w, dtype, rng)
    got = _core.testing.kernel_gemmq(path, int(dtype), raw, x)
    dots = np.array([[_core.testing.kernel_dotq("scalar", int(dtype), raw[i], x[t]) for i in range(rows)]
                     for t in range(n_act)])
    np.testing.assert_allclose(got, dots, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", QUANT_TYPES, ids=lambda d: d.name)
@pytest.mark.parametrize(("rows", "n_act", "n"), [(8, 1, 32), (16, 1, 576), (24, 5, 96), (40, 13, 1536)])
def test_interleaved_matches_stored_rows(path: str, dtype: DType, rows: int, n_act: int, n: int) -> None:
    """The repacked layout the model uses at run time gives the stored rows' integer products, for decode
    (one activation row) and prompts (tiles of four plus the rest)."""
    rng = np.random.default_rng(rows + n)
    n = whole_blocks(dtype, n)
    raw = sample_rows(rng.standard_normal((rows, n)).astype(np.float32), dtype, rng)
    packed = _core.testing.repack_x8(int(dtype), raw, n)
    assert packed.shape == raw.shape and not np.array_equal(packed, raw)
    x = rng.standard_normal((n_act, n)).astype(np.float32)
    dots = np.array([[_core.testing.kernel_dotq("scalar", int(dtype), raw[i], x[t]) for i in range(rows)]
                     for t in range(n_act)])
    np.testing.assert_allclose(_core.testing.kernel_gemmq(path, int(dtype), packed, x, interleaved=True), dots,
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_core.testing.kernel_matvec(path, int(dtype), packed, x[0], interleaved=True), dots[0],
                               rtol=1e-5, atol=1e-4)


def test_interleaved_needs_whole_groups() -> None:
    for dtype in QUANT_TYPES:
        # The scalar table has the reference twins the SIMD kernels are tested against, but they are slower than its
        # stored-row loops: a model on the scalar table keeps rows as stored.
        assert _core.testing.kernel_interleaves("scalar", int(dtype))
        assert not _core.testing.model_interleaves("scalar", int(dtype))
        best = _core.available_kernels()[0]
        if best in ("avx2", "avx512_vnni") or (best == "neon_dotprod" and format_of(dtype).writable):
            assert _core.testing.model_interleaves(best, int(dtype))
    testing = _core.testing
    assert not testing.kernel_interleaves("scalar", int(DType.F16)) and not testing.kernel_interleaves("scalar", 77)
    raw = np.zeros((12, 18), dtype=np.uint8)
    with pytest.raises(_core.CoreError, match="multiple of 8"):
        _core.testing.repack_x8(int(DType.Q4_0), raw, 32)
    with pytest.raises(_core.CoreError, match="interleaved"):
        _core.testing.kernel_matvec("scalar", int(DType.F16), np.zeros((8, 64), np.uint8), np.zeros(32, np.float32),
                            interleaved=True)
