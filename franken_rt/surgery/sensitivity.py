"""How much calibration quality each tensor loses in each storage type: the sensitivity estimate that
`--target-size` allocates bits by (franken_rt.surgery.allocate).

The estimate, "KL-scaled diagonal output error":

    ΔL(t, q) = α_g(t) · E(t, q),    E(t, q) = Σ_j H_j · ‖W[:, j] − Q_q(W)[:, j]‖²

- E is the output error of quantizing tensor t alone in type q, under the diagonal approximation of the input
  second moments: H_j is the mean squared input of column j on the calibration text (the same moments the weighted
  rounding uses, franken_rt.surgery.importance). It is measured on evenly spaced rows of each matrix, encoded with
  the rounding the file is written with, and scaled to the whole matrix.
- E is in each matrix's own output units: an error in ffn_down and one in attn_q of the same E do not cost the same.
  α_g puts them on one scale, measured: the tensors of group g (a role in a band of layers, or one tensor in the
  thorough mode) alone in the smallest type, the rest in Q8_0, and the KL divergence of the next-token
  distributions to the float model on calibration windows, less that of the all-Q8_0 model, per unit of E.
  KL rather than perplexity: it counts every change of the distribution, so small differences do not cancel.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from franken_rt.checkpoint.types import Checkpoint, DType, TensorInfo
from franken_rt.formats import format_of, quantized_types
from franken_rt.model import Model
from franken_rt.quant.formats import CODECS, dequantize, encode
from franken_rt.quant.tensors import float_array
from franken_rt.surgery.size import QuantCache

SAMPLE_ELEMS = 1 << 16   # weights per matrix whose quantization error is measured (whole rows, evenly spaced)
BANDS = 3                # layer bands per role whose KL scale is measured apart (the default search)
BASE = DType.Q8_0        # the type of everything else while a group's sensitivity is measured
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)\.weight$")


def role_of(name: str) -> str:
    """attn_q, ..., ffn_down for block matrices; token_embd / output otherwise."""
    m = _BLOCK.match(name)
    return m.group(2) if m else name.removesuffix(".weight")


def layer_of(name: str) -> int | None:
    m = _BLOCK.match(name)
    return int(m.group(1)) if m else None


def band_of(layer: int, depth: int, bands: int = BANDS) -> tuple[int, int]:
    """The (first, last) layer of the band `layer` falls in: `bands` runs of near-equal length."""
    bands = max(1, min(bands, depth))
    i = layer * bands // depth
    first = next(b for b in range(depth) if b * bands // depth == i)
    last = max(b for b in range(depth) if b * bands // depth == i)
    return first, last


def storage_types(portable: bool) -> list[DType]:
    """F16 and every quantized type of the registry with a codec; `portable`: only those llama.cpp reads."""
    quant = [d for d in quantized_types() if d in CODECS and (format_of(d).portable or not portable)]
    return [DType.F16, *quant]


def fits_rows(t: TensorInfo, d: DType) -> bool:
    return t.shape[-1] % format_of(d).block_elems == 0


def matrices(ckpt: Checkpoint) -> list[TensorInfo]:
    """The 2-D weights whose type is chosen (the rest stay F32)."""
    return [t for t in ckpt.tensors.values() if len(t.shape) == 2]


def _roundtrip(x: np.ndarray, d: DType, rounding: str, h: np.ndarray) -> np.ndarray:
    if d == DType.F16:
        return x.astype(np.float16).astype(np.float32)
    return dequantize(encode(x, d, rounding, h), d, x.shape)


def output_errors(ckpt: Checkpoint, types: Sequence[DType], moments: dict[str, np.ndarray], rounding: str,
                  sample_elems: int | None = SAMPLE_ELEMS,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, dict[DType, float]]:
    """{tensor: {type: E(t, type)}} for every matrix and every type its rows hold whole blocks of. One tensor in
    memory at a time; `sample_elems` None measures every row."""
    out: dict[str, dict[DType, float]] = {}
    mats = matrices(ckpt)
    for i, t in enumerate(mats):
        rows, cols = t.shape
        h = moments.get(t.name)
        h = np.ones(cols) if h is None else np.asarray(h, dtype=np.float64)
        k = rows if sample_elems is None else min(rows, max(1, math.ceil(sample_elems / cols)))
        pick = np.unique(np.linspace(0, rows - 1, k).round().astype(np.int64))
        x = np.ascontiguousarray(float_array(t)[pick], dtype=np.float32)
        scale = rows / len(pick)
        out[t.name] = {d: float((h * ((x - _roundtrip(x, d, rounding, h)) ** 2).sum(axis=0)).sum() * scale)
                       for d in types if fits_rows(t, d)}
        if progress:
            progress(i + 1, len(mats))
    return out


def log_probs(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, float32 (the reference's are kept for every calibration position)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return (x - np.log(np.exp(x).sum(axis=-1, keepdims=True))).astype(np.float32)


def reference(ckpt: Checkpoint, windows: list[list[int]], threads: int | None = None) -> list[np.ndarray]:
    """The float model's next-token log-probabilities on each window (float activations and cache)."""
    model = Model(ckpt, threads=threads, n_ctx=max(len(w) for w in windows), activations="f32", kv_cache="f32")
    return [log_probs(model.logits(w)) for w in windows]


@dataclass(frozen=True)
class Score:
    kl: float   # mean KL(float || model), nats per position (the windows' first positions left out)
    ppl: float  # perplexity of the same positions' next tokens

    def __str__(self) -> str:
        return f"KL {self.kl:.4f}, ppl {self.ppl:.2f}"


def score(ckpt: Checkpoint, plan: Sequence[int] | None, windows: list[list[int]], ref: list[np.ndarray],
          threads: int | None = None, activations: str = "q8") -> Score:
    """KL divergence to the float model's distributions `ref` and perplexity, on the windows; with the runtime's
    default 8-bit activations (what users run), and a float cache."""
    model = Model(ckpt, threads=threads, n_ctx=max(len(w) for w in windows), layer_plan=plan,
                  activations=activations, kv_cache="f32")
    kl, nll, n = 0.0, 0.0, 0
    for w, p in zip(windows, ref):
        q = log_probs(model.logits(w))[1:]
        pr = p[1:]
        kl += float((np.exp(pr) * (pr - q)).sum())
        nll -= float(q[np.arange(len(w) - 2), w[2:]].sum()) if len(w) > 2 else 0.0
        n += len(w) - 1
    return Score(kl / max(n, 1), math.exp(nll / max(n - len(windows), 1)))


def groups(ckpt: Checkpoint, per_tensor: bool, bands: int = BANDS) -> dict[str, list[str]]:
    """Tensors whose KL scale is measured together: a role in a band of layers, or each tensor alone."""
    depth = ckpt.config.n_layers
    out: dict[str, list[str]] = {}
    for t in matrices(ckpt):
        layer = layer_of(t.name)
        if per_tensor or layer is None:
            key = t.name
        else:
            first, last = band_of(layer, depth, bands)
            key = f"{role_of(t.name)} {first}-{last}"
        out.setdefault(key, []).append(t.name)
    return out


def base_type(t: TensorInfo, types: Sequence[DType]) -> DType:
    """The near-lossless type the other tensors are held at while one group is measured."""
    return BASE if BASE in types and fits_rows(t, BASE) else DType.F16


def smallest_type(t: TensorInfo, errors: dict[DType, float]) -> DType:
    return min(errors, key=lambda d: (format_of(d).bits, errors[d]))


def kl_scales(ckpt: Checkpoint, cache: QuantCache, errors: dict[str, dict[DType, float]], types: Sequence[DType],
              windows: list[list[int]], ref: list[np.ndarray], per_tensor: bool = False,
              threads: int | None = None, verbose: bool = False) -> tuple[dict[str, float], dict[str, float]]:
    """({tensor: α}, {group: measured KL increase}): α of each tensor's group, ΔKL / ΔE of putting the group in
    its smallest types with the rest at the base type."""
    base = {t.name: base_type(t, types) for t in matrices(ckpt)}
    low = {t.name: smallest_type(t, errors[t.name]) for t in matrices(ckpt)}

    def measure(names: set[str]) -> float:
        qckpt = cache.checkpoint(ckpt, lambda t: low[t.name] if t.name in names else base.get(t.name, t.dtype))
        return score(qckpt, None, windows, ref, threads).kl

    floor = measure(set())
    parts = groups(ckpt, per_tensor)
    alpha: dict[str, float] = {}
    gained: dict[str, float] = {}
    for i, (key, names) in enumerate(parts.items()):
        if verbose:
            print(f"\r[target size: sensitivity of group {i + 1}/{len(parts)}]", end="", file=sys.stderr,
                  flush=True)
        gained[key] = measure(set(names)) - floor
        de = sum(errors[n][low[n]] - errors[n].get(base[n], 0.0) for n in names)
        a = max(gained[key], 1e-6) / max(de, 1e-30)
        alpha.update({n: a for n in names})
    if verbose:
        print(file=sys.stderr)
    return alpha, gained
