"""Tokenizer parity with transformers and sentencepiece, streaming decode, chat templates, and bad inputs.

Sentencepiece vocabularies are compared with transformers' `LlamaTokenizer` as it loads by default
(legacy=False: a dummy-prefix space only at the very start of the input, none after special tokens and
none doubled before a leading space); `legacy: true` in tokenizer_config.json is checked too. Against
`sentencepiece` itself, ids agree on text that neither starts with a space nor holds special tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from franken_rt.checkpoint.gguf import read_header
from franken_rt.errors import FrankenError
from franken_rt.eval.tiny_models import vocab_only_gguf
from franken_rt.tokenizer import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, Tokenizer

# Punctuation, digits, newlines, runs of spaces and tabs, accents, CJK, emoji (some split across tokens).
PARAGRAPH = (
    "The café on Müllerstraße opened in 1987; it sells 12345 croissants a year (3.5% more than 2023!).\n"
    "Prices:  €4.20 for two,   $5 for three... Ünïcödé façade, naïve coöperation.\n\n"
    "日本語のテキストも大丈夫です。Emoji: 🙂👍🏽 👨‍👩‍👧 — and \"quotes\", 'apostrophes', don't/won't/I'LL.\n"
    "\tTabs,\r\nCRLF and trailing spaces   \n"
    "def f(x):\n    return x**2 + 1  # comment\n"
)
SHORT_TEXTS = ["", " ", "a", "Hello world", " leading space", "12345", "x\n\ny", "🙂", "日本語"]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2? Answer in 日本語."},
    {"role": "assistant", "content": "四"},
    {"role": "user", "content": "Thanks!"},
]


# ---------------------------------------------------------------- SmolLM2 GGUF (byte-level BPE)


@pytest.fixture(scope="module")
def smollm_meta(smollm_gguf: Path) -> dict[str, Any]:
    return read_header(smollm_gguf).metadata


@pytest.fixture(scope="module")
def smollm(smollm_meta: dict[str, Any]) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(smollm_meta)


@pytest.fixture(scope="module")
def smollm_hf(smollm_gguf: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm_gguf.parent, gguf_file=smollm_gguf.name)


def test_gguf_metadata_matches_gguf_reader(smollm_gguf: Path, smollm_meta: dict[str, Any]) -> None:
    """Our header parser against the gguf package's reader (slow: seconds for the 49k-token vocabulary)."""
    from gguf import GGUFReader

    reader = GGUFReader(smollm_gguf)
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert sorted(smollm_meta) == sorted(keys)
    for key in keys:
        assert smollm_meta[key] == reader.fields[key].contents(), key
    assert len(smollm_meta["tokenizer.ggml.tokens"]) == 49152
    assert all(isinstance(t, str) for t in smollm_meta["tokenizer.ggml.tokens"][:100])
    assert isinstance(smollm_meta["tokenizer.ggml.token_type"][0], int)
    assert smollm_meta["tokenizer.ggml.add_bos_token"] is False
    assert isinstance(smollm_meta["llama.rope.freq_base"], float)


def test_smollm_ids_match_transformers(smollm: Tokenizer, smollm_hf: Any) -> None:
    for text in [PARAGRAPH, *SHORT_TEXTS, "<|im_start|>user\nhi<|im_end|>\n"]:
        ids = smollm.encode(text)
        assert ids == smollm_hf(text)["input_ids"], text
        assert smollm.decode(ids) == text
        assert smollm_hf.decode(ids) == text
    assert len(smollm.encode(PARAGRAPH)) > 100
    assert smollm.encode("12345") == [smollm_hf.convert_tokens_to_ids(d) for d in "12345"]


def test_smollm_digits_are_split_as_the_original_tokenizer_does(smollm: Tokenizer, smollm_hf: Any) -> None:
    # SmolLM2's tokenizer.json (and llama.cpp for pre "smollm") cut digits out before the GPT-2 regex, so
    # "\n   2" keeps its three spaces in one token. transformers' GGUF loader has no "smollm" pre-tokenizer
    # and splits "\n  " + " " + "2" instead: compare with its tokenizer given the original pre-tokenizer.
    from tokenizers import pre_tokenizers

    backend = smollm_hf.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    text = "x = f(\n   2,\n    31)\t7  42"
    ids = smollm.encode(text)
    assert ids == backend.encode(text, add_special_tokens=False).ids
    assert smollm.decode(ids) == text
    assert smollm_hf.convert_ids_to_tokens(ids[4:6]) == ["ĊĠĠĠ", "2"]


def test_smollm_special_tokens(smollm: Tokenizer, smollm_hf: Any) -> None:
    im_start, im_end = smollm_hf.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert smollm.vocab_size == 49152
    assert im_end in smollm.eos_ids
    assert smollm.eos_ids[0] == im_end  # the declared eos first
    assert smollm.bos_id == im_start and not smollm.add_bos
    assert smollm.encode("<|im_start|>assistant", add_special=True)[0] == im_start
    assert smollm.decode([im_start, im_end]) == "<|im_start|><|im_end|>"


def test_smollm_stream_decode(smollm: Tokenizer) -> None:
    ids = smollm.encode(PARAGRAPH)
    stream = smollm.stream()
    parts = [stream.feed(i) for i in ids]
    assert "".join(parts) + stream.flush() == smollm.decode(ids) == PARAGRAPH
    # 日本語 and the emoji are split inside characters: some tokens complete no text on their own.
    assert "" in parts
    assert all("\ufffd" not in p for p in parts)
    # A dangling partial character is reported by flush, not lost.
    first_byte = smollm.encode("🙂")[0]
    stream = smollm.stream()
    assert stream.feed(first_byte) == ""
    assert stream.flush() == "\ufffd"


def test_smollm_chat_template_matches_transformers(smollm: Tokenizer, smollm_hf: Any) -> None:
    for messages in (MESSAGES, MESSAGES[1:2]):
        for add in (True, False):
            ours = smollm.apply_chat_template(messages, add_generation_prompt=add)
            theirs = smollm_hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
            assert ours == theirs
    prompt = smollm.apply_chat_template(MESSAGES[1:2])
    assert prompt.endswith("<|im_start|>assistant\n")
    assert smollm.encode(prompt) == smollm_hf(prompt)["input_ids"]


def test_hf_folder_with_tokenizer_json(tmp_path: Path, smollm: Tokenizer, smollm_hf: Any) -> None:
    """transformers' save of the SmolLM2 tokenizer: tokenizer.json, tokenizer_config, chat_template.jinja."""
    from transformers import AutoTokenizer

    smollm_hf.save_pretrained(tmp_path)
    reference = AutoTokenizer.from_pretrained(tmp_path)
    tok = Tokenizer.from_hf_folder(tmp_path)
    assert (tok.vocab_size, tok.bos_id, tok.add_bos) == (smollm.vocab_size, smollm.bos_id, False)
    assert smollm.eos_ids[0] in tok.eos_ids
    for text in [PARAGRAPH, "<|im_start|>user\nhi<|im_end|>"]:
        ids = tok.encode(text)
        assert ids == reference(text)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.apply_chat_template(MESSAGES) == reference.apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True
    )


# ---------------------------------------------------------------- sentencepiece (byte fallback)


def _spm_gguf_meta(model: Path) -> dict[str, Any]:
    """The tokenizer metadata llama.cpp's converter writes for a sentencepiece model."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    n = sp.get_piece_size()
    types = [
        UNKNOWN if sp.is_unknown(i)
        else CONTROL if sp.is_control(i)
        else BYTE if sp.is_byte(i)
        else UNUSED if sp.is_unused(i)
        else NORMAL
        for i in range(n)
    ]
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
        "tokenizer.ggml.scores": [sp.get_score(i) for i in range(n)],
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": sp.bos_id(),
        "tokenizer.ggml.eos_token_id": sp.eos_id(),
        "tokenizer.ggml.unknown_token_id": sp.unk_id(),
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": True,
    }


# Starting with a space, or holding special tokens, is where transformers and sentencepiece differ.
SPM_TEXTS = [*SHORT_TEXTS, PARAGRAPH, "a</s>b c", "<s>x", "  two spaces", "x<unk>y"]


def _hf_folder(tmp_path: Path, spm_model: Path, **config: Any) -> Path:
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(spm_model, folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, **config}))
    return folder


@pytest.mark.parametrize("legacy", [False, True])
def test_spm_hf_folder_matches_llama_tokenizer(tmp_path: Path, spm_model: Path, legacy: bool) -> None:
    from transformers import LlamaTokenizer

    folder = _hf_folder(tmp_path, spm_model, legacy=legacy)
    reference = LlamaTokenizer.from_pretrained(folder)
    assert reference.legacy is legacy
    tok = Tokenizer.from_hf_folder(folder)
    assert tok.add_bos and tok.bos_id == 1 and tok.eos_ids == [2]
    for text in SPM_TEXTS:
        assert tok.encode(text) == reference(text)["input_ids"], text
    after_special = tok.encode("</s>b", add_special=False)
    assert reference.convert_ids_to_tokens(after_special)[1] == ("▁b" if legacy else "b")


def test_spm_folder_with_a_normalizer(tmp_path: Path) -> None:
    """A tokenizer.model whose normalizer changes text (nmt_nfkc, extra whitespace removed) is tokenized as
    sentencepiece itself does; GGUF cannot carry the normalization, so writing it is refused, naming it."""
    import sentencepiece as spm

    from franken_rt.eval.tiny_models import train_sentencepiece

    model = train_sentencepiece(tmp_path, normalizer="nmt_nfkc")
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(model, folder / "tokenizer.model")
    tok = Tokenizer.from_hf_folder(folder)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    for text in ("a  b\tc", "  leading and trailing  ", "Ｆｕｌｌ width ＡＢＣ ①", "x\t\t y\n\nz", PARAGRAPH):
        assert tok.encode(text, add_special=False) == sp.encode(text), text
    with pytest.raises(FrankenError, match="normalizer .'nmt_nfkc', extra whitespace removed"):
        tok.gguf_metadata()


def test_spm_gguf_matches_sentencepiece(spm_model: Path) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    meta = _spm_gguf_meta(spm_model)
    tok = Tokenizer.from_gguf_metadata(meta)
    assert tok.vocab_size == sp.get_piece_size() and tok.add_bos and tok.bos_id == 1
    byte_ids = {i for i, k in enumerate(meta["tokenizer.ggml.token_type"]) if k == BYTE}
    assert len(byte_ids) == 256
    for text in [PARAGRAPH, "Hello world", "naïve café 日本語 🙂 ½", "x\n\ny\t z"]:
        ids = tok.encode(text, add_special=False)
        assert ids == sp.encode(text), text
        assert tok.encode(text) == [1, *ids]
        assert tok.decode(ids) == sp.decode(ids) == text
    assert byte_ids & set(tok.encode("日本語 🙂")), "non-ASCII text should need byte fallback"
    # Special tokens are matched whole in text (sentencepiece alone would spell "</s>" out).
    assert tok.encode("a</s>b", add_special=False)[1] == 2


def test_spm_gguf_file_matches_transformers(tmp_path: Path, spm_model: Path) -> None:
    """Written as a GGUF file and loaded by transformers' GGUF support, the same ids come out."""
    from transformers import AutoTokenizer

    meta = _spm_gguf_meta(spm_model)
    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
    vocab_only_gguf(tmp_path / "spm.gguf", {
        "tokenizer.ggml.model": "llama", **{k: meta[k] for k in keys}, "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.add_bos_token": True,
    })

    reference = AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    tok = Tokenizer.from_gguf_metadata(read_header(tmp_path / "spm.gguf").metadata)
    for text in SPM_TEXTS:
        assert tok.encode(text) == reference(text)["input_ids"], text


def test_spm_decode_and_stream(spm_model: Path) -> None:
    tok = Tokenizer.from_gguf_metadata(_spm_gguf_meta(spm_model))
    ids = tok.encode(PARAGRAPH, add_special=False)
    stream = tok.stream()
    parts = [stream.feed(i) for i in ids]
    assert "".join(parts) + stream.flush() == tok.decode(ids) == PARAGRAPH
    assert "" in parts  # <0xE6> alone completes nothing
    # The dummy-prefix space goes once, at the start; control tokens are shown and do not count as start.
    hello = tok.encode("Hello", add_special=False)
    assert tok.decode(hello) == "Hello"
    assert tok.decode([1, *hello, 2]) == "<s>Hello</s>"
    assert tok.decode(hello + hello) == "Hello Hello"


def test_hf_folder_with_llama_tokenizer_json(tmp_path: Path, spm_model: Path) -> None:
    """A sentencepiece-style tokenizer.json (Metaspace, byte fallback) as transformers saves it."""
    from transformers import AutoTokenizer, LlamaTokenizer

    LlamaTokenizer.from_pretrained(_hf_folder(tmp_path, spm_model)).save_pretrained(tmp_path / "json")
    reference = AutoTokenizer.from_pretrained(tmp_path / "json")
    tok = Tokenizer.from_hf_folder(tmp_path / "json")
    assert tok.add_bos and tok.bos_id == 1 and 2 in tok.eos_ids
    for text in SPM_TEXTS:
        ids = tok.encode(text)
        assert ids == reference(text)["input_ids"], text
        assert tok.decode(ids[1:]) == reference.decode(ids[1:])


def test_hf_config_details(tmp_path: Path, spm_model: Path) -> None:
    folder = _hf_folder(
        tmp_path,
        spm_model,
        add_bos_token=False,
        eos_token={"content": "</s>", "special": True},
        chat_template=[
            {"name": "tool_use", "template": "T"},
            {"name": "default", "template": "{{ bos_token }}D"},
        ],
    )
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    tok = Tokenizer.from_hf_folder(folder)
    assert not tok.add_bos and tok.encode("a") == tok.encode("a", add_special=False)
    assert tok.eos_ids == [2, 7]
    assert tok.apply_chat_template([]) == "<s>D"


# ---------------------------------------------------------------- back to GGUF metadata

# Llama 3's pre-tokenizer regex, as its tokenizer.json spells it (llama.cpp: pre "llama-bpe").
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS = {
    "gpt-2": BYTE_LEVEL,
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL],
    },
    "llama-bpe": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
            {**BYTE_LEVEL, "use_regex": False},
        ],
    },
}


def _through_gguf_file(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` stored as the GGUF writer stores it, then read back with our parser."""
    vocab_only_gguf(path, meta)
    return {k: v for k, v in read_header(path).metadata.items() if k.startswith("tokenizer.")}


def _assert_round_trip(tok: Tokenizer, tmp_path: Path, special_text: str) -> dict[str, Any]:
    """tok's GGUF metadata survives a GGUF file, and the tokenizer built from it gives tok's ids and text."""
    meta = tok.gguf_metadata()
    back = _through_gguf_file(tmp_path / "tokenizer.gguf", meta)
    assert back == meta  # same values, and of the types llama.cpp reads (float scores, int types, bool flags)
    copy = Tokenizer.from_gguf_metadata(back)
    assert (copy.vocab_size, copy.bos_id, copy.add_bos, copy.add_eos) == (
        tok.vocab_size,
        tok.bos_id,
        tok.add_bos,
        tok.add_eos,
    )
    assert copy.eos_ids[:1] == tok.eos_ids[:1] and set(copy.eos_ids) == set(tok.eos_ids)
    assert copy.chat_template == tok.chat_template
    for text in [PARAGRAPH + special_text + PARAGRAPH, *SHORT_TEXTS, special_text]:
        ids = tok.encode(text)
        assert copy.encode(text) == ids, text
        assert copy.decode(ids) == tok.decode(ids), text
    return meta


def test_gguf_round_trip_smollm(tmp_path: Path, smollm: Tokenizer, smollm_meta: dict[str, Any]) -> None:
    meta = _assert_round_trip(smollm, tmp_path, "<|im_start|>user\nhi<|im_end|>")
    # A tokenizer read from GGUF gives back the keys it was read from.
    assert meta == {k: v for k, v in smollm_meta.items() if k.startswith("tokenizer.")}


def test_lazy_header_strings_decode_to_the_same_lists(smollm_gguf: Path, smollm_meta: dict[str, Any]) -> None:
    from franken_rt.checkpoint.gguf import GGUFStrings

    lazy = read_header(smollm_gguf, lazy_strings=True).metadata
    assert isinstance(lazy["tokenizer.ggml.tokens"], GGUFStrings)
    assert sorted(lazy) == sorted(smollm_meta)
    for key, value in lazy.items():
        assert (value.tolist() if isinstance(value, GGUFStrings) else value) == smollm_meta[key], key


def test_gguf_checkpoint_leaves_the_vocabulary_to_its_tokenizer(smollm_gguf: Path, smollm_meta: dict[str, Any]) -> None:
    """read_gguf keeps the tokenizer.* keys only in the tokenizer (packed), which gives them back unchanged."""
    from franken_rt.checkpoint import read_checkpoint

    ckpt = read_checkpoint(smollm_gguf)
    assert not any(k.startswith("tokenizer.") for k in ckpt.metadata)
    assert ckpt.metadata["general.architecture"] == "llama"
    back = ckpt.tokenizer.gguf_metadata()
    assert back == {k: v for k, v in smollm_meta.items() if k.startswith("tokenizer.")}
    for key, value in back.items():  # element types too (1 == 1.0 == True would hide a change)
        if isinstance(value, list):
            assert [type(x) for x in value] == [type(x) for x in smollm_meta[key]], key


@pytest.mark.parametrize(
    "value",
    [
        ["", "a", "Ġthe", "日本", "🙂", "\x00x"] * 20,
        list(range(-3, 200)),
        [2**63 - 1, -(2**63)] * 40,
        [2**64] * 80,  # too big for any array: stays a list
        [0.1, -1000.0, 1e300, float("inf")] * 20,
        [True, False] * 40,  # bools stay bools
        [1, 2.5] * 40,  # mixed: as it is
    ],
)
def test_packed_metadata_values_come_back_equal(value: list[Any]) -> None:
    from franken_rt.tokenizer.packing import _compact, _expand

    back = _expand(_compact(value))
    assert back == value and [type(x) for x in back] == [type(x) for x in value]


def test_gguf_round_trip_spm_folder(tmp_path: Path, spm_model: Path) -> None:
    tok = Tokenizer.from_hf_folder(_hf_folder(tmp_path, spm_model))
    meta = _assert_round_trip(tok, tmp_path, "a</s>b c<s>x<unk>y")
    expected = _spm_gguf_meta(spm_model)  # what llama.cpp's converter writes for it
    del expected["tokenizer.ggml.add_space_prefix"]
    assert {k: meta[k] for k in expected} == expected
    assert meta["tokenizer.ggml.add_space_prefix"] is True


def test_gguf_round_trip_spm_folder_with_added_tokens(tmp_path: Path, spm_model: Path) -> None:
    """Added tokens past the sentencepiece vocabulary, with a hole before them, as llama.cpp's converter writes."""
    n = 400
    added = {
        str(n + 1): {"content": "<|pad|>", "special": True},
        str(n + 2): {"content": "<tool>", "special": False},
    }
    tok = Tokenizer.from_hf_folder(_hf_folder(tmp_path, spm_model, added_tokens_decoder=added, pad_token="<|pad|>"))
    meta = _assert_round_trip(tok, tmp_path, "<tool>x<|pad|></s>")
    assert meta["tokenizer.ggml.tokens"][n:] == [f"[PAD{n}]", "<|pad|>", "<tool>"]
    assert meta["tokenizer.ggml.token_type"][n:] == [UNUSED, CONTROL, USER_DEFINED]
    assert meta["tokenizer.ggml.scores"][n:] == [-1000.0] * 3
    assert meta["tokenizer.ggml.padding_token_id"] == n + 1


def test_gguf_round_trip_sentencepiece_tokenizer_json(tmp_path: Path, spm_model: Path) -> None:
    """A Metaspace tokenizer.json (Llama 2 style) goes to GGUF through the tokenizer.model beside it."""
    from transformers import LlamaTokenizer

    folder = tmp_path / "json"
    LlamaTokenizer.from_pretrained(_hf_folder(tmp_path, spm_model)).save_pretrained(folder)
    assert (folder / "tokenizer.json").is_file()
    _raises_cleanly("not byte-level BPE.*Metaspace", Tokenizer.from_hf_folder(folder).gguf_metadata)
    shutil.copy(spm_model, folder / "tokenizer.model")
    meta = _assert_round_trip(Tokenizer.from_hf_folder(folder), tmp_path, "a</s>b c<s>x<unk>y")
    assert meta["tokenizer.ggml.model"] == "llama"
    assert meta["tokenizer.ggml.tokens"] == _spm_gguf_meta(spm_model)["tokenizer.ggml.tokens"]


@pytest.fixture(scope="module")
def smollm_json(tmp_path_factory: pytest.TempPathFactory, smollm_hf: Any) -> Path:
    folder = tmp_path_factory.mktemp("smollm_json")
    smollm_hf.save_pretrained(folder)
    return folder


def _with_pre_tokenizer(folder: Path, dest: Path, pre: Any, **model: Any) -> Path:
    shutil.copytree(folder, dest)
    data = json.loads((dest / "tokenizer.json").read_text(encoding="utf-8"))
    data["pre_tokenizer"] = pre
    data["model"].update(model)
    (dest / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    return dest


# Some of the pre-tokenizer names llama.cpp 0.3.36 accepts (src/llama-vocab.cpp); it refuses a file with any other.
LLAMA_CPP_PRE_NAMES = {"default", "llama3", "llama-v3", "llama-bpe", "falcon3", "deepseek-llm", "deepseek-coder",
                       "falcon", "mpt", "starcoder", "gpt-2", "phi-2", "jina-es", "jina-de", "refact", "command-r",
                       "qwen2", "stablelm2", "olmo", "dbrx", "smaug-bpe", "poro-chat", "chatglm-bpe", "viking",
                       "jais", "tekken", "smollm", "codeshell", "bloom", "gpt3-finnish", "exaone", "chameleon",
                       "minerva-7b", "megrez", "gpt-4o", "superbpe", "trillion", "bailingmoe", "llama4"}


def test_written_pre_tokenizer_names_are_llama_cpps() -> None:
    from franken_rt.tokenizer.pre_tokenizers import _GGUF_PRE_TOKENIZERS

    assert set(_GGUF_PRE_TOKENIZERS) <= LLAMA_CPP_PRE_NAMES


@pytest.mark.parametrize("pre", sorted(PRE_TOKENIZERS))
def test_gguf_round_trip_tokenizer_json(
    tmp_path: Path, smollm_json: Path, smollm_meta: dict[str, Any], smollm: Tokenizer, pre: str
) -> None:
    extra = {"ignore_merges": True} if pre == "llama-bpe" else {}
    folder = _with_pre_tokenizer(smollm_json, tmp_path / "hf", PRE_TOKENIZERS[pre], **extra)
    tok = Tokenizer.from_hf_folder(folder)
    meta = _assert_round_trip(tok, tmp_path, "<|im_start|>user\nhi<|im_end|>")
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == pre
    # The vocabulary comes out as llama.cpp's converter wrote it in the SmolLM2 GGUF.
    for key in ("tokens", "token_type", "merges", "bos_token_id", "eos_token_id", "padding_token_id"):
        assert meta[f"tokenizer.ggml.{key}"] == smollm_meta[f"tokenizer.ggml.{key}"], key
    assert meta["tokenizer.chat_template"] == smollm_meta["tokenizer.chat_template"]
    if pre == "smollm":  # SmolLM2's own pre-tokenizer: the GGUF it makes tokenizes as the original file does
        text = "x = f(\n   2,\n    31)\t7  42 " + PARAGRAPH
        assert tok.encode(text) == smollm.encode(text)


def test_gguf_metadata_refuses_unknown_pre_tokenizer(tmp_path: Path, smollm_json: Path) -> None:
    whitespace = _with_pre_tokenizer(smollm_json, tmp_path / "ws", {"type": "Whitespace"})
    _raises_cleanly("Whitespace", Tokenizer.from_hf_folder(whitespace).gguf_metadata)
    prefix = _with_pre_tokenizer(smollm_json, tmp_path / "prefix", {**BYTE_LEVEL, "add_prefix_space": True})
    _raises_cleanly("ByteLevel.*add_prefix_space=True", Tokenizer.from_hf_folder(prefix).gguf_metadata)


def test_gguf_metadata_pads_to_vocab_size(tmp_path: Path, spm_model: Path, smollm: Tokenizer) -> None:
    tok = Tokenizer.from_hf_folder(_hf_folder(tmp_path, spm_model))
    assert tok.gguf_metadata(vocab_size=tok.vocab_size) == tok.gguf_metadata()
    for source, size in ((tok, 416), (smollm, 49152 + 64)):
        n = source.vocab_size
        meta = source.gguf_metadata(vocab_size=size)
        assert len(meta["tokenizer.ggml.tokens"]) == len(meta["tokenizer.ggml.token_type"]) == size
        assert meta["tokenizer.ggml.tokens"][n:] == [f"[PAD{i}]" for i in range(n, size)]
        assert meta["tokenizer.ggml.token_type"][n:] == [UNUSED] * (size - n)
        if "tokenizer.ggml.scores" in meta:
            assert meta["tokenizer.ggml.scores"][n:] == [-1000.0] * (size - n)
        assert len(source.gguf_metadata()["tokenizer.ggml.tokens"]) == n  # the stored keys are not changed
        padded = Tokenizer.from_gguf_metadata(_through_gguf_file(tmp_path / f"pad{n}.gguf", meta))
        assert padded.vocab_size == size
        ids = source.encode(PARAGRAPH)
        assert padded.encode(PARAGRAPH) == ids
        assert padded.decode(ids) == source.decode(ids)
    _raises_cleanly("more than the model's vocabulary", tok.gguf_metadata, tok.vocab_size - 1)


# ---------------------------------------------------------------- bad inputs


def _raises_cleanly(match: str, fn: Any, *args: Any) -> None:
    with pytest.raises(FrankenError, match=match) as info:
        fn(*args)
    error = info.value  # no library exception chained on (it would print as a traceback)
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert "\n" not in str(info.value)


def test_bad_gguf_metadata(smollm_meta: dict[str, Any]) -> None:
    base = {k: v for k, v in smollm_meta.items() if k.startswith("tokenizer.")}
    _raises_cleanly("'bert'", Tokenizer.from_gguf_metadata, {**base, "tokenizer.ggml.model": "bert"})
    _raises_cleanly("tokenizer.ggml.model", Tokenizer.from_gguf_metadata, {"general.architecture": "llama"})
    no_tokens = {k: v for k, v in base.items() if k != "tokenizer.ggml.tokens"}
    _raises_cleanly("tokenizer.ggml.tokens", Tokenizer.from_gguf_metadata, no_tokens)
    _raises_cleanly("'qwen9'", Tokenizer.from_gguf_metadata, {**base, "tokenizer.ggml.pre": "qwen9"})
    no_merges = {k: v for k, v in base.items() if k != "tokenizer.ggml.merges"}
    _raises_cleanly("merges", Tokenizer.from_gguf_metadata, no_merges)
    _raises_cleanly("token_type", Tokenizer.from_gguf_metadata, {**base, "tokenizer.ggml.token_type": [1]})
    bad_eos = {**base, "tokenizer.ggml.eos_token_id": 10**6}
    _raises_cleanly("eos_token_id", Tokenizer.from_gguf_metadata, bad_eos)


def test_bad_spm_metadata(spm_model: Path) -> None:
    meta = _spm_gguf_meta(spm_model)
    tokens = list(meta["tokenizer.ggml.tokens"])
    tokens[10] = tokens[11]  # sentencepiece refuses duplicate pieces
    _raises_cleanly("sentencepiece", Tokenizer.from_gguf_metadata, {**meta, "tokenizer.ggml.tokens": tokens})
    _raises_cleanly("scores", Tokenizer.from_gguf_metadata, {**meta, "tokenizer.ggml.scores": [0.0]})


def test_bad_files(tmp_path: Path, spm_model: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _raises_cleanly("neither tokenizer.json nor tokenizer.model", Tokenizer.from_hf_folder, empty)
    _raises_cleanly("not a folder", Tokenizer.from_hf_folder, tmp_path / "missing")

    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 3}}')
    _raises_cleanly("tokenizer.json", Tokenizer.from_hf_folder, bad_json)

    bad_model = tmp_path / "bad_model"
    bad_model.mkdir()
    (bad_model / "tokenizer.model").write_bytes(spm_model.read_bytes()[:1000])
    _raises_cleanly("tokenizer.model", Tokenizer.from_hf_folder, bad_model)

    bad_config = _hf_folder(tmp_path, spm_model)
    (bad_config / "tokenizer_config.json").write_text("{not json")
    _raises_cleanly("tokenizer_config.json", Tokenizer.from_hf_folder, bad_config)

    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"GGUF" + b"\xff" * 40)
    _raises_cleanly("GGUF", read_header, not_gguf)
    _raises_cleanly("No such file", read_header, tmp_path / "nope.gguf")


def test_bad_use(smollm: Tokenizer, spm_model: Path) -> None:
    _raises_cleanly("outside the vocabulary", smollm.decode, [smollm.vocab_size])
    _raises_cleanly("outside the vocabulary", smollm.stream().feed, -1)
    no_template = Tokenizer.from_gguf_metadata(_spm_gguf_meta(spm_model))
    _raises_cleanly("no chat template", no_template.apply_chat_template, MESSAGES)


def test_template_errors(spm_model: Path) -> None:
    meta = _spm_gguf_meta(spm_model)
    strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('roles must alternate') }}{% endif %}"
    strict += "ok"
    tok = Tokenizer.from_gguf_metadata({**meta, "tokenizer.chat_template": strict})
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == "ok"
    _raises_cleanly("roles must alternate", tok.apply_chat_template, [{"role": "bogus", "content": "x"}])
    broken = Tokenizer.from_gguf_metadata({**meta, "tokenizer.chat_template": "{% for %}"})
    _raises_cleanly("chat template", broken.apply_chat_template, MESSAGES)
    # tojson as transformers defines it: no HTML escaping, non-ASCII kept.
    tj = Tokenizer.from_gguf_metadata({**meta, "tokenizer.chat_template": "{{ messages | tojson }}"})
    rendered = tj.apply_chat_template([{"role": "user", "content": "<é>"}])
    assert rendered == '[{"role": "user", "content": "<é>"}]'
