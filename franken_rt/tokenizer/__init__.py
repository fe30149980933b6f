"""Text <-> token ids for LLaMA-family models, from GGUF metadata or a Hugging Face folder.

Encoding is delegated to the reference engines so ids match what the model was trained on:
`sentencepiece` for sentencepiece vocabularies (GGUF `llama`, HF `tokenizer.model`) and HF `tokenizers`
for byte-level BPE (GGUF `gpt2`) and `tokenizer.json`. Decoding is our own: every vocabulary is reduced
to one byte string per id, which makes streaming exact (a token may end in the middle of a UTF-8
character) and behaves the same whichever engine encoded.

One module per job: `facade` (Tokenizer, StreamDecoder, import_engine), `sentencepiece` (with `protobuf`, the codec
of its model files), `byte_level` (byte-level BPE: the core's engine and `tokenizers`'), `hf_json` (tokenizer.json),
`chat_template`, `packing` (the compact in-memory tables), `pre_tokenizers` (the GGUF pre-tokenizer map) and `common`
(token types and what the engines share).
"""

from __future__ import annotations

from franken_rt.tokenizer.common import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED
from franken_rt.tokenizer.facade import StreamDecoder, Tokenizer, import_engine

__all__ = [
    "BYTE",
    "CONTROL",
    "NORMAL",
    "UNKNOWN",
    "UNUSED",
    "USER_DEFINED",
    "StreamDecoder",
    "Tokenizer",
    "import_engine",
]
