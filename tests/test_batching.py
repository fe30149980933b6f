"""Several sequences in one pass (Model.forward_rows, the server's continuous batching): a row's logits are the same
bits whatever else shares its batch, for every format and every kernel table this CPU runs."""

from __future__ import annotations

import random
from array import array
from pathlib import Path

import numpy as np
import pytest

import franken_rt
from franken_rt import _core
from franken_rt.checkpoint import read_checkpoint
from franken_rt.cli import convert
from franken_rt.errors import FrankenError
from franken_rt.eval.tiny_models import make_tiny_llama
from franken_rt.formats import FORMATS
from franken_rt.model import Model

TABLES = _core.available_kernels()
QUANT = [f.name.lower() for f in FORMATS if f.quantized and f.writable] + ["f16"]  # the types franken-convert writes
STEPS = 6


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("batching")
    hf = make_tiny_llama(folder / "hf", spm_model, "gqa_tied", seed=5)
    out = {}
    for name in QUANT:
        out[name] = folder / f"{name}.gguf"
        assert convert.main([str(hf), "-o", str(out[name]), "--quant", name, "-q"]) == 0
    return out


def rows(*parts: list[int]) -> array:
    return array("i", [x for p in parts for x in p])


def alone(core, prompt: list[int], steps: int) -> tuple[list[int], np.ndarray]:  # noqa: ANN001
    """Greedy tokens and their logits, the prompt and then one token per pass, in sequence 0 alone."""
    core.truncate(0, 0)
    lg = core.eval_rows(rows(prompt), rows([0] * len(prompt)), rows([0] * (len(prompt) - 1), [1]))
    out, tokens = [lg[0]], [int(lg[0].argmax())]
    for _ in range(steps):
        lg = core.eval_rows(rows([tokens[-1]]), rows([0]), rows([1]))
        out.append(lg[0])
        tokens.append(int(lg[0].argmax()))
    return tokens, np.stack(out)


def together(core, prompts: list[list[int]], steps: int, chunk: int) -> list[tuple[list[int], np.ndarray]]:  # noqa: ANN001
    """The same, every prompt in its own sequence: prompts fed in chunks of `chunk` rows beside the sequences
    already decoding, as the server's engine does (so a row shares its pass with other sequences' prompt rows and
    decode rows, in batches of changing size)."""
    n = len(prompts)
    for s in range(n):
        core.truncate(0, s)
    todo = [list(p) for p in prompts]
    tokens: list[list[int]] = [[] for _ in range(n)]
    logits: list[list[np.ndarray]] = [[] for _ in range(n)]
    while any(len(t) <= steps for t in tokens):
        toks, seqs, want, who = [], [], [], []
        for s in range(n):
            if len(tokens[s]) > steps:
                continue
            take = todo[s][:chunk] if todo[s] else [tokens[s][-1]]
            todo[s] = todo[s][len(take):] if todo[s] else []
            toks += take
            seqs += [s] * len(take)
            last = not todo[s]
            want += [0] * (len(take) - 1) + [int(last)]
            if last:
                who.append(s)
        lg = core.eval_rows(array("i", toks), array("i", seqs), array("i", want))
        for i, s in enumerate(who):
            logits[s].append(lg[i])
            tokens[s].append(int(lg[i].argmax()))
    return [(tokens[s], np.stack(logits[s])) for s in range(n)]


def prompts_for(vocab: int, n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randrange(1, 40))] for _ in range(n)]


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("fmt", QUANT)
def test_rows_do_not_depend_on_their_batch(tiny_files: dict[str, Path], fmt: str, table: str) -> None:
    model = Model(read_checkpoint(tiny_files[fmt]), threads=2, n_ctx=128, kernels=table, sequences=4)
    prompts = prompts_for(model.config.vocab_size, 8, seed=len(fmt))
    solo = [alone(model._core, p, STEPS) for p in prompts]
    for chunk, first in ((64, 0), (5, 4)):  # whole prompts in one pass; prompts in chunks of 5 beside decode rows
        got = together(model._core, prompts[first:first + 4], STEPS, chunk)
        for (want_tokens, want_logits), (got_tokens, got_logits) in zip(solo[first:first + 4], got):
            assert got_tokens == want_tokens
            assert np.array_equal(got_logits, want_logits)  # the same bits, not merely close


def test_float_activations_rows_do_not_depend_on_their_batch(tiny_files: dict[str, Path]) -> None:
    model = Model(read_checkpoint(tiny_files["q4_0"]), threads=2, n_ctx=128, activations="f32", sequences=3)
    prompts = prompts_for(model.config.vocab_size, 3, seed=1)
    for (wt, wl), (gt, gl) in zip([alone(model._core, p, STEPS) for p in prompts],
                                  together(model._core, prompts, STEPS, 7)):
        assert gt == wt and np.array_equal(gl, wl)


@pytest.mark.parametrize("table", [pytest.param(t, marks=pytest.mark.slow) if t == "scalar" else t for t in TABLES])
def test_demo_model_greedy_tokens_alone_and_batched(smollm_gguf: Path, table: str) -> None:
    model = franken_rt.load(smollm_gguf, threads=2, n_ctx=256, kernels=table, sequences=4)
    prompts = [model.tokenize(t) for t in ("The capital of France is", "def fib(n):", "Once upon a time, in a",
                                           "1, 2, 3, 4,", "The quick brown fox", "import numpy as",
                                           "Dear Sir or Madam,", "In 1492, Columbus")]
    for group in (prompts[:4], prompts[4:]):
        solo = [alone(model._core, p, 10) for p in group]
        for (wt, wl), (gt, gl) in zip(solo, together(model._core, group, 10, 6)):
            assert gt == wt and np.array_equal(gl, wl)


def test_sequences_are_checked(tiny_files: dict[str, Path]) -> None:
    model = Model(read_checkpoint(tiny_files["q8_0"]), threads=1, n_ctx=16, sequences=2)
    core = model._core
    with pytest.raises(_core.CoreError, match="sequence id 2"):
        core.eval_rows(rows([5]), rows([2]), rows([1]))
    with pytest.raises(_core.CoreError, match="one length"):
        core.eval_rows(rows([5, 6]), rows([0]), rows([1, 1]))
    core.eval_rows(rows([5] * 16), rows([1] * 16), rows([0] * 15, [1]))  # sequence 1 full, sequence 0 empty
    with pytest.raises(_core.CoreError, match="context is full: sequence 1"):
        core.eval_rows(rows([5, 5]), rows([0, 1]), rows([1, 1]))
    assert core.n_past_of(0) == 0 and core.n_past_of(1) == 16  # a refused batch runs nothing
    with pytest.raises(FrankenError, match="sequences"):
        Model(read_checkpoint(tiny_files["q8_0"]), sequences=0)
