"""Prefix reuse: how much of a KV cache holding one token sequence a new sequence can keep."""

from __future__ import annotations

from collections.abc import Sequence


def reusable_prefix(cached: Sequence[int], ids: Sequence[int]) -> int:
    """How many leading tokens of `ids` a cache holding `cached` can keep: their common prefix, but never the last
    token of `ids` (its logits are needed, so it always runs)."""
    n = 0
    for a, b in zip(cached, ids[:-1]):
        if a != b:
            break
        n += 1
    return n
