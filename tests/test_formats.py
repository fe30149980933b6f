"""The format registry: the Python table (franken_rt/formats.py) equals the core's (csrc/kernels/formats.h), every
quantized format has a codec and kernels on every path this CPU runs, and the type lists derive from the table."""

from __future__ import annotations

import numpy as np
import pytest

from franken_rt import _core
from franken_rt.formats import FORMATS, DType, by_cli_name, format_of, is_known
from franken_rt.quant.formats import CODECS, Codebook, dequantize, encode
from franken_rt.quant.policy import LOW_BIT, QUANT_NAMES


def test_python_table_equals_the_core_table() -> None:
    core = {row["id"]: row for row in _core.formats()}
    assert set(core) == {f.id for f in FORMATS}
    for f in FORMATS:
        row = core[f.id]
        assert (row["name"], row["block_elems"], row["block_bytes"], row["header_halves"], row["header_at"]) == (
            f.name, f.block_elems, f.block_bytes, f.header_halves, f.header_at), f.name
        assert tuple(row["codebook"]) == f.codebook, f.name
        assert row["interleaves"] == f.interleaves, f.name


@pytest.mark.parametrize("path", _core.available_kernels())
def test_every_format_has_kernels_on_every_path(path: str) -> None:
    rows = _core.kernel_rows(path)
    for f in FORMATS:
        ops = rows[f.name]
        assert ops["dot"] and ops["to_f32"], (path, f.name)
        if f.quantized:  # the integer products exist everywhere: a SIMD table falls back to the scalar rows
            assert ops["dotq"] and ops["gemmq"], (path, f.name)
        else:
            assert not (ops["dotq"] or ops["gemm_x8"]), (path, f.name)
    assert not any(ops["interleaved"] for ops in _core.kernel_rows("scalar").values())  # reference twins only


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.quantized and f.writable], ids=lambda f: f.name)
def test_every_written_format_has_a_codec_that_round_trips(fmt) -> None:  # noqa: ANN001
    dtype = DType(fmt.id)
    assert dtype in CODECS
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    for rounding in ("rtn", "search"):
        raw = encode(x, dtype, rounding)
        assert raw.shape == (4, 64 // fmt.block_elems * fmt.block_bytes)
        err = np.abs(dequantize(raw, dtype, x.shape) - x).max()
        assert err < 2.5 * np.abs(x).max() / 2 ** (fmt.bits - 1.5), (rounding, err)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.quantized and f.portable and f.writable],
                         ids=lambda f: f.name)
def test_codecs_of_ggml_types_decode_as_the_gguf_reference(fmt) -> None:  # noqa: ANN001
    """Our encoders write bytes that ggml's reference decoder (the `gguf` package's) reads as we do."""
    import gguf

    x = np.random.default_rng(1).standard_normal((3, 96)).astype(np.float32)
    raw = encode(x, DType(fmt.id), "search")
    ref = np.asarray(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(fmt.id)), dtype=np.float32)
    assert np.array_equal(dequantize(raw, DType(fmt.id), x.shape), ref.reshape(x.shape))


def test_iq4_nl_search_beats_round_to_nearest() -> None:
    x = np.random.default_rng(2).standard_normal((64, 576)).astype(np.float32)
    err = {r: float(((dequantize(encode(x, DType.IQ4_NL, r), DType.IQ4_NL, x.shape) - x) ** 2).mean())
           for r in ("rtn", "search")}
    assert err["search"] < 0.9 * err["rtn"], err


def test_type_lists_derive_from_the_table() -> None:
    assert set(QUANT_NAMES) == {f.name.lower() for f in FORMATS if f.writable} == set(by_cli_name())
    assert not set(CODECS) & {DType(f.id) for f in FORMATS if not f.writable}  # read only: ggml's decoders
    assert set(LOW_BIT) == {DType(f.id) for f in FORMATS if f.quantized and f.writable and f.bits < 8}
    assert not is_known(12345) and is_known(int(DType.Q4_0)) and format_of(DType.Q3_0).portable is False


@pytest.mark.parametrize(("nl", "uniform"), [(DType.Q3_NL, DType.Q3_0)], ids=["Q3_NL"])
def test_non_linear_levels_beat_uniform_ones_of_the_same_size(nl, uniform) -> None:  # noqa: ANN001
    """The codebook formats' reason to exist: on heavy-tailed (Laplacian) blocks, like trained weights, the
    non-linear levels lose less than the uniform grid of the same bits (measured 20% less squared error)."""
    x = np.random.default_rng(3).laplace(size=(64, 576)).astype(np.float32)
    assert format_of(nl).block_bytes == format_of(uniform).block_bytes
    err = {d: float(((dequantize(encode(x, d, "search"), d, x.shape) - x) ** 2).mean()) for d in (nl, uniform)}
    assert err[nl] < 0.9 * err[uniform], err


@pytest.mark.parametrize("dtype", [DType.Q3_NL, DType.Q2_NL], ids=lambda d: d.name)
def test_codebook_layouts_hold_every_code(dtype) -> None:  # noqa: ANN001
    """Every code in every position survives pack and decode: the levels read back are the levels written."""
    codec, levels = CODECS[dtype], np.array(format_of(dtype).codebook, dtype=np.float32)
    codes = np.random.default_rng(4).integers(0, len(levels), size=(50, 32))
    params = np.tile(np.array([[0.5, 0.0]], dtype=np.float32), (50, 1))
    assert np.array_equal(codec.decode(codec.pack(params, codes)), 0.5 * levels[codes])


@pytest.mark.parametrize("dtype", [DType.IQ4_NL, DType.Q3_NL, DType.Q2_NL], ids=lambda d: d.name)
def test_codebook_index_table_equals_the_nearest_level(dtype: DType) -> None:
    """The codebooks' lookup by ceil(2t) gives the binary search's code everywhere, on the edges between levels too
    (a tie goes to the lower level), and at the extremes."""
    book = Codebook(dtype)
    assert book.table is not None
    rng = np.random.default_rng(0)
    d = rng.uniform(0.01, 2, 4000).astype(np.float32)
    x = rng.normal(0, 1, (4000, 32)).astype(np.float32) * d[:, None] * book.high
    x[:100] = (d[:100, None] * rng.choice(np.concatenate([book.edges, [book.low * 3, book.high * 3]]), (100, 32)))
    d[-10:] = 0  # level 0's code
    d[-20:-10] = np.float32(1e-38)  # x / d overflows to +-inf: the end levels
    with np.errstate(over="ignore"):
        t = np.where(d[:, None] != 0, x / np.where(d == 0, 1, d)[:, None], 0)
    assert np.isinf(t[-20:-10]).any()
    assert np.array_equal(book.index(x, d), book.order[np.searchsorted(book.edges, t)])
