"""Text <-> token ids for LLaMA-family models, from GGUF metadata or a Hugging Face folder.

Encoding is delegated to the reference engines so ids match what the model was trained on:
`sentencepiece` for sentencepiece vocabularies (GGUF `llama`, HF `tokenizer.model`) and HF `tokenizers`
for byte-level BPE (GGUF `gpt2`) and `tokenizer.json`. Decoding is our own: every vocabulary is reduced
to one byte string per id, which makes streaming exact (a token may end in the middle of a UTF-8
character) and behaves the same whichever engine encoded.

Sentencepiece semantics follow transformers' `LlamaTokenizer` (legacy=False), which is also what
transformers builds for a GGUF `llama` vocabulary: special tokens in the text are matched whole, the
text is not normalized, and a dummy-prefix space is added only to text at the very start of the input,
and not when that text already starts with a space. (`sentencepiece` itself and llama.cpp would add it
to every piece of text after a special token too, and double a leading space; `legacy: true` in
tokenizer_config.json selects the former.)

`Tokenizer.gguf_metadata()` describes the vocabulary back as GGUF `tokenizer.*` keys, written the way llama.cpp's
converter writes them (`llama` for sentencepiece, `gpt2` for byte-level BPE), so that llama.cpp and
`Tokenizer.from_gguf_metadata` tokenize as this tokenizer does.
"""

from __future__ import annotations

import codecs
import json
import re
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from datetime import datetime
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Any

from franken_rt.errors import FrankenError

# Token types, shared by GGUF `tokenizer.ggml.token_type` and sentencepiece's ModelProto.SentencePiece.Type.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Control tokens that end a turn in common chat formats; llama.cpp stops on these even when the file
# declares no eot/eom id, and so do we.
_END_OF_TURN_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|eom_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<EOT>",
    }
)

# Llama 3's split regex (from its tokenizer.json; llama.cpp `llama-bpe`).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> pre-tokenizer family. `default` is what converters write for an unrecognised
# tokenizer; like transformers we read it as plain GPT-2.
_PRE_FAMILIES = {
    "default": "gpt2",
    "gpt2": "gpt2",
    "gpt-2": "gpt2",
    "smollm": "digits+gpt2",
    "llama-bpe": "llama3",
    "llama3": "llama3",
    "llama-v3": "llama3",
}
# Ids that end a turn (GGUF tokenizer.ggml.eot_token_id) or a message (eom) when writing GGUF.
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<EOT>")
_EOM_TEXTS = ("<|eom_id|>",)
# Score llama.cpp's converter gives tokens that are not sentencepiece pieces (added and padding tokens).
_NON_PIECE_SCORE = -1000.0
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
# How far past the end of a vocabulary an added token's id may lie (ids in between become unused tokens).
_MAX_ADDED_GAP = 1 << 16


class Tokenizer:
    """Encode text to ids and decode ids to text, with the model's special tokens and chat template.

    Attributes: `vocab_size` (ids are 0..vocab_size-1), `bos_id`, `eos_ids` (every id that ends
    generation, the declared EOS first), `add_bos`/`add_eos` (what `encode(add_special=True)` adds) and
    `chat_template` (Jinja source, or None).
    """

    def __init__(
        self,
        *,
        encode_fn: Callable[[str], list[int]],
        pieces: list[bytes],
        transparent: frozenset[int],
        lead_space: frozenset[int],
        bos_id: int | None,
        eos_ids: list[int],
        add_bos: bool,
        add_eos: bool,
        chat_template: str | None,
        gguf_keys: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._encode_fn = encode_fn
        self._gguf_keys = gguf_keys  # builds the tokenizer.* GGUF keys (only when asked: it walks the vocabulary)
        self._pieces = _ByteTable(pieces)  # the bytes each id stands for
        self._transparent = transparent  # control tokens: do not count as the first visible piece
        self._lead_space = lead_space  # ids whose leading space is sentencepiece's dummy prefix
        self.vocab_size = len(pieces)
        self.bos_id = bos_id
        self.eos_ids = eos_ids
        self.add_bos = add_bos and bos_id is not None
        self.add_eos = add_eos and bool(eos_ids)
        self.chat_template = chat_template

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, eos_ids={self.eos_ids})"

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Ids for `text`; special tokens written in it (e.g. `<|im_start|>`) become their ids.

        With `add_special`, BOS (and EOS, for the rare model that wants it) are added as the model's
        tokenizer configuration says.
        """
        ids = self._encode_fn(text)
        if add_special:
            if self.add_bos:
                ids.insert(0, self.bos_id)  # type: ignore[arg-type]  # add_bos implies bos_id is set
            if self.add_eos:
                ids.append(self.eos_ids[0])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text `ids` stand for, special tokens included; invalid UTF-8 becomes U+FFFD."""
        out = bytearray()
        at_start = True
        for token_id in ids:
            piece, at_start = self._piece(token_id, at_start)
            out += piece
        return out.decode("utf-8", errors="replace")

    def gguf_metadata(self, vocab_size: int | None = None) -> dict[str, Any]:
        """The GGUF `tokenizer.*` keys that describe this tokenizer, as plain Python values.

        llama.cpp loads the vocabulary from them and tokenizes as this tokenizer does, and
        `Tokenizer.from_gguf_metadata` of the result encodes and decodes the same. A tokenizer read from GGUF
        gives back the keys it was built from. With `vocab_size` (the model's embedding rows), a shorter
        vocabulary is padded with unused `[PAD{id}]` tokens, as llama.cpp's converter does.
        """
        if self._gguf_keys is None:
            raise FrankenError("this tokenizer has no GGUF description")
        meta = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in self._gguf_keys().items()}
        tokens = meta["tokenizer.ggml.tokens"]
        if vocab_size is not None and vocab_size != len(tokens):
            if vocab_size < len(tokens):
                raise FrankenError(
                    f"the tokenizer has {len(tokens)} tokens, more than the model's vocabulary of {vocab_size}"
                )
            pads = [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
            if not set(pads).isdisjoint(tokens):
                raise FrankenError("cannot pad the vocabulary: it already holds [PAD<id>] tokens")
            tokens += pads
            if "tokenizer.ggml.token_type" in meta:
                meta["tokenizer.ggml.token_type"] += [UNUSED] * len(pads)
            if "tokenizer.ggml.scores" in meta:
                meta["tokenizer.ggml.scores"] += [_NON_PIECE_SCORE] * len(pads)
        return meta

    def stream(self) -> StreamDecoder:
        """A decoder fed one id at a time, for printing text while it is generated."""
        return StreamDecoder(self)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text for a conversation, rendered with the model's own Jinja chat template."""
        if not self.chat_template:
            raise FrankenError("this model has no chat template; give a plain prompt instead")
        import jinja2

        try:
            template = _compile_chat_template(self.chat_template)
            return template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self._text_of(self.bos_id),
                eos_token=self._text_of(self.eos_ids[0] if self.eos_ids else None),
            )
        except jinja2.TemplateError as exc:  # includes the template's own raise_exception(...)
            raise FrankenError(f"chat template: {exc}") from None

    def _text_of(self, token_id: int | None) -> str:
        return "" if token_id is None else self._pieces[token_id].decode("utf-8", errors="replace")

    def _piece(self, token_id: int, at_start: bool) -> tuple[bytes, bool]:
        """Bytes of one token, and whether we are still before the first visible piece."""
        if not 0 <= token_id < len(self._pieces):
            raise FrankenError(f"token id {token_id} is outside the vocabulary (0..{len(self._pieces) - 1})")
        piece = self._pieces[token_id]
        if at_start and token_id not in self._transparent:
            if token_id in self._lead_space:  # drop the space the encoder added, as sentencepiece does
                piece = piece[1:]
            at_start = False
        return piece, at_start

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_gguf_metadata(
        cls, meta: dict[str, Any], gguf_keys: Callable[[], dict[str, Any]] | None = None
    ) -> Tokenizer:
        """The tokenizer a GGUF file describes (`meta`: key -> value, as `gguf.read_header(path).metadata`).

        `gguf_keys` gives the `tokenizer.*` keys back when gguf_metadata() asks (a GGUF file's reader reads them
        from the file again); without it they are kept from `meta`, packed."""
        model = meta.get("tokenizer.ggml.model")
        if model is None:
            raise FrankenError("GGUF metadata has no tokenizer (tokenizer.ggml.model is missing)")
        tokens = meta.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, (list, tuple)) or not tokens:
            raise FrankenError("GGUF metadata has no vocabulary (tokenizer.ggml.tokens is missing or empty)")
        if not all(isinstance(t, str) for t in tokens):
            raise FrankenError("GGUF tokenizer.ggml.tokens is not an array of strings")
        tokens = list(tokens)
        n = len(tokens)
        types = meta.get("tokenizer.ggml.token_type")
        if types is not None:
            if not isinstance(types, list) or not all(_is_int(t) for t in types):
                raise FrankenError("GGUF tokenizer.ggml.token_type is not an array of integers")
            if len(types) != n:
                raise FrankenError(f"GGUF tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")

        def token_id(key: str, default: int | None = None) -> int | None:
            value = meta.get(f"tokenizer.ggml.{key}", default)
            if value is None or value == -1 or value == 0xFFFFFFFF:  # converters write -1 for "none"
                return None
            if not isinstance(value, int) or not 0 <= value < n:
                raise FrankenError(
                    f"GGUF tokenizer.ggml.{key} = {value!r} is not a token id (vocabulary of {n})"
                )
            return value

        chat_template = meta.get("tokenizer.chat_template")
        if chat_template is not None and not isinstance(chat_template, str):
            raise FrankenError("GGUF tokenizer.chat_template is not a string")
        if model == "llama":
            # llama.cpp's defaults for a sentencepiece vocabulary without these keys.
            bos, eos, unk = (
                token_id("bos_token_id", 1),
                token_id("eos_token_id", 2),
                token_id("unknown_token_id", 0),
            )
            parts = _spm_from_gguf(meta, tokens, types, bos, eos, unk)
            add_bos_default = True
        elif model == "gpt2":
            bos, eos = token_id("bos_token_id"), token_id("eos_token_id")
            parts = _bpe_from_gguf(meta, tokens, types)
            add_bos_default = False
        else:
            raise FrankenError(f"unsupported GGUF tokenizer model {model!r} (supported: 'llama', 'gpt2')")
        encode_fn, pieces, transparent, lead_space = parts

        declared = [eos, token_id("eot_token_id"), token_id("eom_token_id")]
        controls = {i for i, t in enumerate(types or ()) if t == CONTROL}
        return cls(
            encode_fn=encode_fn,
            pieces=pieces,
            transparent=transparent,
            lead_space=lead_space,
            bos_id=bos,
            eos_ids=_end_ids(declared, tokens, controls),
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default)),
            add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
            chat_template=chat_template or None,
            gguf_keys=gguf_keys or _packed_keys(meta),
        )

    @classmethod
    def from_hf_folder(cls, folder: Path) -> Tokenizer:
        """The tokenizer of a Hugging Face model folder (`tokenizer.json`, else `tokenizer.model`)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FrankenError(f"not a folder: {folder}")
        config = _read_json(folder / "tokenizer_config.json")
        special_map = _read_json(folder / "special_tokens_map.json")
        generation = _read_json(folder / "generation_config.json")

        def named(key: str) -> str | None:  # "<s>" or {"content": "<s>", ...}
            value = config.get(key, special_map.get(key))
            return value.get("content") if isinstance(value, dict) else value

        if (folder / "tokenizer.json").is_file():
            backend = _HfJson(folder / "tokenizer.json")
        elif (folder / "tokenizer.model").is_file():
            backend = _HfSentencePiece(folder / "tokenizer.model", config)
        else:
            raise FrankenError(f"{folder} has no tokenizer (neither tokenizer.json nor tokenizer.model)")

        bos, eos = backend.id_of(named("bos_token")), backend.id_of(named("eos_token"))
        if bos is None and named("bos_token") is None:
            bos = backend.default_bos
        if eos is None and named("eos_token") is None:
            eos = backend.default_eos
        gen_eos = generation.get("eos_token_id")
        declared = [eos, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])]
        if "add_bos_token" in config or "add_eos_token" in config:
            add_bos = bool(config.get("add_bos_token", backend.default_add_bos))
            add_eos = bool(config.get("add_eos_token", False))
        else:
            add_bos, add_eos = backend.probe_add_special(bos, eos)

        template_file = folder / "chat_template.jinja"  # newer transformers save the template here
        template = None
        if template_file.is_file():
            try:
                template = template_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise FrankenError(f"cannot read {template_file}: {_one_line(exc)}") from None
        chat_template = template or _pick_template(config.get("chat_template"))
        eos_ids = _end_ids(declared, backend.texts, backend.transparent)

        def gguf_keys() -> dict[str, Any]:
            vocab_backend: _HfJson | _HfSentencePiece = backend
            if isinstance(backend, _HfJson) and not backend.byte_level and (folder / "tokenizer.model").is_file():
                # A sentencepiece tokenizer.json (Llama 2, Mistral) goes to GGUF from its tokenizer.model,
                # as llama.cpp's converter does; the ids are the same.
                vocab_backend = _HfSentencePiece(folder / "tokenizer.model", config)
            keys = vocab_backend.gguf_vocab()
            texts = keys["tokenizer.ggml.tokens"]

            def first(candidates: Sequence[str]) -> int | None:
                return next((i for i in eos_ids if i < len(texts) and texts[i] in candidates), None)

            vocab_unk = keys.pop("tokenizer.ggml.unknown_token_id", None)
            unk = backend.id_of(named("unk_token"))
            ids = {
                "bos": bos,
                "eos": eos,
                "unknown": vocab_unk if unk is None else unk,
                "padding": backend.id_of(named("pad_token")),
                "eot": first(_EOT_TEXTS),
                "eom": first(_EOM_TEXTS),
            }
            for name, value in ids.items():
                if value is not None and value < len(texts):
                    keys[f"tokenizer.ggml.{name}_token_id"] = value
            keys["tokenizer.ggml.add_bos_token"] = add_bos and bos is not None
            keys["tokenizer.ggml.add_eos_token"] = add_eos and bool(eos_ids)
            if chat_template:
                keys["tokenizer.chat_template"] = chat_template
            return keys

        return cls(
            encode_fn=backend.encode,
            pieces=backend.pieces,
            transparent=backend.transparent,
            lead_space=backend.lead_space,
            bos_id=bos,
            eos_ids=eos_ids,
            add_bos=add_bos,
            add_eos=add_eos,
            chat_template=chat_template,
            gguf_keys=gguf_keys,
        )


def import_engine(model: Any, pre: Any) -> None:
    """Import the library that encodes for GGUF tokenizer `model` (`tokenizer.ggml.model`, with pre-tokenizer
    `pre`), ahead of reading the vocabulary (see gguf._read_tokenizer); from_gguf_metadata reports an unknown
    model or a missing library. GPT-2's split pattern needs none: the core encodes it."""
    try:
        if model == "gpt2" and _pre_family(pre) in _NATIVE:
            from franken_rt import _core  # noqa: F401
        elif model == "gpt2":
            import tokenizers.models  # noqa: F401
        elif model == "llama":
            import sentencepiece  # noqa: F401
    except ImportError:
        pass


class StreamDecoder:
    """Turns ids into text one at a time; text is returned once its UTF-8 bytes are complete."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = True

    def feed(self, token_id: int) -> str:
        """The text completed by this token ("" while a multi-byte character is still partial)."""
        piece, self._at_start = self._tokenizer._piece(token_id, self._at_start)
        return self._utf8.decode(piece)

    def flush(self) -> str:
        """Whatever is left (a dangling partial character becomes U+FFFD); the decoder can go on after."""
        rest = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return rest


# -------------------------------------------------------------------- helpers


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


def _end_ids(
    declared: Sequence[int | None], texts: Sequence[str], specials: set[int] | frozenset[int]
) -> list[int]:
    """Declared end-of-generation ids first, then the well-known end-of-turn control tokens."""
    ids = [i for i in declared if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(texts)]
    ids += sorted(i for i in specials if 0 <= i < len(texts) and texts[i] in _END_OF_TURN_TEXTS)
    return list(dict.fromkeys(ids))


def _pick_template(value: Any) -> str | None:
    """tokenizer_config's chat_template: a string, or a list of {name, template} (we want "default")."""
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        return named.get("default")
    return value if isinstance(value, str) and value else None


@lru_cache(maxsize=8)
def _compile_chat_template(source: str) -> Any:
    # The environment transformers renders chat templates in, so prompts come out byte-identical.
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: Any = None,
        separators: Any = None,
        sort_keys: bool = False,
    ):
        # Jinja's own tojson HTML-escapes <, >, & and '; templates expect plain JSON.
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FrankenError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise FrankenError(f"{path} is not a JSON object")
    return data


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


# -------------------------------------------------------------- sentencepiece


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # protobuf writes a negative int32 as its 64-bit two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _pb_bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _pb_int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _pb_float(field: int, value: float) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<f", value)


def _pb_fields(buf: bytes) -> Iterator[tuple[int, int | bytes, bytes]]:
    """(field number, value, the field's raw bytes) for each field of a protobuf message.

    Varints come back as int, everything else as bytes; enough to read and re-emit a ModelProto.
    """
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = _read_varint(buf, pos)
        wire = key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield key >> 3, value, buf[start:pos]


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("protobuf varint longer than 10 bytes")


# Normalization happens before sentencepiece sees the text (i.e. none, like transformers and llama.cpp):
# NormalizerSpec{name: "identity", add_dummy_prefix: false, remove_extra_whitespaces: false,
# escape_whitespaces: true}. The dummy prefix is added by _SentencePieceEncoder, only where it belongs.
_NORMALIZER = _pb_bytes(3, _pb_bytes(1, b"identity") + _pb_int(3, 0) + _pb_int(4, 0) + _pb_int(5, 1))


class _SentencePieceEncoder:
    def __init__(
        self, source: str, proto: bytes, specials: dict[str, int], add_prefix: bool, prefix_every_part: bool
    ) -> None:
        import sentencepiece

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
            texts, scores, types, proto, add_prefix = self._read(path.read_bytes())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise FrankenError(f"cannot read {path}: {_one_line(exc)}") from None
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
    def _read(model: bytes) -> tuple[list[str], list[float], list[int], bytes, bool]:
        """Pieces, scores, types, the model with our normalizer in place of its own, and its add_dummy_prefix."""
        texts: list[str] = []
        scores: list[float] = []
        types: list[int] = []
        rest = bytearray()
        add_prefix = True
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
                add_prefix = bool({f: v for f, v, _ in _pb_fields(value)}.get(3, True))
            elif field != 5:  # 5 = denormalizer: not used for decoding either
                rest += raw
        if not texts:
            raise ValueError("no pieces: not a sentencepiece model")
        return texts, scores, types, bytes(rest) + _NORMALIZER, add_prefix

    def id_of(self, text: str | None) -> int | None:
        return None if text is None else self._ids.get(text)

    def probe_add_special(self, bos: int | None, eos: int | None) -> tuple[bool, bool]:
        return self.default_add_bos, False


# ------------------------------------------------------------- byte-level BPE


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


def _pre_family(pre: Any) -> str | None:
    """The pre-tokenizer family of a GGUF `tokenizer.ggml.pre` value, None if unsupported."""
    return _PRE_FAMILIES.get(pre) if isinstance(pre, str) else None


# Pre-tokenizer families the core's byte-level BPE encodes (GPT-2's split pattern, digits apart or not); Llama 3's
# pattern goes through `tokenizers`.
_NATIVE = ("gpt2", "digits+gpt2")


def _native_byte_level(
    vocab: dict[str, int], merges: list[str], added: list[tuple[str, bool]], isolate_digits: bool
) -> Callable[[str], list[int]]:
    """An encoder on the core's byte-level BPE: the added tokens cut out of the text first (as `tokenizers` does),
    then GPT-2's split pattern and the merges. A byte without a token is dropped, as `tokenizers` drops it (SmolLM2
    has none for bytes that never occur in UTF-8, such as 0xC0)."""
    from franken_rt import _core

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
            split = pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False)
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


# ------------------------------------------------------------- tokenizer.json


class _HfJson:
    """An HF tokenizer.json, run by `tokenizers`; decoding table derived from its decoder."""

    default_add_bos = False
    default_bos = None
    default_eos = None

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as HfTokenizer

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


def _byte_level_step(use_regex: bool) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "use_regex": use_regex}


# tokenizer.ggml.pre -> the tokenizer.json pre-tokenizer it stands for (normalized by _gguf_pre_tokenizer).
_GGUF_PRE_TOKENIZERS = {
    "gpt2": [_byte_level_step(True)],
    "smollm": [{"type": "Digits", "individual_digits": True}, _byte_level_step(True)],
    "llama-bpe": [
        {"type": "Split", "pattern": {"Regex": _LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
        _byte_level_step(False),
    ],
}


def _gguf_pre_tokenizer(pre: Any) -> Any:
    """A tokenizer.json pre-tokenizer as a list of steps, keeping only the settings that change the split."""
    if not isinstance(pre, dict):
        return pre
    if pre.get("type") == "Sequence":
        return [s for p in pre.get("pretokenizers") or [] for s in _gguf_pre_tokenizer(p)]
    if pre.get("type") == "ByteLevel":  # trim_offsets only moves offsets
        return [_byte_level_step(bool(pre.get("use_regex", True))) | {"add_prefix_space": pre.get("add_prefix_space")}]
    return [pre]


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
