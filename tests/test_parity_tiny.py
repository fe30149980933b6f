"""Parity with transformers' LlamaForCausalLM on tiny random models: every architecture feature that changes the
numbers (MHA/GQA/MQA, tied or separate output, Llama 3 RoPE scaling, an unusual head dim), from the Hugging Face
folder and from GGUF written from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from franken_rt.checkpoint import DType, read_checkpoint
from franken_rt.checkpoint.gguf_writer import write_gguf
from franken_rt.eval.tiny_models import (
    VARIANTS,
    load_reference_precision,
    make_tiny_llama,
    reference_greedy,
    reference_logits,
    reference_model,
)
from franken_rt.quant.tensors import transcoder

PROMPT = [1, 57, 300, 12, 99, 250, 7, 180, 33, 64, 310, 5, 41, 222, 90, 17]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, spm_model: Path):
    folder = make_tiny_llama(tmp_path_factory.mktemp(request.param), spm_model, request.param)
    return folder, reference_model(folder)


def test_logits_match_transformers(tiny) -> None:  # noqa: ANN001
    folder, ref = tiny
    ours = load_reference_precision(folder).logits(PROMPT)
    theirs = reference_logits(ref, PROMPT)
    assert ours.shape == theirs.shape
    assert np.abs(ours[-1] - theirs[-1]).max() <= 1e-4
    assert np.abs(ours - theirs).max() <= 1e-4


@pytest.mark.parametrize("variant", ["gqa_tied", "mha_untied", "mqa_llama3"])
def test_long_context_attention_matches_transformers(tmp_path: Path, spm_model: Path, variant: str) -> None:
    """Past kKeyChunk (256) keys attention runs in chunks folded as an online softmax: in a prompt's batches (each
    task folds its row's chunks) and in single decode steps (the chunks run in parallel, folded after). Both match
    transformers, and the decode step gives the prompt path's bits."""
    folder = make_tiny_llama(tmp_path, spm_model, variant, context=1024)
    ref = reference_model(folder)
    ids = np.random.default_rng(1).integers(3, 300, 700).tolist()
    model = load_reference_precision(folder, n_ctx=1024)
    ours = model.logits(ids)
    theirs = reference_logits(ref, ids)
    assert np.abs(ours - theirs).max() <= 2e-4
    model.logits(ids[:-1])
    step = model._core.eval(np.array(ids[-1:], dtype=np.int32))[0]  # one row: split over the threads
    assert np.array_equal(step, ours[-1])


def test_greedy_continuation_matches_transformers(tiny) -> None:  # noqa: ANN001
    folder, ref = tiny
    model = load_reference_precision(folder)
    ours = list(model.generate_tokens(PROMPT, max_tokens=20, temperature=0, ignore_eos=True))
    assert ours == reference_greedy(ref, PROMPT, 20)


def test_kv_cache_equals_recompute(tiny) -> None:  # noqa: ANN001
    folder, _ = tiny
    model = load_reference_precision(folder)
    full = model.logits(PROMPT)
    model.logits(PROMPT[:5])  # then one token at a time, through the cache
    steps = [model._core.eval(np.array([t], dtype=np.int32))[0] for t in PROMPT[5:]]
    assert np.abs(np.stack(steps) - full[5:]).max() <= 1e-5


@pytest.mark.parametrize("dtype", [DType.F32, DType.F16])
def test_gguf_form_matches_folder(tiny, tmp_path: Path, dtype: DType) -> None:  # noqa: ANN001
    import torch

    folder, ref = tiny
    out = tmp_path / "tiny.gguf"
    write_gguf(read_checkpoint(folder), out, dtype=dtype, tensor_bytes=transcoder())
    ours = load_reference_precision(out).logits(PROMPT)
    if dtype == DType.F32:
        expected = load_reference_precision(folder).logits(PROMPT)
        assert np.abs(ours - expected).max() <= 1e-5
    else:  # the reference with the same f16 rounding of its 2-D weights
        with torch.no_grad():
            for p in ref.parameters():
                if p.dim() == 2:
                    p.copy_(p.half().float())
        expected = reference_logits(ref, PROMPT)
        assert np.abs(ours - expected).max() <= 1e-4


@pytest.mark.parametrize("dtype", [DType.BF16, DType.Q8_0, DType.Q4_0, DType.Q4_1], ids=lambda d: d.name)
def test_quantized_gguf_matches_dequantized_reference(tiny, tmp_path: Path, dtype: DType) -> None:  # noqa: ANN001
    """Quantized weights run natively; the reference runs the same weights decoded to float32."""
    import copy

    import torch

    from franken_rt.checkpoint.types import TensorInfo
    from franken_rt.quant.tensors import float_array

    folder, shared_ref = tiny
    ref = copy.deepcopy(shared_ref)  # its weights are replaced below; the module's other tests use the original
    out = tmp_path / f"tiny-{dtype.name}.gguf"
    write_gguf(read_checkpoint(folder), out, dtype=dtype, tensor_bytes=transcoder())
    ckpt = read_checkpoint(out)
    ours = load_reference_precision(out).logits(PROMPT)
    # Put the decoded (and un-permuted) GGUF weights back into the reference model.
    from franken_rt.checkpoint.hf import gguf_name

    def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
        rows, cols = w.shape
        return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)

    cfg = ckpt.config
    with torch.no_grad():
        for name, p in ref.named_parameters():
            g = gguf_name(name) or ""
            t: TensorInfo | None = ckpt.tensors.get(g) or (ckpt.tensors["token_embd.weight"] if name == "lm_head.weight"
                                                            else None)
            if t is None:
                continue
            w = np.array(float_array(t))
            if g.endswith("attn_q.weight"):
                w = unpermute(w, cfg.n_heads)
            elif g.endswith("attn_k.weight"):
                w = unpermute(w, cfg.n_kv_heads)
            p.copy_(torch.from_numpy(w))
    expected = reference_logits(ref, PROMPT)
    assert np.abs(ours - expected).max() <= 1e-4


def test_sharded_bf16_folder(tmp_path: Path, spm_model: Path) -> None:
    import torch

    folder = make_tiny_llama(tmp_path / "bf16", spm_model, "gqa_tied", dtype="bfloat16")
    ref = reference_model(folder)
    assert (folder / "model.safetensors").is_file()
    # re-save in shards with an index, as large checkpoints come
    sharded = tmp_path / "sharded"
    ref_bf16 = ref.to(torch.bfloat16)
    ref_bf16.save_pretrained(sharded, max_shard_size="20KB")
    for f in ("tokenizer.model", "tokenizer_config.json"):
        (sharded / f).write_bytes((folder / f).read_bytes())
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 1
    ours = load_reference_precision(sharded).logits(PROMPT)
    expected = reference_logits(reference_model(sharded), PROMPT)  # bf16 weights, computed in float32
    assert np.abs(ours - expected).max() <= 1e-4


def test_residual_trace_matches_transformers_hidden_states(tiny) -> None:  # noqa: ANN001
    """The residual stream the analysis tools read: block inputs equal transformers' hidden states."""
    import torch

    folder, _ = tiny
    ref = reference_model(folder)  # fresh: other tests of the module round the shared one's weights
    ours = load_reference_precision(folder).residuals(PROMPT)
    depth = ref.config.num_hidden_layers
    assert ours.shape == (2 * depth + 1, len(PROMPT), ref.config.hidden_size)
    with torch.no_grad():
        hidden = ref(torch.tensor([PROMPT]), output_hidden_states=True).hidden_states
    for s in range(depth):  # hidden_states[s] is block s's input; the last entry is after the final norm
        assert np.abs(ours[2 * s] - hidden[s][0].numpy()).max() <= 1e-4
    final = ours[-1]
    normed = final / np.sqrt((final**2).mean(-1, keepdims=True) + ref.config.rms_norm_eps)
    gain = ref.model.norm.weight.detach().numpy()
    assert np.abs(normed * gain - hidden[-1][0].numpy()).max() <= 1e-4
