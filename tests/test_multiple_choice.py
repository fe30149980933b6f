"""franken-eval --mc: log-likelihood scoring with a reused context cache, against brute-force scoring of each
context + ending from scratch; file errors; tools/make_mc.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import franken_rt
from franken_rt.errors import FrankenError
from franken_rt.eval.corpus import pydoc_text
from franken_rt.eval.mc_questions import make_questions, sentences
from franken_rt.eval.multiple_choice import (
    continuation_ids,
    evaluate,
    loglikelihoods,
    read_questions,
)
from franken_rt.eval.tiny_models import load_reference_precision, make_tiny_llama

# `python -c` puts the working directory first on sys.path: run from one without a franken_rt folder, so the
# installed package (with its compiled core) is what runs, as the entry point would.
NEUTRAL = Path(sys.executable).parent


TOOLS = Path(__file__).resolve().parent.parent / "tools"
QUESTIONS = [
    {"ctx": "The statement is executed", "endings": ["once.", "in a loop until the condition is false.", "x", "never"],
     "label": 1},
    {"ctx": "A class definition defines a class object", "endings": ["(see section The standard type hierarchy).",
                                                                     "and it is.", "!", "with a name"], "label": 0},
    {"ctx": "Strings", "endings": [" are immutable sequences of Unicode code points.", "é", "are lists", "ok"],
     "label": 2},
    {"ctx_a": "If the syntax", "ctx_b": "is used, the exception is raised.", "endings": ["Then", "So it goes.",
                                                                                       "The end of it."], "label": "1"},
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from franken_rt.cli.eval import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          cwd=NEUTRAL)


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), spm_model, "gqa_tied", seed=5)


def brute_force(model, q) -> list[float]:  # noqa: ANN001
    """Each ending scored alone: a fresh context holding context + ending, the ending's tokens summed."""
    ctx, conts = continuation_ids(model, q)
    return [-float(model.nll(ctx + c)[len(ctx) - 1:].astype(np.float64).sum()) for c in conts]


def test_cached_scoring_equals_brute_force(tiny: Path, tmp_path: Path) -> None:
    model = load_reference_precision(tiny)
    questions = read_questions(write_jsonl(tmp_path / "q.jsonl", QUESTIONS))
    assert questions[3].context == "If the syntax Is used, the exception is raised." and questions[3].label == 1
    for q in questions:
        got, want = loglikelihoods(model, q), brute_force(model, q)
        assert np.allclose(got, want, rtol=1e-5, atol=1e-4), (got, want)
    # afterwards the model works as before: its prefix cache was not left claiming stale tokens
    prompt = [1, 57, 300, 12, 99]
    assert np.array_equal(model.logits(prompt), load_reference_precision(tiny).logits(prompt))


def test_accuracy_counts_against_brute_force(tiny: Path, tmp_path: Path) -> None:
    """Labels chosen so that the raw and the length-normalized winners are known in advance: the accuracies are
    then fractions computed by hand."""
    model = load_reference_precision(tiny)
    base = read_questions(write_jsonl(tmp_path / "q.jsonl", QUESTIONS))
    rows, want_acc, want_norm = [], [], []
    for k, q in enumerate(base):
        ll = brute_force(model, q)
        norm = [v / len((" " + e).encode()) for v, e in zip(ll, q.endings)]
        label = int(np.argmax(ll)) if k % 2 == 0 else int(np.argmin(ll))
        rows.append({"ctx": q.context, "endings": list(q.endings), "label": label})
        want_acc.append(label == int(np.argmax(ll)))
        want_norm.append(label == int(np.argmax(norm)))
    result = evaluate(model, read_questions(write_jsonl(tmp_path / "l.jsonl", rows)))
    assert result.n == 4
    assert result.acc == pytest.approx(np.mean(want_acc)) and result.acc == 0.5
    assert result.acc_norm == pytest.approx(np.mean(want_norm))
    assert result.acc_stderr == pytest.approx(np.std(want_acc, ddof=1) / math.sqrt(4))
    # --limit and the CLI give the same numbers, in JSON too
    proc = cli(str(tiny), "--mc", str(tmp_path / "l.jsonl"), "--limit", "2", "--activations", "f32", "--kv-cache",
               "f32", "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    got = json.loads((tmp_path / "r.json").read_text())["mc"]
    assert got["n"] == 2 and got["acc"] == pytest.approx(np.mean(want_acc[:2]))
    assert f"acc {got['acc']:.4f}" in proc.stdout


@pytest.mark.parametrize(("row", "fragment"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ({"endings": ["a", "b"], "label": 0}, "'ctx'"),
    ({"ctx": "c", "endings": ["a"], "label": 0}, "at least 2"),
    ({"ctx": "c", "endings": ["a", ""], "label": 0}, "non-empty strings"),
    ({"ctx": "c", "endings": ["a", 3], "label": 0}, "non-empty strings"),
    ({"ctx": "c", "endings": ["a", "b"], "label": 2}, "'label'"),
    ({"ctx": "c", "endings": ["a", "b"], "label": True}, "'label'"),
    ({"ctx": "c", "endings": ["a", "b"]}, "'label'"),
])
def test_bad_lines_name_the_line(tmp_path: Path, row: object, fragment: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [QUESTIONS[0], "", row])
    with pytest.raises(FrankenError, match=rf"bad\.jsonl:3: .*{fragment}"):
        read_questions(path)


def test_file_errors(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(FrankenError, match="no questions"):
        read_questions(write_jsonl(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(FrankenError, match="no such file"):
        read_questions(tmp_path / "missing.jsonl")
    proc = cli(str(tiny), "--mc", str(write_jsonl(tmp_path / "b.jsonl", [QUESTIONS[0], {"ctx": "x"}])))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "b.jsonl:2:" in proc.stderr
    proc = cli(str(tiny), "--mc", str(tmp_path / "b.jsonl"), "--limit", "0")
    assert proc.returncode == 2 and "--limit" in proc.stderr
    long = {"ctx": "word " * 2000, "endings": ["a", "b"], "label": 0}
    model = franken_rt.load(tiny, n_ctx=128)
    with pytest.raises(FrankenError, match=r"long\.jsonl:1: .*do not fit"):
        evaluate(model, read_questions(write_jsonl(tmp_path / "long.jsonl", [long])))


# ---- tools/make_mc.py ----------------------------------------------------------------------------------------------


def test_make_mc(tmp_path: Path) -> None:
    text = pydoc_text()
    qs = make_questions(text, 40, context_sentences=2, seed=1)
    assert len(qs) == 40
    assert make_questions(text, 40, context_sentences=2, seed=1) == qs
    assert make_questions(text, 40, context_sentences=2, seed=2) != qs
    flat = " ".join(text.split())
    where: dict[str, list[int]] = {}
    for i, (_, s) in enumerate(sentences(text)):
        where.setdefault(s, []).append(i)
    for q in qs:
        true = q["endings"][q["label"]]
        assert len(q["endings"]) == 4 and len(set(q["endings"])) == 4
        assert q["ctx"] + " " + true in flat  # the true ending follows its context in the text
        for e in q["endings"]:
            assert 0.5 <= len(e) / len(true) <= 2 or abs(len(e) - len(true)) <= 40
            if e != true:  # distractors come from elsewhere
                assert any(min(abs(p - t) for t in where[true]) > 20 for p in where[e])
    assert len({q["label"] for q in qs}) > 1

    src = tmp_path / "text.txt"
    src.write_text(text[:300000], encoding="utf-8")
    out = tmp_path / "mc.jsonl"
    run = [sys.executable, str(TOOLS / "make_mc.py"), str(src), "-o", str(out), "--n", "25"]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(read_questions(out)) == 25
    proc = subprocess.run(run, capture_output=True, text=True, timeout=120)  # exists: refused without --force
    assert proc.returncode == 2 and "--force" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    src.write_text("Too short. Really.", encoding="utf-8")
    proc = subprocess.run([*run, "--force"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "consecutive prose sentences" in proc.stderr


def test_demo_model_beats_chance_on_made_questions(smollm_gguf: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mc.jsonl", make_questions(pydoc_text(), 8, seed=0))
    result = evaluate(franken_rt.load(smollm_gguf, threads=2), read_questions(path))
    assert result.n == 8
    assert result.acc >= 0.5 and result.acc_norm >= 0.5  # chance is 0.25
