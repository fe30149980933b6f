"""Healing by knowledge distillation (`--heal distill`) on tiny random models: the torch student computes what the
core computes, training lowers the KL to the teacher on text it never saw, the written file is a plain llama file
the core runs, torch stays off every path that does not distill, and mistakes get one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import franken_rt
from franken_rt.checkpoint import DType, read_checkpoint
from franken_rt.checkpoint.gguf_writer import write_gguf
from franken_rt.cli.convert import main as convert_main
from franken_rt.errors import FrankenError
from franken_rt.eval.tiny_models import corpus_text, load_reference_precision, make_tiny_llama
from franken_rt.model import Model
from franken_rt.surgery import distill as ds
from franken_rt.surgery import healing
from franken_rt.surgery.calib import windows

CTX = 64


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    """A Hugging Face folder (RoPE pairs i, i + d/2) of a GQA model with tied embeddings."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-distill"), spm_model, "gqa_tied", seed=7)


@pytest.fixture(scope="module")
def tiny_gguf(tiny_folder: Path) -> Path:
    """The same model as GGUF (q/k rows permuted to adjacent RoPE pairs)."""
    out = tiny_folder / "tiny.gguf"
    write_gguf(read_checkpoint(tiny_folder), out)
    return out


def log_probs(ckpt, plan: list[int] | None, wins: list[list[int]]) -> list[np.ndarray]:  # noqa: ANN001
    model = Model(ckpt, threads=2, n_ctx=CTX, layer_plan=plan, activations="f32", kv_cache="f32")
    out = []
    for w in wins:
        lg = model.logits(w).astype(np.float64)
        lg -= lg.max(-1, keepdims=True)
        out.append(lg - np.log(np.exp(lg).sum(-1, keepdims=True)))
    return out


def full_kl(teacher: list[np.ndarray], student: list[np.ndarray]) -> float:
    """Mean KL(teacher || student) per position over the whole vocabulary (not the top-k of the training loss)."""
    return float(np.mean(np.concatenate([(np.exp(p) * (p - q)).sum(-1) for p, q in zip(teacher, student)])))


@pytest.mark.parametrize("source", ["tiny_folder", "tiny_gguf"])
def test_student_computes_what_the_core_computes(source: str, request: pytest.FixtureRequest) -> None:
    ckpt = read_checkpoint(request.getfixturevalue(source))
    model = Model(ckpt, threads=2, n_ctx=CTX, layer_plan=[0, 2], activations="f32", kv_cache="f32")
    ids = model.tokenize(corpus_text(2_000))[:CTX]
    student = ds.Student(ckpt, [0, 2])
    with torch.no_grad():
        got = student(student.embed(torch.tensor(ids))).numpy()
        # the cached prefix is the same computation split in two
        split = student(student.prefix(ids, 1), 1).numpy()
    want = model.logits(ids)
    np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max())
    np.testing.assert_allclose(split, got, atol=1e-5 * np.abs(want).max())


def test_kl_loss_is_the_coarsened_kl() -> None:
    gen = torch.Generator().manual_seed(0)
    t_logits, s_logits = torch.randn(5, 50, generator=gen) * 3, torch.randn(5, 50, generator=gen) * 3
    p, q = torch.log_softmax(t_logits, -1), torch.log_softmax(s_logits, -1)
    exact = float((p.exp() * (p - q)).sum(-1).mean())
    full = ds.Targets(*torch.topk(p, 50, dim=-1), torch.full((5,), -30.0))
    assert float(ds.kl(s_logits, full)) == pytest.approx(exact, rel=1e-4)
    top = torch.topk(p, 8, dim=-1)
    coarse = float(ds.kl(s_logits, ds.Targets(top.values, top.indices, ds._log_rest(top.values))))
    assert 0 < coarse <= exact + 1e-6  # coarsening never raises a KL divergence
    assert float(ds.kl(t_logits, ds.Targets(top.values, top.indices, ds._log_rest(top.values)))) < 1e-5


def test_distillation_lowers_heldout_kl(tiny_gguf: Path, tmp_path: Path) -> None:
    ckpt = read_checkpoint(tiny_gguf)
    full = load_reference_precision(tiny_gguf, n_ctx=CTX)
    text = corpus_text(200_000)
    calib = windows(full, text[:60_000], CTX, max_windows=24)
    held = windows(full, text[120_000:], CTX, max_windows=6)  # text the training never saw
    cfg = ds.DistillConfig(epochs=6, lr=1e-3, norm_lr=1e-2, top_k=32, init="none")  # training alone
    healed, report = ds.distill(ckpt, [1], calib, tmp_path, threads=1, config=cfg)  # tiny matrices: 1 thread
    assert report.kept and report.kl_after < report.kl_before
    # the neighbors of block 1 (blocks 0 and 2) and the gains from block 0 up; embedding never
    assert "blk.0.ffn_down.weight" in report.trained and "blk.2.attn_q.weight" in report.trained
    assert "token_embd.weight" not in report.trained and "blk.1.attn_q.weight" not in report.trained
    assert set(healed.tensors) == set(ckpt.tensors)  # no new parameters
    changed = {n for n in ckpt.tensors if healed.tensors[n] != ckpt.tensors[n]}
    assert changed == set(report.trained)
    assert all(healed.tensors[n].dtype == DType.F32 and healed.tensors[n].file.parent == tmp_path for n in changed)
    teacher = log_probs(ckpt, None, held)
    before = full_kl(teacher, log_probs(ckpt, [0, 2], held))
    after = full_kl(teacher, log_probs(healed, [0, 2], held))
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize(("quant", "rounding"), [("q8_0", "search"), ("q4_0", "gptq")])
def test_convert_heal_distill_writes_a_plain_llama_that_generates(tiny_gguf: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str], quant: str,
                                                                  rounding: str) -> None:
    """Distilled in float, then quantized as usual; with gptq the tuned float weights are requantized with error
    feedback, calibrated on the pruned and healed model."""
    calib = tmp_path / "calib.txt"
    calib.write_text(corpus_text(12_000))  # ~12 windows of 256 tokens
    out = tmp_path / "distilled.gguf"
    rc = convert_main([str(tiny_gguf), "-o", str(out), "--quant", quant, "--calib", str(calib), "--drop", "1",
                       "--heal", "distill", "--rounding", rounding, "-q"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "healing (distill): from healing (ridge)" in err and "held-out KL to the teacher" in err
    ckpt = read_checkpoint(out)
    assert ckpt.config.n_layers == 2 and ckpt.layer_plan is None
    assert all(t.dtype == DType[quant.upper()] for t in ckpt.tensors.values()
               if len(t.shape) == 2 and t.name != "token_embd.weight")
    assert not list(tmp_path.glob("franken-convert-*"))
    model = franken_rt.load(out, threads=2, n_ctx=CTX)
    text = list(model.generate("The function", max_tokens=8, seed=1, ignore_eos=True))
    assert model.last_stats.generated_tokens == 8 and "".join(text)


def test_missing_torch_is_one_clear_error(tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.delitem(sys.modules, healing.DISTILL_MODULE)
    ckpt = read_checkpoint(tiny_gguf)
    with pytest.raises(FrankenError, match=r"needs torch: pip install 'franken-rt\[heal\]'"):
        healing.heal("distill", ckpt, [1], [[1, 2, 3]] * 2, tmp_path)


def test_bad_options_are_one_line(tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert convert_main([str(tiny_gguf), "-o", str(tmp_path / "x.gguf"), "-q", "--drop", "1",
                         "--heal", "distil"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--heal must be one of" in err and "distill" in err and len(err.splitlines()) == 1
    for bad, msg in ((dict(scope="blocks"), "scope must be one of"), (dict(init="lstsq"), "init must be"),
                     (dict(epochs=0), "epochs >= 1"), (dict(heldout=1.0), "heldout must be")):
        with pytest.raises(FrankenError, match=msg):
            ds.DistillConfig(**bad).check()
    ckpt = read_checkpoint(tiny_gguf)
    with pytest.raises(FrankenError, match="needs removed blocks"):
        ds.distill(ckpt, [], [[1, 2, 3]] * 4, tmp_path)
    with pytest.raises(FrankenError, match="at least 2 calibration windows"):
        ds.distill(ckpt, [1], [[1, 2, 3]], tmp_path)


def test_conversion_without_distill_never_imports_torch(tmp_path: Path) -> None:
    """The converter's modules, healing registry included, load without torch; only distill.py brings it."""
    code = ("import sys\nimport franken_rt.cli.convert, franken_rt.surgery.pipeline, franken_rt.surgery.healing\n"
            "print('torch' in sys.modules)\nimport franken_rt.surgery.distill\nprint('torch' in sys.modules)\n")
    root = Path(franken_rt.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
