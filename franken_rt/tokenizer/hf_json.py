"""A Hugging Face tokenizer.json, run by `tokenizers`, and described back as a GGUF vocabulary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from franken_rt.errors import FrankenError
from franken_rt.tokenizer.byte_level import _byte_level_bytes
from franken_rt.tokenizer.common import (
    _BYTE_PIECE,
    _MAX_ADDED_GAP,
    CONTROL,
    NORMAL,
    UNUSED,
    USER_DEFINED,
    _one_line,
    _reraise_unless_engine_error,
    _run_engine,
)
from franken_rt.tokenizer.pre_tokenizers import _GGUF_PRE_TOKENIZERS, _gguf_pre_tokenizer


class _HfJson:
    """An HF tokenizer.json, run by `tokenizers`; decoding table derived from its decoder."""

    default_add_bos = False
    default_bos = None
    default_eos = None

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as HfTokenizer  # only tokenizer.json needs it: off the GGUF runtime path

        try:
            source = path.read_text(encoding="utf-8")
            data = json.loads(source)
            self._tok = HfTokenizer.from_str(source)
        except BaseException as exc:  # OSError, JSON errors, tokenizers' own Exception or panic
            _reraise_unless_engine_error(exc)
            raise FrankenError(f"cannot read {path}: {_one_line(exc)}") from None
        vocab = self._tok.get_vocab(with_added_tokens=True)
        if not isinstance(data, dict) or max(vocab.values(), default=0) >= len(vocab) + _MAX_ADDED_GAP:
            raise FrankenError(f"{path}: token ids far beyond the size of the vocabulary")
        self.texts = [""] * (max(vocab.values(), default=-1) + 1)
        for text, i in vocab.items():
            self.texts[i] = text
        try:
            added = {int(t["id"]): bool(t.get("special")) for t in data.get("added_tokens") or []}
        except (AttributeError, KeyError, TypeError, ValueError):
            raise FrankenError(f"{path}: malformed added_tokens") from None
        if any(not 0 <= i < len(self.texts) for i in added):
            raise FrankenError(f"{path}: added_tokens ids lie outside the vocabulary")
        self.transparent = frozenset(i for i, special in added.items() if special)

        steps = _decoder_steps(data.get("decoder"))
        kinds = {s.get("type") for s in steps}
        # Sentencepiece style (Llama 2, Mistral): "▁" for spaces, <0xNN> byte pieces, and the first
        # space dropped by a Strip step or by Metaspace when it prepends one.
        metaspace = "Metaspace" in kinds or any(
            s.get("type") == "Replace" and s.get("content") == " " for s in steps
        )
        strip_first = any(
            (s.get("type") == "Strip" and s.get("start", 0) >= 1)
            or (s.get("type") == "Metaspace" and _metaspace_prepends(s))
            for s in steps
        )
        self._path = path
        model = data.get("model") or {}
        self.byte_level = model.get("type") == "BPE" and "ByteLevel" in kinds  # written to GGUF as `gpt2`
        self.pieces = []
        lead = set()
        for i, text in enumerate(self.texts):
            if i in added:
                piece = text.encode()
            elif "ByteLevel" in kinds:
                piece = _byte_level_bytes(text) or text.encode()
            elif metaspace:
                m = _BYTE_PIECE.fullmatch(text) if "ByteFallback" in kinds else None
                piece = bytes([int(m.group(1), 16)]) if m else text.replace("▁", " ").encode()
                if strip_first and text[:1] == "▁":
                    lead.add(i)
            else:  # e.g. WordPiece: no byte-level pieces, let the library spell each token
                piece = self._tok.decode([i], skip_special_tokens=False).encode()
            self.pieces.append(piece)
        self.lead_space = frozenset(lead)

    def encode(self, text: str) -> list[int]:
        return _run_engine(lambda: self._tok.encode(text, add_special_tokens=False).ids)

    def id_of(self, text: str | None) -> int | None:
        return None if text is None else self._tok.token_to_id(text)

    def gguf_vocab(self) -> dict[str, Any]:
        """GGUF `gpt2` vocabulary: tokens in id order (added ones included), their types, merges, pre-tokenizer."""
        data = json.loads(self._tok.to_str())  # what we encode with, rather than the file as it is now
        model = data.get("model") or {}
        pre = _gguf_pre_tokenizer(data.get("pre_tokenizer"))
        problem = None
        if not self.byte_level:
            problem = (
                f"it is not byte-level BPE (model {model.get('type')}, pre-tokenizer {_describe(pre)}),"
                " and there is no tokenizer.model beside it"
            )
        elif data.get("normalizer") is not None:
            problem = f"GGUF has no normalizer like its {_describe(data['normalizer'])}"
        elif model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            problem = "GGUF has no continuing_subword_prefix / end_of_word_suffix"
        elif pre not in _GGUF_PRE_TOKENIZERS.values():
            problem = f"GGUF names no pre-tokenizer like its {_describe(pre)}"
        if problem:
            raise FrankenError(f"{self._path} cannot be written as a GGUF vocabulary: {problem}")
        special = {t["id"]: bool(t.get("special")) for t in data.get("added_tokens") or []}
        tokens, types = [], []
        for i, text in enumerate(self.texts):
            if i in special:
                kind = CONTROL if special[i] else USER_DEFINED
            elif text:
                kind = NORMAL
            else:  # an id the file leaves out
                text, kind = f"[PAD{i}]", UNUSED
            tokens.append(text)
            types.append(kind)
        return {
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": next(name for name, p in _GGUF_PRE_TOKENIZERS.items() if p == pre),
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.merges": [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []],
            "tokenizer.ggml.unknown_token_id": self.id_of(model.get("unk_token")),
        }

    def probe_add_special(self, bos: int | None, eos: int | None) -> tuple[bool, bool]:
        """What the file's own post-processor adds around a sequence (used when the config does not say)."""
        ids = self._tok.encode("", add_special_tokens=True).ids
        add_bos = bos is not None and ids[:1] == [bos]
        add_eos = eos is not None and ids[-1:] == [eos] and len(ids) > int(add_bos)
        return add_bos, add_eos


def _describe(value: Any) -> str:
    """A pre-tokenizer or normalizer from tokenizer.json, short enough for an error message."""
    if isinstance(value, list):
        return " + ".join(_describe(v) for v in value) or "none"
    if not isinstance(value, dict):
        return repr(value)
    args = ", ".join(f"{k}={v!r}" for k, v in value.items() if k != "type")
    return f"{value.get('type')}({args})"


def _decoder_steps(decoder: Any) -> list[dict[str, Any]]:
    if not isinstance(decoder, dict):
        return []
    if decoder.get("type") == "Sequence":
        return [s for d in decoder.get("decoders", []) for s in _decoder_steps(d)]
    return [decoder]


def _metaspace_prepends(step: dict[str, Any]) -> bool:
    scheme = step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never")
    return scheme != "never"
