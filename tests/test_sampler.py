"""The core's sampler draws from the distribution its settings define: the softmax at temperature, cut by top-k,
top-p (the smallest best-first prefix reaching the mass) and min-p. Frequencies over many draws against the exact
probabilities computed here, for each way the sampler finds its candidates (top-k sorts the k best; without top-k
it sorts only what can survive top-p and min-p, or nothing at all when neither filters)."""

from __future__ import annotations

import numpy as np
import pytest

from franken_rt import _core

DRAWS = 40_000


def expected(logits: np.ndarray, temperature: float, top_k: int, top_p: float, min_p: float) -> np.ndarray:
    order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))
    if 0 < top_k < len(logits):
        order = order[:top_k]
    w = np.exp((logits[order].astype(np.float64) - logits.max()) / temperature)
    p = w / w.sum()
    keep = len(order)
    if top_p < 1:
        keep = int(np.searchsorted(np.cumsum(p), top_p)) + 1
    if min_p > 0:
        keep = min(keep, int((p >= min_p * p[0]).sum()))
    out = np.zeros(len(logits))
    out[order[:keep]] = p[:keep] / p[:keep].sum()
    return out


@pytest.mark.parametrize(("temperature", "top_k", "top_p", "min_p"), [
    (1.0, 0, 1.0, 0.0),    # no filter: drawn in vocabulary order, nothing sorted
    (0.7, 0, 0.8, 0.0),    # top-p alone: candidates found by a lowered logit threshold
    (1.3, 0, 1.0, 0.05),   # min-p alone
    (1.0, 0, 0.9, 0.02),   # both
    (1.0, 12, 0.95, 0.0),  # top-k: the k best sorted
])
def test_sampler_frequencies_match_the_distribution(temperature: float, top_k: int, top_p: float,
                                                    min_p: float) -> None:
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal(200) * 2.5).astype(np.float32)
    logits[17] = logits[18]  # a tie: broken by token id
    params = _core.SamplerParams()
    params.temperature, params.top_k, params.top_p, params.min_p, params.seed = temperature, top_k, top_p, min_p, 11
    sampler = _core.Sampler(params)
    history = np.zeros(0, dtype=np.int32)
    counts = np.bincount([sampler.sample(logits, history) for _ in range(DRAWS)], minlength=len(logits))
    want = expected(logits, temperature, top_k, top_p, min_p)
    assert np.all(counts[want == 0] == 0)  # nothing outside the filtered set, ever
    assert np.abs(counts / DRAWS - want).max() < 4 * np.sqrt(want.max() / DRAWS) + 1e-3
