"""Writes the seed corpus of tests/fuzz/corpus/<target>/: tiny valid files of every kind the readers take, and
broken variants of them (truncated, wrong magic, absurd counts, bad JSON fields). A few KB each, random tiny
weights: nothing here is a real model. Run again to regenerate (crash inputs found by fuzzing are kept).

    python tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parent / "corpus"

# Hyperparameters of the tiny model: 1 block, dim 32, 2 query heads sharing 1 KV head of 16, FFN 32.
DIM, HEADS, KV_HEADS, HEAD_DIM, FFN, LAYERS, CTX = 32, 2, 1, 16, 32, 1, 64


def _spm_vocab() -> tuple[list[str], list[float], list[int]]:
    """A sentencepiece-style vocabulary: <unk> <s> </s>, 256 byte pieces, a few letters and merges."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    words = ["▁", "a", "b", "c", "e", "t", "h", "▁t", "he", "▁the", "at", "▁a"]
    tokens += words
    types += [1] * len(words)
    scores = [0.0] * 259 + [-float(i) for i in range(len(words))]
    return tokens, scores, types


def _bpe_vocab() -> tuple[list[str], list[int], list[str]]:
    """A GPT-2 byte-level vocabulary: the 256 byte characters, a few merges and two special tokens."""
    from franken_rt.tokenizer.byte_level import _byte_to_char

    chars = [_byte_to_char()[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt he", "a t"]
    tokens = chars + ["Ġt", "he", "Ġthe", "at", "<|endoftext|>", "<|im_end|>"]
    types = [1] * (len(tokens) - 2) + [3, 3]
    return tokens, types, merges


def tiny_gguf(path: Path, tokenizer: str = "llama", quant: str = "q8_0", tied: bool = True) -> None:
    import gguf

    from franken_rt.checkpoint.types import DType
    from franken_rt.quant.formats import encode

    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), arch="llama")
    if tokenizer == "llama":
        tokens, scores, types = _spm_vocab()
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
    else:
        tokens, types, merges = _bpe_vocab()
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_eos_token_id(len(tokens) - 2)
        w.add_chat_template("{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}")
    vocab = len(tokens)
    w.add_block_count(LAYERS)
    w.add_embedding_length(DIM)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_context_length(CTX)
    w.add_vocab_size(vocab)
    dtype = {"q8_0": DType.Q8_0, "q4_0": DType.Q4_0, "q4_1": DType.Q4_1, "f16": DType.F16}[quant]

    def matrix(name: str, rows: int, cols: int) -> None:
        x = (0.1 * rng.standard_normal((rows, cols))).astype(np.float32)
        if dtype == DType.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            raw = encode(x, dtype)
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType(int(dtype)))

    def vector(name: str, n: int) -> None:
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    matrix("token_embd.weight", vocab, DIM)
    vector("output_norm.weight", DIM)
    if not tied:
        matrix("output.weight", vocab, DIM)
    for layer in range(LAYERS):
        p = f"blk.{layer}."
        vector(p + "attn_norm.weight", DIM)
        matrix(p + "attn_q.weight", HEADS * HEAD_DIM, DIM)
        matrix(p + "attn_k.weight", KV_HEADS * HEAD_DIM, DIM)
        matrix(p + "attn_v.weight", KV_HEADS * HEAD_DIM, DIM)
        matrix(p + "attn_output.weight", DIM, HEADS * HEAD_DIM)
        vector(p + "ffn_norm.weight", DIM)
        matrix(p + "ffn_gate.weight", FFN, DIM)
        matrix(p + "ffn_up.weight", FFN, DIM)
        matrix(p + "ffn_down.weight", DIM, FFN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]], header_extra: dict | None = None) -> bytes:
    """A safetensors file with zero-filled tensors of the given dtype and shape."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2}
    header: dict = dict(header_extra or {})
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = int(np.prod(shape)) * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + bytes(offset)


def hf_config(**overrides: object) -> dict:
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": DIM,
        "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "vocab_size": 268, "max_position_embeddings": CTX,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu",
    }
    cfg.update(overrides)
    return cfg


def tokenizer_json() -> dict:
    """A tiny byte-level BPE tokenizer.json, as `tokenizers` saves one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokens, _, merges = _bpe_vocab()
    vocab = {t: i for i, t in enumerate(tokens[:-2])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_end|>"])
    return json.loads(tok.to_str())


def spm_model(folder: Path) -> bytes:
    """A sentencepiece BPE model of 300 pieces with byte fallback, trained on a few lines."""
    import sentencepiece as spm

    text = folder / "text.txt"
    text.write_text("the cat sat on the mat; the hat at the bat. 0123456789 Hello, world!\n" * 50)
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "tok"), vocab_size=300, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2,
        hard_vocab_limit=False, normalization_rule_name="identity",
    )
    return (folder / "tok.model").read_bytes()


def _write(target: str, name: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def _gguf_variants(valid: bytes) -> dict[str, bytes]:
    """Broken copies of a valid GGUF file, each aimed at one check."""
    out = {
        "truncated_header.gguf": valid[:200],
        "truncated_data.gguf": valid[: len(valid) - 100],
        "bad_magic.gguf": b"GGUX" + valid[4:],
        "bad_version.gguf": valid[:4] + struct.pack("<I", 7) + valid[8:],
        "huge_tensor_count.gguf": valid[:8] + struct.pack("<Q", 1 << 60) + valid[16:],
        "huge_kv_count.gguf": valid[:16] + struct.pack("<Q", 1 << 60) + valid[24:],
    }
    # The first key's length field (right after the 24-byte preamble): 2^60.
    out["huge_key_length.gguf"] = valid[:24] + struct.pack("<Q", 1 << 60) + valid[32:]
    # A byte flipped in every 64th position of the header region.
    flipped = bytearray(valid)
    for i in range(40, min(len(valid), 4000), 64):
        flipped[i] ^= 0xFF
    out["flipped_bytes.gguf"] = bytes(flipped)
    # Nested arrays, deeper than any llama file: one key holding [[[[[[[...]]]]]]].
    nested = struct.pack("<I", 9) + b"".join(struct.pack("<IQ", 9, 1) for _ in range(40)) + struct.pack("<IQ", 4, 0)
    key = b"x.nested"
    out["nested_arrays.gguf"] = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + nested)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, kwargs in {
            "tiny_spm_q8_0.gguf": dict(tokenizer="llama", quant="q8_0"),
            "tiny_bpe_q4_1_untied.gguf": dict(tokenizer="gpt2", quant="q4_1", tied=False),
            "tiny_spm_q4_0.gguf": dict(tokenizer="llama", quant="q4_0"),
        }.items():
            tiny_gguf(t / name, **kwargs)  # type: ignore[arg-type]
            _write("gguf", name, (t / name).read_bytes())
        for name, data in _gguf_variants((t / "tiny_spm_q8_0.gguf").read_bytes()).items():
            _write("gguf", name, data)

    st = {
        "model.embed_tokens.weight": ("F32", [8, 4]),
        "model.norm.weight": ("BF16", [4]),
        "model.layers.0.self_attn.q_proj.weight": ("F16", [4, 4]),
    }
    valid = safetensors_bytes(st, {"__metadata__": {"format": "pt"}})
    _write("safetensors", "valid.safetensors", valid)
    _write("safetensors", "truncated.safetensors", valid[:-10])
    _write("safetensors", "huge_header_len.safetensors", struct.pack("<Q", 1 << 62) + valid[8:])
    bad = safetensors_bytes(st).replace(b'"shape": [8, 4]', b'"shape": [8, 5]')
    _write("safetensors", "wrong_size.safetensors", bad)
    overlap = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
    _write("safetensors", "overlap.safetensors", struct.pack("<Q", len(overlap)) + overlap + bytes(12))
    wrap = json.dumps({"a": {"dtype": "F32", "shape": [1 << 32, 1 << 32, 1], "data_offsets": [0, 0]}}).encode()
    _write("safetensors", "shape_overflow.safetensors", struct.pack("<Q", len(wrap)) + wrap)

    _write("config", "valid.json", json.dumps(hf_config()).encode())
    _write("config", "llama3_scaling.json", json.dumps(hf_config(rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32})).encode())
    _write("config", "zero_heads.json", json.dumps(hf_config(num_attention_heads=0)).encode())
    _write("config", "negative_dim.json", json.dumps(hf_config(hidden_size=-32)).encode())
    _write("config", "huge_vocab.json", json.dumps(hf_config(vocab_size=1 << 62)).encode())
    _write("config", "heads_not_dividing.json", json.dumps(hf_config(num_key_value_heads=3)).encode())
    _write("config", "string_sizes.json", json.dumps(hf_config(hidden_size="32", rms_norm_eps="x")).encode())
    _write("config", "missing_fields.json", json.dumps({"model_type": "llama"}).encode())
    _write("config", "deep_nesting.json", b"[" * 5000 + b"]" * 5000)

    tj = tokenizer_json()
    _write("tokenizer_json", "valid.json", json.dumps(tj).encode())
    huge_id = json.loads(json.dumps(tj))
    huge_id["model"]["vocab"]["zz"] = 1 << 40
    _write("tokenizer_json", "huge_id.json", json.dumps(huge_id).encode())
    bad_merge = json.loads(json.dumps(tj))
    bad_merge["model"]["merges"] = ["q q"]
    _write("tokenizer_json", "unknown_merge.json", json.dumps(bad_merge).encode())
    _write("tokenizer_json", "not_object.json", b"[1, 2, 3]")
    with tempfile.TemporaryDirectory() as tmp:
        model = spm_model(Path(tmp))
    _write("tokenizer_model", "valid.model", model)
    _write("tokenizer_model", "truncated.model", model[: len(model) // 2])
    _write("tokenizer_model", "varint_text.model", b"\x0a\x02\x08\x7f")  # a piece's text given as a number
    _write("tokenizer_model", "long_varint.model", b"\x0a\x03\x08" + b"\xff" * 12)
    print(f"corpus in {CORPUS}: {sum(f.stat().st_size for f in CORPUS.rglob('*') if f.is_file())} bytes")


if __name__ == "__main__":
    main()
