"""--target-size by measured sensitivity (franken_rt.surgery.allocate): the knapsack, exact sizes, a deliberately
sensitive matrix getting more bits, --portable, and impossible budgets."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.gguf_writer import write_gguf
from franken_rt.checkpoint.layer_plan import drop
from franken_rt.cli.convert import main as convert_main
from franken_rt.errors import FrankenError
from franken_rt.eval.tiny_models import corpus_text, make_tiny_llama
from franken_rt.formats import DType, format_of
from franken_rt.model import Model
from franken_rt.quant.tensors import transcoder
from franken_rt.surgery import allocate as al
from franken_rt.surgery import sensitivity as sn
from franken_rt.surgery import size as sz
from franken_rt.surgery.importance import input_moments
from franken_rt.surgery.plan import apply_plan

SENSITIVE = "blk.1.ffn_down.weight"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    """A tiny tied-embedding model as an F32 GGUF."""
    folder = tmp_path_factory.mktemp("alloc")
    hf = make_tiny_llama(folder / "hf", spm_model, "gqa_tied", seed=11)
    f32 = folder / "f32.gguf"
    assert convert_main([str(hf), "-o", str(f32), "-q", "--quant", "f32"]) == 0
    return f32


@pytest.fixture(scope="module")
def tiny(plain: Path) -> Path:
    """The same function with one matrix made sensitive to rounding: in block 1, one input column per 32-column
    block of ffn_down is scaled up 8x and the ffn_up row that makes its input down 8x (the FFN is linear in up).
    The outlier columns set their blocks' scales, so the other weights there round coarsely at 3-4 bits."""
    out = plain.with_name("sensitive.gguf")
    shutil.copy(plain, out)
    ckpt = read_checkpoint(out)
    down, up = ckpt.tensors[SENSITIVE], ckpt.tensors[SENSITIVE.replace("down", "up")]
    w_down = np.memmap(down.file, dtype="<f4", mode="r+", offset=down.offset, shape=down.shape)
    w_up = np.memmap(up.file, dtype="<f4", mode="r+", offset=up.offset, shape=up.shape)
    cols = np.arange(0, down.shape[1], 32) + 5
    w_down[:, cols] *= 8
    w_up[cols, :] /= 8
    w_down.flush()
    w_up.flush()
    return out


def _calib(model_file: Path) -> tuple[list[list[int]], dict]:
    ckpt = read_checkpoint(model_file)
    model = Model(ckpt, n_ctx=128, activations="f32", kv_cache="f32")
    ids = model.tokenize(corpus_text(40_000))
    wins = [ids[i * 128:(i + 1) * 128] for i in range(6)]
    return wins, input_moments(ckpt, wins)


@pytest.fixture(scope="module")
def calib(tiny: Path) -> tuple[list[list[int]], dict]:
    return _calib(tiny)


def _choose(tiny: Path, calib: tuple, folder: Path, budget: int, portable: bool = False) -> al.Allocation:
    wins, moments = calib
    return al.choose(read_checkpoint(tiny), budget, wins[:4], lambda n: list(range(1, n + 1)), moments, folder,
                     portable=portable)


def _allocated(choice: al.Allocation) -> al.Candidate:
    return next(c for c in choice.candidates if c.label.startswith("per-tensor"))


def _uniform_budget(tiny: Path) -> int:
    """Between q4_0 everywhere (embedding too) and q4_1 everywhere: the uniform mixes must trade somewhere."""
    ckpt = read_checkpoint(tiny)
    q4_0 = sz.file_size(ckpt, sz.policy_of("q4_0", "q4_0"))
    q4_1 = sz.file_size(ckpt, sz.policy_of("q4_1", "q4_1"))
    return (q4_0 + q4_1) // 2


def test_hull_and_knapsack() -> None:
    q = (DType.Q3_0, DType.Q4_0, DType.Q8_0, DType.F16)
    # b: its q4_0 lies above the chord from q3_0 to q8_0, so the hull skips it
    opts = {"a": [(10, 9.0, q[0]), (14, 3.0, q[1]), (20, 1.0, q[2]), (40, 0.0, q[3])],
            "b": [(10, 5.0, q[0]), (14, 4.9, q[1]), (20, 1.0, q[2]), (40, 0.5, q[3])]}
    assert [p[2] for p in al.hull(opts["b"])] == [q[0], q[2], q[3]]
    assert al.knapsack(opts, 19) is None
    assert al.knapsack(opts, 20) == {"a": q[0], "b": q[0]}
    assert al.knapsack(opts, 24) == {"a": q[1], "b": q[0]}  # 6 per 4 bytes beats 4 per 10
    assert al.knapsack(opts, 34) == {"a": q[1], "b": q[2]}
    # b's hull step (10 bytes) does not fit in 27: its q4_0, off the hull, fills the room
    assert al.knapsack(opts, 28) == {"a": q[1], "b": q[1]}


def test_allocation_fits_exactly_and_favours_the_sensitive_matrix(plain: Path, tiny: Path, calib: tuple,
                                                                  tmp_path: Path) -> None:
    budget = _uniform_budget(tiny)
    choice = _choose(tiny, calib, tmp_path, budget)
    ckpt = read_checkpoint(tiny)
    out = tmp_path / "a.gguf"
    written = apply_plan(ckpt, drop(ckpt.config.n_layers, choice.removed)) if choice.removed else ckpt
    write_gguf(written, out, dtype=choice.policy, tensor_bytes=transcoder("search", calib[1]))
    assert os.path.getsize(out) == choice.size <= budget
    alloc = [c for c in choice.candidates if c.label.startswith("per-tensor")]
    uniform = [c for c in choice.candidates if not c.label.startswith("per-tensor")]
    assert alloc and uniform
    # measured: at least as close to the float model as the best uniform mix of the same budget
    assert alloc[0].measured.kl <= uniform[0].measured.kl
    # the same budget on the model before its outliers were made: that matrix gets fewer bits there
    (tmp_path / "plain").mkdir()
    before = _allocated(_choose(plain, _calib(plain), tmp_path / "plain", budget))
    bits = format_of(alloc[0].policy(ckpt.tensors[SENSITIVE])).bits
    assert bits > format_of(before.policy(ckpt.tensors[SENSITIVE])).bits
    assert "types: " in choice.why and "ffn_down" in choice.why


def test_portable_never_picks_our_types(tiny: Path, calib: tuple, tmp_path: Path) -> None:
    assert all(format_of(d).portable for d in sn.storage_types(portable=True))
    assert DType.Q3_0 in sn.storage_types(portable=False)
    ckpt = read_checkpoint(tiny)
    budget = sz.file_size(ckpt, sz.policy_of("q4_0", "q4_0")) + 64  # at Q4_0's size, q3_0 would be a cheap upgrade
    choice = _choose(tiny, calib, tmp_path, budget, portable=True)
    for c in choice.candidates:
        assert all(format_of(c.policy(t)).id < 1000 for t in sn.matrices(ckpt))
    assert "llama.cpp cannot read" not in choice.why


def test_impossible_budget_is_one_clear_message(tiny: Path, calib: tuple, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FrankenError, match="no model fits 1,000 bytes: the smallest is"):
        _choose(tiny, calib, tmp_path, 1000)
    text = tmp_path / "calib.txt"
    text.write_text(corpus_text(40_000))
    rc = convert_main([str(tiny), "-o", str(tmp_path / "none.gguf"), "-q", "--calib", str(text),
                       "--target-size", "1000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "no model fits" in err[-1] and not (tmp_path / "none.gguf").exists()
    rc = convert_main([str(tiny), "-o", str(tmp_path / "p.gguf"), "-q", "--portable"])
    assert rc == 2 and "--portable applies to --target-size" in capsys.readouterr().err


def test_cli_target_size_writes_the_predicted_bytes(tiny: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "calib.txt"
    text.write_text(corpus_text(40_000))
    budget = _uniform_budget(tiny)
    out = tmp_path / "t.gguf"
    rc = convert_main([str(tiny), "-o", str(out), "-q", "--calib", str(text), "--target-size", str(budget)])
    err = capsys.readouterr().err
    assert rc == 0, err
    predicted = int(re.search(r"is ([\d,]+) bytes \(predicted exactly\)", err).group(1).replace(",", ""))
    assert os.path.getsize(out) == predicted <= budget
