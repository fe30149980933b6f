"""What the tokenizer's engines share: the token types, constants of vocabularies, the splitter that cuts special
tokens out of text, and the handling of the engines' errors."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from franken_rt.errors import FrankenError

# Token types, shared by GGUF `tokenizer.ggml.token_type` and sentencepiece's ModelProto.SentencePiece.Type.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# Score llama.cpp's converter gives tokens that are not sentencepiece pieces (added and padding tokens).
_NON_PIECE_SCORE = -1000.0
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
# How far past the end of a vocabulary an added token's id may lie (ids in between become unused tokens).
_MAX_ADDED_GAP = 1 << 16


def _special_splitter(specials: dict[str, int]) -> Callable[[str], Iterator[tuple[int, str | int]]]:
    """Cuts text into (offset, plain text) and (offset, special id) parts, longest special first."""
    pattern = (
        re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
        if specials
        else None
    )

    def split(text: str) -> Iterator[tuple[int, str | int]]:
        pos = 0
        if pattern is not None:
            for m in pattern.finditer(text):
                if m.start() > pos:
                    yield pos, text[pos : m.start()]
                yield m.start(), specials[m.group()]
                pos = m.end()
        if pos < len(text):
            yield pos, text[pos:]

    return split


def _reraise_unless_engine_error(exc: BaseException) -> None:
    """Re-raise `exc` unless it is an error of a tokenizer engine: an Exception, or a Rust panic of `tokenizers`
    (pyo3's PanicException derives from BaseException), which a hostile tokenizer file can trigger."""
    if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
        raise exc


def _run_engine(call: Callable[[], list[int]]) -> list[int]:
    """Encoding with `tokenizers`: its panics on a broken vocabulary become FrankenError."""
    try:
        return call()
    except BaseException as exc:
        _reraise_unless_engine_error(exc)
        raise FrankenError(f"the tokenizer failed: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
