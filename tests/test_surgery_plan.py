"""Layer plans: parsing, rewriting checkpoints, the plan in GGUF metadata, and logits against transformers (blocks
rearranged) and llama.cpp (removal-only plans as plain llama files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import franken_rt
from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.gguf import read_header
from franken_rt.checkpoint.gguf_writer import write_gguf
from franken_rt.checkpoint.layer_plan import PLAN_KEY, drop, format_plan, parse_plan
from franken_rt.checkpoint.types import DType
from franken_rt.errors import FrankenError
from franken_rt.eval.tiny_models import load_reference_precision, make_tiny_llama, reference_model
from franken_rt.surgery.plan import apply_plan

# `python -c` puts the working directory first on sys.path: run from one without a franken_rt folder, so the
# installed package (with its compiled core) is what runs, as the entry point would.
NEUTRAL = Path(sys.executable).parent


PROMPT = [1, 57, 300, 12, 99, 250, 7, 180, 33, 64, 310, 5, 41, 222, 90, 17]


def cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A franken_rt.cli module's main() as its entry point runs it (in-tree code)."""
    code = f"import sys; from franken_rt.cli.{module} import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          cwd=NEUTRAL)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], prog: str, fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error:") and fragment in lines[0], proc.stderr


@pytest.fixture(scope="module", params=["gqa_tied", "mha_untied"])
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp(request.param), spm_model, request.param, seed=3)


def rearranged_reference_logits(folder: Path, plan: list[int], ids: list[int]) -> np.ndarray:
    """transformers' LlamaForCausalLM with its decoder layers run in the plan's order (full sequence, no cache)."""
    import torch

    model = reference_model(folder)
    layers = list(model.model.layers)
    model.model.layers = torch.nn.ModuleList([layers[b] for b in plan])
    model.config.num_hidden_layers = len(plan)
    with torch.no_grad():
        return model(torch.tensor([ids]), use_cache=False).logits[0].float().numpy()


# ---- parsing -----------------------------------------------------------------------------------------------------


def test_parse_and_format_round_trip() -> None:
    plan = parse_plan("0-11,14,14,15-29", 30)
    assert plan == [*range(12), 14, 14, *range(15, 30)]
    assert parse_plan(format_plan(plan), 30) == plan
    for p in ([3, 2, 1, 0], [0, 0, 0], [5], [0, 1, 2, 7, 8, 2, 3], list(range(30))):
        assert parse_plan(format_plan(p), 30) == p
    assert format_plan([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert parse_plan(" 1 , 0 ", 2) == [1, 0] and parse_plan("1-1", 2) == [1]
    assert drop(6, [2, 4]) == [0, 1, 3, 5]


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty"), (" , ", "empty"), ("1,,2", "bad item"), ("a-3", "bad item"), ("3-", "bad item"),
    ("-1", "bad item"), ("5-2", "reversed"), ("0-30", "out of range"), ("30", "out of range"), ("1.5", "bad item"),
])
def test_parse_errors(text: str, fragment: str) -> None:
    with pytest.raises(FrankenError, match=fragment):
        parse_plan(text, 30)


def test_drop_errors() -> None:
    with pytest.raises(FrankenError, match="cannot remove block 9"):
        drop(6, [9])
    with pytest.raises(FrankenError, match="all 3"):
        drop(3, [0, 1, 2])


# ---- checkpoints and files -----------------------------------------------------------------------------------------


def test_removal_plan_renumbers_and_stores_no_plan(tiny: Path, tmp_path: Path) -> None:
    ckpt = read_checkpoint(tiny)
    out = apply_plan(ckpt, [0, 2])
    assert out.config.n_layers == 2 and out.layer_plan is None and PLAN_KEY not in out.metadata
    assert out.tensors["blk.1.attn_q.weight"].offset == ckpt.tensors["blk.2.attn_q.weight"].offset
    assert not any(n.startswith("blk.2.") for n in out.tensors)
    write_gguf(out, tmp_path / "r.gguf")
    header = read_header(tmp_path / "r.gguf")
    assert PLAN_KEY not in header.metadata and header.metadata["llama.block_count"] == 2


def test_repeat_plan_stores_blocks_once(tiny: Path, tmp_path: Path) -> None:
    ckpt = read_checkpoint(tiny)
    out = apply_plan(ckpt, [2, 0, 2])
    assert out.config.n_layers == 2 and out.layer_plan == [0, 1, 0]
    assert out.tensors["blk.0.ffn_up.weight"].offset == ckpt.tensors["blk.2.ffn_up.weight"].offset
    write_gguf(out, tmp_path / "p.gguf")
    assert read_header(tmp_path / "p.gguf").metadata[PLAN_KEY] == [0, 1, 0]
    assert read_checkpoint(tmp_path / "p.gguf").layer_plan == [0, 1, 0]
    mat = apply_plan(ckpt, [2, 0, 2], materialize_repeats=True)
    assert mat.config.n_layers == 3 and mat.layer_plan is None and PLAN_KEY not in mat.metadata


@pytest.mark.parametrize("plan", [[0, 1, 1, 2], [2, 0, 2], [0, 0, 0, 1], [1]])
def test_plan_logits_match_transformers_with_rearranged_layers(tiny: Path, tmp_path: Path, plan: list[int]) -> None:
    ref = rearranged_reference_logits(tiny, plan, PROMPT)
    out = tmp_path / "plan.gguf"
    planned = apply_plan(read_checkpoint(tiny), plan)
    write_gguf(planned, out)
    ours = load_reference_precision(out)
    stored = sorted(set(plan), key=plan.index)
    assert ours.layer_plan == [stored.index(b) for b in plan] and ours.config.n_layers == len(stored)
    assert np.abs(ours.logits(PROMPT) - ref).max() <= 1e-4
    # the same plan given to the runtime directly over the original checkpoint
    direct = load_reference_precision(tiny, layer_plan=plan)
    assert np.abs(direct.logits(PROMPT) - ref).max() <= 1e-4
    # and the plan matters: the unmodified model differs
    assert np.abs(load_reference_precision(tiny).logits(PROMPT) - ref).max() > 1e-2


def test_materialized_repeats_equal_plan_metadata(tiny: Path, tmp_path: Path) -> None:
    ckpt = read_checkpoint(tiny)
    plan = [0, 1, 1, 2, 1]
    write_gguf(apply_plan(ckpt, plan), tmp_path / "meta.gguf")
    write_gguf(apply_plan(ckpt, plan, materialize_repeats=True), tmp_path / "mat.gguf")
    assert read_checkpoint(tmp_path / "mat.gguf").config.n_layers == 5
    assert read_checkpoint(tmp_path / "meta.gguf").config.n_layers == 3
    a = load_reference_precision(tmp_path / "meta.gguf").logits(PROMPT)
    b = load_reference_precision(tmp_path / "mat.gguf").logits(PROMPT)
    assert np.array_equal(a, b)
    assert (tmp_path / "mat.gguf").stat().st_size > (tmp_path / "meta.gguf").stat().st_size


def test_plans_compose_over_executed_depth(tiny: Path, tmp_path: Path) -> None:
    """A plan given for a file with a plan indexes what that file runs: [2, 0, 2] then [0, 0, 2, 1] runs
    stored blocks 2, 2, 2, 0 of the original."""
    ckpt = read_checkpoint(tiny)
    write_gguf(apply_plan(ckpt, [2, 0, 2]), tmp_path / "first.gguf")
    first = read_checkpoint(tmp_path / "first.gguf")
    second = apply_plan(first, [0, 0, 2, 1])
    write_gguf(second, tmp_path / "second.gguf")
    assert second.config.n_layers == 2  # blocks 2 and 0 of the original
    ref = rearranged_reference_logits(tiny, [2, 2, 2, 0], PROMPT)
    assert np.abs(load_reference_precision(tmp_path / "second.gguf").logits(PROMPT) - ref).max() <= 1e-4
    # materializing a file's own plan (no new plan) gives a plain file running the same blocks
    plain = apply_plan(first, None, materialize_repeats=True)
    assert plain.layer_plan is None and plain.config.n_layers == 3
    write_gguf(plain, tmp_path / "plain.gguf")
    ref = rearranged_reference_logits(tiny, [2, 0, 2], PROMPT)
    assert np.abs(load_reference_precision(tmp_path / "plain.gguf").logits(PROMPT) - ref).max() <= 1e-4
    # a plain rewrite of a plan file keeps its plan
    write_gguf(first, tmp_path / "copy.gguf")
    assert read_checkpoint(tmp_path / "copy.gguf").layer_plan == [0, 1, 0]


def test_file_plan_naming_missing_block_is_rejected(tiny: Path, tmp_path: Path) -> None:
    ckpt = apply_plan(read_checkpoint(tiny), [0, 1])
    write_gguf(ckpt, tmp_path / "bad.gguf", extra_metadata={PLAN_KEY: [0, 1, 5]})
    with pytest.raises(FrankenError, match=r"names block 5, but the file stores 2 blocks"):
        franken_rt.load(tmp_path / "bad.gguf")
    write_gguf(ckpt, tmp_path / "ok.gguf")
    with pytest.raises(FrankenError, match="names block 4"):
        franken_rt.load(tmp_path / "ok.gguf", layer_plan=[0, 4])


def test_load_layer_plan_overrides_file_plan(tiny: Path, tmp_path: Path) -> None:
    write_gguf(apply_plan(read_checkpoint(tiny), [1, 0, 1]), tmp_path / "p.gguf")  # stores 1, 0 as 0, 1
    model = load_reference_precision(tmp_path / "p.gguf", layer_plan=[1])  # original block 0 alone
    ref = rearranged_reference_logits(tiny, [0], PROMPT)
    assert model.layer_plan == [1]
    assert np.abs(model.logits(PROMPT) - ref).max() <= 1e-4


def test_removal_plan_runs_the_same_in_llamacpp(tiny: Path, tmp_path: Path) -> None:
    from llama_cpp import Llama

    out = tmp_path / "removed.gguf"
    write_gguf(apply_plan(read_checkpoint(tiny), [0, 2]), out, dtype=DType.F32)
    ours = load_reference_precision(out).logits(PROMPT)
    llm = Llama(model_path=str(out), n_ctx=64, n_batch=64, logits_all=True, n_threads=2, verbose=False)
    llm.eval(PROMPT)
    theirs = np.asarray(llm.scores[: len(PROMPT)], dtype=np.float32)
    ref = rearranged_reference_logits(tiny, [0, 2], PROMPT)
    assert np.abs(ours - ref).max() <= 1e-4
    assert np.abs(ours - theirs).max() <= 2e-3  # llama.cpp keeps its KV cache in f16 (measured 9e-4)
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


# ---- command line --------------------------------------------------------------------------------------------------


def test_convert_plan_cli(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.gguf"
    proc = cli("convert", str(tiny), "-o", str(out), "--quant", "f32", "--plan", "0,1,1,2", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "layer plan 0,1,1,2: 3 -> 4 executed blocks" in proc.stderr
    assert read_checkpoint(out).layer_plan == [0, 1, 1, 2]
    ref = rearranged_reference_logits(tiny, [0, 1, 1, 2], PROMPT)
    assert np.abs(load_reference_precision(out).logits(PROMPT) - ref).max() <= 1e-4
    mat = tmp_path / "mat.gguf"
    proc = cli("convert", str(out), "-o", str(mat), "--quant", "f32", "--materialize-repeats", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "4 blocks, plain llama" in proc.stderr
    assert read_checkpoint(mat).layer_plan is None and read_checkpoint(mat).config.n_layers == 4


@pytest.mark.parametrize(("plan", "fragment"), [("0-3", "out of range"), ("2-1", "reversed"), ("x", "bad item"),
                                               ("", "empty")])
def test_convert_plan_errors_are_one_line(tiny: Path, tmp_path: Path, plan: str, fragment: str) -> None:
    proc = cli("convert", str(tiny), "-o", str(tmp_path / "x.gguf"), "--plan", plan, "-q")
    assert_one_line_error(proc, "franken-convert", fragment)
    assert not (tmp_path / "x.gguf").exists()
