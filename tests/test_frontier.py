"""The frontier tool's pieces on a tiny model: the KL scorer, the table writer, the argument errors. llama.cpp's
binaries are not needed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import franken_rt
from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.gguf_writer import write_gguf
from franken_rt.eval.divergence import kl_divergence, log_softmax, reference_logprobs, score
from franken_rt.eval.perplexity import perplexity, token_windows
from franken_rt.eval.tiny_models import corpus_text, make_tiny_llama
from franken_rt.quant.policy import QuantPolicy
from franken_rt.quant.tensors import transcoder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import frontier  # noqa: E402


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> tuple[Path, Path]:
    """A tiny random model as f32 GGUF and its q4_0 copy."""
    folder = tmp_path_factory.mktemp("tiny-frontier")
    hf = make_tiny_llama(folder, spm_model, "gqa_tied")
    f32, q4 = folder / "f32.gguf", folder / "q4_0.gguf"
    write_gguf(read_checkpoint(hf), f32, dtype=QuantPolicy.parse("f32"), tensor_bytes=transcoder())
    write_gguf(read_checkpoint(hf), q4, dtype=QuantPolicy.parse("q4_0"), tensor_bytes=transcoder("rtn"))
    return f32, q4


def load(path: Path) -> franken_rt.Model:
    return franken_rt.load(path, threads=1, n_ctx=64, activations="f32", kv_cache="f32")


def test_log_softmax_normalizes() -> None:
    x = np.array([[0.0, 1.0, 2.0], [1000.0, 1000.0, -1000.0]], dtype=np.float32)
    lp = log_softmax(x)
    assert np.allclose(np.exp(lp).sum(axis=1), 1.0)
    assert np.isclose(lp[1, 0], np.log(0.5))


def test_kl_zero_against_itself_positive_against_quantized(tiny_pair: tuple[Path, Path]) -> None:
    f32, q4 = tiny_pair
    ref = load(f32)
    wins = token_windows(ref, corpus_text(20_000), 64, max_windows=3)
    same = kl_divergence(ref, load(f32), wins)
    assert same.tokens == 3 * 63 and same.windows == 3
    assert abs(same.kl) < 1e-6  # the reference is kept as float32 log-probabilities
    quant = kl_divergence(ref, load(q4), wins)
    assert quant.kl > 1e-4
    assert quant.kl > 3 * quant.stderr


def test_score_perplexity_matches_perplexity(tiny_pair: tuple[Path, Path]) -> None:
    f32, q4 = tiny_pair
    text = corpus_text(20_000)
    ref = load(f32)
    wins = token_windows(ref, text, 64, max_windows=2)
    model = load(q4)
    ppl, _ = score(model, wins, reference_logprobs(ref, wins))
    assert ppl.ppl == pytest.approx(perplexity(model, text, ctx=64, max_windows=2).ppl, rel=1e-4)
    with pytest.raises(ValueError):
        score(model, wins, reference_logprobs(ref, wins[:1]))


def row(label: str, engine: str, nbytes: int, ppl: float, **extra: object) -> dict:
    return {"label": label, "engine": engine, "bytes": nbytes, "ppl": ppl, "ppl_se": 0.1, "kl": 0.05,
            "kl_se": 0.001, "windows": 2, "ctx": 64, "tokens": 126, **extra}


def test_table_and_document() -> None:
    rows = [row("float original (f32)", "float", 540_000_000, 10.0, ppl_q8=10.1),
            row("q4_0 weighted search", "franken-convert", 92_000_000, 11.0, ppl_q8=11.5),
            row("--target-size 60MB", "franken-convert", 59_000_000, 14.0, ppl_q8=15.0,
                chosen="q3_0 + embedding q3_0 with 1 blocks removed ([25])"),
            row("Q4_K_M imatrix", "llama-quantize", 105_000_000, 10.7, notes="fallback to q5_0")]
    lines = frontier.table(rows)
    assert len(lines) == 2 + len(rows)
    assert "+10.0%" in lines[3] and "†" in lines[3] and "11.500" in lines[3]
    assert "→ q3_0 + embedding q3_0 with 1 blocks removed" in lines[4] and "†" not in lines[4]
    assert lines[5].endswith("| — |") and "†" in lines[5]  # llama.cpp's: no default-path figure
    doc = frontier.document(rows, ["q4_0 gptq: not in this build"], "frontier.svg")
    assert "≤ 92 MB (target: at most +4% over float): ours: q4_0 weighted search † (92.0 MB, +10.0%" in doc
    assert "≤ 60 MB (target: at most +30% over float): ours: --target-size 60MB (59.0 MB, +40.0%" in doc
    assert "llama.cpp: no file" in doc
    assert "fallback to q5_0" in doc and "q4_0 gptq: not in this build" in doc and "GPL-3" in doc


def test_outputs_written_atomically(tmp_path: Path) -> None:
    rows = [row("float original (f32)", "float", 540_000_000, 10.0),
            row("Q4_0 imatrix", "llama-quantize", 92_000_000, 11.0)]
    out = tmp_path / "frontier.md"
    frontier.write_outputs(rows, [], out)
    assert out.read_text().startswith("# The compression frontier")
    assert out.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frontier.json", "frontier.md", "frontier.svg"]


def test_target_size_choice_parsed() -> None:
    note = ("target 60.00 MB: q3_0 + embedding q3_0 with 1 blocks removed ([25]) is 59.21 MB and has the least "
            "calibration perplexity 43.38 of 33 candidates that fit")
    assert frontier.chosen(note) == "q3_0 + embedding q3_0 with 1 blocks removed ([25])"
    assert frontier.chosen("made in 3 s") == ""


@pytest.mark.parametrize("argv, message", [
    (["--windows", "0"], "--windows must be at least 1"),
    (["--ctx", "1"], "--ctx must be at least 2"),
    (["--only", "("], "--only: bad regular expression"),
    (["--only", "no such row"], "matches no row"),
    (["--out", "/nonexistent/folder/frontier.md"], "does not exist"),
    (["--windows", "many"], "invalid int value"),
])
def test_argument_errors_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        rc = frontier.main(argv)
    except SystemExit as e:  # argparse's own errors (a non-integer) exit from the parser
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1 and err.startswith("frontier.py: error:")


def test_rows_select_and_skip_unknown_rounding() -> None:
    assert [r.label for r in frontier.select(frontier.ROWS, "^Q4_")] == ["Q4_0 imatrix", "Q4_1 imatrix",
                                                                        "Q4_K_M imatrix"]
    fake = frontier.Row("x", "franken-convert", ("--quant", "q4_0", "--rounding", "no-such-rounding"))
    assert "no-such-rounding" in (frontier.unsupported(fake) or "")
    assert frontier.unsupported(frontier.Row("y", "franken-convert", ("--quant", "q4_0"))) is None
