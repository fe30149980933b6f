"""Writing a Checkpoint as a llama GGUF file that llama.cpp loads unchanged.

Tensors are written one at a time, each in chunks of whole rows (at most CHUNK_BYTES of float32 decoded at once):
a chunk is read, decoded, put in GGUF's layout, encoded and written before the next is read, so the converter's
memory stays near one chunk whatever the model's size (a Llama-3 8B embedding is 2.1 GB as float32; docs/convert.md).
The output goes to a temporary file in the output's folder, renamed over the output only once complete, and the free
space it needs is checked before any tensor is written.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

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

CHUNK_BYTES = 64 << 20  # float32 bytes of the rows decoded and encoded at once (one chunk)

# How each metadata value type is stored: llama.cpp checks the GGUF type of what it reads.
_ARRAY_TYPES = {str: gguf.GGUFValueType.STRING, int: gguf.GGUFValueType.INT32, float: gguf.GGUFValueType.FLOAT32}


def add_value(w: gguf.GGUFWriter, key: str, val: Any) -> None:
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
    chunk_bytes: int = CHUNK_BYTES,
) -> None:
    """Write `ckpt` as GGUF. `dtype`: one storage type for 2-D weights, or a per-tensor policy.
    Norm gains (1-D) stay F32, as llama.cpp expects. `tensor_bytes(ckpt, name, tensor, type, rows)`: the bytes
    stored for those rows of a tensor; by default `float_bytes` (stored bytes copied, float types converted), and
    for quantized types franken_rt.quant.tensors.transcoder (which decodes and encodes with the formats' codecs).
    `chunk_bytes`: float32 bytes of the rows handled at once (row_chunks); the file is the same for any value."""
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
            add_value(w, key, val)
        w.add_file_type(file_type(d for _, _, d in plan))
        freqs = _rope_freqs(ckpt)
        if freqs is not None:
            w.add_tensor_info("rope_freqs.weight", freqs.shape, np.dtype(np.float32), freqs.nbytes)
        sizes = [nbytes_of(d, t.shape) for _, t, d in plan]
        for (name, t, d), nbytes in zip(plan, sizes):
            w.add_tensor_info(name, t.shape, np.dtype(np.float32), nbytes, raw_dtype=ggml_type(d))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        assert w.fout is not None and len(w.fout) == 1  # one file, no split
        fout, align = w.fout[0], w.data_alignment
        data = sum(_padded(n, align) for n in [*sizes, *([freqs.nbytes] if freqs is not None else [])])
        w.flush()
        check_free_space(Path(out), _padded(fout.tell(), align) + data, already=fout.tell())
        # the tensor data as gguf's GGUFWriter.write_tensor_data lays it out (each tensor aligned), but streamed:
        # a tensor is written chunk by chunk, never held whole
        if freqs is not None:
            write_tensor(fout, [freqs], freqs.nbytes, align)
        with tqdm(total=sum(sizes), unit="B", unit_scale=True, desc=f"writing {Path(out).name}", disable=not progress,
                  file=sys.stderr) as bar:
            for (name, t, d), nbytes in zip(plan, sizes):
                chunks = (tensor_bytes(ckpt, name, t, d, rows) for rows in row_chunks(ckpt, name, t, chunk_bytes))
                write_tensor(fout, chunks, nbytes, align, name, done=bar.update)
        w.close()


# (checkpoint, tensor name, tensor, stored type, rows) -> the bytes written for those rows of the tensor (in GGUF's
# row order: q/k permuted), shape (rows, bytes per row). Rows count the tensor as (prod(shape[:-1]), shape[-1]).
TensorBytes = Callable[[Checkpoint, str, TensorInfo, DType, slice], np.ndarray]


def row_count(t: TensorInfo) -> int:
    """Rows of a tensor seen as 2-D (a 1-D tensor is one row)."""
    return math.prod(t.shape[:-1])


def row_chunks(ckpt: Checkpoint, name: str, t: TensorInfo, chunk_bytes: int = CHUNK_BYTES) -> list[slice]:
    """The row ranges a tensor is encoded in: as many rows as fit `chunk_bytes` of float32 (at least one), and for
    q/k rows that GGUF stores permuted, whole heads (the permutation moves rows only within a head)."""
    rows, cols = row_count(t), t.shape[-1]
    step = max(1, chunk_bytes // (4 * cols))
    if needs_permute(ckpt, name):
        head = ckpt.config.head_dim
        step = max(1, step // head) * head
    return [slice(a, min(a + step, rows)) for a in range(0, rows, step)]


def write_tensor(fout: IO[bytes], chunks: Iterable[np.ndarray], nbytes: int, align: int, name: str = "",
                 done: Callable[[int], object] | None = None) -> None:
    """One tensor's data at the next multiple of `align` in `fout`, from its chunks (each written before the next is
    made), then padded to `align`: the bytes gguf's GGUFWriter.write_tensor_data writes for the whole array.
    `done(n)` after each chunk of n bytes. Raises ValueError (a bug) if the chunks do not add up to `nbytes`."""
    fout.write(bytes(_padded(fout.tell(), align) - fout.tell()))
    written = 0
    for chunk in chunks:
        data = memoryview(np.ascontiguousarray(chunk)).cast("B")
        fout.write(data)
        written += len(data)
        if done is not None:
            done(len(data))
    if written != nbytes:
        raise ValueError(f"tensor {name}: wrote {written} bytes, its type and shape take {nbytes}")
    fout.write(bytes(_padded(nbytes, align) - nbytes))


def _padded(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def check_free_space(out: Path, size: int, already: int = 0) -> None:
    """FrankenError if the folder of `out` has not the room for a file of `size` bytes, of which `already` are
    written (flushed: the free space no longer counts them)."""
    folder = Path(out).parent
    if not folder.is_dir():
        raise FrankenError(f"output folder {folder} does not exist")
    try:
        free = shutil.disk_usage(folder).free
    except OSError as e:
        raise FrankenError(f"output folder {folder}: {e.strerror or e}") from None
    if size > free + already:
        raise FrankenError(f"not enough disk space for {out}: it takes {_size(size)}, and {folder} has "
                           f"{_size(free + already)} free")


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def as_stored(ckpt: Checkpoint, name: str, t: TensorInfo, d: DType, rows: slice) -> np.ndarray | None:
    """Those rows' bytes when the tensor is written in its stored type and layout (None when it must be
    converted)."""
    return np.ascontiguousarray(raw_array(t, rows)) if t.dtype == d and not needs_permute(ckpt, name) else None


def needs_permute(ckpt: Checkpoint, name: str) -> bool:
    """q/k rows of a checkpoint in Hugging Face's RoPE pairing, which GGUF stores permuted."""
    return not ckpt.rope_interleaved and name.endswith(("attn_q.weight", "attn_k.weight"))


def in_gguf_layout(ckpt: Checkpoint, name: str, arr: np.ndarray) -> np.ndarray:
    """A tensor's float values (or whole heads of its rows, as row_chunks gives them) in GGUF's row order: q/k
    permuted where needs_permute."""
    if not needs_permute(ckpt, name):
        return arr
    return permute_for_gguf(arr, arr.shape[0] // ckpt.config.head_dim)


def float_bytes(ckpt: Checkpoint, name: str, t: TensorInfo, d: DType, rows: slice) -> np.ndarray:
    """The stored bytes, or float tensors converted to F32/F16; quantized types need a codec (TensorBytes)."""
    same = as_stored(ckpt, name, t, d, rows)
    if same is not None:
        return same
    if d not in (DType.F32, DType.F16) or format_of(t.dtype).quantized:
        raise FrankenError(f"tensor {name}: writing {t.dtype.name} as {d.name} needs franken_rt.quant.tensors")
    x = in_gguf_layout(ckpt, name, float_array(t, rows))
    return np.ascontiguousarray(x, dtype="<f4" if d == DType.F32 else "<f2")


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
