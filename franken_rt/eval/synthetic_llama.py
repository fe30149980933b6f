"""Synthetic Llama 3 checkpoints: random bf16 weights in the real shapes (Llama 3.2 1B, Llama 3.1 8B), saved as a
sharded Hugging Face folder (model-0000k-of-0000n.safetensors + model.safetensors.index.json) with a Llama 3 family
tokenizer. What the converter's memory and the runtime's bandwidth are measured on at full size (docs/convert.md):
nothing here needs a download. Needs torch and safetensors (the test extras).

The tokenizer is byte-level BPE with Llama 3's split regex: merges trained on the pydoc corpus, then merges of pairs
of those tokens up to Llama 3's 128000 ordinary tokens, then its 256 special tokens at the same ids
(<|begin_of_text|> = 128000, <|eot_id|> = 128009, ...): vocab_size 128256, as the embedding.

    python -m franken_rt.eval.synthetic_llama 8b [--out FOLDER]   # default: the cache (franken_rt.cache)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from franken_rt.cache import cache_dir
from franken_rt.eval.corpus import pydoc_text
from franken_rt.tokenizer.pre_tokenizers import LLAMA3_SPLIT

ORDINARY = 128000  # Llama 3's ordinary tokens; its special tokens follow
SPECIAL = 256
TRAINED = 8000  # merges asked of the trainer (the corpus gives about that many); the rest are pairs of tokens
CHAT_TEMPLATE = (  # Llama 3's message format, written anew (no tool calls, no dates)
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@dataclass(frozen=True)
class Shape:
    """A Llama 3 architecture's hyperparameters (config.json's)."""

    dim: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    tied: bool
    rope_factor: float
    vocab: int = ORDINARY + SPECIAL

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def tensors(self) -> Iterator[tuple[str, tuple[int, ...]]]:
        """Hugging Face parameter names and shapes, in the order transformers saves them."""
        kv = self.kv_heads * self.head_dim
        yield "model.embed_tokens.weight", (self.vocab, self.dim)
        for i in range(self.layers):
            p = f"model.layers.{i}."
            yield p + "input_layernorm.weight", (self.dim,)
            yield p + "mlp.down_proj.weight", (self.dim, self.ffn)
            yield p + "mlp.gate_proj.weight", (self.ffn, self.dim)
            yield p + "mlp.up_proj.weight", (self.ffn, self.dim)
            yield p + "post_attention_layernorm.weight", (self.dim,)
            yield p + "self_attn.k_proj.weight", (kv, self.dim)
            yield p + "self_attn.o_proj.weight", (self.dim, self.dim)
            yield p + "self_attn.q_proj.weight", (self.dim, self.dim)
            yield p + "self_attn.v_proj.weight", (kv, self.dim)
        yield "model.norm.weight", (self.dim,)
        if not self.tied:
            yield "lm_head.weight", (self.vocab, self.dim)

    def parameters(self) -> int:
        return sum(int(np.prod(s)) for _, s in self.tensors())

    def config(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
            "attention_dropout": 0.0, "mlp_bias": False, "hidden_act": "silu", "initializer_range": 0.02,
            "bos_token_id": ORDINARY, "eos_token_id": [ORDINARY + 1, ORDINARY + 8, ORDINARY + 9],
            "hidden_size": self.dim, "intermediate_size": self.ffn, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim,
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": self.rope_factor, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            "tie_word_embeddings": self.tied, "torch_dtype": "bfloat16", "use_cache": True,
            "vocab_size": self.vocab,
        }


SHAPES = {
    "1b": Shape(dim=2048, layers=16, heads=32, kv_heads=8, ffn=8192, tied=True, rope_factor=32.0),   # Llama 3.2 1B
    "8b": Shape(dim=4096, layers=32, heads=32, kv_heads=8, ffn=14336, tied=False, rope_factor=8.0),  # Llama 3.1 8B
    # the real vocabulary and layout at a small width: the same tokenizer and sharding, in seconds
    "tiny": Shape(dim=128, layers=2, heads=4, kv_heads=2, ffn=256, tied=False, rope_factor=8.0),
}


def special_tokens() -> list[str]:
    """Llama 3.1's special tokens, ids 128000 to 128255."""
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>", 6: "<|start_header_id|>",
             7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>", 10: "<|python_tag|>"}
    out, reserved = [], 0
    for i in range(SPECIAL):
        if i in named:
            out.append(named[i])
        else:
            out.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return out


def llama3_tokenizer_json(seed: int = 0) -> str:
    """tokenizer.json of a Llama 3 family tokenizer of 128256 tokens (see the module's docstring)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # the engine

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + TRAINED, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([pydoc_text()], trainer)
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    merges: list[Any] = data["model"]["merges"]
    pair_as_list = bool(merges) and isinstance(merges[0], list)
    words = sorted(vocab, key=vocab.__getitem__)[256:] or sorted(vocab, key=vocab.__getitem__)
    rng = np.random.default_rng(seed)
    while len(vocab) < ORDINARY:  # pairs of trained tokens, merged after every trained merge
        for a, b in rng.integers(len(words), size=(ORDINARY - len(vocab), 2)):
            left, right = words[a], words[b]
            if left + right not in vocab:
                vocab[left + right] = len(vocab)
                merges.append([left, right] if pair_as_list else f"{left} {right}")
    data["added_tokens"] = [
        {"id": ORDINARY + i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True} for i, text in enumerate(special_tokens())]
    tok = Tokenizer.from_str(json.dumps(data))
    bos = special_tokens()[0]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, ORDINARY)])
    return tok.to_str()


def write_tokenizer(folder: Path) -> None:
    """tokenizer.json, tokenizer_config.json and generation_config.json of the Llama 3 family tokenizer."""
    (folder / "tokenizer.json").write_text(llama3_tokenizer_json(), encoding="utf-8")
    specials = special_tokens()
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": specials[0], "eos_token": specials[9],
        "model_max_length": 131072, "chat_template": CHAT_TEMPLATE}, indent=1))
    (folder / "generation_config.json").write_text(json.dumps({
        "bos_token_id": ORDINARY, "eos_token_id": [ORDINARY + 1, ORDINARY + 8, ORDINARY + 9], "do_sample": True,
        "temperature": 0.6, "top_p": 0.9}, indent=1))


def _shards(shape: Shape, shard_bytes: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """The tensors grouped in order into shards of at most `shard_bytes` of bf16 (a larger tensor alone)."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, dims in shape.tensors():
        n = 2 * int(np.prod(dims))
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, dims))
        size += n
    return shards


def write_weights(folder: Path, shape: Shape, seed: int = 0, shard_bytes: int = 2 << 30) -> None:
    """Random bf16 weights (normal, std 0.02; norm gains near 1) in sharded safetensors with their index, one shard
    in memory at a time."""
    import torch  # test extras, imported where used: the rest of the module (shapes, tokenizer) needs neither
    from safetensors.torch import save_file

    shards = _shards(shape, shard_bytes)
    weight_map, total = {}, 0
    gen = torch.Generator().manual_seed(seed)
    for k, group in enumerate(shards):
        name = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for param, dims in group:
            t = torch.empty(dims, dtype=torch.bfloat16)
            if len(dims) == 1:
                t.normal_(1.0, 0.1, generator=gen)
            else:
                t.normal_(0.0, 0.02, generator=gen)
            tensors[param] = t
            weight_map[param] = name
            total += 2 * t.numel()
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def write_checkpoint(folder: Path, shape: Shape, seed: int = 0, shard_bytes: int = 2 << 30) -> Path:
    """The whole Hugging Face folder: config.json, tokenizer files, sharded weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(shape.config(), indent=1))
    write_tokenizer(folder)
    write_weights(folder, shape, seed, shard_bytes)
    return folder


def synthetic_llama3(name: str, root: Path | None = None, shard_bytes: int = 1 << 30) -> Path:
    """The folder of synthetic checkpoint `name` (a SHAPES key) under `root` (default: the cache), built once: into a
    temporary folder renamed when complete, so a half-built one is never reused."""
    root = cache_dir() if root is None else Path(root)
    folder = root / f"synthetic-llama3-{name}-hf"
    if folder.is_dir():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    try:
        write_checkpoint(tmp, SHAPES[name], shard_bytes=shard_bytes)
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():  # safetensors writes its files private
            os.chmod(f, 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m franken_rt.eval.synthetic_llama", description=__doc__.split("\n")[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("--out", type=Path, default=None, help="parent folder (default: the cache)")
    ap.add_argument("--shard-gb", type=float, default=1.0, help="shard size in GiB (default 1)")
    args = ap.parse_args(argv)
    shape = SHAPES[args.shape]
    print(f"{args.shape}: {shape.parameters() / 1e9:.2f} B parameters, {2 * shape.parameters() / 2**30:.1f} GiB of "
          "bf16", file=sys.stderr)
    print(synthetic_llama3(args.shape, args.out, int(args.shard_gb * 2**30)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
