"""Sentencepiece vocabularies (GGUF `llama`, HF `tokenizer.model`), encoded by `sentencepiece`.

Sentencepiece semantics follow transformers' `LlamaTokenizer` (legacy=False), which is also what
transformers builds for a GGUF `llama` vocabulary: special tokens in the text are matched whole, the
text is not normalized, and a dummy-prefix space is added only to text at the very start of the input,
and not when that text already starts with a space. (`sentencepiece` itself and llama.cpp would add it
to every piece of text after a special token too, and double a leading space; `legacy: true` in
tokenizer_config.json selects the former.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from franken_rt.config import _is_int
from franken_rt.errors import FrankenError
from franken_rt.tokenizer.common import (
    _BYTE_PIECE,
    _MAX_ADDED_GAP,
    _NON_PIECE_SCORE,
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    _one_line,
    _special_splitter,
)
from franken_rt.tokenizer.protobuf import _pb_bytes, _pb_fields, _pb_float, _pb_int

# Normalization happens before sentencepiece sees the text (i.e. none, like transformers and llama.cpp):
# NormalizerSpec{name: "identity", add_dummy_prefix: false, remove_extra_whitespaces: false,
# escape_whitespaces: true}. The dummy prefix is added by _SentencePieceEncoder, only where it belongs.
_NORMALIZER = _pb_bytes(3, _pb_bytes(1, b"identity") + _pb_int(3, 0) + _pb_int(4, 0) + _pb_int(5, 1))


class _SentencePieceEncoder:
    def __init__(
        self, source: str, proto: bytes, specials: dict[str, int], add_prefix: bool, prefix_every_part: bool
    ) -> None:
        import sentencepiece  # only sentencepiece vocabularies need it

        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
        except Exception as exc:  # RuntimeError/OSError with sentencepiece's own message
            raise FrankenError(f"{source}: invalid sentencepiece vocabulary: {_one_line(exc)}") from None
        self._split = _special_splitter(specials)
        self._add_prefix = add_prefix
        self._prefix_every_part = prefix_every_part

    def __call__(self, text: str) -> list[int]:
        ids: list[int] = []
        for offset, part in self._split(text):
            if isinstance(part, int):
                ids.append(part)
                continue
            if (
                self._add_prefix
                and (offset == 0 or self._prefix_every_part)
                and not part.startswith((" ", "▁"))
            ):
                part = " " + part
            ids += self._sp.encode(part)
        return ids


def _spm_tables(
    texts: list[str], types: Sequence[int], add_prefix: bool
) -> tuple[list[bytes], frozenset[int], frozenset[int], dict[str, int]]:
    """pieces, transparent ids, dummy-prefix ids and the specials matched whole in text."""
    pieces: list[bytes] = []
    lead: set[int] = set()
    specials: dict[str, int] = {}
    for i, (text, kind) in enumerate(zip(texts, types, strict=True)):
        m = _BYTE_PIECE.fullmatch(text) if kind == BYTE else None
        if m:
            pieces.append(bytes([int(m.group(1), 16)]))
        elif kind in (CONTROL, UNKNOWN):
            pieces.append(text.encode())
        else:
            pieces.append(text.replace("▁", " ").encode())
            if add_prefix and text[:1] == "▁":
                lead.add(i)
        if kind in (UNKNOWN, CONTROL, USER_DEFINED) and text:
            specials.setdefault(text, i)
    transparent = frozenset(i for i, k in enumerate(types) if k == CONTROL)
    return pieces, transparent, frozenset(lead), specials


def _spm_from_gguf(
    meta: dict[str, Any],
    tokens: list[str],
    types: list[int] | None,
    bos: int | None,
    eos: int | None,
    unk: int | None,
) -> tuple[Callable[[str], list[int]], list[bytes], frozenset[int], frozenset[int]]:
    """A sentencepiece BPE model serialized from the GGUF vocabulary, so encoding is sentencepiece's."""
    n = len(tokens)
    scores = meta.get("tokenizer.ggml.scores")
    scores = [0.0] * n if scores is None else scores
    if not isinstance(scores, list) or not all(isinstance(x, (int, float)) for x in scores):
        raise FrankenError("GGUF tokenizer.ggml.scores is not an array of numbers")
    if len(scores) != n:
        raise FrankenError(f"GGUF tokenizer.ggml.scores has {len(scores)} entries for {n} tokens")
    if types is None:  # old files: infer what the converter would have written
        types = [
            CONTROL
            if i in (bos, eos)
            else UNKNOWN
            if i == unk
            else BYTE
            if _BYTE_PIECE.fullmatch(t)
            else NORMAL
            for i, t in enumerate(tokens)
        ]
    types = [k if k in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE) else NORMAL for k in types]
    if UNKNOWN not in types:
        if unk is None:
            raise FrankenError("GGUF sentencepiece vocabulary has no unknown token")
        types[unk] = UNKNOWN  # sentencepiece refuses a model without one
    byte_pieces = {t for t, k in zip(tokens, types, strict=True) if k == BYTE}
    byte_fallback = all(f"<0x{b:02X}>" in byte_pieces for b in range(256))

    # ModelProto{1: pieces, 2: TrainerSpec, 3: NormalizerSpec}; SentencePiece{1: piece, 2: score, 3: type}.
    proto = bytearray()
    for text, score, kind in zip(tokens, scores, types, strict=True):
        proto += _pb_bytes(1, _pb_bytes(1, text.encode()) + _pb_float(2, float(score)) + _pb_int(3, kind))
    # TrainerSpec{3: model_type BPE=2, 4: vocab_size, 35: byte_fallback, 40-43: unk/bos/eos/pad ids}.
    pad = meta.get("tokenizer.ggml.padding_token_id")
    pad = pad if _is_int(pad) and 0 <= pad < n else None
    trainer = _pb_int(3, 2) + _pb_int(4, n) + _pb_int(35, int(byte_fallback))
    for field, value in ((40, types.index(UNKNOWN)), (41, bos), (42, eos), (43, pad)):
        trainer += _pb_int(field, -1 if value is None else int(value))
    proto += _pb_bytes(2, trainer) + _NORMALIZER

    add_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    pieces, transparent, lead, specials = _spm_tables(tokens, types, add_prefix)
    encoder = _SentencePieceEncoder(
        "GGUF metadata", bytes(proto), specials, add_prefix, prefix_every_part=False
    )
    return encoder, pieces, transparent, lead


class _HfSentencePiece:
    """An HF folder with only tokenizer.model (plus tokenizer_config.json's added tokens)."""

    default_add_bos = True  # LlamaTokenizer's default

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        try:
            model = path.read_bytes()
            texts, scores, types, proto, add_prefix, normalizer = self._read(model)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise FrankenError(f"cannot read {path}: {_one_line(exc)}") from None
        self._path = path
        # A normalizer that changes text (sentencepiece's own default, nmt_nfkc with extra whitespace removed, for
        # one): the folder is tokenized as sentencepiece itself does, its model as it is, dummy prefix included;
        # GGUF cannot carry it (gguf_vocab refuses).
        self.normalizer = normalizer
        if normalizer:
            proto, add_prefix = model, False
        if config.get("add_prefix_space") is not None:  # null, as transformers saves it, means unset
            add_prefix = bool(config["add_prefix_space"])
        self.pieces, self.transparent, self.lead_space, specials = _spm_tables(texts, types, add_prefix)
        # Tokens tokenizer_config adds on top of the sentencepiece vocabulary (e.g. a pad token at 32000).
        try:
            added = sorted(
                (int(k), v["content"], bool(v.get("special")))
                for k, v in (config.get("added_tokens_decoder") or {}).items()
            )
            # Added ids extend the vocabulary a little; a far-away id would size a huge table.
            if any(not 0 <= i < len(texts) + _MAX_ADDED_GAP or not isinstance(c, str) for i, c, _ in added):
                raise ValueError("token id out of range")
        except (AttributeError, KeyError, TypeError, ValueError):
            raise FrankenError(
                f"{path.parent / 'tokenizer_config.json'}: malformed added_tokens_decoder"
            ) from None
        self._vocab = (texts, scores, types, added, add_prefix)  # for gguf_vocab
        for token_id, content, special in added:
            if token_id >= len(self.pieces):
                self.pieces += [b""] * (token_id - len(self.pieces)) + [content.encode()]
                if special:
                    self.transparent = self.transparent | {token_id}
            if content:
                specials[content] = token_id
        self.texts = [p.decode("utf-8", errors="replace") for p in self.pieces]
        self.texts[: len(texts)] = texts
        self._ids = {t: i for i, t in reversed(list(enumerate(self.texts)))}
        legacy = bool(config.get("legacy", False))
        self.encode = _SentencePieceEncoder(str(path), proto, specials, add_prefix, legacy)
        sp = self.encode._sp
        self.default_bos = sp.bos_id() if sp.bos_id() >= 0 else None
        self.default_eos = sp.eos_id() if sp.eos_id() >= 0 else None

    def gguf_vocab(self) -> dict[str, Any]:
        """GGUF `llama` vocabulary: the model's pieces, scores and types, then tokenizer_config's added tokens."""
        if self.normalizer:
            raise FrankenError(
                f"{self._path} cannot be written as a GGUF vocabulary: its sentencepiece normalizer "
                f"({self.normalizer}) changes text before tokenizing, and GGUF readers (llama.cpp, franken-rt) do not "
                "normalize, so runs of spaces, tabs and compatibility characters would be tokenized differently")
        texts, scores, types, added, add_prefix = self._vocab
        tokens, scores, types = list(texts), list(scores), list(types)
        for token_id, content, special in added:
            if token_id >= len(tokens):
                gap = range(len(tokens), token_id)
                tokens += [f"[PAD{i}]" for i in gap] + [content]
                scores += [_NON_PIECE_SCORE] * (len(gap) + 1)
                types += [UNUSED] * len(gap) + [CONTROL if special else USER_DEFINED]
            elif types[token_id] == NORMAL and content:  # a piece the config makes a special token
                tokens[token_id] = content
                types[token_id] = CONTROL if special else USER_DEFINED
        return {
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.unknown_token_id": types.index(UNKNOWN) if UNKNOWN in types else None,
            "tokenizer.ggml.add_space_prefix": add_prefix,
        }

    @staticmethod
    def _read(model: bytes) -> tuple[list[str], list[float], list[int], bytes, bool, str]:
        """Pieces, scores, types, the model with our normalizer in place of its own, its add_dummy_prefix, and a
        description of its normalizer if that changes text ("" for identity, which only escapes spaces)."""
        texts: list[str] = []
        scores: list[float] = []
        types: list[int] = []
        rest = bytearray()
        add_prefix = True
        normalizer = ""
        for field, value, raw in _pb_fields(model):
            if field == 1 and isinstance(value, bytes):
                sub = {f: v for f, v, _ in _pb_fields(value)}
                text, score, kind = sub.get(1, b""), sub.get(2), sub.get(3, NORMAL)
                if not isinstance(text, bytes) or not isinstance(kind, int):
                    raise ValueError("malformed sentencepiece piece")
                texts.append(text.decode("utf-8"))
                scores.append(struct.unpack("<f", score)[0] if isinstance(score, bytes) and len(score) == 4 else 0.0)
                types.append(kind)
                rest += raw
            elif field == 3 and isinstance(value, bytes):
                spec = {f: v for f, v, _ in _pb_fields(value)}
                add_prefix = bool(spec.get(3, True))
                name = spec.get(1, b"")
                name = name.decode("utf-8", errors="replace") if isinstance(name, bytes) else "?"
                rules = spec.get(2, b"")  # precompiled_charsmap: the rules a named normalizer applies
                squeeze = bool(spec.get(4, True))  # remove_extra_whitespaces (sentencepiece's default: on)
                if name != "identity" and (rules or name) or squeeze:
                    normalizer = ", ".join([f"'{name or 'custom'}'"] * (name != "identity")
                                           + ["extra whitespace removed"] * squeeze)
            elif field != 5:  # 5 = denormalizer: not used for decoding either
                rest += raw
        if not texts:
            raise ValueError("no pieces: not a sentencepiece model")
        return texts, scores, types, bytes(rest) + _NORMALIZER, add_prefix, normalizer

    def id_of(self, text: str | None) -> int | None:
        return None if text is None else self._ids.get(text)

    def probe_add_special(self, bos: int | None, eos: int | None) -> tuple[bool, bool]:
        return self.default_add_bos, False
