"""--target-size: exact file size predictions, the candidate list, and a produced file within the budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.gguf_writer import write_gguf
from franken_rt.checkpoint.layer_plan import drop
from franken_rt.cli.convert import main as convert_main
from franken_rt.errors import FrankenError
from franken_rt.eval.tiny_models import corpus_text, make_tiny_llama
from franken_rt.quant.policy import MIXES, QUANT_NAMES
from franken_rt.quant.tensors import transcoder
from franken_rt.surgery import size as sz
from franken_rt.surgery.plan import apply_plan


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), spm_model, "mqa_llama3", seed=7)  # has rope_freqs


def test_parse_size() -> None:
    assert sz.parse_size("60MB") == 60_000_000
    assert sz.parse_size("60MiB") == 60 * 2**20
    assert sz.parse_size("1.5 GB") == 1_500_000_000
    assert sz.parse_size("2kib") == 2048
    assert sz.parse_size("123456") == 123456
    for bad in ("", "MB", "-3MB", "60 potatoes", "0"):
        with pytest.raises(FrankenError):
            sz.parse_size(bad)


def test_candidates_cover_every_format() -> None:
    cands = sz.candidate_quants()
    bases = {q for q, _ in cands}
    assert bases == {q for q in (*QUANT_NAMES, *MIXES) if q not in ("f32", "bf16")}
    assert {e for _, e in cands} == {None, *(q for q in QUANT_NAMES if q not in ("f32", "bf16"))}


@pytest.mark.parametrize(("quant", "embed", "removed"), [("q8_0", None, []), ("q4_0m", "q4_1", [1]),
                                                         ("f16", "q8_0", [0, 2]), ("q4_1", None, [2])])
def test_predicted_size_is_exact(tiny: Path, tmp_path: Path, quant: str, embed: str | None,
                                 removed: list[int]) -> None:
    ckpt = read_checkpoint(tiny)
    if removed:
        ckpt = apply_plan(ckpt, drop(ckpt.config.n_layers, removed))
    policy = sz.policy_of(quant, embed)
    out = tmp_path / "m.gguf"
    write_gguf(ckpt, out, dtype=policy, tensor_bytes=transcoder("rtn"))
    assert sz.file_size(ckpt, policy) == os.path.getsize(out)


@pytest.mark.slow  # measures calibration perplexity of every candidate; sizes: test_predicted_size_is_exact
def test_target_size_output_fits_the_budget(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calib = tmp_path / "calib.txt"
    calib.write_text(corpus_text(40_000))
    full = read_checkpoint(tiny)
    q8 = sz.file_size(full, sz.policy_of("q8_0", None))
    q4 = sz.file_size(full, sz.policy_of("q4_0", "q4_0"))
    budget = (q8 + q4) // 2  # q8_0 everywhere does not fit with all blocks; 4-bit types do
    out = tmp_path / "fit.gguf"
    rc = convert_main([str(tiny), "-o", str(out), "-q", "--calib", str(calib), "--target-size", str(budget)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert os.path.getsize(out) <= budget
    assert "(predicted exactly) with the least calibration divergence" in err
    # a budget below every candidate even with all blocks but one removed: one line, nothing written
    one_block = apply_plan(full, [0])
    tiny_budget = min(sz.file_size(one_block, sz.policy_of(q, e)) for q, e in sz.candidate_quants()) - 1
    rc = convert_main([str(tiny), "-o", str(tmp_path / "none.gguf"), "-q", "--calib", str(calib),
                       "--target-size", str(tiny_budget)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "no model fits" in err[-1] and not (tmp_path / "none.gguf").exists()


def test_choose_prefers_quantization_to_removal_when_both_fit(tiny: Path) -> None:
    from franken_rt.eval.tiny_models import load_reference_precision
    from franken_rt.surgery.calib import windows

    ckpt = read_checkpoint(tiny)
    model = load_reference_precision(tiny, n_ctx=64)
    wins = windows(model, corpus_text(40_000), 64, max_windows=2)
    budget = sz.file_size(ckpt, sz.policy_of("q8_0", None))
    choice = sz.choose(ckpt, budget, wins, lambda n: list(range(n)), rounding="rtn",
                       candidates=[("q8_0", None), ("f16", None)])
    by = {(r["quant"], len(r["removed"])): r for r in choice.table}
    assert set(by) == {("q8_0", 0), ("f16", 1)} or set(by) == {("q8_0", 0), ("f16", 2)}
    assert all(r["size"] <= budget for r in choice.table)
    assert choice.ppl == min(r["ppl"] for r in choice.table)
    assert (choice.quant, choice.removed) == ("q8_0", [])  # removing a random block costs more than q8_0
