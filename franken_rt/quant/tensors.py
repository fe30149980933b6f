"""Tensors between storage types: any stored tensor decoded to float32 with its format's codec, and the converter's
TensorBytes (franken_rt/checkpoint/gguf_writer.py) that re-encodes each tensor in the type it is written as."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from franken_rt.checkpoint import tensors
from franken_rt.checkpoint.gguf_writer import TensorBytes, as_stored, in_gguf_layout
from franken_rt.checkpoint.types import Checkpoint, DType, TensorInfo
from franken_rt.formats import format_of
from franken_rt.quant.formats import dequantize, encode
from franken_rt.quant.gptq import gptq_encode, has_grid, inverse_factor

Hessian = Callable[[str], "np.ndarray | None"]  # tensor name -> its inputs' second moments (cols, cols), or None


def float_array(t: TensorInfo, rows: slice | None = None) -> np.ndarray:
    """Any stored tensor as float32 (memory-mapped for F32, decoded for the others); with `rows`, only those rows
    of it seen as 2-D, shape (n, shape[-1]) (franken_rt.checkpoint.tensors)."""
    if not format_of(t.dtype).quantized:
        return tensors.float_array(t, rows)
    raw = tensors.raw_array(t, rows)
    return dequantize(raw, t.dtype, t.shape if rows is None else (raw.shape[0], t.shape[-1]))


def transcoder(rounding: str = "rtn", importance: dict[str, np.ndarray] | None = None,
               hessian: Hessian | None = None) -> TensorBytes:
    """Each tensor as stored, or decoded, put in GGUF's layout and encoded in its output type, a chunk of rows at a
    time as the writer asks (every rounding treats rows independently, so chunks change nothing in the file).
    `rounding`: "rtn", "search" or "gptq" for the quantized types; `importance`: per-column weights of that search,
    by tensor name (franken_rt.surgery.importance). "gptq" with `hessian` (tensor name -> second moments of its
    inputs): error-feedback rounding (franken_rt.quant.gptq) for every 2-D tensor whose type has a grid and whose H
    is known; the others are encoded as "search" would (a type without a grid, a matrix no matmul reads)."""
    last: list[np.ndarray] = []  # [H, its inverse factor]: q/k/v (gate/up, every chunk) get the same H object

    def tensor_bytes(ckpt: Checkpoint, name: str, t: TensorInfo, d: DType, rows: slice) -> np.ndarray:
        same = as_stored(ckpt, name, t, d, rows)
        if same is not None:
            return same
        # q/k permutations move rows, never the columns the importance (and H) weighs
        x = in_gguf_layout(ckpt, name, float_array(t, rows))
        if rounding == "gptq" and hessian is not None and len(t.shape) == 2 and has_grid(d):
            h = hessian(name)
            if h is not None:
                if not last or last[0] is not h:
                    last[:] = [h, inverse_factor(h)]
                return gptq_encode(x, d, h, factor=last[1])
        return encode(x, d, rounding, (importance or {}).get(name))

    return tensor_bytes
