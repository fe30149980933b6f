"""The healing methods of `franken-convert --heal METHOD`, by name: the training-free maps of heal.py (numpy) and
knowledge distillation (distill.py, torch). Each method names the module that runs it, imported only when that
method is chosen, so a conversion without `--heal distill` never loads torch (nor fails for want of it)."""

from __future__ import annotations

import importlib
from pathlib import Path

from franken_rt.checkpoint.types import Checkpoint
from franken_rt.errors import FrankenError
from franken_rt.surgery import heal as hl

DISTILL_MODULE = "franken_rt.surgery.distill"  # imports torch at its top; FrankenError if torch is missing
METHODS: dict[str, str] = {**{m: hl.__name__ for m in hl.METHODS}, "distill": DISTILL_MODULE}
DEFAULT_METHOD = hl.DEFAULT_METHOD  # see docs/surgery.md for the measurements behind this choice


def check(method: str) -> None:
    if method not in METHODS:
        raise FrankenError(f"--heal must be one of {', '.join(METHODS)}, got {method!r}")


def heal(method: str, ckpt: Checkpoint, removed: list[int], windows: list[list[int]], folder: Path,
         threads: int | None = None) -> tuple[Checkpoint, str]:
    """`ckpt` (every block, numbered as before: apply the removal plan afterwards) healed for the removed blocks,
    and one line saying what was done. New tensors are files in `folder`, which must outlive the checkpoint."""
    check(method)
    if METHODS[method] == hl.__name__:
        healed, fits = hl.heal(ckpt, removed, windows, method, folder=folder, threads=threads)
        return healed, hl.describe(fits, method)
    return importlib.import_module(METHODS[method]).heal(ckpt, removed, windows, folder, threads)
