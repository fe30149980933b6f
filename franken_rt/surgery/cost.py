"""What a model costs to store and to run, for any layer plan and quantization, computed from its tensors.

- parameters and bytes on disk: every stored tensor once (a block a plan repeats is stored once, unless the
  repeats are materialized; blocks a plan never runs are not stored);
- weight bytes read per generated token: every executed block reads all its weights (a repeated block twice), the
  embedding one row, the output matrix (or the tied embedding) all of it, the final norm;
- KV cache bytes per token: keys and values of every executed block;
- MACs (multiply-accumulates) per token: the matrix products, plus attention's scores (q.k) and weighted sum of
  values, which grow with the number of positions in the context. Norms, RoPE, softmax and SwiGLU are
  element-wise and not counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from franken_rt.checkpoint.layer_plan import check_plan, executed, format_plan
from franken_rt.checkpoint.types import Checkpoint, DType, TensorInfo
from franken_rt.errors import FrankenError
from franken_rt.formats import format_of

_BLOCK = re.compile(r"^blk\.(\d+)\.")
KV_ELEMENT_BYTES = {"f32": 4.0, "f16": 2.0, "q8": format_of(DType.Q8_0).bits / 8}
Policy = Callable[[TensorInfo], DType]


@dataclass(frozen=True)
class Cost:
    plan: tuple[int, ...]      # stored blocks of the source, in execution order
    stored_blocks: int
    params: int                # stored parameters
    disk_bytes: int            # bytes of the stored tensors (a GGUF file adds its header and alignment)
    read_bytes: int            # weight bytes read to generate one token
    kv_bytes_per_token: float  # KV cache growth per token of context
    matmul_macs: int           # per token, independent of the context
    attention_macs_per_position: int  # per token, per position in the context (scores + weighted sum)

    @property
    def depth(self) -> int:
        return len(self.plan)

    def macs(self, ctx: int) -> int:
        """MACs to run one token that attends to `ctx` positions (itself included)."""
        return self.matmul_macs + self.attention_macs_per_position * ctx

    def mean_macs(self, ctx: int) -> float:
        """MACs per token averaged over a sequence of `ctx` tokens (token i attends to i positions)."""
        return self.matmul_macs + self.attention_macs_per_position * (ctx + 1) / 2

    def as_dict(self, ctx_list: Sequence[int] = ()) -> dict:
        return {
            "plan": format_plan(self.plan), "depth": self.depth, "stored_blocks": self.stored_blocks,
            "params": self.params, "disk_bytes": self.disk_bytes, "read_bytes_per_token": self.read_bytes,
            "kv_bytes_per_token": self.kv_bytes_per_token, "matmul_macs_per_token": self.matmul_macs,
            "attention_macs_per_position": self.attention_macs_per_position,
            "macs_per_token": {str(c): self.macs(c) for c in ctx_list},
            "mean_macs_per_token": {str(c): self.mean_macs(c) for c in ctx_list},
        }


def _elements(t: TensorInfo) -> int:
    n = 1
    for d in t.shape:
        n *= d
    return n


def _bytes(t: TensorInfo, d: DType, rows: int | None = None) -> int:
    block, size = format_of(d).block_elems, format_of(d).block_bytes
    per_row = t.shape[-1] // block * size
    return per_row * (rows if rows is not None else _elements(t) // t.shape[-1])


def _macs(t: TensorInfo) -> int:
    return _elements(t) if len(t.shape) == 2 else 0


def cost(
    ckpt: Checkpoint,
    plan: Sequence[int] | None = None,
    policy: Policy | None = None,
    kv_cache: str = "f16",
    materialize_repeats: bool = False,
) -> Cost:
    """The cost of running `ckpt`'s stored blocks in the order `plan` (default: the checkpoint's own order),
    each tensor stored as `policy` says (default: as stored now)."""
    c = ckpt.config
    order = check_plan(list(plan), c.n_layers) if plan is not None else executed(ckpt)
    if kv_cache not in KV_ELEMENT_BYTES:
        raise FrankenError(f"kv_cache must be one of {', '.join(KV_ELEMENT_BYTES)}, got {kv_cache!r}")
    dtype: Policy = policy if policy is not None else (lambda t: t.dtype)
    blocks: dict[int, list[TensorInfo]] = {}
    rest: list[TensorInfo] = []
    for name, t in ckpt.tensors.items():
        m = _BLOCK.match(name)
        if m:
            blocks.setdefault(int(m.group(1)), []).append(t)
        else:
            rest.append(t)
    stored = order if materialize_repeats else sorted(set(order))
    params = sum(_elements(t) for t in rest) + sum(_elements(t) for b in stored for t in blocks.get(b, []))
    disk = sum(_bytes(t, dtype(t)) for t in rest) + sum(_bytes(t, dtype(t)) for b in stored for t in blocks.get(b, []))
    if c.rope_scaling is not None or c.rope_freq_factors is not None:
        disk += c.head_dim // 2 * 4  # the rope_freqs tensor, F32

    block_read = {b: sum(_bytes(t, dtype(t)) for t in blocks.get(b, [])) for b in set(order)}
    block_macs = {b: sum(_macs(t) for t in blocks.get(b, [])) for b in set(order)}
    glob = {t.name: t for t in rest}
    embd = glob.get("token_embd.weight")
    out = glob.get("output.weight", embd)
    if embd is None or out is None:
        raise FrankenError(f"{ckpt.source}: no token_embd.weight")
    read = sum(block_read[b] for b in order) + _bytes(embd, dtype(embd), rows=1) + _bytes(out, dtype(out))
    read += sum(_bytes(t, dtype(t)) for t in rest if t.name not in ("token_embd.weight", "output.weight"))
    kv_dim = c.n_kv_heads * c.head_dim
    return Cost(
        plan=tuple(order),
        stored_blocks=len(stored),
        params=params,
        disk_bytes=disk,
        read_bytes=read,
        kv_bytes_per_token=len(order) * 2 * kv_dim * KV_ELEMENT_BYTES[kv_cache],
        matmul_macs=sum(block_macs[b] for b in order) + _macs(out),
        attention_macs_per_position=len(order) * 2 * c.n_heads * c.head_dim,
    )


def _si(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def cost_table(cst: Cost, ctx_list: Sequence[int]) -> str:
    """The cost as a printable table."""
    lines = [
        f"blocks run          {format_plan(cst.plan)} ({cst.depth} executed, {cst.stored_blocks} stored blocks)",
        f"parameters          {_si(cst.params)} ({cst.params:,})",
        f"bytes on disk       {cst.disk_bytes / 2**20:.2f} MiB ({cst.disk_bytes:,} B, tensors only)",
        f"weights read/token  {cst.read_bytes / 2**20:.2f} MiB ({cst.read_bytes:,} B)",
        f"KV cache/token      {cst.kv_bytes_per_token / 2**10:.2f} KiB",
        f"{'context':>8}  {'MACs/token':>14}  {'mean MACs/token':>16}  {'attention share':>15}",
    ]
    for ctx in ctx_list:
        m = cst.macs(ctx)
        share = cst.attention_macs_per_position * ctx / m if m else 0.0
        lines.append(f"{ctx:>8}  {_si(m):>14}  {_si(cst.mean_macs(ctx)):>16}  {share:>15.1%}")
    return "\n".join(lines)
