"""Writing a Checkpoint as a llama GGUF file that llama.cpp loads unchanged.

Tensors are written one at a time (peak memory near the largest tensor), into a temporary file in the output's
folder that is renamed over the output only once complete.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from tqdm import tqdm

from franken_rt.checkpoint.layer_plan import PLAN_KEY
from franken_rt.checkpoint.tensors import float_array, raw_array
from franken_rt.checkpoint.types import Checkpoint, DType, TensorInfo, ggml_type, nbytes_of
from franken_rt.config import GGUF_KEYS, ModelConfig
from franken_rt.errors import FrankenError
from franken_rt.formats import format_of
from franken_rt.sampling import RECOMMENDED_KEYS

# How each metadata value type is stored: llama.cpp checks the GGUF type of what it reads.
_ARRAY_TYPES = {str: gguf.GGUFValueType.STRING, int: gguf.GGUFValueType.INT32, float: gguf.GGUFValueType.FLOAT32}


def _add_value(w: gguf.GGUFWriter, key: str, val: Any) -> None:
    V = gguf.GGUFValueType
    if isinstance(val, bool):
        w.add_key_value(key, val, V.BOOL)
    elif isinstance(val, int):
        w.add_key_value(key, val, V.UINT32 if val >= 0 else V.INT32)
    elif isinstance(val, float):
        w.add_key_value(key, val, V.FLOAT32)
    elif isinstance(val, str):
        w.add_key_value(key, val, V.STRING)
    elif isinstance(val, list | tuple):
        sub = _ARRAY_TYPES.get(type(val[0]) if val else str, V.STRING)
        w.add_key_value(key, list(val), V.ARRAY, sub_type=sub)
    else:
        raise TypeError(f"cannot store {key} of type {type(val).__name__} in GGUF")


def permute_for_gguf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k rows from Hugging Face's RoPE pairing (i, i + d/2) to GGUF's adjacent pairs (2i, 2i + 1)."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def hyperparameters(c: ModelConfig) -> dict[str, Any]:
    """The llama.* metadata of a model, as llama.cpp reads it."""
    return {
        GGUF_KEYS["n_layers"]: c.n_layers,
        GGUF_KEYS["dim"]: c.dim,
        GGUF_KEYS["ffn_dim"]: c.ffn_dim,
        GGUF_KEYS["n_heads"]: c.n_heads,
        GGUF_KEYS["n_kv_heads"]: c.n_kv_heads,
        GGUF_KEYS["head_dim"]: c.head_dim,
        "llama.attention.value_length": c.head_dim,
        GGUF_KEYS["rope_dim"]: c.head_dim,
        GGUF_KEYS["norm_eps"]: float(c.norm_eps),
        GGUF_KEYS["rope_theta"]: float(c.rope_theta),
        GGUF_KEYS["context_length"]: c.context_length,
        GGUF_KEYS["vocab_size"]: c.vocab_size,
    }


@contextmanager
def atomic_output(out: Path, inputs: list[Path], force: bool = False) -> Iterator[Path]:
    """A temporary path beside `out`, renamed to `out` when the block succeeds and removed when it fails."""
    out = Path(out)
    for src in inputs:
        if out.exists() and src.exists() and os.path.samefile(out, src):
            raise FrankenError(f"refusing to overwrite the input {src}")
    if out.exists() and not force:
        raise FrankenError(f"{out} exists (use --force to replace it)")
    if not out.parent.is_dir():
        raise FrankenError(f"output folder {out.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the output gets the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_gguf(
    ckpt: Checkpoint,
    out: Path,
    dtype: Callable[[TensorInfo], DType] | DType = DType.F32,
    force: bool = False,
    extra_metadata: dict[str, Any] | None = None,
    progress: bool = False,
    tensor_bytes: TensorBytes | None = None,
) -> None:
    """Write `ckpt` as GGUF. `dtype`: one storage type for 2-D weights, or a per-tensor policy.
    Norm gains (1-D) stay F32, as llama.cpp expects. `tensor_bytes(ckpt, name, tensor, type)`: the bytes stored
    for a tensor; by default `float_bytes` (stored bytes copied, float types converted), and for quantized types
    franken_rt.quant.tensors.transcoder (which decodes and encodes with the formats' codecs)."""
    tensor_bytes = tensor_bytes or float_bytes
    policy = dtype if callable(dtype) else (lambda t, d=dtype: d if len(t.shape) == 2 else DType.F32)
    sources = sorted({t.file for t in ckpt.tensors.values()})
    plan = [(name, t, policy(t)) for name, t in ckpt.tensors.items()]
    with atomic_output(out, sources, force=force) as tmp:
        w = gguf.GGUFWriter(tmp, arch="llama")
        vocab = ckpt.tokenizer.gguf_metadata(vocab_size=ckpt.config.vocab_size)
        order = {PLAN_KEY: [int(b) for b in ckpt.layer_plan]} if ckpt.layer_plan is not None else {}
        sampling = {k: v for k, v in ckpt.metadata.items() if k in RECOMMENDED_KEYS.values()}  # kept through
        for key, val in {**hyperparameters(ckpt.config), **vocab, **order, **sampling,
                         **(extra_metadata or {})}.items():
            _add_value(w, key, val)
        w.add_file_type(file_type(d for _, _, d in plan))
        freqs = _rope_freqs(ckpt)
        if freqs is not None:
            w.add_tensor_info("rope_freqs.weight", freqs.shape, np.dtype(np.float32), freqs.nbytes)
        for name, t, d in plan:
            nbytes = nbytes_of(d, t.shape)
            w.add_tensor_info(name, t.shape, np.dtype(np.float32), nbytes, raw_dtype=ggml_type(d))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        if freqs is not None:
            w.write_tensor_data(freqs)
        total = sum(t.nbytes for _, t, _ in plan)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"writing {Path(out).name}", disable=not progress,
                  file=sys.stderr) as bar:
            for name, t, d in plan:  # one tensor in memory at a time
                w.write_tensor_data(tensor_bytes(ckpt, name, t, d))
                bar.update(t.nbytes)
        w.close()


# (checkpoint, tensor name, tensor, stored type) -> the bytes written for it, shape (rows..., bytes per row).
TensorBytes = Callable[[Checkpoint, str, TensorInfo, DType], np.ndarray]


def as_stored(ckpt: Checkpoint, name: str, t: TensorInfo, d: DType) -> np.ndarray | None:
    """The tensor's bytes when it is written in its stored type and layout (None when it must be converted)."""
    return np.ascontiguousarray(raw_array(t)) if t.dtype == d and not needs_permute(ckpt, name) else None


def needs_permute(ckpt: Checkpoint, name: str) -> bool:
    """q/k rows of a checkpoint in Hugging Face's RoPE pairing, which GGUF stores permuted."""
    return not ckpt.rope_interleaved and name.endswith(("attn_q.weight", "attn_k.weight"))


def in_gguf_layout(ckpt: Checkpoint, name: str, arr: np.ndarray) -> np.ndarray:
    """A tensor's float values in GGUF's row order (q/k permuted where needs_permute)."""
    if not needs_permute(ckpt, name):
        return arr
    return permute_for_gguf(arr, ckpt.config.n_heads if name.endswith("attn_q.weight") else ckpt.config.n_kv_heads)


def float_bytes(ckpt: Checkpoint, name: str, t: TensorInfo, d: DType) -> np.ndarray:
    """The stored bytes, or float tensors converted to F32/F16; quantized types need a codec (TensorBytes)."""
    same = as_stored(ckpt, name, t, d)
    if same is not None:
        return same
    if d not in (DType.F32, DType.F16) or format_of(t.dtype).quantized:
        raise FrankenError(f"tensor {name}: writing {t.dtype.name} as {d.name} needs franken_rt.quant.tensors")
    return np.ascontiguousarray(in_gguf_layout(ckpt, name, float_array(t)), dtype="<f4" if d == DType.F32 else "<f2")



def file_type(dtypes: Iterable[DType]) -> int:
    """GGUF's general.file_type (llama.cpp's LLAMA_FTYPE): named after the most common 2-D weight type. A file
    mostly in our own Q3_0 gets llama.cpp's "guessed" flag (1024) alone: no LLAMA_FTYPE describes it."""
    counts = Counter(d for d in dtypes if d != DType.F32)
    return format_of(counts.most_common(1)[0][0]).llama_ftype if counts else 0


def _rope_freqs(ckpt: Checkpoint) -> np.ndarray | None:
    """Llama 3 RoPE scaling travels in GGUF as per-frequency divisors, as llama.cpp's converter writes it."""
    c = ckpt.config
    if c.rope_scaling is None and c.rope_freq_factors is None:
        return None
    plain = np.asarray(replace(c, rope_scaling=None, rope_freq_factors=None).inv_freq(), dtype=np.float64)
    return (plain / np.asarray(c.inv_freq(), dtype=np.float64)).astype(np.float32)
