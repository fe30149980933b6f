"""Layer plans applied to checkpoints: a checkpoint and a plan (franken_rt.checkpoint.layer_plan) become a new
checkpoint ready for writing:

- a removal-only plan (strictly increasing) keeps the blocks it names, renumbered 0..k-1: an ordinary llama file;
- a plan with repeats stores each block it uses once and records the execution order, in the new numbering, in the
  GGUF metadata key `franken.layer_plan` (which franken-rt follows); `materialize_repeats=True` stores a copy of
  each repeat instead, so the file is an ordinary llama file that any llama runtime runs as planned.

A plan given for a source that already carries one indexes the source's *executed* depth (its blocks in the order
it runs them), not its stored blocks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from franken_rt.checkpoint.layer_plan import PLAN_KEY, compose, executed, format_plan, is_removal_only, parse_plan
from franken_rt.checkpoint.types import Checkpoint
from franken_rt.errors import FrankenError

_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def apply_plan(ckpt: Checkpoint, plan: Sequence[int] | None = None, materialize_repeats: bool = False) -> Checkpoint:
    """A new checkpoint that runs `plan` (indices into `ckpt`'s executed depth; None: as `ckpt` runs now).

    The tensors keep their files and offsets; only names, the block count and the stored plan change."""
    stored = compose(ckpt, plan) if plan is not None else executed(ckpt)
    if not stored:
        raise FrankenError("empty layer plan")
    if materialize_repeats or is_removal_only(stored):
        copies = stored  # new block i is a copy of stored[i]
        new_plan = None
    else:
        copies = list(dict.fromkeys(stored))  # each used block once, in order of first use
        renumber = {b: i for i, b in enumerate(copies)}
        new_plan = [renumber[b] for b in stored]
    by_block: dict[int, list] = {}
    others = {}
    for name, t in ckpt.tensors.items():
        m = _BLOCK.match(name)
        if m:
            by_block.setdefault(int(m.group(1)), []).append((m.group(2), t))
        else:
            others[name] = t
    tensors = dict(others)
    for new, old in enumerate(copies):
        if old not in by_block:
            raise FrankenError(f"{ckpt.source}: no tensors for block {old}")
        for suffix, t in by_block[old]:
            name = f"blk.{new}.{suffix}"
            tensors[name] = replace(t, name=name)
    metadata = {k: v for k, v in ckpt.metadata.items() if k != PLAN_KEY}
    if new_plan is not None:
        metadata[PLAN_KEY] = new_plan
    return replace(ckpt, config=replace(ckpt.config, n_layers=len(copies)), tensors=tensors, metadata=metadata,
                   layer_plan=new_plan)


def plan_checkpoint(ckpt: Checkpoint, text: str | None, materialize_repeats: bool = False) -> tuple[Checkpoint, str]:
    """The command line's `--plan TEXT [--materialize-repeats]` applied to `ckpt`, with a one-line description.

    TEXT indexes the source's executed depth (its blocks in the order it runs them). Without TEXT, a source
    that carries a plan keeps it (or has its repeats materialized)."""
    if text is None and (ckpt.layer_plan is None or not materialize_repeats):
        return ckpt, ""
    depth = len(executed(ckpt))
    plan = parse_plan(text, depth) if text is not None else None
    out = apply_plan(ckpt, plan, materialize_repeats=materialize_repeats)
    runs = len(executed(out))
    how = (f"plan {format_plan(out.layer_plan)} over {out.config.n_layers} stored blocks" if out.layer_plan
           else f"{out.config.n_layers} blocks, plain llama")
    return out, f"layer plan {text or 'of the source'}: {depth} -> {runs} executed blocks ({how})"
