"""Training-free healing of removed blocks, and franken-convert's surgery options, on tiny random models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from franken_rt.checkpoint import DType, read_checkpoint
from franken_rt.checkpoint.gguf_writer import write_gguf
from franken_rt.cli.convert import main as convert_main
from franken_rt.errors import FrankenError
from franken_rt.eval.tiny_models import corpus_text, load_reference_precision, make_tiny_llama
from franken_rt.model import Model
from franken_rt.surgery import heal as hl
from franken_rt.surgery.calib import windows


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    folder = make_tiny_llama(tmp_path_factory.mktemp("tiny"), spm_model, "mha_untied", seed=5)
    out = folder / "tiny.gguf"
    write_gguf(read_checkpoint(folder), out)
    return out


def heldout_error(ckpt, full, removed: list[int], wins: list[list[int]]) -> float:  # noqa: ANN001
    """sum |x - x_full|^2 / sum |x_full|^2 where x is the residual entering the first block after the removed run,
    positions 1.. (the window starts are not fitted)."""
    keep = [b for b in range(ckpt.config.n_layers) if b not in removed]
    pruned = Model(ckpt, layer_plan=keep, n_ctx=64, activations="f32", kv_cache="f32")
    after = max(removed) + 1
    num = den = 0.0
    for w in wins:
        want = full.residuals(w)[2 * after, 1:].astype(np.float64)
        got = pruned.residuals(w)[2 * keep.index(after), 1:].astype(np.float64)
        num += float(np.sum((got - want) ** 2))
        den += float(np.sum(want ** 2))
    return num / den


@pytest.mark.parametrize("method", hl.METHODS)
def test_healing_reduces_heldout_hidden_state_error(tiny_gguf: Path, method: str, tmp_path: Path) -> None:
    ckpt = read_checkpoint(tiny_gguf)
    full = load_reference_precision(tiny_gguf, n_ctx=64)
    text = corpus_text(200_000)
    calib = windows(full, text[:60_000], 64, max_windows=16)
    held = windows(full, text[120_000:], 64, max_windows=6)  # text the fit never saw
    healed, fits = hl.heal(ckpt, [1], calib, method, folder=tmp_path, guard=False)
    assert [(f.start, f.length, f.block) for f in fits] == [(1, 1, 0)]
    if fits[0].alpha == math.inf:
        pytest.fail(f"{method}: no healing was applied")
    t = healed.tensors["blk.0.ffn_down.weight"]
    assert t.dtype == DType.F32 and t.file.parent == tmp_path and t.shape == ckpt.tensors[t.name].shape
    assert set(healed.tensors) == set(ckpt.tensors)  # no new parameters
    changed = [n for n in ckpt.tensors if healed.tensors[n] != ckpt.tensors[n]]
    assert changed == ["blk.0.ffn_down.weight"]
    before = heldout_error(ckpt, full, [1], held)
    after = heldout_error(healed, full, [1], held)
    assert after < (0.9 if method in ("ridge", "lstsq") else 0.999) * before, (method, before, after)


def test_heal_moments_and_fit_algebra() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(500, 8))
    m_true = np.eye(8) + 0.3 * rng.normal(size=(8, 8))
    z = y @ m_true.T + 0.01 * rng.normal(size=(500, 8))
    mo = hl.Moments.zeros(8)
    mo.add(y[:250], z[:250])
    mo.add(y[250:], z[250:])
    assert mo.n == 500
    m = hl.fit(mo, "lstsq", 0.0)
    np.testing.assert_allclose(m, m_true, atol=0.01)
    assert mo.error(m) == pytest.approx(float(np.sum((z - y @ m.T) ** 2)), rel=1e-9)
    shrunk = hl.fit(mo, "ridge", 1e6)
    np.testing.assert_allclose(shrunk, np.eye(8), atol=1e-3)  # strong shrinkage: the identity
    assert np.count_nonzero(hl.fit(mo, "diag", 0.0) - np.diag(np.diag(hl.fit(mo, "diag", 0.0)))) == 0
    np.testing.assert_array_equal(hl.fit(mo, "ridge", math.inf), np.eye(8))
    assert hl.runs_of([5, 2, 3, 9, 4]) == [(2, 4), (9, 1)]


def test_heal_refuses_what_it_cannot_do(tiny_gguf: Path) -> None:
    ckpt = read_checkpoint(tiny_gguf)
    wins = [[1, 5, 6, 7]] * 2
    with pytest.raises(FrankenError, match="starts at block 0"):
        hl.heal(ckpt, [0, 1], wins)
    with pytest.raises(FrankenError, match="unknown healing method"):
        hl.heal(ckpt, [1], wins, "magic")


def test_convert_drop_heal_writes_a_plain_smaller_llama(tiny_gguf: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    calib = tmp_path / "calib.txt"
    calib.write_text(corpus_text(60_000))
    out = tmp_path / "healed.gguf"
    rc = convert_main([str(tiny_gguf), "-o", str(out), "--quant", "q8_0", "--calib", str(calib), "--drop", "1",
                       "--method", "bi", "--heal", "-q"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "--drop 1 --method bi: removing" in err and f"healing ({hl.DEFAULT_METHOD})" in err
    assert "held-out perplexity" in err  # the guard measured the map
    ckpt = read_checkpoint(out)
    assert ckpt.config.n_layers == 2 and ckpt.layer_plan is None
    assert sorted({n.split(".")[1] for n in ckpt.tensors if n.startswith("blk.")}) == ["0", "1"]
    assert all(t.dtype == DType.Q8_0 for n, t in ckpt.tensors.items() if len(t.shape) == 2)
    assert not list(tmp_path.glob("franken-convert-*"))  # nothing left behind
    model = load_reference_precision(out, n_ctx=64)
    assert np.isfinite(model.logits(model.tokenize("Hello there"))).all()


def test_convert_surgery_option_errors_are_one_line(tiny_gguf: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "o.gguf")
    cases = [
        (["--heal"], "--heal needs removed blocks"),
        (["--drop", "1", "--target-size", "1MB"], "do not give --drop with it"),
        (["--plan", "0,2", "--drop", "1"], "--plan cannot be combined"),
        (["--drop", "1", "--heal", "magic"], "--heal must be one of"),
        (["--target-size", "lots"], "cannot read 'lots'"),
        (["--drop", "3", "--calib", str(tmp_path / "none.txt")], "no such file"),
    ]
    for extra, msg in cases:
        assert convert_main([str(tiny_gguf), "-o", out, "-q", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    calib = tmp_path / "calib.txt"
    calib.write_text(corpus_text(20_000))
    assert convert_main([str(tiny_gguf), "-o", out, "-q", "--drop", "3", "--calib", str(calib)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--drop must be between 0 and 2" in err.splitlines()[-1]


def test_convert_greedy_drop_and_healed_plan(tiny_gguf: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    calib = tmp_path / "calib.txt"
    calib.write_text(corpus_text(60_000))
    out = tmp_path / "greedy.gguf"
    assert convert_main([str(tiny_gguf), "-o", str(out), "--quant", "f32", "--calib", str(calib), "--drop", "1",
                         "--method", "ppl-greedy", "-q"]) == 0
    err = capsys.readouterr().err
    assert "greedy by calibration perplexity" in err
    assert read_checkpoint(out).config.n_layers == 2
    healed = tmp_path / "plan-healed.gguf"
    assert convert_main([str(tiny_gguf), "-o", str(healed), "--quant", "f32", "--calib", str(calib),
                         "--plan", "0,2", "--heal", "ridge", "-q"]) == 0
    err = capsys.readouterr().err
    assert "healing (ridge): blocks 1-1" in err
    a, b = read_checkpoint(out), read_checkpoint(healed)
    assert b.config.n_layers == 2
    from franken_rt.quant.tensors import float_array

    src = read_checkpoint(tiny_gguf)
    # the healed file's first block has a new down projection unless the guard found it raises the held-out
    # perplexity; its second block is the source's block 2, untouched
    folded = "folded into blk.0.ffn_down" in err
    assert folded or "left as is" in err
    assert folded != np.array_equal(float_array(b.tensors["blk.0.ffn_down.weight"]),
                                    float_array(src.tensors["blk.0.ffn_down.weight"]))
    np.testing.assert_array_equal(float_array(b.tensors["blk.1.ffn_down.weight"]),
                                  float_array(src.tensors["blk.2.ffn_down.weight"]))
    assert a.tensors.keys() == b.tensors.keys()


def test_two_runs_are_healed_in_sequence(tiny_gguf: Path, tmp_path: Path) -> None:
    from franken_rt.surgery.plan import apply_plan

    five = tmp_path / "five.gguf"  # five stored blocks (copies of 0, 1, 2, 1, 2): room for two removed runs
    write_gguf(apply_plan(read_checkpoint(tiny_gguf), [0, 1, 2, 1, 2], materialize_repeats=True), five)
    ckpt = read_checkpoint(five)
    full = load_reference_precision(five, n_ctx=64)
    text = corpus_text(200_000)
    calib = windows(full, text[:60_000], 64, max_windows=16)
    held = windows(full, text[120_000:], 64, max_windows=6)
    healed, fits = hl.heal(ckpt, [1, 3], calib, "ridge", folder=tmp_path, guard=False)
    assert [(f.start, f.block) for f in fits] == [(1, 0), (3, 2)]
    assert all(f.alpha != math.inf and f.error_after < f.error_before for f in fits)
    before = heldout_error(ckpt, full, [1, 3], held)  # at the input of the block after the second run
    after = heldout_error(healed, full, [1, 3], held)
    assert after < 0.9 * before, (before, after)
