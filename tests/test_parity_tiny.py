"""Parity with transformers' LlamaForCausalLM on tiny random models: every architecture feature that changes the
numbers (MHA/GQA/MQA, tied or separate output, Llama 3 RoPE scaling, an unusual head dim), from the Hugging Face
folder and from GGUF written from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_models import VARIANTS, make_tiny_llama, reference_greedy, reference_logits, reference_model

import franken_rt
from franken_rt.checkpoint import DType, read_checkpoint
from franken_rt.checkpoint.gguf_writer import write_gguf

PROMPT = [1, 57, 300, 12, 99, 250, 7, 180, 33, 64, 310, 5, 41, 222, 90, 17]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, spm_model: Path):
    folder = make_tiny_llama(tmp_path_factory.mktemp(request.param), spm_model, request.param)
    return folder, reference_model(folder)


def test_logits_match_transformers(tiny) -> None:  # noqa: ANN001
    folder, ref = tiny
    ours = franken_rt.load(folder, threads=2).logits(PROMPT)
    theirs = reference_logits(ref, PROMPT)
    assert ours.shape == theirs.shape
    assert np.abs(ours[-1] - theirs[-1]).max() <= 1e-4
    assert np.abs(ours - theirs).max() <= 1e-4


def test_greedy_continuation_matches_transformers(tiny) -> None:  # noqa: ANN001
    folder, ref = tiny
    model = franken_rt.load(folder, threads=2)
    ours = list(model.generate_tokens(PROMPT, max_tokens=20, temperature=0, ignore_eos=True))
    assert ours == reference_greedy(ref, PROMPT, 20)


def test_kv_cache_equals_recompute(tiny) -> None:  # noqa: ANN001
    folder, _ = tiny
    model = franken_rt.load(folder, threads=2)
    full = model.logits(PROMPT)
    model.logits(PROMPT[:5])  # then one token at a time, through the cache
    steps = [model._core.eval(np.array([t], dtype=np.int32))[0] for t in PROMPT[5:]]
    assert np.abs(np.stack(steps) - full[5:]).max() <= 1e-5


@pytest.mark.parametrize("dtype", [DType.F32, DType.F16])
def test_gguf_form_matches_folder(tiny, tmp_path: Path, dtype: DType) -> None:  # noqa: ANN001
    import torch

    folder, ref = tiny
    out = tmp_path / "tiny.gguf"
    write_gguf(read_checkpoint(folder), out, dtype=dtype)
    ours = franken_rt.load(out, threads=2).logits(PROMPT)
    if dtype == DType.F32:
        expected = franken_rt.load(folder, threads=2).logits(PROMPT)
        assert np.abs(ours - expected).max() <= 1e-5
    else:  # the reference with the same f16 rounding of its 2-D weights
        with torch.no_grad():
            for p in ref.parameters():
                if p.dim() == 2:
                    p.copy_(p.half().float())
        expected = reference_logits(ref, PROMPT)
        assert np.abs(ours - expected).max() <= 1e-4
