"""KL divergence of a model's next-token distribution to a reference model's (the float original) on the same token
windows, with the perplexity from the same logits.

Perplexity only looks at the probability of the token that came next; errors that move probability between other
tokens, or that raise the true token here and lower it there, partly cancel in it. KL(p_ref || p_model), averaged
over positions, counts every change of the distribution, so it separates formats of equal perplexity and is zero
only for a model that predicts exactly as the reference does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from franken_rt.eval.perplexity import Perplexity, summarize


@dataclass(frozen=True)
class Divergence:
    kl: float      # mean over scored positions of KL(p_ref || p_model), in nats
    stderr: float  # standard error of that mean (positions treated as independent, as for perplexity)
    tokens: int    # positions scored
    windows: int
    ctx: int

    def __str__(self) -> str:
        return (f"KL divergence {self.kl:.5f} ± {self.stderr:.5f} nats over {self.tokens} positions "
                f"({self.windows} windows of {self.ctx})")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities, in float64 (differences of nearly equal log-probabilities are what KL sums)."""
    x = np.asarray(logits, dtype=np.float64)
    mx = x.max(axis=-1, keepdims=True)
    return x - (mx + np.log(np.exp(x - mx).sum(axis=-1, keepdims=True)))


def reference_logprobs(
    model,  # noqa: ANN001 (franken_rt.model.Model)
    windows: Sequence[Sequence[int]],
) -> list[np.ndarray]:
    """The reference's log-probabilities for each window's positions 0..len-2 (those that predict a token of the
    window), as float32 arrays (len - 1, vocab): ~100 MB per 512-token window of a 49k vocabulary."""
    return [log_softmax(model.logits(ids)[:-1]).astype(np.float32) for ids in windows]


def score(
    model,  # noqa: ANN001 (franken_rt.model.Model)
    windows: Sequence[Sequence[int]],
    reference: Sequence[np.ndarray],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Perplexity, Divergence]:
    """Perplexity of `model` on the windows and its KL divergence to the reference log-probabilities (from
    `reference_logprobs` on the same windows), both from one pass of the model's logits."""
    if len(reference) != len(windows):
        raise ValueError(f"{len(reference)} reference windows for {len(windows)} windows")
    nll, kl = [], []
    for w, (ids, ref) in enumerate(zip(windows, reference)):
        logq = log_softmax(model.logits(ids)[:-1])
        if ref.shape != logq.shape:
            raise ValueError(f"window {w}: reference log-probabilities {ref.shape}, model {logq.shape}")
        nll.append(-logq[np.arange(len(ids) - 1), np.asarray(ids[1:])])
        logp = ref.astype(np.float64)
        kl.append((np.exp(logp) * (logp - logq)).sum(axis=1))
        if progress:
            progress(w + 1, len(windows))
    ctx = max(len(ids) for ids in windows)
    return summarize(nll, ctx), summarize_kl(kl, ctx)


def summarize_kl(per_window: list[np.ndarray], ctx: int) -> Divergence:
    """Mean KL over every scored position and its standard error."""
    values = np.concatenate(per_window).astype(np.float64)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return Divergence(kl=float(values.mean()), stderr=se, tokens=len(values), windows=len(per_window), ctx=ctx)


def kl_divergence(
    reference,  # noqa: ANN001 (franken_rt.model.Model)
    model,  # noqa: ANN001 (franken_rt.model.Model)
    windows: Sequence[Sequence[int]],
) -> Divergence:
    """KL(p_reference || p_model), averaged over every position of the windows that predicts a token."""
    return score(model, windows, reference_logprobs(reference, windows))[1]
