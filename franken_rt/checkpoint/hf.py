"""Reading Hugging Face LLaMA folders: config.json, one or sharded *.safetensors, and a tokenizer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from franken_rt.checkpoint.safetensors import read_safetensors_header
from franken_rt.checkpoint.types import Checkpoint, TensorInfo
from franken_rt.checkpoint.validate import check_tensors
from franken_rt.config import ModelConfig
from franken_rt.errors import FrankenError
from franken_rt.sampling import RECOMMENDED_KEYS, recommended_sampling
from franken_rt.tokenizer import Tokenizer

# Hugging Face parameter names -> GGUF names (the one naming the core knows).
_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_BLOCK_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")


def gguf_name(hf_name: str) -> str | None:
    """The GGUF name of a Hugging Face llama parameter, or None if the runtime does not use it."""
    if hf_name in _GLOBAL:
        return _GLOBAL[hf_name]
    m = _BLOCK_RE.fullmatch(hf_name)
    if m and m.group(2) in _BLOCK:
        return f"blk.{m.group(1)}.{_BLOCK[m.group(2)]}"
    return None


def generation_sampling(folder: Path) -> dict[str, Any]:
    """The sampling a folder's generation_config.json recommends, under llama.cpp's GGUF keys (general.sampling.*),
    so that a converted file keeps it. Nothing when it does not sample (do_sample false) or the file is absent."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return {}
    gen = _load_json(path)
    if not isinstance(gen, dict) or gen.get("do_sample") is False:
        return {}
    # transformers names these settings as SamplingParams does (repeat_last_n has no counterpart there)
    keys = {key: gen[name] for name, key in RECOMMENDED_KEYS.items() if name in gen}
    return keys if recommended_sampling(keys) else {}  # values that make no sense are not carried


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FrankenError(f"cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FrankenError(f"{path}: not valid JSON ({e})") from None


def _shards(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = _load_json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise FrankenError(f"{index}: no weight_map")
        names = sorted({str(v) for v in weight_map.values()})
        shards = [folder / n for n in names]
        for s in shards:
            if s.parent != folder or not s.is_file():
                raise FrankenError(f"{index}: shard {s.name} is missing")
        return shards
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise FrankenError(f"{folder}: no *.safetensors files")
    return shards


def read_hf(folder: Path) -> Checkpoint:
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FrankenError(f"{folder}: no config.json (not a Hugging Face model folder)")
    cfg = _load_json(cfg_path)
    if not isinstance(cfg, dict):
        raise FrankenError(f"{cfg_path}: not a JSON object")
    tensors: dict[str, TensorInfo] = {}
    for shard in _shards(folder):
        for name, info in read_safetensors_header(shard).items():
            target = gguf_name(name)
            if target is None:
                continue  # e.g. rotary_emb.inv_freq of old checkpoints: recomputed from the config
            if target in tensors:
                raise FrankenError(f"{shard}: tensor {name} appears in more than one shard")
            tensors[target] = TensorInfo(target, info.file, info.offset, info.dtype, info.shape)
    config = ModelConfig.from_hf(cfg)
    if config.tie_embeddings:
        tensors.pop("output.weight", None)
    elif "output.weight" not in tensors:
        raise FrankenError(f"{folder}: lm_head.weight is missing and tie_word_embeddings is false")
    ckpt = Checkpoint(
        config=config,
        tensors=tensors,
        tokenizer=Tokenizer.from_hf_folder(folder),
        rope_interleaved=False,
        source=folder,
        metadata={"hf_config": cfg, **generation_sampling(folder)},
    )
    check_tensors(ckpt)
    return ckpt
