"""The Tokenizer: encode, decode, streaming and chat template over whichever engine the vocabulary needs.

`Tokenizer.gguf_metadata()` describes the vocabulary back as GGUF `tokenizer.*` keys, written the way llama.cpp's
converter writes them (`llama` for sentencepiece, `gpt2` for byte-level BPE), so that llama.cpp and
`Tokenizer.from_gguf_metadata` tokenize as this tokenizer does.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from franken_rt.config import _is_int
from franken_rt.errors import FrankenError
from franken_rt.tokenizer.byte_level import _NATIVE, _bpe_from_gguf
from franken_rt.tokenizer.chat_template import _compile_chat_template, _pick_template
from franken_rt.tokenizer.common import _NON_PIECE_SCORE, CONTROL, UNUSED, _one_line
from franken_rt.tokenizer.hf_json import _HfJson
from franken_rt.tokenizer.packing import _ByteTable, _packed_keys
from franken_rt.tokenizer.pre_tokenizers import _pre_family
from franken_rt.tokenizer.sentencepiece import _HfSentencePiece, _spm_from_gguf

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
# Ids that end a turn (GGUF tokenizer.ggml.eot_token_id) or a message (eom) when writing GGUF.
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<EOT>")
_EOM_TEXTS = ("<|eom_id|>",)


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
        import jinja2  # only a chat prompt needs it: kept off a plain generation's path

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
    try:  # importing the engine, before the vocabulary is decoded, is this function's whole job
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


def _end_ids(
    declared: Sequence[int | None], texts: Sequence[str], specials: set[int] | frozenset[int]
) -> list[int]:
    """Declared end-of-generation ids first, then the well-known end-of-turn control tokens."""
    ids = [i for i in declared if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(texts)]
    ids += sorted(i for i in specials if 0 <= i < len(texts) and texts[i] in _END_OF_TURN_TEXTS)
    return list(dict.fromkeys(ids))


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
