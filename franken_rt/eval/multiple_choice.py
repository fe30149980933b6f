"""Multiple-choice accuracy in HellaSwag's jsonl form: each ending scored by its log-likelihood given the context.

A line is `{"ctx": ..., "endings": [...], "label": i}` (or Hugging Face's `ctx_a`/`ctx_b` split of the context).
The continuation of a context is `" " + ending`, tokenized as lm-evaluation-harness does: the context alone, then
context + continuation, the continuation being the tokens after the context's. `acc` picks the ending with the
highest summed log-likelihood; `acc_norm` divides it by the continuation's length in UTF-8 bytes first
(lm-evaluation-harness divides by characters; the two agree on ASCII text). The context runs once per question and
its KV cache is reused for every ending.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from franken_rt.config import _is_int
from franken_rt.errors import FrankenError
from franken_rt.eval.corpus import read_text
from franken_rt.eval.divergence import log_softmax


@dataclass(frozen=True)
class Question:
    context: str
    endings: tuple[str, ...]
    label: int
    where: str  # file:line, for messages

    def continuation(self, i: int) -> str:
        return " " + self.endings[i]


@dataclass(frozen=True)
class MCResult:
    n: int
    acc: float
    acc_stderr: float
    acc_norm: float
    acc_norm_stderr: float

    def __str__(self) -> str:
        return (f"acc {self.acc:.4f} ± {self.acc_stderr:.4f}, acc_norm {self.acc_norm:.4f} ± "
                f"{self.acc_norm_stderr:.4f} over {self.n} questions")


def _question(obj: object, where: str) -> Question:
    if not isinstance(obj, dict):
        raise FrankenError(f"{where}: not a JSON object")
    ctx = obj.get("ctx")
    if ctx is None and isinstance(obj.get("ctx_a"), str) and isinstance(obj.get("ctx_b"), str):
        ctx = (obj["ctx_a"] + " " + obj["ctx_b"].capitalize()).strip()  # as lm-evaluation-harness joins them
    if not isinstance(ctx, str) or not ctx.strip():
        raise FrankenError(f"{where}: needs a non-empty string 'ctx' (or 'ctx_a' and 'ctx_b')")
    endings = obj.get("endings")
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) and e for e in endings):
        raise FrankenError(f"{where}: 'endings' must be a list of at least 2 non-empty strings")
    label = obj.get("label")
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label)  # Hugging Face's copy stores it as a string
    if not _is_int(label) or not 0 <= label < len(endings):
        raise FrankenError(f"{where}: 'label' must be an index into the {len(endings)} endings, got {label!r}")
    return Question(ctx, tuple(endings), label, where)


def read_questions(path: str | Path, limit: int | None = None) -> list[Question]:
    """The questions of a jsonl file (blank lines skipped); a bad line is an error naming it."""
    if limit is not None and limit < 1:
        raise FrankenError(f"--limit must be >= 1, got {limit}")
    lines = read_text(path).splitlines()
    out: list[Question] = []
    for i, text in enumerate(lines, 1):
        if not text.strip():
            continue
        where = f"{path}:{i}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise FrankenError(f"{where}: not valid JSON ({e.msg})") from None
        out.append(_question(obj, where))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise FrankenError(f"{path}: no questions")
    return out


def continuation_ids(model, q: Question) -> tuple[list[int], list[list[int]]]:  # noqa: ANN001
    """The context's token ids and each continuation's (the tokens of context + continuation after the context's)."""
    ctx = model.tokenize(q.context)
    conts = []
    for i in range(len(q.endings)):
        whole = model.tokenize(q.context + q.continuation(i))
        cont = whole[len(ctx):]
        if not cont:
            raise FrankenError(f"{q.where}: ending {i} adds no tokens to the context")
        if len(ctx) + len(cont) > model.n_ctx:
            raise FrankenError(f"{q.where}: context + ending {i} ({len(ctx) + len(cont)} tokens) do not fit "
                               f"the context of {model.n_ctx}")
        conts.append(cont)
    return ctx, conts


def loglikelihoods(model, q: Question) -> list[float]:  # noqa: ANN001
    """Summed log-likelihood (nats) of each continuation given the context; the context runs once."""
    ctx, conts = continuation_ids(model, q)
    core = model._core
    model._cached = []  # the cache is rewritten here; the model's prefix reuse must not trust it
    core.truncate(0)
    first = log_softmax(core.eval(np.asarray(ctx, dtype=np.int32))[0])
    out = []
    for cont in conts:
        core.truncate(len(ctx))
        ll = float(first[cont[0]])
        if len(cont) > 1:
            ll -= float(np.sum(core.score(np.asarray(cont, dtype=np.int32)), dtype=np.float64))
        out.append(ll)
    core.truncate(0)
    return out


def _mean_stderr(x: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(x, dtype=np.float64)
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0
    return float(a.mean()), se


def evaluate(
    model,  # noqa: ANN001 (franken_rt.model.Model)
    questions: Sequence[Question],
    progress: Callable[[int, int], None] | None = None,
) -> MCResult:
    hits, hits_norm = [], []
    for k, q in enumerate(questions):
        ll = loglikelihoods(model, q)
        norm = [v / len(q.continuation(i).encode("utf-8")) for i, v in enumerate(ll)]
        hits.append(float(int(np.argmax(ll)) == q.label))
        hits_norm.append(float(int(np.argmax(norm)) == q.label))
        if progress:
            progress(k + 1, len(questions))
    acc, acc_se = _mean_stderr(hits)
    acc_norm, acc_norm_se = _mean_stderr(hits_norm)
    return MCResult(len(questions), acc, acc_se, acc_norm, acc_norm_se)
