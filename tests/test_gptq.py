"""Error-feedback (GPTQ) rounding: it lowers the output error on correlated inputs below the weighted search's for
every format with a grid, the grid interface packs what it rounds, the second moments are what the matrices read,
and the converter writes files the core runs (or refuses a combination it cannot honour)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import franken_rt
from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.types import DType
from franken_rt.cli.convert import main as convert_main
from franken_rt.eval.tiny_models import corpus_text, make_tiny_llama, reference_logits, reference_model
from franken_rt.quant.formats import CODECS, dequantize, encode
from franken_rt.quant.gptq import gptq_encode, has_grid, inverse_factor, output_error
from franken_rt.surgery.importance import Hessians, input_moments

GRID_TYPES = [d for d in CODECS if has_grid(d)]


def correlated(rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A weight matrix and the second moments of inputs whose columns correlate and differ in scale, as a
    transformer's do."""
    rng = np.random.default_rng(seed)
    n = 4 * cols
    mix = np.eye(cols) * 0.5 + rng.standard_normal((cols, cols)) / np.sqrt(cols)
    x = rng.standard_normal((n, cols)) @ mix * np.exp(rng.standard_normal(cols))
    w = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    return w, x.T @ x / n


def test_every_low_bit_format_has_a_grid() -> None:
    assert {DType.Q4_0, DType.Q4_1, DType.Q3_0, DType.IQ4_NL} <= set(GRID_TYPES)


@pytest.mark.parametrize("dtype", GRID_TYPES, ids=lambda d: d.name)
def test_grid_packs_what_it_rounds(dtype: DType) -> None:
    codec = CODECS[dtype]
    x = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    params = codec.fit(x, np.ones_like(x))
    codes = codec.nearest(x, params)
    np.testing.assert_array_equal(codec.decode(codec.pack(params, codes)), codec.values(codes, params))
    # nearest: no other level of the block is closer
    levels = np.atleast_2d(np.asarray(codec.levels, dtype=np.float32))[0]
    every = params[:, :1, None] * levels + params[:, 1:2, None]  # (blocks, 1, levels)
    best = np.abs(x[:, :, None] - every).min(axis=2)
    assert np.all(np.abs(x - codec.values(codes, params)) <= best + 1e-6)


@pytest.mark.parametrize("dtype", GRID_TYPES, ids=lambda d: d.name)
def test_gptq_lowers_output_error_below_the_weighted_search(dtype: DType) -> None:
    w, h = correlated(96, 128)
    base = encode(w, dtype, "search", np.diag(h)) if CODECS[dtype].search else encode(w, dtype, "rtn")
    searched = output_error(w, dequantize(base, dtype, w.shape), h)
    fed_back = output_error(w, dequantize(gptq_encode(w, dtype, h), dtype, w.shape), h)
    assert fed_back < 0.8 * searched


def test_uncorrelated_inputs_leave_nothing_to_spread() -> None:
    """With H diagonal no column can make up for another: error feedback rounds as the weighted grid would."""
    w, _ = correlated(32, 64)
    h = np.diag(np.exp(np.random.default_rng(2).standard_normal(64)))
    u = inverse_factor(h)
    assert np.allclose(u - np.diag(np.diag(u)), 0)
    alone = dequantize(gptq_encode(w, DType.Q4_0, h), DType.Q4_0, w.shape)
    searched = dequantize(encode(w, DType.Q4_0, "search", np.diag(h)), DType.Q4_0, w.shape)
    assert output_error(w, alone, h) <= 1.05 * output_error(w, searched, h)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), spm_model, "gqa_tied", seed=5)


def test_hessian_diagonal_is_the_importance(tiny: Path) -> None:
    ckpt = read_checkpoint(tiny)
    windows = [list(range(1, 50)), list(range(20, 90))]
    moments = input_moments(ckpt, windows, threads=2)
    hess = Hessians(ckpt, windows, threads=2, skip_first=True)  # as the importance: first position left out
    for name, diag in moments.items():
        h = hess(name)
        assert h is not None and h.shape == (len(diag), len(diag)), name
        np.testing.assert_allclose(np.diag(h), diag, rtol=1e-4, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(h, h.T, err_msg=name)
    assert hess("blk.0.attn_q.weight") is hess("blk.0.attn_v.weight")  # one input, one H
    assert hess("blk.0.attn_norm.weight") is None


def test_convert_gptq_file_runs_in_the_core(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calib = tmp_path / "calib.txt"
    calib.write_text(corpus_text(20_000))
    out = tmp_path / "q3-gptq.gguf"
    args = [str(tiny), "-o", str(out), "-q", "--quant", "q3_0", "--calib", str(calib)]
    assert convert_main([*args, "--rounding", "gptq"]) == 0
    assert "error-feedback rounding" in capsys.readouterr().err
    ids = list(range(1, 40))
    ref = reference_logits(reference_model(tiny), ids)
    ours = franken_rt.load(out, threads=2).logits(ids)
    assert np.isfinite(ours).all()
    assert np.abs(ours - ref).max() <= 1.0 * np.abs(ref).max()


def test_gptq_without_a_quantized_type_is_refused(tiny: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f16.gguf"
    assert convert_main([str(tiny), "-o", str(out), "-q", "--quant", "f16", "--rounding", "gptq"]) == 2
    err = capsys.readouterr().err
    assert "--rounding gptq applies to quantized types" in err and "Traceback" not in err
    assert not out.exists()
