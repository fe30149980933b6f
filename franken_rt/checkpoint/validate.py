"""Checks of a Checkpoint beyond what the readers check: tensor shapes against the hyperparameters, and (on
request) a scan for NaN or infinite values and block scales.

The readers already bound every offset, length and byte size by the file; here every tensor the forward pass reads
must be present with the shape the hyperparameters give, and every error names the tensor.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from franken_rt.checkpoint.types import Checkpoint, TensorInfo
from franken_rt.errors import FrankenError
from franken_rt.formats import format_of

_BLOCK_NAME = re.compile(r"blk\.(\d+)\.(.+)")
SCAN_BYTES = 64 << 20  # bytes of a tensor scanned for NaN/inf at once (the checkpoint's size does not matter)


def expected_shapes(ckpt: Checkpoint) -> dict[str, tuple[int, ...]]:
    """Every tensor the forward pass reads, with its shape (outermost first)."""
    c = ckpt.config
    q_dim, kv_dim = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (c.vocab_size, c.dim),
        "output_norm.weight": (c.dim,),
    }
    if not c.tie_embeddings:
        shapes["output.weight"] = (c.vocab_size, c.dim)
    block = {
        "attn_norm.weight": (c.dim,),
        "attn_q.weight": (q_dim, c.dim),
        "attn_k.weight": (kv_dim, c.dim),
        "attn_v.weight": (kv_dim, c.dim),
        "attn_output.weight": (c.dim, q_dim),
        "ffn_norm.weight": (c.dim,),
        "ffn_gate.weight": (c.ffn_dim, c.dim),
        "ffn_up.weight": (c.ffn_dim, c.dim),
        "ffn_down.weight": (c.dim, c.ffn_dim),
    }
    for layer in range(c.n_layers):
        shapes.update({f"blk.{layer}.{part}": shape for part, shape in block.items()})
    return shapes


def check_tensors(ckpt: Checkpoint) -> None:
    """Every tensor the model needs is present with the shape its hyperparameters give; blocks are numbered
    within block_count. Raises FrankenError naming the first tensor that does not fit."""
    source = ckpt.source
    expected = expected_shapes(ckpt)
    for name, t in ckpt.tensors.items():
        m = _BLOCK_NAME.fullmatch(name)
        if m and int(m.group(1)) >= ckpt.config.n_layers:
            raise FrankenError(f"{source}: tensor {name} belongs to block {m.group(1)}, but the model has "
                               f"{ckpt.config.n_layers} blocks")
        shape = expected.get(name)
        if shape is not None and tuple(t.shape) != shape:
            raise FrankenError(f"{source}: tensor {name} has shape {list(t.shape)}; the hyperparameters give "
                               f"{list(shape)}")
    for name in expected:
        if name not in ckpt.tensors:
            raise FrankenError(f"{source}: missing tensor {name}")


def nonfinite_count(t: TensorInfo) -> int:
    """How many values (float tensors) or block scales/minimums (quantized tensors) are NaN or infinite.

    The core scans the mapped file (numpy would add over 10 MiB to every generation's resident memory), at most
    SCAN_BYTES at a time. Quantized blocks hold f16 scales at their start (Q4_1 a scale and a minimum): only those
    are checked, the packed integers cannot be non-finite."""
    from franken_rt import _core  # the compiled core only for the scan: reading a checkpoint works without it

    rows = math.prod(t.shape[:-1])
    row_bytes = t.nbytes // rows
    step = max(1, SCAN_BYTES // row_bytes) * row_bytes  # whole rows, so whole blocks
    try:  # window by window: the core maps the file for each call, so one window's pages are resident at a time
        return sum(_core.nonfinite_count(str(t.file), t.offset + at, int(t.dtype), min(step, t.nbytes - at))
                   for at in range(0, t.nbytes, step))
    except _core.CoreError as e:
        raise FrankenError(f"{Path(t.file)}: tensor {t.name}: {e}") from None


def check_finite(ckpt: Checkpoint, names: list[str] | None = None) -> None:
    """Raise FrankenError naming the first tensor holding NaN or infinite values (or block scales)."""
    for name in names if names is not None else list(ckpt.tensors):
        t = ckpt.tensors[name]
        bad = nonfinite_count(t)
        if bad:
            what = "block scales" if format_of(t.dtype).quantized else "values"
            raise FrankenError(f"{Path(t.file)}: tensor {name} has {bad} NaN or infinite {what}")
