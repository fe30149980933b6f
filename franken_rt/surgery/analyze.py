"""Per-block importance on calibration text, from the residual stream the core computes.

- Block Influence (ShortGPT): 1 - mean cosine similarity of a block's input and output.
- Angular distance (Gromov et al.): arccos(cos(x_l, x_{l+n})) / pi between the inputs of blocks l and l + n,
  for n = 1 .. depth/4; a small d(l, l+n) means the run l .. l+n-1 changes little.
- Perplexity with the single block removed (a layer plan without it).

The first position of every window is an attention sink whose residual norm is tens of times the others; it would
dominate the averages, so it is kept out of them and reported separately (`*_sink`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from franken_rt import reference
from franken_rt.errors import FrankenError
from franken_rt.model import Model


@dataclass
class BlockStats:
    depth: int
    max_shift: int
    tokens: int            # positions averaged (window starts excluded)
    windows: int
    ctx: int
    bi: list[float]        # per block
    bi_sink: list[float]   # per block, at the first position of the windows
    angular: list[list[float | None]]  # angular[l][n-1] = d(l, l+n); None where l + n > depth
    angular_sink: list[list[float | None]]
    base_ppl: float | None = None
    ppl_removed: list[float] | None = None

    def angular_at(self, start: int, n: int) -> float:
        """d(start, start + n): how much blocks start .. start+n-1 change their input; n <= max_shift."""
        v = self.angular[start][n - 1]
        if v is None:
            raise ValueError(f"no angular distance for blocks {start}..{start + n - 1}")
        return v


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-30)


def block_inputs(model, ids: Sequence[int]) -> np.ndarray:  # noqa: ANN001 (franken_rt.model.Model)
    """(depth + 1, n, dim): the input of each executed block, then the final residual."""
    return model.residuals(ids)[0::2]


def residual_stats(model, windows: list[list[int]], max_shift: int | None = None,  # noqa: ANN001
                   traces: list[np.ndarray] | None = None) -> BlockStats:
    """Block Influence and angular distances averaged over the windows' positions (first position apart).
    `traces`: the model's residuals() of the windows, if already computed."""
    depth = len(traces[0]) // 2 if traces is not None else len(model.residuals(windows[0][:1])) // 2
    k = max_shift if max_shift is not None else max(1, depth // 4)
    k = max(1, min(k, depth))
    ang = np.zeros((depth, k))
    ang_sink = np.zeros((depth, k))
    cos1 = np.zeros(depth)
    cos1_sink = np.zeros(depth)
    count = 0
    for i, w in enumerate(windows):
        if len(w) < 2:
            raise FrankenError("calibration windows need at least 2 tokens")
        u = _unit(traces[i][0::2] if traces is not None else block_inputs(model, w))  # (depth + 1, n, dim)
        for n in range(1, k + 1):
            c = np.clip(np.sum(u[:-n] * u[n:], axis=-1), -1.0, 1.0)  # (depth + 1 - n, positions)
            a = np.arccos(c) / math.pi
            ang[: depth + 1 - n, n - 1] += a[:, 1:].sum(axis=1)
            ang_sink[: depth + 1 - n, n - 1] += a[:, 0]
            if n == 1:
                cos1 += c[:, 1:].sum(axis=1)
                cos1_sink += c[:, 0]
        count += len(w) - 1
    nw = len(windows)

    def table(m: np.ndarray) -> list[list[float | None]]:
        return [[float(m[b, n - 1]) if b + n <= depth else None for n in range(1, k + 1)] for b in range(depth)]

    return BlockStats(
        depth=depth, max_shift=k, tokens=count, windows=nw, ctx=max(len(w) for w in windows),
        bi=(1 - cos1 / count).tolist(), bi_sink=(1 - cos1_sink / nw).tolist(),
        angular=table(ang / count), angular_sink=table(ang_sink / nw),
    )


def plan_nll(ckpt, plan: Sequence[int] | None, windows: list[list[int]], activations: str = "f32",  # noqa: ANN001
             threads: int | None = None) -> float:
    """Mean negative log-likelihood (nats/token) of the windows through the blocks of `plan`."""
    model = Model(ckpt, threads=threads, n_ctx=max(len(w) for w in windows), layer_plan=plan,
                  activations=activations, kv_cache="f32" if activations == "f32" else "f16")
    nll = np.concatenate([model.nll(w) for w in windows])
    return float(nll.mean())


def removal_perplexity(ckpt, windows: list[list[int]], activations: str = "f32",  # noqa: ANN001
                       threads: int | None = None,
                       progress: Callable[[int, int], None] | None = None) -> tuple[float, list[float]]:
    """Perplexity of the full model, and with each single block removed."""
    depth = ckpt.config.n_layers
    base = math.exp(plan_nll(ckpt, None, windows, activations, threads))
    out = []
    for layer in range(depth):
        plan = [i for i in range(depth) if i != layer]
        out.append(math.exp(plan_nll(ckpt, plan, windows, activations, threads)))
        if progress:
            progress(layer + 1, depth)
    return base, out


# ---- reports ---------------------------------------------------------------------------------------


def format_table(s: BlockStats, shifts: int = 4) -> str:
    k = min(shifts, s.max_shift)
    head = ["block", "BI", "BI(sink)"] + (["ppl w/o"] if s.ppl_removed else []) + [f"d(l,l+{n})" for n in
                                                                                 range(1, k + 1)]
    lines = ["  ".join(f"{h:>9}" for h in head)]
    for b in range(s.depth):
        row = [f"{b:>9d}", f"{s.bi[b]:9.4f}", f"{s.bi_sink[b]:9.4f}"]
        if s.ppl_removed:
            row.append(f"{s.ppl_removed[b]:9.2f}")
        row += [f"{v:9.4f}" if v is not None else f"{'':>9}" for v in s.angular[b][:k]]
        lines.append("  ".join(row))
    if s.base_ppl is not None:
        lines.append(f"perplexity of the full model: {s.base_ppl:.3f}")
    lines.append(f"({s.windows} windows of {s.ctx} tokens; {s.tokens} positions averaged, window starts apart)")
    return "\n".join(lines)


def to_csv(s: BlockStats) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["block", "bi", "bi_sink", "ppl_removed", *[f"angular_n{n}" for n in range(1, s.max_shift + 1)]])
    for b in range(s.depth):
        ppl = f"{s.ppl_removed[b]:.6g}" if s.ppl_removed else ""
        w.writerow([b, f"{s.bi[b]:.6g}", f"{s.bi_sink[b]:.6g}", ppl,
                    *["" if v is None else f"{v:.6g}" for v in s.angular[b]]])
    return buf.getvalue()


def to_json(s: BlockStats) -> str:
    return json.dumps(asdict(s), indent=1)


def pyplot():  # noqa: ANN201
    """matplotlib.pyplot with a non-interactive backend, or a one-line error."""
    try:
        import matplotlib  # an optional extra (franken-rt[analyze])
    except ImportError:
        raise FrankenError("plots need matplotlib: pip install 'franken-rt[analyze]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend

    return plt


def plot_stats(s: BlockStats, out_dir: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    fig, ax = plt.subplots(figsize=(10, 4))
    blocks = np.arange(s.depth)
    ax.bar(blocks, s.bi, color="tab:blue", label="Block Influence (1 - cos)")
    ax.set_xlabel("block")
    ax.set_ylabel("Block Influence", color="tab:blue")
    if s.ppl_removed:
        ax2 = ax.twinx()
        ax2.plot(blocks, s.ppl_removed, "o-", color="tab:red", label="perplexity without the block")
        if s.base_ppl:
            ax2.axhline(s.base_ppl, color="tab:red", ls=":", lw=1)
        ax2.set_yscale("log")
        ax2.set_ylabel("perplexity without the block (log)", color="tab:red")
    ax.set_title("Block importance")
    fig.tight_layout()
    paths.append(out_dir / "block_importance.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    m = np.array([[np.nan if v is None else v for v in row] for row in s.angular]).T  # (shift, block)
    im = ax.imshow(m, aspect="auto", origin="lower", cmap="viridis",
                   extent=(-0.5, s.depth - 0.5, 0.5, s.max_shift + 0.5))
    fig.colorbar(im, ax=ax, label="angular distance d(l, l+n)")
    ax.set_xlabel("first block l")
    ax.set_ylabel("blocks skipped n")
    ax.set_title("Angular distance between the inputs of blocks l and l+n")
    fig.tight_layout()
    paths.append(out_dir / "angular_distance.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


# ---- attention --------------------------------------------------------------------------------------


def attention_maps(model, ids: Sequence[int]) -> np.ndarray:  # noqa: ANN001 (franken_rt.model.Model)
    """Attention probabilities (layers, heads, n, n) of a prompt, recomputed in numpy from the residual stream
    and each block's dequantized weights: RMSNorm, Q/K projections, RoPE, GQA, causal softmax."""
    res = model.residuals(ids)
    return np.stack([reference.block_inputs(model.checkpoint, res, layer, ffn=False).probs.astype(np.float32)
                     for layer in range(model.config.n_layers)])


def fourier_magnitude(p: np.ndarray) -> np.ndarray:
    """log(1 + |FFT2|) of attention maps (..., n, n), zero frequency centered."""
    return np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(p), axes=(-2, -1))))


def plot_attention(maps: np.ndarray, tokens: list[str], out_dir: Path) -> list[Path]:
    """One PNG per layer: each head's attention map (top row) and its 2-D Fourier magnitude (bottom row)."""
    plt = pyplot()
    n_layers, n_heads, n, _ = maps.shape
    spectra = fourier_magnitude(maps)
    paths = []
    for layer in range(n_layers):
        fig, axes = plt.subplots(2, n_heads, figsize=(2.2 * n_heads, 4.6), squeeze=False)
        for h in range(n_heads):
            a, f = axes[0][h], axes[1][h]
            a.imshow(maps[layer, h], cmap="magma", vmin=0, vmax=1)
            a.set_title(f"head {h}", fontsize=8)
            f.imshow(spectra[layer, h], cmap="viridis")
            for ax in (a, f):
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0][0].set_ylabel("attention", fontsize=8)
        axes[1][0].set_ylabel("|FFT2| (log)", fontsize=8)
        fig.suptitle(f"layer {layer} ({n} tokens)", fontsize=10)
        fig.tight_layout()
        paths.append(out_dir / f"attention_layer{layer:02d}.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths
