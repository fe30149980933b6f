"""Tiny random LLaMA models saved as Hugging Face folders, and their transformers reference: what the parity tests
and tools/parity_report.py hold franken-rt to. torch, transformers and sentencepiece are the test extras
(franken-rt[test]), imported by the functions that need them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np

import franken_rt
from franken_rt.checkpoint.gguf_writer import add_value
from franken_rt.eval.corpus import pydoc_text


def corpus_text(n_chars: int = 200_000) -> str:
    return pydoc_text()[:n_chars]


def train_sentencepiece(folder: Path, vocab_size: int = 400, normalizer: str = "identity",
                        text: str | None = None) -> Path:
    """A BPE sentencepiece model trained on `text` (default: the corpus); `normalizer`: "identity" (Llama's: text kept
    as it is) or a sentencepiece rule such as "nmt_nfkc", which also removes extra whitespace (sentencepiece's own
    default)."""
    import sentencepiece as spm

    corpus = folder / "corpus.txt"
    corpus.write_text(corpus_text() if text is None else text, encoding="utf-8")
    prefix = folder / "tok"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        normalization_rule_name=normalizer, add_dummy_prefix=True, remove_extra_whitespaces=normalizer != "identity",
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


VARIANTS: dict[str, dict[str, Any]] = {
    # multi-head attention, separate output matrix
    "mha_untied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
    # grouped-query attention, tied embeddings
    "gqa_tied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    # multi-query attention with Llama 3.1 RoPE scaling
    "mqa_llama3": dict(
        num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=32),
    ),
    # head_dim set apart from hidden/heads (48, not 64 nor 16)
    "headdim48": dict(num_attention_heads=2, num_key_value_heads=1, head_dim=48, tie_word_embeddings=True),
}


def make_tiny_llama(folder: Path, spm_model: Path, variant: str, seed: int = 0, dtype: str = "float32",
                    context: int = 256) -> Path:
    """Build a random LlamaForCausalLM of the variant (`context`: its max_position_embeddings), save it with the
    tokenizer, return the folder."""
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_file=str(spm_model)).vocab_size()
    save_random_llama(folder, vocab, variant, seed=seed, dtype=dtype, context=context)
    shutil.copy(spm_model, folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "legacy": False,
    }))
    return folder


def save_random_llama(folder: Path, vocab_size: int, variant: str, seed: int = 0, dtype: str = "float32",
                      context: int = 256, bos_id: int = 1, eos_id: int = 2) -> Path:
    """Save the weights and config.json of a random LlamaForCausalLM of the variant (no tokenizer: the caller puts
    one beside it), return the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
        max_position_embeddings=context, rms_norm_eps=1e-5, initializer_range=0.08,
        bos_token_id=bos_id, eos_token_id=eos_id, **VARIANTS[variant],
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # random norm gains, so a mistake in applying them shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
    model.to(getattr(torch, dtype))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def reference_model(folder: Path):  # noqa: ANN201
    import torch
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def reference_logits(model, ids: list[int]) -> np.ndarray:  # noqa: ANN001
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def reference_greedy(model, ids: list[int], n: int) -> list[int]:  # noqa: ANN001
    """n greedy tokens by argmax (no stop at end-of-sequence), recomputing the whole sequence each step."""
    out = list(ids)
    for _ in range(n):
        out.append(int(reference_logits(model, out)[-1].argmax()))
    return out[len(ids):]


def load_reference_precision(path: Path, **kwargs: Any):  # noqa: ANN201
    """Our model with float activations and a float KV cache: the path held to transformers' numbers."""
    return franken_rt.load(path, threads=2, activations="f32", kv_cache="f32", **kwargs)


def vocab_only_gguf(path: Path, keys: dict[str, Any]) -> Path:
    """A GGUF file of metadata `keys` (a vocabulary, say) and the few hyperparameters llama.cpp and transformers read
    before it, without tensors."""
    writer = gguf.GGUFWriter(path, "llama")
    for key, value in {"llama.context_length": 64, "llama.embedding_length": 64, "llama.block_count": 1,
                       "llama.attention.head_count": 1, "llama.feed_forward_length": 64, **keys}.items():
        add_value(writer, key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path

