"""Byte-level BPE (GGUF `gpt2`): GPT-2's byte alphabet, and two engines: the core's for GPT-2's split pattern
(digits apart or not), `tokenizers`' for Llama 3's."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from franken_rt.errors import FrankenError
from franken_rt.tokenizer.common import (
    CONTROL,
    NORMAL,
    USER_DEFINED,
    _one_line,
    _reraise_unless_engine_error,
    _run_engine,
    _special_splitter,
)
from franken_rt.tokenizer.pre_tokenizers import _PRE_FAMILIES, LLAMA3_SPLIT, _pre_family


@lru_cache(maxsize=1)
def _byte_to_char() -> dict[int, str]:
    """GPT-2's byte -> printable character table: printable Latin-1 stays, the rest move to U+0100+."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _byte_level_bytes(text: str) -> bytes | None:
    """The bytes a byte-level token spells, or None if it is not written in the byte alphabet."""
    to_byte = _char_to_byte()
    try:
        return bytes(to_byte[c] for c in text)
    except KeyError:
        return None


@lru_cache(maxsize=1)
def _char_to_byte() -> dict[str, int]:
    return {c: b for b, c in _byte_to_char().items()}


# Built at import, not at first use: that comes while a vocabulary is being read, and the tables' small objects
# would then sit among the vocabulary's strings and keep their allocator arenas after those are freed.
_char_to_byte()


def _bpe_from_gguf(
    meta: dict[str, Any], tokens: list[str], types: list[int] | None
) -> tuple[Callable[[str], list[int]], list[bytes], frozenset[int], frozenset[int]]:
    pre = meta.get("tokenizer.ggml.pre", "default")
    family = _pre_family(pre)
    if family is None:
        raise FrankenError(
            f"unsupported GGUF pre-tokenizer {pre!r} (supported: {', '.join(sorted(_PRE_FAMILIES))})"
        )
    merges = meta.get("tokenizer.ggml.merges")
    if not isinstance(merges, list) or len(merges) == 0:
        raise FrankenError("GGUF byte-level vocabulary has no merges (tokenizer.ggml.merges)")
    if not all(isinstance(m, str) for m in merges):
        raise FrankenError("GGUF tokenizer.ggml.merges is not an array of strings")
    types = types or [NORMAL] * len(tokens)

    pieces: list[bytes] = []
    for text, kind in zip(tokens, types, strict=True):
        spelled = _byte_level_bytes(text)
        # Special tokens, and the odd token a converter stored as raw text, stand for their own text.
        pieces.append(text.encode() if kind in (CONTROL, USER_DEFINED) or spelled is None else spelled)
    vocab, added = _byte_level_vocab(tokens, types)
    transparent = frozenset(i for i, k in enumerate(types) if k == CONTROL)
    if family in _NATIVE:
        encode = _native_byte_level(vocab, merges, added, isolate_digits=family == "digits+gpt2")
        return encode, pieces, transparent, frozenset()
    return _library_byte_level(vocab, merges, added, family), pieces, transparent, frozenset()


def _byte_level_vocab(tokens: list[str], types: Sequence[int]) -> tuple[dict[str, int], list[tuple[str, bool]]]:
    """What a byte-level BPE encoder is built from: each token text's id (the first, for a text given twice), and
    the (text, special) of the tokens matched whole in text (control and user-defined ones)."""
    vocab: dict[str, int] = {}
    added: list[tuple[str, bool]] = []
    for i, (text, kind) in enumerate(zip(tokens, types, strict=True)):
        if kind in (CONTROL, USER_DEFINED) and text:
            added.append((text, kind == CONTROL))
        vocab.setdefault(text, i)
    return vocab, added


# Pre-tokenizer families the core's byte-level BPE encodes (GPT-2's split pattern, digits apart or not); Llama 3's
# pattern goes through `tokenizers`.
_NATIVE = ("gpt2", "digits+gpt2")


def _native_byte_level(
    vocab: dict[str, int], merges: list[str], added: list[tuple[str, bool]], isolate_digits: bool
) -> Callable[[str], list[int]]:
    """An encoder on the core's byte-level BPE: the added tokens cut out of the text first (as `tokenizers` does),
    then GPT-2's split pattern and the merges. A byte without a token is dropped, as `tokenizers` drops it (SmolLM2
    has none for bytes that never occur in UTF-8, such as 0xC0)."""
    from franken_rt import _core  # only for the vocabularies it encodes: the tokenizer imports without the core

    to_char = _byte_to_char()
    byte_ids = [vocab.get(to_char[b], -1) for b in range(256)]
    triples = array("i")
    for m in merges:
        left, sep, right = m.partition(" ")
        ids = (vocab.get(left), vocab.get(right), vocab.get(left + right))
        if not sep or None in ids:
            raise FrankenError(f"invalid GGUF byte-level vocabulary: merge {m!r} is not two tokens of the vocabulary")
        triples.extend(ids)  # type: ignore[arg-type]
    bpe = _core.ByteLevelBpe(byte_ids, triples, isolate_digits)
    split = _special_splitter({text: vocab[text] for text, _ in added})

    def encode(text: str) -> list[int]:
        ids: list[int] = []
        for _, part in split(text):
            if isinstance(part, int):
                ids.append(part)
                continue
            try:
                utf8 = part.encode()
            except UnicodeEncodeError as exc:  # a lone surrogate: no bytes to tokenize
                raise FrankenError(f"cannot tokenize the text: {exc.reason} at character {exc.start}") from None
            ids += bpe.encode(utf8)
        return ids

    return encode


def _library_byte_level(
    vocab: dict[str, int], merges: list[str], added: list[tuple[str, bool]], family: str
) -> Callable[[str], list[int]]:
    """An encoder on `tokenizers`' BPE model, with the family's pre-tokenizer."""
    # `tokenizers` (~15 MiB with a vocabulary) only for the patterns the core does not encode
    from tokenizers import AddedToken, Regex, pre_tokenizers
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers.models import BPE

    try:
        # Llama 3's tokenizer.json (and llama.cpp) look a whole word up before merging.
        merge_pairs = [tuple(m.split(" ", 1)) for m in merges]
        model = BPE(vocab=vocab, merges=merge_pairs, ignore_merges=family == "llama3")
        tok = HfTokenizer(model)
        byte_level = pre_tokenizers.ByteLevel(
            add_prefix_space=False, trim_offsets=True, use_regex=family != "llama3"
        )
        if family == "digits+gpt2":
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_level]
            )
        elif family == "llama3":
            split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False)
            tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
        else:
            tok.pre_tokenizer = byte_level
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, special in added if special])
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, special in added if not special])
    except BaseException as exc:  # tokenizers raises its own Exception subclasses on bad merges, or panics
        _reraise_unless_engine_error(exc)
        raise FrankenError(f"invalid GGUF byte-level vocabulary: {_one_line(exc)}") from None

    def encode(text: str) -> list[int]:
        return _run_engine(lambda: tok.encode(text, add_special_tokens=False).ids)

    return encode
