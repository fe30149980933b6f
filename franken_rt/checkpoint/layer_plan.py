"""Layer plans: the execution order of stored decoder blocks, e.g. `0-11,14,14,15-29`.

A plan lists, for each executed depth, which stored block runs there; a block may be skipped or repeated. A file
that runs its blocks other than once each in order records its plan in the GGUF metadata key `franken.layer_plan`
(PLAN_KEY), which the readers check and the runtime follows. Here are the plan as a file holds it and the pure
operations on plans (parse, format, check, compose); franken_rt.surgery.plan turns a checkpoint and a plan into a
new checkpoint.

A source that already carries a plan is composed with: a plan given for it indexes its *executed* depth (the
blocks in the order the source runs them), not its stored blocks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from franken_rt.checkpoint.types import Checkpoint
from franken_rt.errors import FrankenError

PLAN_KEY = "franken.layer_plan"
# A shallower plan of the stored blocks for drafting tokens in speculative decoding (franken-run --draft self).
DRAFT_PLAN_KEY = "franken.draft_plan"
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


def draft_plan(ckpt: Checkpoint) -> list[int] | None:
    """The file's recommended draft plan (DRAFT_PLAN_KEY, stored block indices), checked; None if it has none."""
    plan = ckpt.metadata.get(DRAFT_PLAN_KEY)
    if plan is None:
        return None
    return check_plan(list(plan) if isinstance(plan, list | tuple) else plan, ckpt.config.n_layers, DRAFT_PLAN_KEY)


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
