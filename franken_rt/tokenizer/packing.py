"""Compact in-memory tables: a vocabulary's strings, bytes and numbers packed into few objects, and unpacked on
demand."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Sequence, Sized
from itertools import accumulate
from typing import Any


class _ByteTable:
    """Byte strings by index in one buffer plus offsets: a list of a vocabulary's 50k `bytes` objects would take
    ~50 bytes of object header each, for pieces ~5 bytes long."""

    __slots__ = ("_data", "_offsets")

    def __init__(self, items: Iterable[bytes]) -> None:
        items = list(items)
        self._data = b"".join(items)
        self._offsets = _offsets(items)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> bytes:
        if not 0 <= i < len(self._offsets) - 1:
            raise IndexError(i)
        return self._data[self._offsets[i]:self._offsets[i + 1]]


class _StrTable:
    """A list of str as one str plus offsets (as _ByteTable): `tolist()` gives back an equal list."""

    __slots__ = ("_data", "_offsets")

    def __init__(self, items: list[str]) -> None:
        self._data = "".join(items)
        self._offsets = _offsets(items)

    def tolist(self) -> list[str]:
        data, offsets = self._data, self._offsets
        return [data[a:b] for a, b in zip(offsets, offsets[1:])]


def _packed_keys(meta: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """What gives the `tokenizer.*` keys of `meta` back, keeping them packed meanwhile: as lists of Python objects
    the vocabulary arrays would hold ~10 MB for the rest of the run, and only a conversion ever asks for them."""
    keys = {k: _compact(v) for k, v in meta.items() if k.startswith("tokenizer.")}
    return lambda: {k: _expand(v) for k, v in keys.items()}


def _compact(value: Any) -> Any:
    """A metadata value with its long lists of str, int or float packed (see _expand); other values as they are."""
    if not isinstance(value, list) or len(value) < 64:
        return value
    if all(type(x) is str for x in value):
        return _StrTable(value)
    if all(type(x) is int for x in value):  # `type is`: a list of bool stays one
        return _int_array(value) or value
    if all(type(x) is float for x in value):
        return array("d", value)  # exact: Python floats are doubles
    return value


def _int_array(values: Sequence[int]) -> array | None:
    """`values` in the narrowest signed array that holds them (token types fit one byte each), or None."""
    for code in "bhiq":
        try:
            return array(code, values)
        except OverflowError:
            continue
    return None


def _offsets(items: Sequence[Sized]) -> array:
    """Where each item starts in the items joined, and where the last ends: 0, len(a), len(a) + len(b), ..."""
    ends = [0, *accumulate(map(len, items))]
    return array("I" if ends[-1] < 1 << 32 else "Q", ends)


def _expand(value: Any) -> Any:
    """The value _compact packed, as the list it was."""
    return value.tolist() if isinstance(value, (_StrTable, array)) else value
