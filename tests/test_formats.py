"""The format registry: the Python table (franken_rt/formats.py) equals the core's (csrc/kernels/formats.h), every
quantized format has a codec and kernels on every path this CPU runs, and the type lists derive from the table."""

from __future__ import annotations

import numpy as np
import pytest

from franken_rt import _core
from franken_rt.formats import FORMATS, DType, by_cli_name, format_of, is_known
from franken_rt.quant.formats import CODECS, dequantize, encode
from franken_rt.quant.policy import LOW_BIT, QUANT_NAMES


def test_python_table_equals_the_core_table() -> None:
    core = {row["id"]: row for row in _core.formats()}
    assert set(core) == {f.id for f in FORMATS}
    for f in FORMATS:
        row = core[f.id]
        assert (row["name"], row["block_elems"], row["block_bytes"], row["header_halves"]) == (
            f.name, f.block_elems, f.block_bytes, f.header_halves), f.name
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


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.quantized], ids=lambda f: f.name)
def test_every_quantized_format_has_a_codec_that_round_trips(fmt) -> None:  # noqa: ANN001
    dtype = DType(fmt.id)
    assert dtype in CODECS
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    for rounding in ("rtn", "search"):
        raw = encode(x, dtype, rounding)
        assert raw.shape == (4, 64 // fmt.block_elems * fmt.block_bytes)
        err = np.abs(dequantize(raw, dtype, x.shape) - x).max()
        assert err < 2.5 * np.abs(x).max() / 2 ** (fmt.bits - 1.5), (rounding, err)


def test_type_lists_derive_from_the_table() -> None:
    assert set(QUANT_NAMES) == {f.name.lower() for f in FORMATS} == set(by_cli_name())
    assert set(LOW_BIT) == {DType(f.id) for f in FORMATS if f.quantized and f.bits < 8}
    assert not is_known(12345) and is_known(int(DType.Q4_0)) and format_of(DType.Q3_0).portable is False
