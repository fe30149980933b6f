"""The converter encodes each tensor in chunks of rows (bounded memory): the file is byte for byte the one the whole
tensors give, q/k permutation, every rounding, alignment and the Llama 3 RoPE frequencies included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.gguf import read_header
from franken_rt.checkpoint.gguf_writer import needs_permute, permute_for_gguf, row_chunks, write_gguf
from franken_rt.eval.tiny_models import make_tiny_llama
from franken_rt.quant.formats import encode
from franken_rt.quant.policy import QuantPolicy
from franken_rt.quant.tensors import float_array, transcoder

WHOLE = 1 << 40   # chunk_bytes larger than any tensor: one chunk each
THREE_ROWS = 4 * 64 * 3  # three rows of the tiny models' 64 columns (q/k: rounded to one head of 16 rows)


@pytest.fixture(scope="module")
def tiny_bf16(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> dict[str, Path]:
    """bf16, as Hugging Face checkpoints come; mqa_llama3 adds rope_freqs and a separate output matrix; gguf_q8_0 is
    gqa_tied converted to Q8_0 (quantized rows decoded chunk by chunk)."""
    out = {v: make_tiny_llama(tmp_path_factory.mktemp(v), spm_model, v, dtype="bfloat16")
           for v in ("gqa_tied", "mqa_llama3")}
    out["gguf_q8_0"] = tmp_path_factory.mktemp("gguf") / "q8_0.gguf"
    write_gguf(read_checkpoint(out["gqa_tied"]), out["gguf_q8_0"], dtype=QuantPolicy.parse("q8_0"),
               tensor_bytes=transcoder("rtn"))
    return out


def random_hessians(cols: tuple[int, ...]) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(3)
    out = {}
    for n in cols:
        a = rng.standard_normal((4 * n, n))
        out[n] = a.T @ a / (4 * n)
    return out


@pytest.mark.parametrize(("variant", "quant", "rounding"), [
    ("gqa_tied", "q4_0", "rtn"), ("mqa_llama3", "q8_0", "rtn"), ("mqa_llama3", "f16", "rtn"),
    ("gqa_tied", "q4_0", "search"), ("mqa_llama3", "q3_0", "search"), ("gguf_q8_0", "q4_1", "search"),
    pytest.param("gqa_tied", "q4_1", "gptq", marks=pytest.mark.slow)])  # ~10 s: gptq's column walk in Python
def test_chunks_write_the_whole_tensor_file(tiny_bf16: dict[str, Path], tmp_path: Path, variant: str, quant: str,
                                            rounding: str) -> None:
    ckpt = read_checkpoint(tiny_bf16[variant])
    shapes = {t.shape[-1] for t in ckpt.tensors.values() if len(t.shape) == 2}
    hs = random_hessians(tuple(shapes))
    cols = {name: t.shape[-1] for name, t in ckpt.tensors.items()}

    def hessian(name: str) -> np.ndarray | None:  # the same object for every chunk, as Hessians gives it
        return hs[cols[name]] if name != "token_embd.weight" else None

    policy = QuantPolicy.parse(quant)
    files = {}
    sizes = [("whole", WHOLE), ("rows", THREE_ROWS)] + ([("row", 1)] if rounding != "gptq" else [])  # gptq: slow
    for label, chunk in sizes:
        files[label] = tmp_path / f"{label}.gguf"
        write_gguf(ckpt, files[label], dtype=policy, chunk_bytes=chunk,
                   tensor_bytes=transcoder(rounding, hessian=hessian if rounding == "gptq" else None))
    q = ckpt.tensors["blk.0.attn_q.weight"]
    heads = q.shape[0] // ckpt.config.head_dim  # a head each where GGUF permutes q/k rows (Hugging Face sources)
    assert len(row_chunks(ckpt, q.name, q, THREE_ROWS)) == (heads if needs_permute(ckpt, q.name) else 22)
    assert len(row_chunks(ckpt, "blk.0.ffn_down.weight", ckpt.tensors["blk.0.ffn_down.weight"], 1)) == 64
    whole = files["whole"].read_bytes()
    assert files["rows"].read_bytes() == whole
    if rounding == "gptq":
        return
    assert files["row"].read_bytes() == whole
    # and each tensor's bytes at its offset are the whole tensor encoded at once, in GGUF's row order
    header = read_header(files["whole"])
    for t in header.tensors:
        if t.name == "rope_freqs.weight":
            continue
        src = ckpt.tensors[t.name]
        x = np.asarray(float_array(src))
        if needs_permute(ckpt, t.name):
            x = permute_for_gguf(x, x.shape[0] // ckpt.config.head_dim)
        d = policy(src)
        expected = encode(x, d, rounding).tobytes()
        assert t.dtype_id == d
        assert whole[t.offset:t.offset + len(expected)] == expected, t.name
