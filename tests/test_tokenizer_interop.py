"""The tokenizer interop matrix (docs/architecture.md, "Tokenizer interop"): for each tokenizer family franken-rt
reads, a Hugging Face folder made here with the real libraries (a tiny random model; its tokenizer trained by
`sentencepiece` or `tokenizers` and saved by transformers) goes through the installed `franken-convert`. llama.cpp
(llama-cpp-python: llama.cpp's own tokenizer code, as `llama-tokenize` runs it) loads the file, and its ids for hard
text equal ours (from the GGUF, and from the folder directly) and the tokenizer library's. The pre-tokenizer name
written must be llama.cpp's name for that split rule: franken-rt matches the tokenizer.json pre-tokenizer (its regex
and digit rule), since tiny vocabularies never match the hashes of known ones that llama.cpp's converter looks up.
A folder whose normalizer GGUF cannot carry is read directly with its library's ids, normalizer included, and its
conversion is refused.

Ids are compared without BOS/EOS (each engine's "no special tokens" mode), then once with them, as each side's
configuration adds them. Where llama.cpp differs by design, the test asserts what it gives instead (see
SPM_LEADING_SPACE and test_pre_tokenizer_names_we_only_read).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from franken_rt.checkpoint import read_checkpoint
from franken_rt.eval.tiny_models import (
    corpus_text,
    make_tiny_llama,
    save_random_llama,
    train_sentencepiece,
    vocab_only_gguf,
)
from franken_rt.tokenizer import BYTE, Tokenizer

pytestmark = pytest.mark.slow  # llama.cpp interop (and transformers' import, ~10 s)

BIN = Path(sys.executable).parent

# Hard text, one string per character class (each also starts a text, where dummy prefixes and leading spaces act).
HARD_TEXTS = [
    "Crème brûlée, naïve coöperation, Ångström, Øresund, Straße, İstanbul, e\u0301",  # accents, a combining mark
    "日本語のテキスト、中文字符和한국어 텍스트。Привет, мир! Γειά σου",  # CJK, Hangul, Cyrillic, Greek
    "Emoji: 🙂👍🏽 👨\u200d👩\u200d👧 🇫🇷 ✓ ∑ ∞ ½ x² €4.20",  # ZWJ sequence, skin tone, flag, symbols
    "1234567 3.14159 2,718,281 0x1F 007 v1.2.3 ١٢٣ ４２",  # digit runs, Arabic-Indic and fullwidth digits
    "a  b   c    d     e",  # runs of spaces
    "col1\tcol2\t\tcol3\t \tend",  # tabs
    "line\n\n\nnext\r\nwindows\rold\n",  # newline runs, CRLF, CR
    "   three leading spaces and trailing   ",
    " one leading space",
    "don't won't I'M he'LL we've she'd it's 'twas O'Neil's",  # contractions, upper case
    "\u00a0no-break\u00a0space, ideographic\u3000space, thin\u2009space",
    "\n\n \t \n",  # whitespace only
    "def f(x):\n    return [\n        1,\n        22]  # x**2\n\n\n        pass\n",  # indentation before digits
]
HARD_TEXT = "".join(HARD_TEXTS)  # all in one, the classes meeting each other

# The one difference between llama.cpp and the library in the matrix, for both sentencepiece families.
SPM_LEADING_SPACE = (
    "llama.cpp, like sentencepiece itself, adds the dummy-prefix space also before text that already starts with a "
    "space (' x' -> '▁▁x'); transformers' LlamaTokenizer (legacy=False, its default), which franken-rt follows, "
    "does not ('▁x'). GGUF has no key for the difference."
)


def _extra_lines() -> list[str]:
    """Training lines beside the pydoc text: numbers, indentation before digits, non-Latin words and emoji, so the
    vocabularies merge digits, whitespace runs and multi-byte characters (none of them is the hard text)."""
    numbers = [f"{i * 7919 % 100003} {i}.{i * 31 % 1000:03d} 19{i % 100:02d}" for i in range(300)]
    code = [f"{' ' * (4 * (i % 4))}x{i} = [\n    {i},\n        {3 * i}]\t# {i}\n\n" for i in range(100)]
    words = ["Café crème, déjà vu; Über Öl.", "東京の天気は晴れです。北京和上海。", "Здравствуй, κόσμε! 🙂👍"] * 30
    return [*numbers, *code, *words]


@pytest.fixture(scope="module")
def spm_rich(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentencepiece BPE model (byte fallback, identity normalizer, as Llama 2's) that knows some non-ASCII
    characters: those of the hard text it never saw go to byte pieces."""
    text = "\n".join([*corpus_text(100_000).splitlines(), *_extra_lines()])
    return train_sentencepiece(tmp_path_factory.mktemp("spm_rich"), vocab_size=800, text=text)


def _train_bpe(pre_tokenizer: Any, special_tokens: list[str]) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` with `pre_tokenizer`, trained in well under a second."""
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HfTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([*corpus_text(40_000).splitlines(), *_extra_lines()], trainer)
    return tok


def _byte_level_folder(dest: Path, pre_tokenizer: Any, ignore_merges: bool = False, bos: bool = False,
                       normalizer: Any = None) -> Path:
    """A tiny model with a byte-level BPE tokenizer.json, saved by transformers (with its tokenizer_config.json)."""
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    begin, end = ("<|begin_of_text|>", "<|end_of_text|>") if bos else ("<|endoftext|>", "<|endoftext|>")
    tok = _train_bpe(pre_tokenizer, list(dict.fromkeys([begin, end])))
    if ignore_merges:  # set in the file: the trainer makes its own BPE model
        data = json.loads(tok.to_str())
        data["model"]["ignore_merges"] = True
        tok = HfTokenizer.from_str(json.dumps(data))
    tok.normalizer = normalizer
    if bos:  # Llama 3's post-processor: BOS before every sequence
        tok.post_processor = processors.TemplateProcessing(single=f"{begin} $A", pair=f"{begin} $A {begin} $B",
                                                           special_tokens=[(begin, tok.token_to_id(begin))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    save_random_llama(dest, tok.get_vocab_size(), "gqa_tied", bos_id=tok.token_to_id(begin),
                      eos_id=tok.token_to_id(end))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=begin, eos_token=end).save_pretrained(dest)
    return dest


def _gpt2(dest: Path, spm_model: Path) -> Path:
    from tokenizers import pre_tokenizers

    return _byte_level_folder(dest, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))


def _smollm(dest: Path, spm_model: Path) -> Path:
    from tokenizers import pre_tokenizers

    digits = pre_tokenizers.Digits(individual_digits=True)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return _byte_level_folder(dest, pre_tokenizers.Sequence([digits, byte_level]))


# Llama 3's split regex, as its tokenizer.json spells it.
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _llama3(dest: Path, spm_model: Path) -> Path:
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return _byte_level_folder(dest, pre_tokenizers.Sequence([split, byte_level]), ignore_merges=True, bos=True)


def _spm_model(dest: Path, spm_model: Path) -> Path:
    """tokenizer.model and LlamaTokenizer's tokenizer_config.json (legacy=False)."""
    return make_tiny_llama(dest, spm_model, "gqa_tied")


def _spm_json(dest: Path, spm_model: Path) -> Path:
    """The same re-saved by transformers: a Metaspace tokenizer.json (Llama 2 style), tokenizer.model beside it."""
    from transformers import AutoTokenizer

    folder = make_tiny_llama(dest, spm_model, "gqa_tied")
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer.model").is_file()
    return folder


# family -> (folder builder, tokenizer.ggml.model, tokenizer.ggml.pre written: llama.cpp's name for the split rule).
# llama.cpp's sentencepiece tokenizer has no pre-tokenizer and reads no name; none is written.
FAMILIES: dict[str, tuple[Callable[[Path, Path], Path], str, str | None]] = {
    "spm tokenizer.model": (_spm_model, "llama", None),
    "spm tokenizer.json": (_spm_json, "llama", None),
    "gpt-2 byte-level": (_gpt2, "gpt2", "gpt-2"),
    "smollm digits": (_smollm, "gpt2", "smollm"),
    "llama 3 split": (_llama3, "gpt2", "llama-bpe"),
}
BYTE_LEVEL_PRES = sorted(pre for _, _, pre in FAMILIES.values() if pre)


def _convert(folder: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "franken-convert", folder, "-o", out, "--quant", "f32", "-q"],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, spm_rich: Path) -> Callable[[str], tuple[Path, Path]]:
    """family -> (its Hugging Face folder, the GGUF franken-convert made of it), each built once."""
    done: dict[str, tuple[Path, Path]] = {}

    def get(family: str) -> tuple[Path, Path]:
        if family not in done:
            root = tmp_path_factory.mktemp(family.replace(" ", "_"))
            folder = FAMILIES[family][0](root / "hf", spm_rich)
            out = root / "tiny.gguf"
            proc = _convert(folder, out)
            assert proc.returncode == 0, proc.stderr[-2000:]
            done[family] = folder, out
        return done[family]

    return get


def _gguf_string(path: Path, key: str) -> str | None:
    """A string key of the file, read with the `gguf` package (not our parser)."""
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get(key)
    return None if field is None else str(field.contents())


def _llamacpp_vocab(path: Path) -> Any:
    import llama_cpp  # llama-cpp-python: a test extra, as in test_interop

    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_converted_tokenizer_matches_llamacpp_and_the_library(
    converted: Callable[[str], tuple[Path, Path]], spm_rich: Path, tmp_path: Path, family: str
) -> None:
    import sentencepiece as spm
    from transformers import AutoTokenizer

    _, model, pre = FAMILIES[family]
    folder, out = converted(family)
    assert _gguf_string(out, "tokenizer.ggml.model") == model
    assert _gguf_string(out, "tokenizer.ggml.pre") == pre

    library = AutoTokenizer.from_pretrained(folder)
    direct = Tokenizer.from_hf_folder(folder)
    ours = read_checkpoint(out).tokenizer
    llama = _llamacpp_vocab(out)
    sp = spm.SentencePieceProcessor(model_file=str(spm_rich)) if model == "llama" else None
    for text in [*HARD_TEXTS, HARD_TEXT]:
        ids = library(text, add_special_tokens=False)["input_ids"]
        assert direct.encode(text, add_special=False) == ids, text
        assert ours.encode(text, add_special=False) == ids, text
        assert ours.decode(ids) == library.decode(ids)
        # sentencepiece decoding drops the first space (taken for the dummy prefix): the library's too
        assert ours.decode(ids) == text or (sp is not None and text.startswith(" ")), text
        theirs = llama.tokenize(text.encode(), add_bos=False, special=False)
        if sp is not None and text.startswith(" "):  # SPM_LEADING_SPACE: llama.cpp does as sentencepiece does
            assert theirs == sp.encode(text) != ids, text
        else:
            assert theirs == ids, text
        if sp is not None:  # and sentencepiece itself agrees with llama.cpp everywhere
            assert sp.encode(text) == theirs, text

    # With special tokens, as each side's configuration says (BOS for sentencepiece and Llama 3, none for GPT-2).
    text = HARD_TEXTS[0]
    with_specials = library(text)["input_ids"]
    assert ours.encode(text) == direct.encode(text) == with_specials
    assert llama.tokenize(text.encode(), add_bos=True, special=False) == with_specials
    assert (with_specials[0] == library.bos_token_id) is (model == "llama" or pre == "llama-bpe")

    # The vocabulary merges across these classes (and sentencepiece falls back to bytes for unseen characters) ...
    ids = library(HARD_TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) < 0.85 * len(HARD_TEXT.encode())
    meta = ours.gguf_metadata()
    if model == "llama":
        assert {meta["tokenizer.ggml.token_type"][i] for i in ids} >= {BYTE}
    else:  # ... and the hard text tells the split rules apart: under another name, llama.cpp and we give other ids
        for other in BYTE_LEVEL_PRES:
            if other != pre:
                keys = {**meta, "tokenizer.ggml.pre": other}
                wrong = _llamacpp_vocab(vocab_only_gguf(tmp_path / f"{other}.gguf", keys))
                assert wrong.tokenize(HARD_TEXT.encode(), add_bos=False, special=False) != ids, other
                assert Tokenizer.from_gguf_metadata(keys).encode(HARD_TEXT, add_special=False) != ids, other


# tokenizer.ggml.pre names franken-rt reads but never writes -> (the family whose split rule it reads them as,
# what llama.cpp does with them)
READ_ONLY_PRES = {
    "llama3": ("llama 3 split", "same"),
    "llama-v3": ("llama 3 split", "same"),
    # GPT-2's rule under the name franken-rt wrote before it wrote llama.cpp's ("gpt-2"): llama.cpp refuses the file.
    "gpt2": ("gpt-2 byte-level", "refused"),
    # What old converters wrote for an unrecognised vocabulary (a missing name reads as it too). franken-rt reads it
    # as GPT-2's split, as transformers' GGUF loader does; llama.cpp's "default" runs four regexes in turn (runs of
    # [\p{P}$+<=>^~|] cut out first, then GPT-2's, then \p{N}+, then [0-9]{3}), so a space before a digit or a
    # punctuation mark, a contraction, a punctuation mark beside another symbol and ASCII digit runs past 3 split
    # otherwise: " 1234567" is " 1234567" for GPT-2 and " " "123" "456" "7" for llama.cpp, "don't" is "don" "'t"
    # for GPT-2 and "don" "'" "t" for llama.cpp.
    "default": ("gpt-2 byte-level", "differs"),
}
# Where llama.cpp's "default" may split otherwise than GPT-2 (a superset of the cases above); the hard texts without
# any of these must get the same ids.
_DEFAULT_MAY_DIFFER = re.compile(r"\s[^\w\s]|\s\d|\d{4}|'[a-zA-Z]|[^\w\s]{2}")


@pytest.mark.parametrize("pre", sorted(READ_ONLY_PRES))
def test_pre_tokenizer_names_we_only_read(converted: Callable[[str], tuple[Path, Path]], tmp_path: Path,
                                          pre: str) -> None:
    from transformers import AutoTokenizer

    family, in_llamacpp = READ_ONLY_PRES[pre]
    folder, out = converted(family)
    keys = {**read_checkpoint(out).tokenizer.gguf_metadata(), "tokenizer.ggml.pre": pre}
    ours = Tokenizer.from_gguf_metadata(keys)
    library = AutoTokenizer.from_pretrained(folder)
    path = vocab_only_gguf(tmp_path / f"{pre}.gguf", keys)
    if in_llamacpp == "refused":
        with pytest.raises(ValueError, match="Failed to load model"):
            _llamacpp_vocab(path)
    else:
        llama = _llamacpp_vocab(path)
    agree = 0
    for text in [*HARD_TEXTS, HARD_TEXT]:
        ids = library(text, add_special_tokens=False)["input_ids"]
        assert ours.encode(text, add_special=False) == ids, text
        if in_llamacpp == "refused":
            continue
        theirs = llama.tokenize(text.encode(), add_bos=False, special=False)
        if in_llamacpp == "same" or not _DEFAULT_MAY_DIFFER.search(text):
            assert theirs == ids, text
            agree += 1
        elif text == HARD_TEXT:
            assert theirs != ids
    assert agree >= {"same": len(HARD_TEXTS) + 1, "differs": 8, "refused": 0}[in_llamacpp]


def _spm_nmt_nfkc(dest: Path) -> tuple[Path, Callable[[str], list[int]]]:
    import sentencepiece as spm

    model = train_sentencepiece(dest.parent, normalizer="nmt_nfkc")
    sp = spm.SentencePieceProcessor(model_file=str(model))
    return make_tiny_llama(dest, model, "gqa_tied"), sp.encode


def _byte_level_nfkc(dest: Path) -> tuple[Path, Callable[[str], list[int]]]:
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import normalizers, pre_tokenizers

    folder = _byte_level_folder(dest, pre_tokenizers.ByteLevel(add_prefix_space=False), normalizer=normalizers.NFKC())
    tok = HfTokenizer.from_file(str(folder / "tokenizer.json"))
    return folder, lambda text: tok.encode(text, add_special_tokens=False).ids


# Folders GGUF cannot carry: builder (-> the folder, and its library's own encoder), what the refusal names.
NORMALIZED = {
    "spm nmt_nfkc": (_spm_nmt_nfkc, r"sentencepiece normalizer \('nmt_nfkc', extra whitespace removed\)"),
    "byte-level NFKC": (_byte_level_nfkc, r"GGUF has no normalizer like its NFKC\(\)"),
}


@pytest.mark.parametrize("case", sorted(NORMALIZED))
def test_normalizing_folder_is_read_directly_and_not_converted(tmp_path: Path, case: str) -> None:
    """The folder, loaded directly, gives its library's ids, normalizer included (sentencepiece's NFKC and
    whitespace squeeze; `tokenizers`' NFKC); GGUF readers (llama.cpp, franken-rt) do not normalize, so
    franken-convert refuses it with one line naming the normalizer, exits non-zero and leaves no file."""
    build, refusal = NORMALIZED[case]
    folder, library = build(tmp_path / "hf")
    direct = Tokenizer.from_hf_folder(folder)
    for text in [*HARD_TEXTS, HARD_TEXT]:
        assert direct.encode(text, add_special=False) == library(text), text
    assert direct.encode("４２ ① ｆｉ", add_special=False) == library("42 1 fi")  # the normalizer is in effect
    if case.startswith("spm"):
        assert direct.encode("a  b\t\tc", add_special=False) == library("a b c")  # whitespace squeezed

    out = tmp_path / "tiny.gguf"
    proc = _convert(folder, out)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.startswith("franken-convert: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot be written as a GGUF vocabulary" in proc.stderr
    assert re.search(refusal, proc.stderr), proc.stderr
