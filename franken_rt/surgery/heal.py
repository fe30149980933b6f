"""Training-free healing of removed blocks, folded into the weights of the block before each removed run.

For a removed run s .. s+k-1 and the block p = s-1 before it, the full model computes (residual stream, row
vectors per position): h = mid_p + y, y = W_down a the MLP output of p, and after the run h' = mid_p + z. With the
run gone, the residual after p is mid_p + y. Healing fits a linear map M with z ~ M y and stores W_down' = M W_down:
no new parameters, still a plain llama block. The target z comes from the full model's residual stream over
calibration text, y from the model with the earlier runs already removed and healed; the first position of a window
(an attention sink whose norm is tens of times the others') is left out of the fit. A run's map is kept only if it
lowers the perplexity of held-out calibration windows (`guard`).

Methods (measured on SmolLM2 in docs/surgery.md):
- `lstsq`: plain least squares over all positions, sink included (the ReplaceMe idea; overfits);
- `ridge`: least squares shrunk toward the identity, M = (S_zy + lam I)(S_yy + lam I)^-1, lam = alpha tr(S_yy)/dim,
  alpha chosen by the hidden-state error on held-out calibration windows (alpha = inf: no change, if nothing
  else helps there);
- `diag`: one gain per residual dimension (dim parameters fitted instead of dim^2), shrunk toward 1 the same way.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from franken_rt.checkpoint.types import Checkpoint, DType, TensorInfo
from franken_rt.errors import FrankenError
from franken_rt.model import Model
from franken_rt.quant.tensors import float_array
from franken_rt.surgery.analyze import plan_nll

METHODS = ("ridge", "diag", "lstsq")
DEFAULT_METHOD = "ridge"  # see docs/surgery.md for the measurements behind this choice
ALPHAS = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, math.inf)  # inf: the identity, no healing


def runs_of(removed: list[int]) -> list[tuple[int, int]]:
    """Maximal contiguous runs (start, length) of the sorted removed blocks."""
    out: list[tuple[int, int]] = []
    for b in sorted(set(removed)):
        if out and out[-1][0] + out[-1][1] == b:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((b, 1))
    return out


@dataclass
class Moments:
    """Second moments of (y, z) pairs: S_yy = sum y y^T, S_zy = sum z y^T, S_zz = sum |z|^2, diagonals too."""

    syy: np.ndarray
    szy: np.ndarray
    szz: float
    n: int

    @classmethod
    def zeros(cls, dim: int) -> Moments:
        return cls(np.zeros((dim, dim)), np.zeros((dim, dim)), 0.0, 0)

    def add(self, y: np.ndarray, z: np.ndarray) -> None:
        y, z = y.astype(np.float64), z.astype(np.float64)
        self.syy += y.T @ y
        self.szy += z.T @ y
        self.szz += float(np.sum(z * z))
        self.n += len(y)

    def error(self, m: np.ndarray) -> float:
        """sum |z - M y|^2 over the pairs, for a full matrix M (or a vector of gains)."""
        if m.ndim == 1:
            m = np.diag(m)
        return float(self.szz - 2 * np.sum(m * self.szy) + np.sum((m @ self.syy) * m))


def fit(mo: Moments, method: str, alpha: float) -> np.ndarray:
    """M (dim, dim) for the method, shrunk toward the identity with strength alpha (relative to tr(S_yy)/dim)."""
    dim = mo.syy.shape[0]
    if alpha == math.inf:
        return np.eye(dim)
    lam = alpha * np.trace(mo.syy) / dim
    if method in ("ridge", "lstsq"):
        a = mo.syy + lam * np.eye(dim)
        b = mo.szy + lam * np.eye(dim)
        return np.linalg.solve(a.T, b.T).T  # M a = b
    if method == "diag":
        g = (np.diag(mo.szy) + lam) / (np.diag(mo.syy) + lam)
        return np.diag(g)
    raise FrankenError(f"unknown healing method {method!r} (choose from {', '.join(METHODS)})")


@dataclass
class RunFit:
    start: int
    length: int
    block: int        # the block whose ffn_down absorbs M
    alpha: float
    error_before: float  # held-out hidden-state error sum |z - y|^2 / sum |z|^2 (no healing)
    error_after: float   # the same with M
    guard: tuple[float, float] | None = None  # held-out calibration perplexity without and with the map


def traces(ckpt: Checkpoint, windows: list[list[int]], threads: int | None = None,
           plan: list[int] | None = None) -> list[np.ndarray]:
    """The residual stream over each window of the blocks of `plan` (default: every block; reusable across runs
    and methods)."""
    model = Model(ckpt, threads=threads, n_ctx=max(len(w) for w in windows),
                  layer_plan=plan if plan is not None else list(range(ckpt.config.n_layers)), activations="f32",
                  kv_cache="f32")
    return [model.residuals(w) for w in windows]


def collect(full: list[np.ndarray], current: list[np.ndarray], p: int, target: int, skip_sink: bool) -> Moments:
    """Moments of y = the MLP output of block p (executed depth `p` of the `current` traces) and z = what must be
    added after p's attention to reach the full model's input of block `target` (full traces)."""
    mo = Moments.zeros(full[0].shape[-1])
    first = 1 if skip_sink else 0
    for rf, rc in zip(full, current):
        mid = rc[2 * p + 1, first:]
        mo.add(rc[2 * p + 2, first:] - mid, rf[2 * target, first:] - mid)
    return mo


def heal(ckpt: Checkpoint, removed: list[int], windows: list[list[int]], method: str = DEFAULT_METHOD,
         folder: Path | None = None, threads: int | None = None, alpha: float | None = None,
         heldout: float = 0.25, cached: list[np.ndarray] | None = None,
         guard: bool = True) -> tuple[Checkpoint, list[RunFit]]:
    """`ckpt` with each removed run's healing folded into the ffn_down of the block before it (still numbered as in
    `ckpt`: apply the removal plan afterwards). Healed tensors are raw F32 files in `folder` (default: a new
    temporary folder), which must outlive the returned checkpoint's use. `alpha`: fixed shrinkage (default: the
    one of ALPHAS with the least error on the last `heldout` fraction of the windows, refitted on all of them).
    `cached`: traces(ckpt, windows), to share the full model's residual stream between calls. `guard`: keep a
    run's map only if it lowers the perplexity of the held-out windows (a lower hidden-state error does not always
    mean a lower perplexity: the first position, an attention sink, is outside the fit but goes through the map).

    Runs are healed in order, each fitted on the model with the runs before it already removed and healed: its
    inputs are then what the pruned model really feeds it (fitting every run on the full model's activations lets
    the errors of earlier runs compound into a blow-up), and its target is the full model's residual stream."""
    if method not in METHODS:
        raise FrankenError(f"unknown healing method {method!r} (choose from {', '.join(METHODS)})")
    if ckpt.layer_plan is not None:
        raise FrankenError("healing needs a source without a layer plan")
    runs = runs_of(removed)
    if not runs:
        return ckpt, []
    if runs[0][0] == 0:
        raise FrankenError("cannot heal a removed run that starts at block 0: no block before it")
    if len(windows) < 2 and alpha is None and method != "lstsq":
        raise FrankenError("healing needs at least 2 calibration windows (one held out to choose the shrinkage)")
    skip_sink = method != "lstsq"
    n_held = 0 if (alpha is not None or method == "lstsq") else max(1, int(round(len(windows) * heldout)))
    n_fit = len(windows) - n_held
    full = cached if cached is not None else traces(ckpt, windows, threads)
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="franken-heal-"))
    tensors = dict(ckpt.tensors)
    fits = []
    gone: set[int] = set()
    for s, k in runs:
        plan = [b for b in range(ckpt.config.n_layers) if b not in gone]
        current = full if not gone else traces(replace(ckpt, tensors=tensors), windows, threads, plan)
        p = s - 1
        fm = collect(full[:n_fit], current[:n_fit], plan.index(p), s + k, skip_sink)
        hm = collect(full[n_fit:], current[n_fit:], plan.index(p), s + k, skip_sink) if n_held else fm
        if method == "lstsq":
            best = 0.0
        elif alpha is not None:
            best = alpha
        else:
            best = min(ALPHAS, key=lambda a, fm=fm, hm=hm: hm.error(fit(fm, method, a)))
        total = Moments(fm.syy + hm.syy, fm.szy + hm.szy, fm.szz + hm.szz, fm.n + hm.n) if n_held else fm
        m = fit(total, method, best)
        eye = np.eye(ckpt.config.dim)
        err_before = hm.error(eye) / hm.szz
        err_after = hm.error(fit(fm, method, best)) / hm.szz
        gone.update(range(s, s + k))
        check = None
        if best != math.inf:
            name = f"blk.{p}.ffn_down.weight"
            trial = {**tensors, name: fold(tensors[name], m, folder)}
            if guard and n_held:  # keep the map only if it lowers the held-out perplexity of the model pruned so far
                pruned = [b for b in range(ckpt.config.n_layers) if b not in gone]
                held_w = windows[n_fit:]
                check = (math.exp(plan_nll(replace(ckpt, tensors=tensors), pruned, held_w, threads=threads)),
                         math.exp(plan_nll(replace(ckpt, tensors=trial), pruned, held_w, threads=threads)))
            if check is None or check[1] < check[0]:
                tensors = trial
            else:
                best = math.inf
        fits.append(RunFit(s, k, p, best, err_before, err_after, check))
    return replace(ckpt, tensors=tensors), fits


def fold(t: TensorInfo, m: np.ndarray, folder: Path) -> TensorInfo:
    """M W of a (dim, ffn) down projection, as a raw F32 file in `folder`, described by a new TensorInfo."""
    w = (m @ float_array(t).astype(np.float64)).astype("<f4")
    path = Path(folder) / f"healed-{t.name.removesuffix('.weight')}.f32"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    w.tofile(tmp)
    os.replace(tmp, path)
    return TensorInfo(t.name, path, 0, DType.F32, t.shape)


def describe(fits: list[RunFit], method: str) -> str:
    def one(f: RunFit) -> str:
        ppl = f"held-out perplexity {f.guard[0]:.2f} -> {f.guard[1]:.2f}" if f.guard else ""
        if f.alpha == math.inf:
            return "left as is (" + (f"the map would raise the {ppl}" if f.guard else
                                     "no shrinkage lowered the held-out error") + ")"
        return (f"folded into blk.{f.block}.ffn_down (alpha {f.alpha:g}; held-out hidden-state error "
                f"{f.error_before:.3f} -> {f.error_after:.3f}" + (f"; {ppl}" if ppl else "") + ")")

    parts = [f"blocks {f.start}-{f.start + f.length - 1}: " + one(f) for f in fits]
    return f"healing ({method}): " + "; ".join(parts)
