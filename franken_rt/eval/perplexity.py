"""Perplexity over non-overlapping windows: each window starts a fresh context and every token after its first is
predicted from the tokens before it in the window."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from franken_rt.errors import FrankenError


@dataclass(frozen=True)
class Perplexity:
    ppl: float
    stderr: float  # of the perplexity, by the delta method from the standard error of the mean NLL
    tokens: int    # tokens scored
    windows: int
    ctx: int

    def __str__(self) -> str:
        return (f"perplexity {self.ppl:.4f} ± {self.stderr:.4f} over {self.tokens} tokens "
                f"({self.windows} windows of {self.ctx})")


def perplexity(
    model,  # noqa: ANN001 (franken_rt.model.Model)
    text: str,
    ctx: int = 512,
    max_windows: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Perplexity:
    if ctx < 2:
        raise FrankenError(f"--ctx must be at least 2, got {ctx}")
    if ctx > model.n_ctx:
        raise FrankenError(f"--ctx {ctx} exceeds the model's context of {model.n_ctx}")
    ids = model.tokenize(text)
    n_windows = len(ids) // ctx
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows == 0:
        raise FrankenError(f"the text has {len(ids)} tokens, fewer than one window of {ctx}")
    nll = []
    for w in range(n_windows):
        nll.append(model.nll(ids[w * ctx:(w + 1) * ctx]))
        if progress:
            progress(w + 1, n_windows)
    return summarize(nll, ctx)


def summarize(nll: list[np.ndarray], ctx: int) -> Perplexity:
    """Perplexity and its standard error from the per-token negative log-likelihoods of each window."""
    all_nll = np.concatenate(nll).astype(np.float64)
    mean = float(all_nll.mean())
    se_mean = float(all_nll.std(ddof=1) / math.sqrt(len(all_nll))) if len(all_nll) > 1 else 0.0
    ppl = math.exp(mean)
    return Perplexity(ppl=ppl, stderr=ppl * se_mean, tokens=len(all_nll), windows=len(nll), ctx=ctx)
