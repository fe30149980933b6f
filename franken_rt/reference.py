"""The pieces of a LLaMA block recomputed in numpy from a residual stream the core traced: what analysis (attention
maps) and calibration (the inputs each weight matrix sees) need, in one place. Not on the runtime path."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from franken_rt.checkpoint.types import Checkpoint
from franken_rt.quant.tensors import float_array


def rms_norm(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * gain


def rope(x: np.ndarray, inv_freq: np.ndarray, interleaved: bool) -> np.ndarray:
    """Rotary embedding of x (positions, heads, head_dim) at positions 0..n-1, in the checkpoint's pairing."""
    n = x.shape[0]
    angle = np.arange(n)[:, None] * inv_freq[None, :].astype(np.float64)  # (n, head_dim / 2)
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
    ra, rb = a * cos - b * sin, a * sin + b * cos
    out = np.empty_like(x)
    if interleaved:
        out[..., 0::2], out[..., 1::2] = ra, rb
    else:
        out[..., :half], out[..., half:] = ra, rb
    return out


@dataclass
class BlockInputs:
    """What the weight matrices of one block read, for every position: the attention input (after RMSNorm; read
    by attn_q/k/v), the attention probabilities (heads, n, n), the heads' outputs (read by attn_output), the FFN
    input (after RMSNorm; read by ffn_gate/up) and the SwiGLU product (read by ffn_down)."""

    attn_in: np.ndarray
    probs: np.ndarray
    attn_out: np.ndarray
    ffn_in: np.ndarray
    ffn_act: np.ndarray


def weight(ckpt: Checkpoint, name: str, dtype: type = np.float64) -> np.ndarray:
    return np.asarray(float_array(ckpt.tensors[name]), dtype=dtype)


def block_inputs(ckpt: Checkpoint, residuals: np.ndarray, layer: int, dtype: type = np.float64,
                 ffn: bool = True) -> BlockInputs:
    """Recompute block `layer` (a stored block) from its traced input residuals[2 * s] and its residual after
    attention residuals[2 * s + 1], where s = `layer` (the trace of a model that runs every block once).
    `ffn=False` skips the FFN (attention maps need only the first half)."""
    c = ckpt.config
    p = f"blk.{layer}."
    x = residuals[2 * layer].astype(dtype)
    n = x.shape[0]
    h = rms_norm(x, weight(ckpt, p + "attn_norm.weight", dtype), c.norm_eps)
    inv_freq = np.asarray(c.inv_freq(), dtype=np.float32)
    q = rope((h @ weight(ckpt, p + "attn_q.weight", dtype).T).reshape(n, c.n_heads, c.head_dim), inv_freq,
             ckpt.rope_interleaved)
    k = rope((h @ weight(ckpt, p + "attn_k.weight", dtype).T).reshape(n, c.n_kv_heads, c.head_dim), inv_freq,
             ckpt.rope_interleaved)
    group = c.n_heads // c.n_kv_heads
    k = np.repeat(k, group, axis=1)  # query head h reads key head h // group
    # batched matmuls rather than einsum: BLAS, ~10x faster at calibration's window sizes
    scores = np.matmul(q.transpose(1, 0, 2), k.transpose(1, 2, 0)) / math.sqrt(c.head_dim)  # (heads, n, n)
    scores[:, np.triu(np.ones((n, n), dtype=bool), 1)] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    empty = np.zeros((n, 0), dtype=dtype)
    if not ffn:
        return BlockInputs(h, probs, empty, empty, empty)
    v = (h @ weight(ckpt, p + "attn_v.weight", dtype).T).reshape(n, c.n_kv_heads, c.head_dim)
    attn_out = np.matmul(probs, np.repeat(v, group, axis=1).transpose(1, 0, 2)).transpose(1, 0, 2).reshape(n, -1)
    g = rms_norm(residuals[2 * layer + 1].astype(dtype), weight(ckpt, p + "ffn_norm.weight", dtype), c.norm_eps)
    gate = g @ weight(ckpt, p + "ffn_gate.weight", dtype).T
    up = g @ weight(ckpt, p + "ffn_up.weight", dtype).T
    return BlockInputs(h, probs, attn_out, g, gate / (1 + np.exp(-gate)) * up)


def matrix_inputs(ckpt: Checkpoint, residuals: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(tensor name, the inputs it multiplies, (positions, columns)) for every 2-D weight read by a matmul."""
    for layer in range(ckpt.config.n_layers):
        yield from block_matrix_inputs(ckpt, residuals, layer)
    yield output_matrix_input(ckpt, residuals)


def block_matrix_inputs(ckpt: Checkpoint, residuals: np.ndarray, layer: int) -> list[tuple[str, np.ndarray]]:
    """(tensor name, its inputs) for the matrices of block `layer`; matrices that read the same input (q/k/v,
    gate/up) get the same array object."""
    b = block_inputs(ckpt, residuals, layer, np.float32)
    p = f"blk.{layer}."
    return [(p + name + ".weight", x) for name, x in (
        ("attn_q", b.attn_in), ("attn_k", b.attn_in), ("attn_v", b.attn_in), ("attn_output", b.attn_out),
        ("ffn_gate", b.ffn_in), ("ffn_up", b.ffn_in), ("ffn_down", b.ffn_act))]


def output_name(ckpt: Checkpoint) -> str:
    """The output matrix's tensor: output.weight, or the tied embedding."""
    return "output.weight" if "output.weight" in ckpt.tensors else "token_embd.weight"


def output_matrix_input(ckpt: Checkpoint, residuals: np.ndarray) -> tuple[str, np.ndarray]:
    """(the output matrix's name, its inputs: the final residual after the output norm)."""
    final = rms_norm(residuals[-1].astype(np.float32), weight(ckpt, "output_norm.weight", np.float32),
                     ckpt.config.norm_eps)
    return output_name(ckpt), final
