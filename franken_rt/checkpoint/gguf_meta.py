"""GGUF key/value metadata as plain Python values (str, int, float, bool and lists of them)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType
from gguf.gguf_reader import ReaderField

from franken_rt.errors import FrankenError


def read_gguf_metadata(source: str | os.PathLike[str] | GGUFReader) -> dict[str, Any]:
    """Every metadata key of a GGUF file mapped to a Python value; arrays become lists.

    `source` may be an open `GGUFReader`, so a loader that also needs the tensor table parses the
    file once (the reader's own parsing is the slow part: seconds for a 50k-token vocabulary).
    The reader's pseudo-keys `GGUF.version`, `GGUF.tensor_count` and `GGUF.kv_count` are left out.
    """
    if isinstance(source, GGUFReader):
        reader = source
    else:
        try:
            reader = GGUFReader(source)
        except FileNotFoundError:
            raise FrankenError(f"no such file: {os.fspath(source)}") from None
        except Exception as exc:  # the reader raises ValueError, struct/IndexError... on a bad file
            raise FrankenError(f"not a readable GGUF file: {os.fspath(source)}: {exc}") from None
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            meta[key] = _field_value(field)
        except (UnicodeDecodeError, ValueError, IndexError) as exc:
            raise FrankenError(f"GGUF metadata key {key!r} is malformed: {exc}") from None
    return meta


def _field_value(field: ReaderField) -> Any:
    if not field.types:
        return None
    main = field.types[0]
    if main == GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode("utf-8")
    if main != GGUFValueType.ARRAY:
        return field.parts[-1].tolist()[0]
    sub = field.types[-1] if len(field.types) > 1 else None
    if sub is None:  # empty array: the element type is not even recorded
        return []
    if len(field.types) > 2:  # array of arrays: rare; the reader flattens them, so do the same
        return field.contents()
    if sub == GGUFValueType.STRING:
        parts = field.parts
        return [bytes(parts[i]).decode("utf-8") for i in field.data]
    # Each element is its own 1-item view; one concatenate + tolist beats 50k per-item .tolist() calls.
    parts = field.parts
    return np.concatenate([parts[i] for i in field.data]).tolist()
