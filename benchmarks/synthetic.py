"""A ~1.1B-parameter llama GGUF with random weights (Q4_0 or Q8_0), too large for any cache: the model on which
decode speed is compared with the machine's memory bandwidth. Built from random codes (fast), cached."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from bench_utils import random_matrix

from franken_rt.cache import cache_dir
from franken_rt.checkpoint.gguf import read_header
from franken_rt.checkpoint.gguf_writer import add_value, hyperparameters
from franken_rt.checkpoint.types import DType
from franken_rt.config import ModelConfig
from franken_rt.eval.big_model import convert
from franken_rt.eval.demo_model import model_path
from franken_rt.eval.synthetic_llama import synthetic_llama3

DIM, LAYERS, FFN, HEADS = 2048, 16, 5632, 16


def synthetic_model(dtype: DType = DType.Q4_0) -> Path:
    out = cache_dir() / f"synthetic-1b-{dtype.name.lower()}.gguf"
    if out.exists():
        return out
    meta = read_header(model_path()).metadata  # borrow the demo model's tokenizer
    vocab = len(meta["tokenizer.ggml.tokens"])
    w = gguf.GGUFWriter(out.with_suffix(".tmp"), arch="llama")

    config = ModelConfig(n_layers=LAYERS, dim=DIM, n_heads=HEADS, n_kv_heads=HEADS, head_dim=DIM // HEADS, ffn_dim=FFN,
                         vocab_size=vocab, context_length=4096, norm_eps=1e-5, rope_theta=10000.0,
                         tie_embeddings=False)
    for key, val in hyperparameters(config).items():
        add_value(w, key, val)
    for key, val in meta.items():
        if key.startswith("tokenizer."):
            add_value(w, key, val)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (vocab, DIM), "output.weight": (vocab, DIM), "output_norm.weight": (DIM,)}
    for layer in range(LAYERS):
        p = f"blk.{layer}."
        shapes.update({p + "attn_norm.weight": (DIM,), p + "ffn_norm.weight": (DIM,)})
        shapes.update({p + f"attn_{x}.weight": (DIM, DIM) for x in ("q", "k", "v", "output")})
        shapes.update({p + "ffn_gate.weight": (FFN, DIM), p + "ffn_up.weight": (FFN, DIM),
                       p + "ffn_down.weight": (DIM, FFN)})
    for name, shape in shapes.items():
        if len(shape) == 1:
            w.add_tensor(name, np.ones(shape, dtype=np.float32))
        else:
            w.add_tensor(name, random_matrix(dtype, *shape, seed=int(rng.integers(1 << 30))),
                         raw_dtype=gguf.GGMLQuantizationType(int(dtype)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out.with_suffix(".tmp").rename(out)
    return out


def llama3_gguf(shape: str = "1b", quant: str = "q4_0") -> Path:
    """The synthetic Llama 3 checkpoint of `shape` (bf16, sharded; franken_rt.eval.synthetic_llama) converted by the
    installed franken-convert (round to nearest), both cached."""
    out = cache_dir() / f"synthetic-llama3-{shape}-{quant}.gguf"
    if not out.exists():
        result = convert(synthetic_llama3(shape), out, quant, "rtn")
        if result.returncode:
            raise RuntimeError(out.with_suffix(".log").read_text())
        out.with_suffix(".log").unlink()
    return out
