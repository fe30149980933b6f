"""Reading GGUF files: a bounds-checked header parser (every count, length and offset is checked against the file
before use) and the llama checkpoint built from it.

The `gguf` package's reader materializes every array element as a numpy object (5 s for SmolLM2's 49k-token
vocabulary); this parser reads the same header in a fraction of that, and the core maps the tensor data itself.
"""

from __future__ import annotations

import math
import mmap
import struct
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from franken_rt.checkpoint.layer_plan import PLAN_KEY, check_plan
from franken_rt.checkpoint.types import Checkpoint, DType, TensorInfo
from franken_rt.checkpoint.validate import check_tensors
from franken_rt.config import ModelConfig
from franken_rt.errors import FrankenError
from franken_rt.formats import format_of
from franken_rt.tokenizer import Tokenizer, import_engine

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
# Metadata array elements in one header, all arrays together: a vocabulary and its merges take under a million;
# the bound keeps a hostile header from making tens of millions of Python objects out of a file's bytes.
MAX_ARRAY_ELEMENTS = 1 << 23
MAX_ARRAY_DEPTH = 4  # arrays of arrays: llama files use none; a bound keeps a hostile file from recursing deep

# GGUF metadata value types: id -> (struct format, size) for the fixed-size ones.
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
            6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
# The same as `array` type codes, for arrays of them (the codes' sizes are the C types': these on every platform
# CPython runs on; tests/test_runtime_imports.py checks them against _SCALARS).
_ARRAY_CODES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    dtype_id: int
    shape: tuple[int, ...]  # outermost first (GGUF lists dims innermost first)
    offset: int             # absolute byte offset in the file


@dataclass(frozen=True)
class GGUFStrings:
    """A metadata array of strings, not decoded yet: its bytes as stored (checked: every length lies inside them)."""

    raw: bytes = field(repr=False)
    count: int

    def tolist(self) -> list[str]:
        cur = _Cursor(memoryview(self.raw), Path("GGUFStrings"))
        return [cur.string("string array") for _ in range(self.count)]


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: list[GGUFTensor]
    data_offset: int
    file_size: int


class _Cursor:
    """Reads little-endian values from a buffer, refusing to step past its end."""

    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path
        self.elements = 0  # metadata array elements read so far

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise FrankenError(f"{self.path}: truncated or corrupt GGUF header ({what} runs past the end of the file)")

    def scalar(self, fmt: str, size: int, what: str) -> Any:
        self.need(size, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return int(self.scalar("<I", 4, what))

    def u64(self, what: str) -> int:
        return int(self.scalar("<Q", 8, what))

    def string(self, what: str) -> str:
        n = self.u64(what)
        self.need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")  # token texts may hold raw bytes

    def skip_strings(self, count: int, what: str) -> GGUFStrings:
        """Check and step over `count` strings, kept undecoded."""
        start = self.pos
        for _ in range(count):
            n = self.u64(what)
            self.need(n, what)
            self.pos += n
        return GGUFStrings(bytes(self.buf[start:self.pos]), count)

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.scalar(*_SCALARS[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            etype, count = self.u32(what), self.u64(what)
            self.elements += count
            if self.elements > MAX_ARRAY_ELEMENTS:
                raise FrankenError(f"{self.path}: corrupt GGUF header (absurd array length in {what})")
            if etype in _SCALARS:
                size = _SCALARS[etype][1]
                self.need(count * size, what)
                values = _little_endian(_ARRAY_CODES[etype], self.buf[self.pos:self.pos + count * size])
                self.pos += count * size
                return [v != 0 for v in values] if etype == 7 else values.tolist()
            if etype == _STRING:
                self.need(count * 8, what)  # each string needs at least its length field
                if depth == 0:
                    return self.skip_strings(count, what)
                return [self.string(what) for _ in range(count)]
            if etype == _ARRAY:
                if depth >= MAX_ARRAY_DEPTH:
                    raise FrankenError(f"{self.path}: corrupt GGUF header (arrays nested too deep in {what})")
                self.need(count * 12, what)
                return [self.value(_ARRAY, what, depth + 1) for _ in range(count)]
            raise FrankenError(f"{self.path}: unknown GGUF array element type {etype} in {what}")
        raise FrankenError(f"{self.path}: unknown GGUF value type {vtype} in {what}")


def read_header(path: Path, lazy_strings: bool = False) -> GGUFHeader:
    """Parse and validate a GGUF file's header and tensor table; the tensor data is not touched.

    `lazy_strings`: metadata arrays of strings come as GGUFStrings (`.tolist()` decodes them) rather than lists.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < 24:
                raise FrankenError(f"{path}: not a GGUF file (too short)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                with memoryview(mm) as buf:
                    header = _parse(buf, path, size)
    except OSError as e:
        raise FrankenError(f"cannot read {path}: {e.strerror or e}") from None
    if not lazy_strings:
        # Decoded after the tensor table, whose objects outlive the strings (see _read_tokenizer for why it matters).
        for key, value in header.metadata.items():
            if isinstance(value, GGUFStrings):
                header.metadata[key] = value.tolist()
    return header


def _parse(buf: memoryview, path: Path, size: int) -> GGUFHeader:
    if bytes(buf[:4]) != GGUF_MAGIC:
        raise FrankenError(f"{path}: not a GGUF file (bad magic)")
    cur = _Cursor(buf, path)
    cur.pos = 4
    version = cur.u32("version")
    if version not in (2, 3):
        raise FrankenError(f"{path}: unsupported GGUF version {version}")
    n_tensors, n_kv = cur.u64("tensor count"), cur.u64("metadata count")
    # Each entry takes at least 8 bytes of the file: bound the counts before looping on them.
    if n_tensors > size // 24 or n_kv > size // 12:
        raise FrankenError(f"{path}: corrupt GGUF header (absurd tensor or metadata count)")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string("metadata key")
        if key in meta:
            raise FrankenError(f"{path}: corrupt GGUF header (metadata key {key!r} appears twice)")
        meta[key] = cur.value(cur.u32(f"type of {key}"), key)

    alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1) or alignment > 1 << 20:
        raise FrankenError(f"{path}: bad general.alignment {alignment!r}")

    raw: list[tuple[str, int, tuple[int, ...], int]] = []
    for i in range(n_tensors):
        name = cur.string(f"tensor {i} name")
        n_dims = cur.u32(f"tensor {name} rank")
        if not 1 <= n_dims <= MAX_DIMS:
            raise FrankenError(f"{path}: tensor {name} has {n_dims} dimensions")
        dims = [cur.u64(f"tensor {name} shape") for _ in range(n_dims)]
        if any(d == 0 or d > 1 << 40 for d in dims):
            raise FrankenError(f"{path}: tensor {name} has an absurd shape {dims}")
        dtype_id = cur.u32(f"tensor {name} type")
        offset = cur.u64(f"tensor {name} offset")
        raw.append((name, dtype_id, tuple(reversed(dims)), offset))

    data_offset = -(-cur.pos // alignment) * alignment
    tensors = [GGUFTensor(n, t, s, data_offset + off) for n, t, s, off in raw]
    _check_tensor_extents(tensors, path, size, alignment, data_offset)
    return GGUFHeader(version, meta, tensors, data_offset, size)


def _check_tensor_extents(tensors: list[GGUFTensor], path: Path, size: int, alignment: int, data_offset: int) -> None:
    """Known types: whole blocks, aligned, inside the file and not overlapping each other."""
    extents = []
    names = set()
    for t in tensors:
        if t.name in names:
            raise FrankenError(f"{path}: tensor {t.name} appears twice")
        names.add(t.name)
        if (t.offset - data_offset) % alignment:
            raise FrankenError(f"{path}: tensor {t.name} is not aligned to {alignment} bytes")
        try:
            dtype = DType(t.dtype_id)
        except ValueError:
            continue  # an unsupported type is reported when (and only if) the model needs that tensor
        block, block_bytes = format_of(dtype).block_elems, format_of(dtype).block_bytes
        if t.shape[-1] % block:
            raise FrankenError(f"{path}: tensor {t.name}: row of {t.shape[-1]} is not whole {dtype.name} blocks")
        n_bytes = math.prod(t.shape) // block * block_bytes  # Python integers: a hostile shape cannot wrap
        if t.offset + n_bytes > size:
            raise FrankenError(f"{path}: tensor {t.name} runs past the end of the file")
        extents.append((t.offset, t.offset + n_bytes, t.name))
    extents.sort()
    for (_, end, a), (start, _, b) in zip(extents, extents[1:]):
        if start < end:
            raise FrankenError(f"{path}: tensors {a} and {b} overlap")


def read_gguf(path: Path) -> Checkpoint:
    """A llama-architecture GGUF file as a Checkpoint."""
    path = Path(path)
    header = read_header(path, lazy_strings=True)  # the vocabulary is decoded last: see _read_tokenizer
    meta = header.metadata
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise FrankenError(f"{path}: unsupported architecture {arch!r} (franken-rt runs 'llama')")
    tensors: dict[str, TensorInfo] = {}
    for t in header.tensors:
        try:
            dtype = DType(t.dtype_id)
        except ValueError:
            raise FrankenError(f"{path}: tensor {t.name} has unsupported type id {t.dtype_id}") from None
        tensors[t.name] = TensorInfo(t.name, path, t.offset, dtype, t.shape)
    if "token_embd.weight" not in tensors:
        raise FrankenError(f"{path}: missing tensor token_embd.weight")
    vocab = tensors["token_embd.weight"].shape[0]
    config = ModelConfig.from_gguf(meta, vocab_size=vocab, tie_embeddings="output.weight" not in tensors)
    freqs = tensors.pop("rope_freqs.weight", None)
    if freqs is not None:  # Llama 3.1 scaling stored as per-frequency divisors
        config = _with_rope_freqs(config, freqs)
    plan = None
    if PLAN_KEY in meta:
        plan = check_plan(meta[PLAN_KEY], config.n_layers, where=f"{path}: {PLAN_KEY}")
    # The tokenizer.* keys are left out: tokenizer.gguf_metadata() reads them from the file again.
    metadata = {k: _decoded(v) for k, v in meta.items() if not k.startswith("tokenizer.")}
    tokenizer = _read_tokenizer(meta, path)
    ckpt = Checkpoint(
        config=config,
        tensors=tensors,
        tokenizer=tokenizer,
        rope_interleaved=True,
        source=path,
        metadata=metadata,
        layer_plan=plan,
    )
    check_tensors(ckpt)
    return ckpt


def _decoded(value: Any) -> Any:
    return value.tolist() if isinstance(value, GGUFStrings) else value


def _read_tokenizer(meta: dict[str, Any], path: Path) -> Tokenizer:
    """The tokenizer of `path`'s header read with lazy_strings, made after every other object that outlives the
    load.

    Its vocabulary and merges decode to ~100k small strings, freed once the tokenizer is built. Python's allocator
    gives a 1 MiB arena back to the system only when all of it is free: an object made while the strings exist
    lands among them and keeps their arenas resident (~1 MiB each) for the rest of the run.
    """
    # A module imported later would make such objects too.
    import_engine(meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "default"))
    keys = _tokenizer_keys_reader(path)
    return Tokenizer.from_gguf_metadata({k: _decoded(v) for k, v in meta.items() if k.startswith("tokenizer.")},
                                        gguf_keys=keys)


def _tokenizer_keys_reader(path: Path) -> Callable[[], dict[str, Any]]:
    """What gives a GGUF tokenizer's `tokenizer.*` keys back (for a conversion): the file's header read again,
    rather than the keys kept in memory (~4 MiB for SmolLM2's, that a generation never uses). Refuses a file
    that is no longer the one the model was loaded from."""
    stamp = _file_stamp(path)

    def read() -> dict[str, Any]:
        if _file_stamp(path) != stamp:
            raise FrankenError(f"{path} has changed since the model was loaded: cannot read its tokenizer again")
        return {k: v for k, v in read_header(path).metadata.items() if k.startswith("tokenizer.")}

    return read


def _file_stamp(path: Path) -> tuple[int, ...]:
    try:
        st = path.stat()
    except OSError as e:
        raise FrankenError(f"cannot read {path}: {e.strerror or e}") from None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _with_rope_freqs(config: ModelConfig, t: TensorInfo) -> ModelConfig:
    if t.dtype != DType.F32 or t.shape != (config.head_dim // 2,):
        raise FrankenError(f"{t.file}: tensor rope_freqs.weight must be F32 of {config.head_dim // 2} values")
    try:
        with open(t.file, "rb") as f:
            f.seek(t.offset)
            raw = f.read(t.nbytes)
    except OSError as e:
        raise FrankenError(f"cannot read {t.file}: {e.strerror or e}") from None
    if len(raw) != t.nbytes:  # the header check put it inside the file; the file may have shrunk since
        raise FrankenError(f"{t.file}: tensor rope_freqs.weight runs past the end of the file")
    factors = _little_endian("f", raw).tolist()
    if not all(math.isfinite(x) and x > 0 for x in factors):
        raise FrankenError(f"{t.file}: tensor rope_freqs.weight holds non-positive or non-finite factors")
    return replace(config, rope_freq_factors=tuple(factors))


def _little_endian(code: str, raw: bytes | memoryview) -> array:
    """GGUF's little-endian values of `array` type `code` (a copy of `raw`, in this machine's byte order)."""
    values = array(code)
    values.frombytes(raw)
    if sys.byteorder == "big":
        values.byteswap()
    return values
