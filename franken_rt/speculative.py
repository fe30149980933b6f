"""Speculative decoding: cheap guesses of the next tokens, checked by the model in one pass, lossless.

A drafter proposes up to k next tokens from the text so far. The decode loop (Model._tokens) runs the last token and
the drafts as one batch through the model (the core's `verify`: the prompt path, one read of the weights for all
rows), keeps the longest prefix the sampler accepts and cuts the cache back past the rest. Every drafter here proposes
single tokens, not distributions, so the check is rejection sampling against a point mass: a draft is kept with the
model's probability for it, else a token is drawn from the rest (Sampler::sample). Output is distributed exactly as
in plain decoding, and greedy output is identical (the kernels give a row the same logits in any batch).

Drafters:
- `lookup`: the tokens that followed the latest earlier occurrence of the text's last few tokens (prompt lookup
  decoding). Free: it pays when the answer copies from the prompt or from itself.
- `self`: the same weights run with a shallower layer plan (the Franken idea turned into speed), on the model's
  second sequence: no weights are loaded twice.
- a path: a smaller model file with the same vocabulary.

How many tokens to draft adapts to the acceptance rate so far (DraftLength), deterministically: the same seed gives
the same tokens. A model drafter costs time, so before it drafts, Model.drafter measures how often its likeliest token
is the model's (`agreement`, on a short text the model samples itself); where that is too rare for any draft length to
pay, it never drafts.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Protocol

from franken_rt import _core
from franken_rt.errors import FrankenError
from franken_rt.prefix import reusable_prefix

# What one more row in a verification batch costs, as a fraction of a one-token decode step (measured with the demo
# model on 2 threads: 1 row 6.6 ms, 4 rows 8.8 ms; plus the sampler's pass over the row's logits).
ROW_COST = 0.12


class Drafter(Protocol):
    name: str
    cost: float  # time to draft one token, as a fraction of a decode step
    agreement: float | None  # measured share of tokens where its guess is the model's likeliest (None: not measured)

    def propose(self, context: array, k: int) -> list[int]:
        """Up to k tokens that may follow `context` (prompt and generated tokens, the last one not yet run)."""
        ...


class LookupDrafter:
    """Prompt lookup: find the latest earlier occurrence of the context's last n tokens (n from `max_ngram` down to
    `min_ngram`) and propose the tokens that followed it."""

    name = "lookup"
    cost = 0.0
    agreement: float | None = None  # free to try: it learns from the text instead

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1) -> None:
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def propose(self, context: array, k: int) -> list[int]:
        data = context.tobytes()  # 4 bytes a token: bytes.rfind does the search in C
        size = context.itemsize
        for n in range(min(self.max_ngram, len(context) - 1), self.min_ngram - 1, -1):
            pattern = context[-n:].tobytes()
            end = len(data) - size  # an occurrence ending before the last token: not the suffix itself
            while (at := data.rfind(pattern, 0, end)) >= 0:
                if at % size == 0:  # a whole-token match
                    start = at // size + n
                    return context[start:start + k].tolist()
                end = at + len(pattern) - 1
        return []


class ModelDrafter:
    """Greedy drafts from a model run on its own sequence of KV cache: `core` with `plan` on sequence `seq`. It keeps
    the tokens its cache holds and runs only what the context adds."""

    def __init__(self, core: _core.Model, seq: int, plan: list[int], cost: float, name: str,
                 owner: object = None) -> None:
        self.core, self.seq, self.plan, self.cost, self.name = core, seq, plan, cost, name
        self.owner = owner  # what keeps `core` alive (a draft model's Python object), if not the caller
        self.cached: list[int] = []
        self.agreement: float | None = None

    def greedy(self, ids: list[int]) -> list[int]:
        """Its likeliest next token after each of `ids` (at most 256), run on its sequence from empty; its cache then
        holds them."""
        self.core.truncate(0, self.seq)
        self.cached = []
        out = self.core.greedy_tokens(array("i", ids), self.seq, self.plan)
        self.cached = list(ids)
        return out

    def propose(self, context: array, k: int) -> list[int]:
        ids = context.tolist()
        keep = reusable_prefix(self.cached, ids)  # the last token always runs: its logits start the draft
        # Room in the draft's cache: the context, then k - 1 drafted tokens run after it.
        k = min(k, self.core.n_ctx - len(ids) + 1)
        if k <= 0:
            return []
        self.core.truncate(keep, self.seq)
        drafts = self.core.draft_greedy(array("i", ids[keep:]), self.seq, self.plan, k)
        self.cached = ids + drafts[:-1]
        return drafts


def self_drafter(core: _core.Model, plan: Sequence[int], depth: int) -> ModelDrafter:
    """The model's own weights with a shallower `plan` of `depth`-block model, on sequence 1."""
    if core.n_seq < 2:
        raise FrankenError("self drafts need a second sequence: build the Model with sequences=2")
    if not 0 < len(plan) < depth:
        raise FrankenError(f"a draft plan runs fewer blocks than the model's {depth}, got {len(plan)}")
    return ModelDrafter(core, 1, list(plan), len(plan) / depth, "self")


def model_drafter(core: _core.Model, cost: float, owner: object) -> ModelDrafter:
    """Another, smaller model (`owner`, whose core is `core`): its full plan on its sequence 0."""
    return ModelDrafter(core, 0, list(core.layer_plan), cost, "model", owner)


class DraftLength:
    """How many tokens to draft next: the k that maximizes the expected tokens per unit of time,
    (1 + a + a^2 + ... + a^k) / (1 + k (ROW_COST + drafter cost)), with a the acceptance rate so far (a moving
    average over checked drafts, starting at the drafter's measured `agreement`, else 1/2). Some k pays only while a
    exceeds the cost of a drafted row. When no k pays, drafting pauses, and after `probe_every` steps one token is
    drafted to see whether the text has changed (a passage to quote begins). A drafter that costs time (a model, which
    must also catch its cache up with the text at each probe: a batch pass over every token since the last) probes
    once; if drafting still does not pay after it, it stays off for the generation. With a measured agreement too low
    to pay it never drafts: the measurement, over more tokens than a probe sees, stands in for the probe. Depends only
    on the tokens, so a seed still gives the same output."""

    def __init__(self, max_k: int, cost: float, probe_every: int = 16, agreement: float | None = None) -> None:
        if max_k < 1:
            raise FrankenError(f"the draft length must be >= 1, got {max_k}")
        self.max_k, self.step_cost = max_k, ROW_COST + cost
        self.probe_every, self.interval, self.backoff = probe_every, probe_every, cost > 0
        self.rate = 0.5 if agreement is None else agreement
        self.idle = 0
        self.off = cost > 0 and agreement is not None and self._best() == 0

    def _best(self) -> int:
        """The k that pays most at the current rate, 0 if none does."""
        best, best_gain, expected, term = 0, 1.0, 1.0, 1.0
        for k in range(1, self.max_k + 1):
            term *= self.rate
            expected += term
            gain = expected / (1 + k * self.step_cost)
            if gain > best_gain:
                best, best_gain = k, gain
        return best

    def next(self) -> int:
        if self.off:
            return 0
        best = self._best()
        if best:
            self.idle, self.interval = 0, self.probe_every
            return best
        self.idle += 1
        if self.idle >= self.interval:
            self.idle = 0
            if self.backoff:
                self.interval = 1 << 62  # one probe: see the docstring
            return 1
        return 0

    def update(self, drafted: int, accepted: int) -> None:
        """After a check: the first `accepted` drafts kept, the next (if any) refused, later ones unseen."""
        for kept in [True] * accepted + ([False] if accepted < drafted else []):
            self.rate += 0.15 * (float(kept) - self.rate)
