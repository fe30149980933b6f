"""Importance-weighted rounding: the input moments equal what transformers' linear layers actually read, the
weighted search lowers the weighted error it targets, and the converter uses it when calibration is given."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.types import DType
from franken_rt.cli.convert import main as convert_main
from franken_rt.eval.tiny_models import corpus_text, make_tiny_llama, reference_logits, reference_model
from franken_rt.quant.formats import dequantize, encode
from franken_rt.surgery.importance import input_moments

HF_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), spm_model, "gqa_tied", seed=3)


def test_moments_equal_the_inputs_transformers_multiplies(tiny: Path) -> None:
    ref = reference_model(tiny)
    windows = [list(range(1, 60)), list(range(30, 100))]
    seen: dict[str, np.ndarray] = {}

    def hook(name: str):  # noqa: ANN202
        def record(_mod, args, _out) -> None:  # noqa: ANN001
            x = args[0][0, 1:].double().numpy()  # the first position is left out, as input_moments does
            seen[name] = seen.get(name, 0) + (x * x).sum(axis=0)
        return record

    for full, mod in ref.named_modules():
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", full)
        if m and m.group(2) in HF_TO_GGUF:
            mod.register_forward_hook(hook(f"blk.{m.group(1)}.{HF_TO_GGUF[m.group(2)]}.weight"))
    ref.lm_head.register_forward_hook(hook("token_embd.weight"))  # tied: the embedding matrix is the output
    for w in windows:
        reference_logits(ref, w)
    count = sum(len(w) - 1 for w in windows)
    ours = input_moments(read_checkpoint(tiny), windows, threads=2)
    assert set(ours) == set(seen)
    for name, total in seen.items():
        np.testing.assert_allclose(ours[name], total / count, rtol=2e-3, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("dtype", [DType.Q3_0, DType.Q4_0, DType.Q4_1])
def test_weighted_search_lowers_the_weighted_error(dtype: DType) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 128)).astype(np.float32)
    imp = np.exp(2 * rng.standard_normal(128))  # a few columns matter much more than the rest

    def weighted_error(raw: np.ndarray) -> float:
        return float(((x - dequantize(raw, dtype, x.shape)) ** 2 * imp).sum())

    plain, weighted = encode(x, dtype, "search"), encode(x, dtype, "search", importance=imp)
    assert weighted_error(weighted) < 0.9 * weighted_error(plain)
    uniform = encode(x, dtype, "search", importance=np.ones(128))  # uniform weights: the plain search's error
    err = [float(((x - dequantize(r, dtype, x.shape)) ** 2).sum()) for r in (uniform, plain)]
    assert abs(err[0] - err[1]) <= 1e-3 * err[1]


def test_convert_with_calibration_uses_importance(tiny: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    calib = tmp_path / "calib.txt"
    calib.write_text(corpus_text(20_000))
    out = tmp_path / "q3.gguf"
    assert convert_main([str(tiny), "-o", str(out), "-q", "--quant", "q3_0", "--calib", str(calib)]) == 0
    assert "importance-weighted rounding" in capsys.readouterr().err
    import franken_rt

    ids = list(range(1, 40))
    ref = reference_logits(reference_model(tiny), ids)
    ours = franken_rt.load(out, threads=2).logits(ids)
    assert np.abs(ours - ref).max() <= 1.0 * np.abs(ref).max()
