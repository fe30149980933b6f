"""How much each input column of each weight matrix matters: the mean squared input it multiplies, measured on
calibration text with the float model (the idea of llama.cpp's importance matrix). Rounding a weight that meets
large inputs costs more output error, so the 3/4-bit search weighs each column's error by this.

The core traces the residual stream; franken_rt.reference recomputes from it what each matrix reads. The first
position of a window is left out: its attention-sink activations are tens of times larger than the rest and would
decide the weights alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from franken_rt.checkpoint.types import Checkpoint
from franken_rt.model import Model
from franken_rt.reference import matrix_inputs


def input_moments(ckpt: Checkpoint, windows: list[list[int]], threads: int | None = None) -> dict[str, np.ndarray]:
    """{tensor name: mean of x_j^2 over the calibration positions, one value per column j} for every 2-D weight
    that a matmul reads (the tied embedding as the output matrix)."""
    if ckpt.layer_plan is not None:
        ckpt = _without_plan(ckpt)
    model = Model(ckpt, threads=threads, n_ctx=max(len(w) for w in windows), activations="f32", kv_cache="f32")
    sums: dict[str, np.ndarray] = {}
    count = 0
    for w in windows:
        if len(w) < 2:
            continue
        res = model.residuals(w)
        for name, x in matrix_inputs(ckpt, res):
            x = x[1:].astype(np.float64)
            sums[name] = sums.get(name, 0) + (x * x).sum(axis=0)
        count += len(w) - 1
    if not count:
        return {}
    return {name: s / count for name, s in sums.items()}


def _without_plan(ckpt: Checkpoint) -> Checkpoint:
    """Moments are per stored matrix: with a repeat plan the stored blocks are measured as run once each."""
    return replace(ckpt, layer_plan=None)
