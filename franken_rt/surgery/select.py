"""Which N blocks to remove: three measured rankings.

- `bi`: ShortGPT, the N blocks of lowest Block Influence (they may be scattered);
- `angular`: Gromov et al., the contiguous run l .. l+N-1 with the smallest angular distance d(l, l+N);
- `ppl-greedy`: remove the block whose removal raises calibration perplexity least, then repeat. The first step
  measures every block; later steps only the `shortlist` best of the first step, to stay affordable.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from franken_rt.errors import FrankenError
from franken_rt.model import Model
from franken_rt.surgery.analyze import plan_nll, residual_stats

METHODS = ("bi", "angular", "ppl-greedy")


@dataclass
class Selection:
    removed: list[int]          # stored block indices, sorted
    method: str
    reason: str                 # one line: what was measured
    scores: dict[str, float] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # ppl-greedy: the removal order (its prefixes are its answers)

    def plan(self, depth: int) -> list[int]:
        gone = set(self.removed)
        return [b for b in range(depth) if b not in gone]


def check_count(n: int, depth: int) -> None:
    if not 0 <= n < depth:
        raise FrankenError(f"--drop must be between 0 and {depth - 1} (the model has {depth} blocks), got {n}")


def by_bi(bi: Sequence[float], n: int) -> Selection:
    check_count(n, len(bi))
    order = sorted(range(len(bi)), key=lambda b: bi[b])[:n]
    return Selection(sorted(order), "bi", f"the {n} blocks of lowest Block Influence "
                     f"({', '.join(f'{b}: {bi[b]:.3f}' for b in sorted(order))})",
                     {str(b): float(bi[b]) for b in order})


def by_angular(stats, n: int) -> Selection:  # noqa: ANN001 (analyze.BlockStats with max_shift >= n)
    check_count(n, stats.depth)
    if n == 0:
        return Selection([], "angular", "nothing to remove")
    if stats.max_shift < n:
        raise ValueError(f"angular distances were measured up to {stats.max_shift} blocks, not {n}")
    d = {s: stats.angular_at(s, n) for s in range(stats.depth - n + 1)}
    best = min(d, key=d.__getitem__)
    return Selection(list(range(best, best + n)), "angular",
                     f"blocks {best}-{best + n - 1}: smallest angular distance d({best}, {best + n}) = {d[best]:.4f}",
                     {str(s): v for s, v in d.items()})


def by_ppl_greedy(ckpt, windows: list[list[int]], n: int, shortlist: int | None = None,  # noqa: ANN001
                  activations: str = "f32", threads: int | None = None, verbose: bool = False) -> Selection:
    depth = ckpt.config.n_layers
    check_count(n, depth)
    removed: list[int] = []
    first: dict[int, float] = {}
    nll = plan_nll(ckpt, None, windows, activations, threads)
    steps = [f"full {math.exp(nll):.2f}"]
    for step in range(n):
        if step == 0:
            candidates = list(range(depth))
        else:
            keep = shortlist if shortlist is not None else n + 6
            candidates = [b for b in sorted(first, key=first.__getitem__) if b not in removed][:keep]
        trial = {}
        for b in candidates:
            plan = [i for i in range(depth) if i not in removed and i != b]
            trial[b] = plan_nll(ckpt, plan, windows, activations, threads)
            if verbose:
                print(f"\r[ppl-greedy step {step + 1}/{n}: {len(trial)}/{len(candidates)}]", end="",
                      file=sys.stderr, flush=True)
        if step == 0:
            first = trial
        best = min(trial, key=trial.__getitem__)
        removed.append(best)
        nll = trial[best]
        steps.append(f"-{best} {math.exp(nll):.2f}")
    if verbose and n:
        print(file=sys.stderr)
    return Selection(sorted(removed), "ppl-greedy",
                     f"greedy by calibration perplexity ({len(windows)} windows): {', '.join(steps)}",
                     {"ppl": math.exp(nll)}, order=removed)


def select_blocks(ckpt, windows: list[list[int]], n: int, method: str, threads: int | None = None,  # noqa: ANN001
                  verbose: bool = False) -> Selection:
    """Measure on the calibration windows and choose `n` blocks of `ckpt` to remove by `method`."""
    if method not in METHODS:
        raise FrankenError(f"unknown selection method {method!r} (choose from {', '.join(METHODS)})")
    depth = ckpt.config.n_layers
    check_count(n, depth)
    if method == "ppl-greedy":
        return by_ppl_greedy(ckpt, windows, n, threads=threads, verbose=verbose)
    model = Model(ckpt, threads=threads, n_ctx=max(len(w) for w in windows), activations="f32", kv_cache="f32")
    stats = residual_stats(model, windows, max_shift=max(n, 1))
    return by_bi(stats.bi, n) if method == "bi" else by_angular(stats, n)
