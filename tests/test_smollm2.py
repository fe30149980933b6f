"""The real model, SmolLM2-135M-Instruct (Q4_1 GGUF), against transformers loading the same file dequantized."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import franken_rt
from franken_rt.checkpoint import read_checkpoint
from franken_rt.errors import FrankenError
from franken_rt.eval.tiny_models import load_reference_precision
from franken_rt.model import FLOAT_ROLES, Model

PROMPT = "The capital of France is"
PARAGRAPH = (
    "In 1889, the Eiffel Tower opened in Paris; it was 300 metres tall. Today, about 7 million people visit it "
    "each year, and tickets cost between 10 and 30 euros."
)


@pytest.fixture(scope="module")
def reference(smollm_gguf: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=smollm_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(smollm_gguf.parent, dtype=torch.float32, **kwargs).eval()
    return model, AutoTokenizer.from_pretrained(smollm_gguf.parent, **kwargs)


@pytest.fixture(scope="module")
def ours(smollm_gguf: Path):
    """Reference precision (float activations): the path whose numbers must match transformers'."""
    return load_reference_precision(smollm_gguf)


@pytest.mark.slow  # transformers loads the GGUF file dequantized
def test_greedy_continuation_matches_transformers(ours, reference) -> None:  # noqa: ANN001
    import torch

    model, tok = reference
    ids = tok(PROMPT)["input_ids"]
    assert ours.tokenize(PROMPT) == ids
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0, len(ids):].tolist()
    eos = set(ours.tokenizer.eos_ids)
    while out and out[-1] in eos:
        out.pop()
    got = list(ours.generate_tokens(PROMPT, max_tokens=32, temperature=0))
    assert got == out
    assert "Paris" in ours.detokenize(got)


@pytest.mark.slow
def test_logits_match_transformers(ours, reference) -> None:  # noqa: ANN001
    import torch

    model, tok = reference
    ids = tok(PARAGRAPH)["input_ids"]
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].numpy()
    mine = ours.logits(ids)
    assert np.abs(mine[-1] - theirs[-1]).max() <= 1e-3
    assert np.abs(mine - theirs).max() <= 1e-3


@pytest.mark.slow
def test_threads_and_kernel_paths_agree(smollm_gguf: Path, ours) -> None:  # noqa: ANN001
    ids = ours.tokenize(PARAGRAPH)
    base = ours.logits(ids)
    one = franken_rt.load(smollm_gguf, threads=1, activations="f32", kv_cache="f32").logits(ids)
    assert np.array_equal(one, base)  # the same sums, however the rows are split
    scalar = load_reference_precision(smollm_gguf, kernels="scalar").logits(ids)
    assert np.abs(scalar - base).max() <= 1e-3


def test_prompt_batching_and_prefix_reuse(ours) -> None:  # noqa: ANN001
    ids = ours.tokenize(PARAGRAPH * 4)
    assert len(ids) > 64  # crosses a prompt batch boundary
    full = ours.logits(ids)
    again = list(ours.generate_tokens(ids[:-1] + ids[-1:], max_tokens=1, temperature=0))
    assert again == [int(full[-1].argmax())]
    assert ours.last_stats.prompt_tokens == 1  # the cached prefix was reused


def test_sampling_is_reproducible_and_varied(ours) -> None:  # noqa: ANN001
    def sample(seed: int) -> list[int]:
        return list(ours.generate_tokens(PROMPT, max_tokens=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0,
                                         seed=seed, ignore_eos=True))

    a, b, c = sample(7), sample(7), sample(8)
    assert a == b
    assert a != c
    greedy = list(ours.generate_tokens(PROMPT, max_tokens=8, temperature=0, ignore_eos=True))
    assert list(ours.generate_tokens(PROMPT, max_tokens=8, temperature=1.0, top_k=1, seed=3, ignore_eos=True)) == greedy


def test_stop_strings_and_budget(ours) -> None:  # noqa: ANN001
    full = "".join(ours.generate(PROMPT, max_tokens=24, temperature=0, ignore_eos=True))
    cut = full.strip().split()[2]
    text = "".join(ours.generate(PROMPT, max_tokens=24, temperature=0, stop=[cut], ignore_eos=True))
    assert cut not in text and full.startswith(text)
    assert ours.last_stats.finish_reason == "stop"
    list(ours.generate(PROMPT, max_tokens=5, temperature=0, ignore_eos=True))
    assert ours.last_stats.generated_tokens == 5 and ours.last_stats.finish_reason == "length"


def test_chat_template_stops_at_end_of_turn(ours) -> None:  # noqa: ANN001
    prompt = ours.chat_prompt([{"role": "user", "content": "What is the capital of France? One word."}])
    text = "".join(ours.generate(prompt, max_tokens=48, temperature=0))
    assert "Paris" in text
    assert ours.last_stats.finish_reason == "eos"


@pytest.mark.slow  # perplexity with three caches
def test_kv_cache_types(smollm_gguf: Path) -> None:
    """An 8-bit KV cache takes half the memory of f16 (a quarter of f32) and costs < 0.5% perplexity. Float
    activations isolate the cache's effect: with 8-bit activations, any change of the inputs moves perplexity on
    this short text by up to ~0.5% either way (rounding decisions flip), which would drown what is measured."""
    from franken_rt.eval.corpus import pydoc_text
    from franken_rt.eval.perplexity import perplexity

    text = pydoc_text()[:30000]
    result = {}
    for kv in ("f32", "f16", "q8"):
        model = franken_rt.load(smollm_gguf, threads=2, n_ctx=512, kv_cache=kv, activations="f32")
        result[kv] = (model._core.kv_cache_bytes, perplexity(model, text, ctx=512, max_windows=2).ppl)
    assert result["f16"][0] * 2 == result["f32"][0]
    assert result["q8"][0] <= result["f16"][0] * 34 / 64 + 1  # 34 bytes per 32 values against 64
    assert abs(result["f16"][1] / result["f32"][1] - 1) <= 0.001
    assert result["q8"][1] / result["f16"][1] - 1 <= 0.005


def test_two_models_in_two_threads_match_sequential_runs(smollm_gguf: Path) -> None:
    """The core releases the GIL and keeps no shared mutable state: concurrent generations are independent."""
    from concurrent.futures import ThreadPoolExecutor

    prompts = ["The capital of France is", "Once upon a time"]

    def run(model, prompt: str) -> list[int]:  # noqa: ANN001
        return list(model.generate_tokens(prompt, max_tokens=16, temperature=0.7, seed=11, ignore_eos=True))

    # fresh models each time: a model that already holds a prompt would reuse its cache (a different batching)
    sequential = [run(franken_rt.load(smollm_gguf, threads=1), p) for p in prompts]
    models = [franken_rt.load(smollm_gguf, threads=1) for _ in prompts]
    with ThreadPoolExecutor(max_workers=2) as pool:
        concurrent = list(pool.map(run, models, prompts))
    assert concurrent == sequential


def test_generation_imports_no_optional_library(smollm_gguf: Path, tmp_path: Path) -> None:
    """Loading and generating (no chat template) imports none of the libraries the converter, the tests or the
    chat template use: each would add megabytes to the resident memory of every generation."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "gguf", "jinja2", "tqdm", "sentencepiece", "rich", "matplotlib")
    code = (
        "import sys, franken_rt\n"
        "m = franken_rt.load(sys.argv[1], threads=1, n_ctx=64)\n"
        "print(''.join(m.generate('Hi', max_tokens=2, temperature=0)))\n"
        f"print(sorted(name for name in {heavy!r} if name in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(smollm_gguf)], capture_output=True, text=True, check=True,
                         cwd=tmp_path)  # not the source tree: the package as installed (or on PYTHONPATH)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow  # 50 short chat replies, ~20 s
def test_default_settings_answer_simple_questions(smollm_gguf: Path) -> None:
    """10 questions the model answers right at reference precision (tests/data/simple_questions.jsonl), 5 seeds,
    the default path and the default sampling: right = an expected word appears in the reply."""
    questions = [json.loads(line) for line in (Path(__file__).parent / "data" / "simple_questions.jsonl").open()]
    ours = franken_rt.load(smollm_gguf, threads=2)  # what `franken-run MODEL --chat` runs
    right = 0
    for q in questions:
        for seed in range(5):
            reply = "".join(ours.generate(ours.chat_prompt([{"role": "user", "content": q["question"]}]),
                                          max_tokens=64, seed=seed))
            right += any(a.lower() in reply.lower() for a in q["answers"])
    assert right >= 0.8 * 5 * len(questions), f"{right} of {5 * len(questions)} right"


def test_float_inputs_per_role(smollm_gguf: Path) -> None:
    """The per-role knob for measuring sensitivity to 8-bit activations: every role in float is the float path
    exactly, one role in float changes the logits, a wrong name is refused."""
    ckpt = read_checkpoint(smollm_gguf)
    ids = [1, 504, 3575, 282, 4649, 314]
    exact = Model(ckpt, threads=2, activations="f32").logits(ids)
    assert np.array_equal(Model(ckpt, threads=2, float_roles=FLOAT_ROLES).logits(ids), exact)
    q8 = Model(ckpt, threads=2).logits(ids)
    assert not np.array_equal(Model(ckpt, threads=2, float_roles=["output"]).logits(ids), q8)
    with pytest.raises(FrankenError, match="float_roles"):
        Model(ckpt, float_roles=["lm_head"])
