"""The GGUF pre-tokenizer map: `tokenizer.ggml.pre` names to the pre-tokenizer families we encode, and to the
tokenizer.json pre-tokenizers they stand for."""

from __future__ import annotations

from typing import Any

# Llama 3's split regex (from its tokenizer.json; llama.cpp `llama-bpe`).
LLAMA3_SPLIT = (
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


def _pre_family(pre: Any) -> str | None:
    """The pre-tokenizer family of a GGUF `tokenizer.ggml.pre` value, None if unsupported."""
    return _PRE_FAMILIES.get(pre) if isinstance(pre, str) else None


def _byte_level_step(use_regex: bool) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "use_regex": use_regex}


# tokenizer.ggml.pre -> the tokenizer.json pre-tokenizer it stands for (normalized by _gguf_pre_tokenizer). The
# names are the ones the writer puts in a file, so they must be llama.cpp's (it refuses others, such as "gpt2").
_GGUF_PRE_TOKENIZERS = {
    "gpt-2": [_byte_level_step(True)],
    "smollm": [{"type": "Digits", "individual_digits": True}, _byte_level_step(True)],
    "llama-bpe": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
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
