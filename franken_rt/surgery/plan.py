"""Layer plans: the execution order of stored decoder blocks, e.g. `0-11,14,14,15-29`.

A plan lists, for each executed depth, which stored block runs there; a block may be skipped or repeated.
`apply_plan` turns a checkpoint and a plan into a new checkpoint ready for writing:

- a removal-only plan (strictly increasing) keeps the blocks it names, renumbered 0..k-1: an ordinary llama file;
- a plan with repeats stores each block it uses once and records the execution order, in the new numbering, in the
  GGUF metadata key `franken.layer_plan` (which franken-rt follows); `materialize_repeats=True` stores a copy of
  each repeat instead, so the file is an ordinary llama file that any llama runtime runs as planned.

A source that already carries a plan is composed with: a plan given for it indexes its *executed* depth (the
blocks in the order the source runs them), not its stored blocks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from franken_rt.checkpoint.types import Checkpoint
from franken_rt.errors import FrankenError

PLAN_KEY = "franken.layer_plan"
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")
_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_plan(text: str, n_layers: int) -> list[int]:
    """`0-11,14,14,15-29` -> [0, ..., 11, 14, 14, 15, ..., 29], each index checked against `n_layers`."""
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or not any(items):
        raise FrankenError("empty layer plan")
    plan: list[int] = []
    for item in items:
        m = _ITEM.match(item)
        if not m:
            raise FrankenError(f"layer plan: bad item {item!r} (want N or N-M, e.g. 0-11,14,14,15-29)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise FrankenError(f"layer plan: reversed range {item!r}")
        if hi >= n_layers:
            raise FrankenError(f"layer plan: block {hi} is out of range (the model has {n_layers}: 0-{n_layers - 1})")
        plan.extend(range(lo, hi + 1))
    return plan


def format_plan(plan: Sequence[int]) -> str:
    """The compact form: runs of consecutive increasing indices as `a-b`, everything else listed."""
    parts: list[str] = []
    i = 0
    while i < len(plan):
        j = i
        while j + 1 < len(plan) and plan[j + 1] == plan[j] + 1:
            j += 1
        parts.append(str(plan[i]) if j == i else f"{plan[i]}-{plan[j]}")
        i = j + 1
    return ",".join(parts)


def drop(n_layers: int, blocks: Sequence[int]) -> list[int]:
    """The removal plan that runs every block except `blocks`, in order."""
    gone = set(blocks)
    bad = sorted(b for b in gone if not 0 <= b < n_layers)
    if bad:
        raise FrankenError(f"cannot remove block {bad[0]}: the model has {n_layers} (0-{n_layers - 1})")
    if len(gone) >= n_layers:
        raise FrankenError(f"cannot remove all {n_layers} blocks")
    return [b for b in range(n_layers) if b not in gone]


def is_removal_only(plan: Sequence[int]) -> bool:
    return all(a < b for a, b in zip(plan, plan[1:]))


def check_plan(plan: Sequence[int], n_layers: int, where: str = "layer plan") -> list[int]:
    """A stored plan, validated: a non-empty list of block indices that exist."""
    if not isinstance(plan, list | tuple) or not plan or not all(isinstance(b, int) for b in plan):
        raise FrankenError(f"{where}: must be a non-empty list of block indices")
    bad = [b for b in plan if not 0 <= b < n_layers]
    if bad:
        raise FrankenError(f"{where} names block {bad[0]}, but the file stores {n_layers} blocks (0-{n_layers - 1})")
    return list(plan)


def executed(ckpt: Checkpoint) -> list[int]:
    """The stored blocks in the order the checkpoint runs them."""
    return list(ckpt.layer_plan) if ckpt.layer_plan is not None else list(range(ckpt.config.n_layers))


def compose(ckpt: Checkpoint, plan: Sequence[int]) -> list[int]:
    """A plan over the checkpoint's executed depth, as stored-block indices of the checkpoint."""
    order = executed(ckpt)
    bad = [d for d in plan if not 0 <= d < len(order)]
    if bad:
        raise FrankenError(f"layer plan: depth {bad[0]} is out of range (the model runs {len(order)} blocks)")
    return [order[d] for d in plan]


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
