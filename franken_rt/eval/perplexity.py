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
    wins = token_windows(model, text, ctx, max_windows)
    nll = []
    for w, ids in enumerate(wins):
        nll.append(model.nll(ids))
        if progress:
            progress(w + 1, len(wins))
    return summarize(nll, ctx)


def token_windows(model, text: str, ctx: int, max_windows: int | None = None,  # noqa: ANN001
                  what: str = "the text") -> list[list[int]]:
    """Non-overlapping windows of `ctx` tokens of the text (the tail shorter than a window is dropped)."""
    ids = model.tokenize(text)
    n = len(ids) // ctx
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise FrankenError(f"{what} has {len(ids)} tokens, fewer than one window of {ctx}")
    return [ids[i * ctx:(i + 1) * ctx] for i in range(n)]


def summarize(nll: list[np.ndarray], ctx: int) -> Perplexity:
    """Perplexity and its standard error from the per-token negative log-likelihoods of each window."""
    all_nll = np.concatenate(nll).astype(np.float64)
    mean = float(all_nll.mean())
    se_mean = float(all_nll.std(ddof=1) / math.sqrt(len(all_nll))) if len(all_nll) > 1 else 0.0
    ppl = math.exp(mean)
    return Perplexity(ppl=ppl, stderr=ppl * se_mean, tokens=len(all_nll), windows=len(nll), ctx=ctx)
