"""Healing by knowledge distillation: after blocks are removed, train some of the pruned student's weights so its
next-token distributions match the full teacher's, KL(teacher || student), over the calibration windows.

Why it generalizes better than the training-free maps of heal.py: those fit hidden states at one point of the
residual stream, and a hidden-state error that looks small can still move the logits a lot on text of another
domain; the KL on the output is the quantity the model is judged by, and training a few whole blocks (rather than a
dim x dim map) lets the network repair the attention as well as the MLP path.

What is trained (`scope`): the weights of the blocks next to each removed run (the kept block before and after it)
plus the RMSNorm gains from the lowest of them up ("neighbors", the default); "norms" trains every gain only, "all"
every block weight and gain. The embedding and output matrices stay frozen (most of a small model's parameters, and
its vocabulary interface). The blocks below the lowest trained one are run once, without gradients, and their
output is cached: they cost no backward pass.

The teacher's logits come from the core (float activations), computed once; only the top `top_k` log-probabilities
per position are kept, with the rest of the mass pooled in one bucket, so the stored targets are a few MB instead of
vocab x tokens floats. A quarter of the windows is held out: training keeps the weights of the epoch with the least
held-out KL and stops when it stops improving, and the healing is dropped if no epoch beats the untrained student.

Training starts from the ridge-healed model (heal.py, `init`): on SmolLM2 with 6 blocks removed its held-out KL is
already 0.28 nats/token against 0.74 unhealed, a start a few epochs from scratch did not reach (0.55 after two).

The result is folded back as plain tensors (raw F32 files) under the same names: still a llama block set, quantized
as usual afterwards (training is in float; quantization-aware tuning is not done).

torch is imported at the top of this module, which only `--heal distill` loads (surgery/healing.py): the runtime
path and every other conversion never import it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from franken_rt.checkpoint.types import Checkpoint, DType, TensorInfo
from franken_rt.errors import FrankenError
from franken_rt.eval.memory import peak_rss_mib
from franken_rt.model import Model
from franken_rt.quant.tensors import float_array
from franken_rt.surgery import heal as hl

try:
    import torch
    import torch.nn.functional as F  # noqa: N812 (torch's own convention)
except ImportError:
    raise FrankenError("--heal distill needs torch: pip install 'franken-rt[heal]' (or use --heal ridge, "
                       "which does not)") from None

SCOPES = ("neighbors", "norms", "all")
BLOCK_MATS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
NORMS = ("attn_norm", "ffn_norm")


@dataclass
class DistillConfig:
    """The training recipe; the defaults are what docs/surgery.md measured on SmolLM2."""

    scope: str = "neighbors"
    init: str = "ridge"       # start from the ridge-healed weights (heal.py; measured better), or "none"
    epochs: int = 2           # the second epoch still lowered the held-out KL a little (0.204 -> 0.191)
    lr: float = 1e-4          # Adam, block weights
    norm_lr: float = 1e-3     # Adam, RMSNorm gains
    top_k: int = 64           # teacher log-probabilities kept per position
    heldout: float = 0.25     # fraction of the windows kept out of training (early stopping, guard)
    patience: int = 1         # epochs without a held-out improvement before stopping
    seed: int = 0

    def check(self) -> None:
        if self.scope not in SCOPES:
            raise FrankenError(f"distill scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.init not in ("none", "ridge"):
            raise FrankenError(f"distill init must be 'none' or 'ridge', got {self.init!r}")
        if self.epochs < 1 or self.top_k < 1 or not (self.lr > 0 and self.norm_lr > 0):
            raise FrankenError("distill needs epochs >= 1, top_k >= 1 and positive learning rates")
        if not 0 < self.heldout < 1:
            raise FrankenError(f"distill heldout must be a fraction in (0, 1), got {self.heldout}")


@dataclass
class DistillReport:
    trained: list[str]          # tensor names
    n_params: int
    kl_before: float            # held-out KL (nats/token) of the untrained student
    kl_after: float             # ... of the kept weights (== kl_before if the training was dropped)
    epochs: int                 # epochs run
    seconds: float
    peak_mib: float             # peak resident memory of the process
    kept: bool
    ridge: str = ""             # heal.describe() of the ridge start, if any

    def describe(self) -> str:
        start = f"from {self.ridge}; then " if self.ridge else ""
        what = (f"{len(self.trained)} tensors ({self.n_params / 1e6:.2f} M parameters) trained {self.epochs} epochs, "
                f"held-out KL to the teacher {self.kl_before:.4f} -> {self.kl_after:.4f} nats/token")
        if not self.kept:
            what += " (no epoch lowered it: left as is)"
        return (f"healing (distill): {start}{what}; {self.seconds:.0f} s, peak memory {self.peak_mib:.0f} MiB")


# ---- the student: a LLaMA forward in torch over the checkpoint's own tensors -------------------------------------


def _tensor(ckpt: Checkpoint, name: str) -> torch.Tensor:
    return torch.from_numpy(np.array(float_array(ckpt.tensors[name]), dtype=np.float32))


class Student(torch.nn.Module):
    """The blocks of `plan` (stored block numbers) over `ckpt`'s float weights, in the checkpoint's row layout and
    RoPE pairing (so trained weights go back to the same tensors without any permutation). Parameters are named
    like the checkpoint's tensors, with '.' replaced by '/'."""

    def __init__(self, ckpt: Checkpoint, plan: list[int]) -> None:
        super().__init__()
        c = ckpt.config
        self.c, self.plan, self.interleaved = c, list(plan), ckpt.rope_interleaved
        names = ["output_norm.weight", "token_embd.weight"]
        names += ["output.weight"] if "output.weight" in ckpt.tensors else []
        names += [f"blk.{b}.{m}.weight" for b in plan for m in (*NORMS, *BLOCK_MATS)]
        self.w = torch.nn.ParameterDict({n.replace(".", "/"): torch.nn.Parameter(_tensor(ckpt, n), requires_grad=False)
                                         for n in names})
        self.register_buffer("inv_freq", torch.tensor(c.inv_freq(), dtype=torch.float32), persistent=False)

    def p(self, name: str) -> torch.nn.Parameter:
        return self.w[name.replace(".", "/")]

    def _norm(self, x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.c.norm_eps) * gain

    def _rope(self, x: torch.Tensor) -> torch.Tensor:
        """x: (heads, n, head_dim) rotated at positions 0..n-1."""
        n = x.shape[1]
        angle = torch.arange(n, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        cos, sin = torch.cos(angle), torch.sin(angle)
        if self.interleaved:
            a, b = x[..., 0::2], x[..., 1::2]
            return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)

    def block(self, b: int, x: torch.Tensor) -> torch.Tensor:
        c, pre, n = self.c, f"blk.{b}.", x.shape[0]
        h = self._norm(x, self.p(pre + "attn_norm.weight"))
        q = self._rope((h @ self.p(pre + "attn_q.weight").T).view(n, c.n_heads, c.head_dim).transpose(0, 1))
        k = self._rope((h @ self.p(pre + "attn_k.weight").T).view(n, c.n_kv_heads, c.head_dim).transpose(0, 1))
        v = (h @ self.p(pre + "attn_v.weight").T).view(n, c.n_kv_heads, c.head_dim).transpose(0, 1)
        group = c.n_heads // c.n_kv_heads  # query head h reads key head h // group
        k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(0, 1).reshape(n, -1)
        x = x + att @ self.p(pre + "attn_output.weight").T
        g = self._norm(x, self.p(pre + "ffn_norm.weight"))
        act = F.silu(g @ self.p(pre + "ffn_gate.weight").T) * (g @ self.p(pre + "ffn_up.weight").T)
        return x + act @ self.p(pre + "ffn_down.weight").T

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.p("token_embd.weight")[ids]

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Logits (n, vocab) from the residual `x` entering executed block `start`."""
        for b in self.plan[start:]:
            x = self.block(b, x)
        out = self.w["output/weight"] if "output/weight" in self.w else self.p("token_embd.weight")
        return self._norm(x, self.p("output_norm.weight")) @ out.T

    def prefix(self, ids: list[int], stop: int) -> torch.Tensor:
        """The residual entering executed block `stop`, without gradients."""
        with torch.no_grad():
            x = self.embed(torch.tensor(ids))
            for b in self.plan[:stop]:
                x = self.block(b, x)
        return x


# ---- the teacher's targets, the loss --------------------------------------------------------------------------


@dataclass
class Targets:
    """Top-k teacher log-probabilities (n, k), their token ids (n, k) and the log of the remaining mass (n,)."""

    logp: torch.Tensor
    ids: torch.Tensor
    log_rest: torch.Tensor


def teacher_targets(ckpt: Checkpoint, windows: list[list[int]], top_k: int, threads: int | None) -> list[Targets]:
    """The full model's next-token distributions over each window (core, float activations), top-k kept."""
    model = Model(ckpt, threads=threads, n_ctx=max(len(w) for w in windows), activations="f32", kv_cache="f32")
    out = []
    for w in windows:
        lg = torch.from_numpy(np.asarray(model.logits(w), dtype=np.float32))
        logp = torch.log_softmax(lg, dim=-1)
        top = torch.topk(logp, min(top_k, logp.shape[-1]), dim=-1)
        out.append(Targets(top.values, top.indices, _log_rest(top.values)))
    return out


def _log_rest(logp_top: torch.Tensor) -> torch.Tensor:
    """log(1 - sum exp(logp_top)), kept finite when the top-k hold (almost) all the mass."""
    return torch.log1p(-torch.exp(torch.logsumexp(logp_top, dim=-1)).clamp(max=1 - 1e-6))


def kl(logits: torch.Tensor, t: Targets) -> torch.Tensor:
    """Mean over positions of KL(teacher || student) on the teacher's top-k tokens plus one bucket for the rest:
    the KL of the two distributions coarsened to k + 1 outcomes (a lower bound of the full KL, exact in the limit)."""
    logq = torch.log_softmax(logits, dim=-1)
    q_top = logq.gather(-1, t.ids)
    q_rest = _log_rest(q_top)
    p_rest = torch.exp(t.log_rest)
    per_pos = (torch.exp(t.logp) * (t.logp - q_top)).sum(-1) + p_rest * (t.log_rest - q_rest)
    return per_pos.mean()


# ---- training -------------------------------------------------------------------------------------------------


def trainable(ckpt: Checkpoint, removed: list[int], plan: list[int], scope: str) -> list[str]:
    """Tensor names trained for the scope (see the module docstring)."""
    if scope in ("norms", "all"):
        blocks, lowest = plan, 0
    else:
        near: set[int] = set()
        for s, k in hl.runs_of(removed):
            near.update(b for b in (s - 1, s + k) if b in plan)
        blocks = [b for b in plan if b in near]
        lowest = plan.index(blocks[0]) if blocks else len(plan)
    # gains only from the lowest trained block up: the blocks below it stay frozen and are run once
    norms = [f"blk.{b}.{m}.weight" for b in plan[lowest:] for m in NORMS] + ["output_norm.weight"]
    if scope == "norms":
        return norms
    return norms + [f"blk.{b}.{m}.weight" for b in blocks for m in BLOCK_MATS]


def _first_trained(names: list[str], plan: list[int]) -> int:
    """The executed index of the lowest block with a trained tensor (len(plan): only the output norm)."""
    blocks = {int(n.split(".")[1]) for n in names if n.startswith("blk.")}
    return min((plan.index(b) for b in blocks), default=len(plan))


def _heldout_kl(student: Student, entries: list[torch.Tensor], targets: list[Targets], start: int) -> float:
    with torch.no_grad():
        return float(np.mean([kl(student(x, start), t).item() for x, t in zip(entries, targets)]))


def distill(ckpt: Checkpoint, removed: list[int], windows: list[list[int]], folder: Path | None = None,
            threads: int | None = None, config: DistillConfig | None = None,
            verbose: bool = False) -> tuple[Checkpoint, DistillReport]:
    """`ckpt` (every block; apply the removal plan afterwards) with the trained tensors of the pruned student
    replaced by raw F32 files in `folder` (default: a new temporary folder, which must outlive the checkpoint)."""
    cfg = config or DistillConfig()
    cfg.check()
    if ckpt.layer_plan is not None:
        raise FrankenError("healing needs a source without a layer plan")
    removed = sorted(set(removed))
    if not removed:
        raise FrankenError("distillation needs removed blocks")
    if len(windows) < 2:
        raise FrankenError("distillation needs at least 2 calibration windows (one held out)")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, min(threads or 2, 2)))
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="franken-heal-"))
    ridge = ""
    if cfg.init == "ridge":
        ckpt, fits = hl.heal(ckpt, removed, windows, "ridge", folder=folder, threads=threads)
        ridge = hl.describe(fits, "ridge")
    plan = [b for b in range(ckpt.config.n_layers) if b not in removed]
    n_held = max(1, int(round(len(windows) * cfg.heldout)))
    say = (lambda m: print(m, file=sys.stderr)) if verbose else (lambda m: None)
    say(f"distill: teacher targets over {len(windows)} windows")
    targets = teacher_targets(ckpt, windows, cfg.top_k, threads)
    student = Student(ckpt, plan)
    names = trainable(ckpt, removed, plan, cfg.scope)
    start = _first_trained(names, plan)
    entries = [student.prefix(w, start) for w in windows]  # the frozen prefix, run once
    params = [student.p(n) for n in names]
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.Adam([{"params": [q for n, q in zip(names, params) if "norm" in n], "lr": cfg.norm_lr},
                            {"params": [q for n, q in zip(names, params) if "norm" not in n], "lr": cfg.lr}])
    n_fit = len(windows) - n_held
    held = _heldout_kl(student, entries[n_fit:], targets[n_fit:], start)
    before, best, best_state, stale, epochs = held, held, None, 0, 0
    say(f"distill: training {len(names)} tensors from executed block {start}; held-out KL {held:.4f}")
    for epoch in range(cfg.epochs):
        order = torch.randperm(n_fit).tolist()
        for i in order:
            opt.zero_grad(set_to_none=True)
            loss = kl(student(entries[i], start), targets[i])
            loss.backward()
            opt.step()
        epochs = epoch + 1
        held = _heldout_kl(student, entries[n_fit:], targets[n_fit:], start)
        say(f"distill: epoch {epochs}: held-out KL {held:.4f} ({time.perf_counter() - t0:.0f} s)")
        if held < best:
            best, stale = held, 0
            best_state = [q.detach().clone() for q in params]
        else:
            stale += 1
            if stale > cfg.patience:
                break
    tensors = dict(ckpt.tensors)
    if best_state is not None:
        for n, value in zip(names, best_state):
            tensors[n] = _write(ckpt.tensors[n], value.numpy(), folder)
    report = DistillReport(names, sum(q.numel() for q in params), before, best, epochs,
                           time.perf_counter() - t0, peak_rss_mib(), best_state is not None, ridge)
    return Checkpoint(ckpt.config, tensors, ckpt.tokenizer, ckpt.rope_interleaved, ckpt.source, ckpt.metadata,
                      ckpt.layer_plan), report


def _write(t: TensorInfo, value: np.ndarray, folder: Path) -> TensorInfo:
    """A trained tensor as a raw F32 file in `folder` (atomically), described by a new TensorInfo."""
    path = folder / f"distilled-{t.name.removesuffix('.weight')}.f32"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    np.ascontiguousarray(value, dtype="<f4").tofile(tmp)
    os.replace(tmp, path)
    return TensorInfo(t.name, path, 0, DType.F32, t.shape)


def heal(ckpt: Checkpoint, removed: list[int], windows: list[list[int]], folder: Path,
         threads: int | None = None) -> tuple[Checkpoint, str]:
    """The surgery pipeline's entry point (surgery/healing.py): the default recipe, one line of notes."""
    out, report = distill(ckpt, removed, windows, folder, threads, verbose=True)
    return out, report.describe()

