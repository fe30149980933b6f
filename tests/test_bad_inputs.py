"""Hostile and broken inputs: files whose tensors overlap, run past the end, have the wrong size or shape, absurd
counts and lengths, bad config.json and tokenizer fields, NaN weights; runtime arguments out of range. Each gets one
clear FrankenError (from the API) or one line and exit code 2 (from the CLI), before any work is done."""

from __future__ import annotations

import json
import math
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from fuzz.make_corpus import hf_config, safetensors_bytes, tiny_gguf, tokenizer_json

import franken_rt
from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.gguf import read_header
from franken_rt.checkpoint.safetensors import read_safetensors_header
from franken_rt.checkpoint.validate import check_finite, nonfinite_count
from franken_rt.config import ModelConfig
from franken_rt.errors import FrankenError
from franken_rt.model import Model
from franken_rt.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "tiny.gguf"
    tiny_gguf(path, tokenizer="llama", quant="q8_0")
    return path


def _tensor_info_at(data: bytes, name: str) -> int:
    """Byte position of the rank field of tensor `name` in a GGUF header."""
    key = struct.pack("<Q", len(name)) + name.encode()
    pos = data.index(key)
    return pos + len(key)


def patched(src: Path, dst: Path, name: str, *, dims: list[int] | None = None, dtype: int | None = None,
            offset: int | None = None) -> Path:
    """A copy of a GGUF file with one tensor's dims (innermost first, same rank), type or relative offset changed."""
    data = bytearray(src.read_bytes())
    pos = _tensor_info_at(bytes(data), name)
    rank = struct.unpack_from("<I", data, pos)[0]
    if dims is not None:
        assert len(dims) == rank
        struct.pack_into(f"<{rank}Q", data, pos + 4, *dims)
    tpos = pos + 4 + 8 * rank
    if dtype is not None:
        struct.pack_into("<I", data, tpos, dtype)
    if offset is not None:
        struct.pack_into("<Q", data, tpos + 4, offset)
    dst.write_bytes(bytes(data))
    return dst


def relative_offset(path: Path, name: str) -> int:
    h = read_header(path)
    return next(t.offset for t in h.tensors if t.name == name) - h.data_offset


def reject(fragment: str, fn, *args, **kwargs) -> str:  # noqa: ANN001
    with pytest.raises(FrankenError) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert fragment in message, message
    assert "\n" not in message
    return message


# ---- GGUF structure -------------------------------------------------------------------------------------


def test_tiny_file_is_valid(tiny: Path) -> None:
    model = franken_rt.load(tiny, threads=1)
    assert model.logits(model.tokenize("the cat")).shape[1] == model.config.vocab_size


def test_overlapping_tensors_named(tiny: Path, tmp_path: Path) -> None:
    q = relative_offset(tiny, "blk.0.attn_q.weight")
    bad = patched(tiny, tmp_path / "overlap.gguf", "blk.0.attn_k.weight", offset=q)
    reject("overlap", read_checkpoint, bad)
    assert "blk.0.attn_k.weight" in reject("overlap", read_header, bad)


def test_tensor_past_the_end_named(tiny: Path, tmp_path: Path) -> None:
    bad = patched(tiny, tmp_path / "end.gguf", "blk.0.ffn_down.weight", offset=1 << 40)
    reject("blk.0.ffn_down.weight runs past the end", read_checkpoint, bad)
    bad = patched(tiny, tmp_path / "wrap.gguf", "blk.0.ffn_down.weight", offset=(1 << 64) - 32)
    reject("blk.0.ffn_down.weight runs past the end", read_checkpoint, bad)


def test_wrong_byte_size_for_type_named(tiny: Path, tmp_path: Path) -> None:
    # Q8_0 -> F32: four times the bytes, so it runs into the next tensor or past the end
    bad = patched(tiny, tmp_path / "type.gguf", "blk.0.attn_output.weight", dtype=0)
    message = reject("blk.0.attn_output.weight", read_checkpoint, bad)
    assert "overlap" in message or "past the end" in message
    bad = patched(tiny, tmp_path / "unknown.gguf", "blk.0.attn_output.weight", dtype=77)
    reject("blk.0.attn_output.weight has unsupported type id 77", read_checkpoint, bad)


def test_misaligned_and_partial_blocks_named(tiny: Path, tmp_path: Path) -> None:
    off = relative_offset(tiny, "output_norm.weight")
    bad = patched(tiny, tmp_path / "align.gguf", "output_norm.weight", offset=off + 4)
    reject("output_norm.weight is not aligned", read_checkpoint, bad)
    bad = patched(tiny, tmp_path / "block.gguf", "blk.0.ffn_up.weight", dims=[16, 32])  # 16: half a Q8_0 block
    reject("blk.0.ffn_up.weight: row of 16 is not whole Q8_0 blocks", read_checkpoint, bad)


def test_shape_against_hyperparameters_named(tiny: Path, tmp_path: Path) -> None:
    bad = patched(tiny, tmp_path / "shape.gguf", "blk.0.ffn_norm.weight", dims=[16])  # dim is 32
    reject("blk.0.ffn_norm.weight has shape [16]; the hyperparameters give [32]", read_checkpoint, bad)
    bad = patched(tiny, tmp_path / "rows.gguf", "blk.0.attn_k.weight", dims=[32, 8])  # 8 rows, kv dim is 16
    reject("blk.0.attn_k.weight has shape [8, 32]", read_checkpoint, bad)


def test_block_beyond_block_count_named(tiny: Path, tmp_path: Path) -> None:
    data = tiny.read_bytes()
    name = b"blk.0.attn_q.weight"
    key = struct.pack("<Q", len(name)) + name
    bad = tmp_path / "blk5.gguf"
    bad.write_bytes(data.replace(key, struct.pack("<Q", len(name)) + b"blk.5.attn_q.weight", 1))
    reject("tensor blk.5.attn_q.weight belongs to block 5, but the model has 1 blocks", read_checkpoint, bad)


def _header(kvs: list[tuple[bytes, int, bytes]], tensors: list[tuple[bytes, list[int], int, int]]) -> bytes:
    """A GGUF v3 header from raw parts: (key, value type, value bytes) and (name, dims, type, offset)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, vtype, value in kvs:
        out += struct.pack("<Q", len(key)) + key + struct.pack("<I", vtype) + value
    for name, dims, dtype, offset in tensors:
        out += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(dims))
        out += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", dtype, offset)
    return out + bytes(-len(out) % 32) + bytes(256)


@pytest.mark.parametrize(("kvs", "tensors", "fragment"), [
    ([(b"general.alignment", 4, struct.pack("<I", 3))], [], "bad general.alignment 3"),
    ([(b"general.alignment", 4, struct.pack("<I", 0))], [], "bad general.alignment 0"),
    ([(b"general.alignment", 8, struct.pack("<Q", 1) + b"x")], [], "bad general.alignment 'x'"),
    ([(b"a.b", 4, bytes(4)), (b"a.b", 4, bytes(4))], [], "metadata key 'a.b' appears twice"),
    ([(b"a.b", 99, bytes(4))], [], "unknown GGUF value type 99"),
    ([], [(b"t", [4, 1, 1, 1, 1], 0, 0)], "tensor t has 5 dimensions"),
    ([], [(b"t", [0], 0, 0)], "tensor t has an absurd shape"),
    ([], [(b"t", [1 << 41], 0, 0)], "tensor t has an absurd shape"),
    ([], [(b"t", [4], 0, 0), (b"t", [4], 0, 32)], "tensor t appears twice"),
])
def test_bad_headers(tmp_path: Path, kvs: list, tensors: list, fragment: str) -> None:
    path = tmp_path / "h.gguf"
    path.write_bytes(_header(kvs, tensors))
    reject(fragment, read_header, path)


def test_absurd_counts_fail_fast_without_allocating(tiny: Path, tmp_path: Path) -> None:
    valid = tiny.read_bytes()
    cases = {
        "strlen": valid[:24] + struct.pack("<Q", 1 << 60) + valid[32:],  # first key's length
        "tensors": valid[:8] + struct.pack("<Q", 1 << 60) + valid[16:],
        "kvs": valid[:16] + struct.pack("<Q", 1 << 60) + valid[24:],
    }
    # An array of 2^60 strings: the first metadata value rewritten as such.
    key = b"x.k"
    cases["array"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 3) + key + struct.pack(
        "<IIQ", 9, 8, 1 << 60) + bytes(64)
    cases["nested"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 3) + key + struct.pack(
        "<I", 9) + struct.pack("<IQ", 9, 1) * 5000 + struct.pack("<IQ", 4, 0)
    for name, data in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(data)
        tracemalloc.start()
        with pytest.raises(FrankenError, match="corrupt|truncated|absurd"):
            read_header(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 8 << 20, (name, peak)  # refused before any field-sized allocation


def test_bad_metadata_types(tiny: Path, tmp_path: Path) -> None:
    meta = read_header(tiny).metadata

    def config(**changes: object) -> ModelConfig:
        return ModelConfig.from_gguf({**meta, **changes}, vocab_size=271, tie_embeddings=True)

    config()
    reject("llama.embedding_length", config, **{"llama.embedding_length": "32"})
    reject("llama.attention.head_count", config, **{"llama.attention.head_count": 0})
    reject("layer_norm_rms_epsilon", config, **{"llama.attention.layer_norm_rms_epsilon": [1e-5]})
    reject("not a multiple", config, **{"llama.attention.head_count_kv": 3})
    reject("out of range", config, **{"llama.attention.layer_norm_rms_epsilon": float("nan")})
    reject("missing metadata key", lambda: ModelConfig.from_gguf(
        {k: v for k, v in meta.items() if k != "llama.block_count"}, 271, True))


# ---- safetensors, config.json, tokenizers ---------------------------------------------------------------------


def _safetensors(path: Path, header: dict, data_len: int) -> Path:
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + bytes(data_len))
    return path


@pytest.mark.parametrize(("header", "size", "fragment"), [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, 12, "overlap"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, 16, "tensor w: byte range"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8, "tensor w: byte range"),
    ({"w": {"dtype": "F32", "shape": [1 << 32, 1 << 32, 1], "data_offsets": [0, 0]}}, 0, "tensor w"),
    ({"w": {"dtype": "F32", "shape": [1 << 70], "data_offsets": [0, 0]}}, 0, "tensor w"),
    ({"w": {"dtype": "F32", "shape": [1, 1, 1, 1, 1], "data_offsets": [0, 4]}}, 4, "tensor w has an empty"),
    ({"w": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, 4, "tensor w has an empty"),
    ({"w": {"dtype": "F32", "shape": "44", "data_offsets": [0, 16]}}, 16, "tensor w"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16.0]}}, 16, "tensor w"),
    ({"w": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}, 16, "tensor w has unsupported dtype"),
    ({"w": [1, 2]}, 0, "tensor w: malformed"),
])
def test_bad_safetensors(tmp_path: Path, header: dict, size: int, fragment: str) -> None:
    reject(fragment, read_safetensors_header, _safetensors(tmp_path / "x.safetensors", header, size))


def test_safetensors_header_length_and_nesting(tmp_path: Path) -> None:
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", 1 << 62) + b"{}")
    reject("bad header length", read_safetensors_header, p)
    deep = b"[" * 100_000 + b"]" * 100_000
    p.write_bytes(struct.pack("<Q", len(deep)) + deep)
    reject("not JSON", read_safetensors_header, p)


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"num_attention_heads": 0}, "num_attention_heads"),
    ({"hidden_size": -32}, "hidden_size"),
    ({"hidden_size": "32"}, "hidden_size"),
    ({"vocab_size": 1 << 62}, "vocab_size"),
    ({"num_key_value_heads": 3}, "not a multiple"),
    ({"intermediate_size": 0}, "ffn_dim"),
    ({"num_hidden_layers": 2.5}, "n_layers"),
    ({"rms_norm_eps": "tiny"}, "bad field value"),
    ({"rms_norm_eps": 1e400}, "rms_norm_eps"),
    ({"rope_theta": -1.0}, "rope_theta"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
    ({"architectures": 7, "model_type": None}, "architectures"),
    ({"hidden_act": "gelu"}, "activation"),
    ({"head_dim": 7}, "even"),
    ({"num_attention_heads": 1 << 20, "head_dim": 1 << 10, "num_key_value_heads": 1}, "absurdly large"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 0, "low_freq_factor": 1, "high_freq_factor": 4,
                       "original_max_position_embeddings": 32}}, "factor"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 4,
                       "original_max_position_embeddings": 32}}, "high_freq_factor"),
    ({"rope_scaling": {"rope_type": "yarn"}}, "unsupported rope_scaling"),
])
def test_bad_config_json(changes: dict, fragment: str) -> None:
    reject(fragment, ModelConfig.from_hf, hf_config(**changes))


def test_missing_config_fields() -> None:
    cfg = hf_config()
    del cfg["hidden_size"]
    reject("missing field 'hidden_size'", ModelConfig.from_hf, cfg)


def test_hf_folder_shapes_against_config(tmp_path: Path) -> None:
    """A Hugging Face folder whose tensors do not fit its config.json: one error naming the tensor."""
    d, f = 32, 32
    tensors = {"model.embed_tokens.weight": ("F32", [262, d]), "model.norm.weight": ("F32", [d])}
    p = "model.layers.0."
    for n, shape in {"input_layernorm": [d], "post_attention_layernorm": [d], "self_attn.q_proj": [d, d],
                     "self_attn.k_proj": [16, d], "self_attn.v_proj": [16, d], "self_attn.o_proj": [d, d],
                     "mlp.gate_proj": [f, d], "mlp.up_proj": [f, d], "mlp.down_proj": [d, f + 32]}.items():
        tensors[p + n + ".weight"] = ("F32", shape)
    (tmp_path / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    (tmp_path / "config.json").write_text(json.dumps(hf_config(vocab_size=262)))
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer_json()))
    reject("blk.0.ffn_down.weight has shape [32, 64]", read_checkpoint, tmp_path)
    tensors[p + "mlp.down_proj.weight"] = ("F32", [d, f])
    (tmp_path / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    assert read_checkpoint(tmp_path).config.dim == d
    del tensors[p + "mlp.up_proj.weight"]
    (tmp_path / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    reject("missing tensor blk.0.ffn_up.weight", read_checkpoint, tmp_path)


def test_bad_gguf_vocabularies(tiny: Path) -> None:
    meta = read_header(tiny).metadata
    n = len(meta["tokenizer.ggml.tokens"])

    def tok(**changes: object) -> Tokenizer:
        return Tokenizer.from_gguf_metadata({**meta, **changes})

    assert tok().vocab_size == n
    reject("token_type has", tok, **{"tokenizer.ggml.token_type": [1] * (n - 1)})
    reject("token_type is not an array of integers", tok, **{"tokenizer.ggml.token_type": ["x"] * n})
    reject("scores has", tok, **{"tokenizer.ggml.scores": [0.0] * (n + 3)})
    reject("scores is not an array of numbers", tok, **{"tokenizer.ggml.scores": ["a"] * n})
    reject("tokens is not an array of strings", tok, **{"tokenizer.ggml.tokens": [1] * n})
    reject("bos_token_id", tok, **{"tokenizer.ggml.bos_token_id": n + 5})
    reject("eos_token_id", tok, **{"tokenizer.ggml.eos_token_id": "2"})
    reject("chat_template is not a string", tok, **{"tokenizer.chat_template": 5})
    reject("unsupported GGUF tokenizer model", tok, **{"tokenizer.ggml.model": "bert"})
    reject("pre-tokenizer", tok, **{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": ["x"]})
    reject("merges", tok, **{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.merges": [1, 2]})
    reject("vocabulary", tok, **{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.merges": ["zz qq"]})


def test_bad_hf_tokenizers(tmp_path: Path) -> None:
    tj = tokenizer_json()
    tj["model"]["vocab"]["zz"] = 1 << 30  # would size a table of 2^30 entries
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj))
    reject("token ids far beyond", Tokenizer.from_hf_folder, tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    model = tmp_path / "tokenizer.model"
    model.write_bytes(b"\x0a\x03\x08" + b"\xff" * 12)  # a piece whose text field is a 12-byte varint
    reject("cannot read", Tokenizer.from_hf_folder, tmp_path)
    model.write_bytes(b"\x0a\x02\x08\x7f")  # text given as a number (bytes(n) would allocate n bytes)
    reject("cannot read", Tokenizer.from_hf_folder, tmp_path)
    model.write_bytes(b"\x0a\x0f" + b"\x0a\x01a\x18\x01" * 3)
    reject(str(model), Tokenizer.from_hf_folder, tmp_path)


# ---- NaN / infinite values ----------------------------------------------------------------------------------


def with_nan(src: Path, dst: Path, name: str, byte: int = 0) -> Path:
    """A copy with an f16 NaN written at `byte` of tensor `name` (0: the first block's scale)."""
    h = read_header(src)
    t = next(t for t in h.tensors if t.name == name)
    data = bytearray(src.read_bytes())
    data[t.offset + byte:t.offset + byte + 2] = struct.pack("<H", 0x7E00)
    dst.write_bytes(bytes(data))
    return dst


def test_nan_scales_and_values_reported(tiny: Path, tmp_path: Path) -> None:
    ckpt = read_checkpoint(tiny)
    assert all(nonfinite_count(t) == 0 for t in ckpt.tensors.values())
    bad = read_checkpoint(with_nan(tiny, tmp_path / "nan.gguf", "blk.0.attn_v.weight", byte=34))  # 2nd block
    assert nonfinite_count(bad.tensors["blk.0.attn_v.weight"]) == 1
    reject("blk.0.attn_v.weight has 1 NaN or infinite block scales", check_finite, bad)
    reject("blk.0.attn_v.weight", Model, bad, threads=1)
    # f32 values: an infinity in a norm gain
    t = ckpt.tensors["output_norm.weight"]
    data = bytearray(tiny.read_bytes())
    data[t.offset + 8:t.offset + 12] = struct.pack("<f", math.inf)
    (tmp_path / "inf.gguf").write_bytes(bytes(data))
    reject("output_norm.weight has 1 NaN or infinite values", franken_rt.load, tmp_path / "inf.gguf", threads=1)
    Model(read_checkpoint(tmp_path / "inf.gguf"), threads=1, check_values=False)  # the opt-out


def test_nan_count_matches_numpy(tmp_path: Path) -> None:
    """The bit test agrees with numpy's isfinite on f16 scales of every block format."""
    from franken_rt.checkpoint.types import DType, TensorInfo
    from franken_rt.quant.formats import encode

    rng = np.random.default_rng(1)
    for dtype in (DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.F16, DType.F32):
        x = rng.standard_normal((8, 64)).astype(np.float32)
        raw = x.astype(np.float16).view(np.uint8) if dtype == DType.F16 else (
            x.view(np.uint8) if dtype == DType.F32 else encode(x, dtype))
        raw = np.ascontiguousarray(raw).reshape(-1).copy()
        words = raw.view("<u2")
        hit = rng.choice(words.size, 6, replace=False)
        words[hit] = rng.choice([0x7C00, 0xFC00, 0x7E01], size=6)
        path = tmp_path / f"{dtype.name}.bin"
        path.write_bytes(raw.tobytes())
        count = nonfinite_count(TensorInfo("t", path, 0, dtype, (8, 64)))
        if dtype == DType.F32:
            expected = int(np.count_nonzero(~np.isfinite(raw.view("<f4"))))
        elif dtype == DType.F16:
            expected = int(np.count_nonzero(~np.isfinite(raw.view("<f2"))))
        else:
            block_bytes = {DType.Q8_0: 34, DType.Q4_0: 18, DType.Q4_1: 20}[dtype]
            heads = raw.reshape(-1, block_bytes)[:, :4 if dtype == DType.Q4_1 else 2].copy().view("<f2")
            expected = int(np.count_nonzero(~np.isfinite(heads)))
        assert count == expected


# ---- runtime arguments ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny: Path) -> Model:
    return franken_rt.load(tiny, threads=1, n_ctx=32)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0.0}, "top-p"),
    ({"top_p": 1.5}, "top-p"),
    ({"top_p": float("nan")}, "top-p"),
    ({"top_k": -1}, "top-k"),
    ({"top_k": 2.5}, "top_k"),
    ({"min_p": -0.1}, "min-p"),
    ({"min_p": 1.0}, "min-p"),
    ({"min_p": float("nan")}, "min-p"),
    ({"repetition_penalty": 0.0}, "repetition penalty"),
    ({"repetition_penalty": -1.0}, "repetition penalty"),
    ({"repetition_penalty": float("nan")}, "repetition penalty"),
    ({"repeat_last_n": -1}, "repeat-last-n"),
    ({"seed": -1}, "seed"),
    ({"max_tokens": -1}, "max_tokens"),
])
def test_bad_sampling_values(model: Model, kwargs: dict, fragment: str) -> None:
    reject(fragment, model.generate_tokens, "the cat", **kwargs)


def test_bad_prompts(model: Model) -> None:
    reject("empty", model.generate_tokens, "")
    reject("empty", model.generate_tokens, [])
    reject("context holds 32", model.generate_tokens, "the cat " * 40)
    reject("token id out of range", model.generate_tokens, [1, 10**6])
    reject("do not fit the context", model.logits, list(range(40)))
    reject("non-empty", model.logits, [])


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"threads": 0}, "threads"),
    ({"threads": 100_000}, "threads"),
    ({"threads": 1.5}, "threads"),
    ({"n_ctx": 0}, "context"),
    ({"n_ctx": 10**9}, "context"),
    ({"kv_cache": "q4"}, "kv_cache"),
    ({"activations": "int4"}, "activations"),
    ({"kernels": "no_such_kernels"}, ""),
])
def test_bad_load_arguments(tiny: Path, kwargs: dict, fragment: str) -> None:
    reject(fragment, franken_rt.load, tiny, **{"threads": 1, **kwargs})


def test_context_beyond_memory(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import franken_rt.resources as resources
    from franken_rt.resources import runtime_bytes

    ckpt = read_checkpoint(tiny)
    cfg = ckpt.config
    need = runtime_bytes(cfg, cfg.n_layers, 64, "f32", 1)
    assert need > 2 * cfg.n_layers * 64 * 16 * 4  # at least the K and V caches
    weights = sum(t.nbytes for t in ckpt.tensors.values())
    monkeypatch.setattr(resources, "available_memory", lambda: weights + need - 1)
    reject("needs", franken_rt.load, tiny, threads=1, n_ctx=64, kv_cache="f32")
    franken_rt.load(tiny, threads=1, n_ctx=64, kv_cache="f16")  # a smaller cache fits


def cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    from franken_rt.cli.run import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("franken-run: error:"), err
    return err[0]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--temp", "-1"], "temperature"),
    (["--temp", "nan"], "temperature"),
    (["--top-p", "1.01"], "top-p"),
    (["--top-k", "-2"], "top-k"),
    (["--min-p", "2"], "min-p"),
    (["--repeat-penalty", "0"], "repetition penalty"),
    (["--threads", "99999"], "threads"),
    (["--ctx", "0"], "context"),
    (["--ctx", "99999999"], "context"),
    (["-p", ""], "empty"),
    (["-p", "the cat " * 40, "--ctx", "16"], "context"),
])
def test_cli_bad_runtime_input(tiny: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                               fragment: str) -> None:
    argv = [str(tiny), "-p", "the cat", "-n", "4", "--threads", "1", *args]
    assert fragment in cli_error(capsys, argv)


def test_cli_context_beyond_memory(tiny: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import franken_rt.resources as resources

    monkeypatch.setattr(resources, "available_memory", lambda: 1 << 10)
    assert "memory" in cli_error(capsys, [str(tiny), "-p", "the cat", "--threads", "1"])


def test_cli_corrupt_files(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = patched(tiny, tmp_path / "end.gguf", "blk.0.ffn_down.weight", offset=1 << 40)
    assert "blk.0.ffn_down.weight" in cli_error(capsys, [str(bad), "-p", "x"])
    nan = with_nan(tiny, tmp_path / "nan.gguf", "token_embd.weight")
    assert "token_embd.weight has 1 NaN" in cli_error(capsys, [str(nan), "-p", "x", "--threads", "1"])
