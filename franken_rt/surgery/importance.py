"""How much each input column of each weight matrix matters: the mean squared input it multiplies, measured on
calibration text with the float model (the idea of llama.cpp's importance matrix). Rounding a weight that meets
large inputs costs more output error, so the 3/4-bit search weighs each column's error by this.

The core traces the residual stream; franken_rt.reference recomputes from it what each matrix reads. The first
position of a window is left out: its attention-sink activations are tens of times larger than the rest and would
decide the weights alone.

Error-feedback rounding (franken_rt.quant.gptq) needs each matrix's full second-moment matrix H = E[x x^T]
(`Hessians`); its diagonal is the importance above. All of them at once would take ~800 MB for the demo model, so
the traced residuals are kept and one block's H's are built when a tensor of that block is asked for."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from franken_rt.checkpoint.types import Checkpoint
from franken_rt.model import Model
from franken_rt.reference import block_matrix_inputs, matrix_inputs, output_matrix_input


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


class Hessians:
    """name -> the second moments (cols, cols) float64 of the inputs that tensor multiplies, mean over the
    calibration positions; None for a tensor no matmul reads. Unlike the importance, the first position of each
    window is kept by default (`skip_first=False`): left out, error feedback moves error into the columns only the
    attention sink uses, and the sink's outputs degrade (measured on the demo model: the first position's output
    error of blk.20.attn_v grew 5x over the search's; with it kept it is within 3x of it and the rest halves).
    The residual streams are traced once (float32, (2 * depth + 1) x positions x dim per window); the H's of one
    block are built together when one of its tensors is asked for and kept until another block's is (the converter
    writes tensors block by block), each distinct input once: q/k/v share one array, gate/up another."""

    def __init__(self, ckpt: Checkpoint, windows: list[list[int]], threads: int | None = None,
                 skip_first: bool = False) -> None:
        self.skip = int(skip_first)
        self.ckpt = _without_plan(ckpt) if ckpt.layer_plan is not None else ckpt
        wins = [w for w in windows if len(w) >= 2]
        self.residuals: list[np.ndarray] = []
        if wins:
            model = Model(self.ckpt, threads=threads, n_ctx=max(len(w) for w in wins), activations="f32",
                          kv_cache="f32")
            self.residuals = [model.residuals(w) for w in wins]
        self.count = sum(len(w) - self.skip for w in wins)
        self._block: int | None = -1
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray | None:
        block = _block_of(name)
        if block != self._block:
            self._cache = {}  # the previous block's go before the next are built
            self._cache, self._block = self._build(block), block
        return self._cache.get(name)

    def _build(self, block: int | None) -> dict[str, np.ndarray]:
        """The H's of block `block`'s matrices (None: the output matrix's)."""
        if not self.residuals or (block is not None and not 0 <= block < self.ckpt.config.n_layers):
            return {}
        group: dict[str, str] = {}  # tensor -> the first tensor that reads the same input
        sums: dict[str, np.ndarray] = {}
        for res in self.residuals:
            pairs = ([output_matrix_input(self.ckpt, res)] if block is None
                     else block_matrix_inputs(self.ckpt, res, block))
            first: dict[int, str] = {}
            for name, x in pairs:
                head = group.setdefault(name, first.setdefault(id(x), name))
                if head == name:  # a window's product in float32 (a few hundred terms), summed in float64
                    xs = np.ascontiguousarray(x[self.skip:], dtype=np.float32)
                    prod = (xs.T @ xs).astype(np.float64)
                    sums[name] = sums[name] + prod if name in sums else prod
        means = {name: s / self.count for name, s in sums.items()}
        return {name: means[head] for name, head in group.items()}


def _block_of(name: str) -> int | None:
    """The block index of a `blk.N.` tensor; None for the others (the output matrix)."""
    return int(name.split(".")[1]) if name.startswith("blk.") else None


def _without_plan(ckpt: Checkpoint) -> Checkpoint:
    """Moments are per stored matrix: with a repeat plan the stored blocks are measured as run once each."""
    return replace(ckpt, layer_plan=None)
