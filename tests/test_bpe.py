"""The core's byte-level BPE (GPT-2's split pattern, SmolLM's digits apart) against `tokenizers`, the library it
replaces on the runtime path: the same ids for real and adversarial text, on SmolLM2's vocabulary and a tiny one."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from fuzz.make_corpus import _bpe_vocab

from franken_rt import _core
from franken_rt.checkpoint.gguf import read_header
from franken_rt.errors import FrankenError
from franken_rt.tokenizer import byte_level

FAMILIES = ["digits+gpt2", "gpt2"]
# Whitespace in and out of Unicode's White_Space (\s of the split pattern), numbers beyond ASCII digits, letters of
# several scripts, contractions, specials, astral characters and control bytes some vocabularies have no token for.
PIECES = [
    " ", "  ", "\n", "\n\n", "\t", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u1680", "\u2003", "\u200b",
    "\u2028", "\u202f", "\u3000", "\ufeff", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'x", "123", "٣",
    "½", "²", "Ⅻ", "〇", "hello", "World", "naïve", "Ελλάδα", "Москва", "東京", "한국어", "مرحبا", "हिन्दी", "😀",
    "𐐷", "ＡＢ１", "\x00", "\x04", "\x7f", "<|im_end|>", "<|endoftext|>", "--", "...", "$", "_", "::", "é",
]


def adversarial_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 30)):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(PIECES))
            else:  # any code point but a surrogate
                cp = rng.randint(0, 0x10FFFF)
                parts.append(chr(cp if not 0xD800 <= cp < 0xE000 else 0x61))
        texts.append("".join(parts))
    return texts


def both(tokens: list[str], types: list[int], merges: list[str], family: str) -> tuple[Any, Any]:
    vocab, added = byte_level._byte_level_vocab(tokens, types)
    native = byte_level._native_byte_level(vocab, merges, added, isolate_digits=family == "digits+gpt2")
    library = byte_level._library_byte_level(vocab, merges, added, family)
    return native, library


@pytest.fixture(scope="module")
def smollm_vocab(smollm_gguf: Path) -> tuple[list[str], list[int], list[str]]:
    meta = read_header(smollm_gguf).metadata
    return list(meta["tokenizer.ggml.tokens"]), list(meta["tokenizer.ggml.token_type"]), list(
        meta["tokenizer.ggml.merges"])


@pytest.mark.parametrize("family", FAMILIES)
def test_smollm_vocabulary_matches_tokenizers(smollm_vocab: tuple[list[str], list[int], list[str]],
                                              family: str) -> None:
    import pydoc_data.topics

    native, library = both(*smollm_vocab, family)
    texts = list(pydoc_data.topics.topics.values())[:150] + adversarial_texts(1, 1500)
    for text in texts:
        assert native(text) == library(text), repr(text[:80])


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_vocabulary_matches_tokenizers(family: str) -> None:
    """A vocabulary with few merges and most bytes missing: such bytes are dropped, the rest merge across them."""
    tokens, types, merges = _bpe_vocab()
    native, library = both(tokens, types, merges, family)
    for text in ["the cat", "at the  thé", " the\n\nthe", "t\x00he", *adversarial_texts(2, 500)]:
        assert native(text) == library(text), repr(text)


def class_edges() -> list[int]:
    """The code points on both sides of every range edge of the core's character tables (where a class changes)."""
    header = (Path(__file__).resolve().parents[1] / "csrc" / "tokenizer" / "unicode_classes.h").read_text()
    edges = set()
    for first, last in re.findall(r"\{0x([0-9A-F]+), 0x([0-9A-F]+)\}", header):
        for cp in (int(first, 16) - 1, int(first, 16), int(last, 16), int(last, 16) + 1):
            if 0 <= cp <= 0x10FFFF and not 0xD800 <= cp < 0xE000:
                edges.add(cp)
    return sorted(edges)


@pytest.mark.parametrize("family", FAMILIES)
def test_character_class_edges_match_the_installed_tokenizers(
        smollm_vocab: tuple[list[str], list[int], list[str]], family: str) -> None:
    """The tables were measured from one `tokenizers` (tools/gen_unicode_classes.py); each edge of them, between
    letters, after a space, among digits, must still split as the installed library splits it."""
    native, library = both(*smollm_vocab, family)
    for cp in class_edges():
        c = chr(cp)
        for text in (f"a{c}a", f"1{c}1", f"  {c}", f" {c}{c}x", f"{c} 2"):
            assert native(text) == library(text), (hex(cp), text)


def test_lone_surrogates_are_a_clean_error() -> None:
    tokens, types, merges = _bpe_vocab()
    native, _ = both(tokens, types, merges, "digits+gpt2")
    with pytest.raises(FrankenError, match="cannot tokenize"):
        native("the \ud800 cat")


def test_specials_are_matched_whole_in_text() -> None:
    tokens, types, merges = _bpe_vocab()
    native, _ = both(tokens, types, merges, "digits+gpt2")
    end = tokens.index("<|im_end|>")
    assert native("the<|im_end|>the") == [*native("the"), end, *native("the")]


def test_merges_that_name_missing_tokens_are_refused() -> None:
    tokens, types, merges = _bpe_vocab()
    vocab, added = byte_level._byte_level_vocab(tokens, types)
    for bad in (["Ġ t", "q z"], ["Ġt"], ["h e", "he x"]):
        with pytest.raises(FrankenError, match="invalid GGUF byte-level vocabulary"):
            byte_level._native_byte_level(vocab, bad, added, isolate_digits=True)


def test_core_checks_its_arguments() -> None:
    with pytest.raises(_core.CoreError, match="256 bytes"):
        _core.ByteLevelBpe([0] * 255, [], False)
    with pytest.raises(_core.CoreError, match="triples"):
        _core.ByteLevelBpe([0] * 256, [1, 2], False)
    bpe = _core.ByteLevelBpe(list(range(256)), [104, 101, 300], False)  # bytes are their own ids; h+e -> 300
    assert bpe.encode("hehe he") == [300, 300, 32, 300]
    assert bpe.encode("") == []
