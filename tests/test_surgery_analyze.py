"""franken-analyze and block selection on tiny random models: Block Influence and angular distances against a
direct numpy computation from transformers' hidden states, attention maps against transformers' attentions,
single-block-removal perplexity against a removal plan written as a file, the three selection methods."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.gguf_writer import write_gguf
from franken_rt.cli.analyze import main as analyze_main
from franken_rt.eval.tiny_models import corpus_text, load_reference_precision, make_tiny_llama, reference_model
from franken_rt.surgery import analyze as an
from franken_rt.surgery import select as sl
from franken_rt.surgery.calib import windows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), spm_model, "gqa_tied", seed=3)


@pytest.fixture(scope="module")
def tiny_gguf(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("g") / "tiny.gguf"
    write_gguf(read_checkpoint(tiny), out)  # F32, RoPE pairs interleaved as GGUF stores them
    return out


def hf_block_inputs(folder: Path, ids: list[int]) -> np.ndarray:
    """(depth + 1, n, dim): each decoder layer's input and the last layer's output (before the final norm)."""
    import torch

    model = reference_model(folder)
    captured = []
    hook = model.model.layers[-1].register_forward_hook(
        lambda mod, inp, out: captured.append((out[0] if isinstance(out, tuple) else out)[0].detach().clone()))
    with torch.no_grad():
        hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    hook.remove()
    return np.stack([h[0].double().numpy() for h in hs[:-1]] + [captured[0].double().numpy()])


def numpy_stats(x: np.ndarray, max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """BI per block and angular distances (block, shift) over positions 1.. of one window."""
    depth = x.shape[0] - 1

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    bi = np.array([1 - cos(x[b, 1:], x[b + 1, 1:]).mean() for b in range(depth)])
    ang = np.full((depth, max_shift), np.nan)
    for b in range(depth):
        for n in range(1, max_shift + 1):
            if b + n <= depth:
                ang[b, n - 1] = (np.arccos(np.clip(cos(x[b, 1:], x[b + n, 1:]), -1, 1)) / math.pi).mean()
    return bi, ang


@pytest.mark.parametrize("source", ["hf", "gguf"])
def test_bi_and_angular_match_transformers_hidden_states(tiny: Path, tiny_gguf: Path, source: str) -> None:
    model = load_reference_precision(tiny if source == "hf" else tiny_gguf, n_ctx=64)
    wins = windows(model, corpus_text(20_000), 48, max_windows=3)
    stats = an.residual_stats(model, wins, max_shift=3)
    assert stats.depth == 3 and stats.tokens == 3 * 47 and stats.windows == 3
    want_bi = np.zeros(3)
    want_ang = np.zeros((3, 3))
    for w in wins:
        bi, ang = numpy_stats(hf_block_inputs(tiny, w), 3)
        want_bi += bi / len(wins)
        want_ang += ang / len(wins)
    np.testing.assert_allclose(stats.bi, want_bi, rtol=2e-3, atol=2e-5)
    got_ang = np.array([[np.nan if v is None else v for v in row] for row in stats.angular])
    np.testing.assert_allclose(got_ang, want_ang, rtol=2e-3, atol=2e-5)
    assert np.isnan(got_ang[2, 1]) and not np.isnan(got_ang[0, 2])  # d(2, 4) does not exist, d(0, 3) does
    assert all(0 <= v <= 2 for v in stats.bi + stats.bi_sink)


@pytest.mark.parametrize("source", ["hf", "gguf"])
def test_attention_maps_match_transformers(tiny: Path, tiny_gguf: Path, source: str) -> None:
    import torch
    from transformers import LlamaForCausalLM

    model = load_reference_precision(tiny if source == "hf" else tiny_gguf, n_ctx=64)
    ids = model.tokenize("def f(x):\n    return x * 2  # twice")
    maps = an.attention_maps(model, ids)
    ref = LlamaForCausalLM.from_pretrained(tiny, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        att = ref(torch.tensor([ids]), output_attentions=True).attentions
    want = np.stack([a[0].numpy() for a in att])
    assert maps.shape == want.shape == (3, 4, len(ids), len(ids))
    np.testing.assert_allclose(maps, want, atol=2e-4)
    np.testing.assert_allclose(maps.sum(-1), 1, atol=1e-5)
    spectra = an.fourier_magnitude(maps)
    assert spectra.shape == maps.shape and np.all(spectra >= 0)


def test_single_removal_perplexity_equals_the_removal_written_as_a_file(tiny_gguf: Path, tmp_path: Path) -> None:
    from franken_rt.checkpoint.layer_plan import drop
    from franken_rt.surgery.plan import apply_plan

    ckpt = read_checkpoint(tiny_gguf)
    model = load_reference_precision(tiny_gguf, n_ctx=64)
    wins = windows(model, corpus_text(20_000), 64, max_windows=2)
    base, removed = an.removal_perplexity(ckpt, wins)
    assert len(removed) == 3 and all(r > 0 for r in removed)
    assert base == pytest.approx(math.exp(np.concatenate([model.nll(w) for w in wins]).mean()), rel=1e-5)
    out = tmp_path / "minus1.gguf"
    write_gguf(apply_plan(ckpt, drop(3, [1])), out)
    small = load_reference_precision(out, n_ctx=64)
    assert small.config.n_layers == 2
    direct = math.exp(np.concatenate([small.nll(w) for w in wins]).mean())
    assert removed[1] == pytest.approx(direct, rel=1e-5)
    assert removed[1] != pytest.approx(removed[0], rel=1e-4)  # the removal matters, and which block too


def test_selection_methods(tiny_gguf: Path) -> None:
    bi = [0.5, 0.1, 0.3, 0.05, 0.2]
    assert sl.by_bi(bi, 2).removed == [1, 3]
    stats = an.BlockStats(depth=4, max_shift=2, tokens=1, windows=1, ctx=2, bi=[0.1] * 4, bi_sink=[0.0] * 4,
                          angular=[[0.3, 0.5], [0.2, 0.25], [0.1, 0.3], [0.4, None]],
                          angular_sink=[[0.0, 0.0]] * 4)
    assert sl.by_angular(stats, 2).removed == [1, 2]  # d(1, 3) = 0.25 is the least d(l, l+2)
    assert sl.by_angular(stats, 1).removed == [2]
    with pytest.raises(sl.FrankenError, match="--drop must be between 0 and 3"):
        sl.by_bi([0.1] * 4, 4)

    ckpt = read_checkpoint(tiny_gguf)
    model = load_reference_precision(tiny_gguf, n_ctx=64)
    wins = windows(model, corpus_text(20_000), 64, max_windows=2)
    _, single = an.removal_perplexity(ckpt, wins)
    greedy = sl.select_blocks(ckpt, wins, 2, "ppl-greedy")
    assert greedy.order[0] == int(np.argmin(single)) and len(set(greedy.removed)) == 2
    second = {b: an.plan_nll(ckpt, [i for i in range(3) if i not in (greedy.order[0], b)], wins)
              for b in range(3) if b != greedy.order[0]}
    assert greedy.order[1] == min(second, key=second.__getitem__)
    stats = an.residual_stats(model, wins, max_shift=2)
    assert sl.select_blocks(ckpt, wins, 1, "bi").removed == [int(np.argmin(stats.bi))]
    assert sl.select_blocks(ckpt, wins, 2, "angular").removed in ([0, 1], [1, 2])


def test_analyze_cli_writes_reports(tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calib = tmp_path / "calib.txt"
    calib.write_text(corpus_text(20_000))
    out = tmp_path / "report"
    rc = analyze_main([str(tiny_gguf), "--calib", str(calib), "-o", str(out), "--ctx", "32", "--max-tokens", "96",
                       "--attention", "Hello world, hello again", "--threads", "1"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "BI" in table and "ppl w/o" in table and "perplexity of the full model" in table
    data = json.loads((out / "blocks.json").read_text())
    assert data["depth"] == 3 and len(data["ppl_removed"]) == 3 and data["windows"] == 3
    assert (out / "blocks.csv").read_text().splitlines()[0].startswith("block,bi,bi_sink,ppl_removed,angular_n1")
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["angular_distance.png", "attention_layer00.png", "attention_layer01.png",
                    "attention_layer02.png", "block_importance.png"]
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_analyze_cli_errors_are_one_line(tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        ([str(tiny_gguf), "--calib", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "o")], "no such file"),
        ([str(tiny_gguf), "--ctx", "1"], "--ctx must be at least 2"),
        ([str(tiny_gguf), "--ctx", "64", "--max-tokens", "10"], "less than one window"),
        ([str(tiny_gguf), "--ppl-windows", "-1"], "--ppl-windows must be >= 0"),
    ]
    short = tmp_path / "short.txt"
    short.write_text("two words")
    cases.append(([str(tiny_gguf), "--calib", str(short), "--ctx", "64", "-o", str(tmp_path / "o")],
                  "fewer than one window"))
    for argv, msg in cases:
        assert analyze_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err


def test_default_calibration_is_sampled_from_the_model_and_cached(tiny_gguf: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from franken_rt.surgery import calib

    monkeypatch.setenv("FRANKEN_CACHE", str(tmp_path))
    monkeypatch.setattr(calib, "SAMPLE_TOKENS", 24)
    model = load_reference_precision(tiny_gguf, n_ctx=256)
    text = calib.calibration_text(model)
    assert all(p in text for p in calib.PROMPTS)
    assert len(model.tokenize(text)) > len(calib.PROMPTS) * calib.SAMPLE_TOKENS // 2
    cached = list((tmp_path / "calibration").glob("sampled-*.txt"))
    assert len(cached) == 1 and cached[0].read_text(encoding="utf-8") == text
    assert calib.sampled_text(model, cache=False) == text  # seeded: the same text again
