"""End to end on the demo model: prompt processing (128 tokens) and generation (64 tokens) tokens/s, decode at
several context lengths (the attention's share), peak memory of a generation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import franken_rt


@pytest.fixture(scope="module")
def model(smollm_gguf: Path):
    return franken_rt.load(smollm_gguf, threads=2, n_ctx=2048 + 64)


def test_prompt_128(benchmark, model) -> None:  # noqa: ANN001
    prompt = np.random.default_rng(0).integers(0, model.config.vocab_size, 128, dtype=np.int32)

    def run() -> None:
        model._core.truncate(0)
        model._core.eval(prompt)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    if not benchmark.disabled:  # the default run (--benchmark-disable) runs it once, untimed
        benchmark.extra_info["tokens_per_s"] = 128 / benchmark.stats.stats.median


@pytest.mark.slow  # 64 decode steps after each prefix, figures only (test_prompt_128 stays in the quick run)
@pytest.mark.parametrize("context", [1, 128, 512, 2048])
def test_generate_64_at_context(benchmark, model, context: int) -> None:  # noqa: ANN001
    prefix = np.random.default_rng(0).integers(0, model.config.vocab_size, context, dtype=np.int32)
    model._core.truncate(0)
    model._core.eval(prefix)
    token = np.array([1], dtype=np.int32)

    def run() -> None:
        model._core.truncate(context)
        for _ in range(64):
            model._core.eval(token)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    if not benchmark.disabled:
        benchmark.extra_info["tokens_per_s"] = 64 / benchmark.stats.stats.median


def speed_run(model: Path, cwd: Path, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "franken_rt.eval.speed", str(model), "-r", "1", *args],
                         capture_output=True, text=True, check=True, cwd=cwd).stdout  # not the source tree
    return json.loads(out)


def test_peak_memory_of_a_generation(smollm_gguf: Path, tmp_path: Path) -> None:
    result = speed_run(smollm_gguf, tmp_path)
    print(f"peak RSS of pp128 + tg64: {result['peak_rss_mib']:.0f} MiB")
    weights_mib = smollm_gguf.stat().st_size / 2**20
    assert result["peak_rss_mib"] < weights_mib + 100  # mapped weights + cache + scratch, no copies


def test_kv_cache_is_resident_only_as_filled(smollm_gguf: Path, tmp_path: Path) -> None:
    """The same 192 tokens with the cache sized for them and for the model's whole context (8192 tokens: 180 MiB of
    f16 keys and values for SmolLM2): the peak may not grow by more than a small part of that."""
    small = speed_run(smollm_gguf, tmp_path)["peak_rss_mib"]
    full = speed_run(smollm_gguf, tmp_path, "--ctx", "8192")["peak_rss_mib"]
    print(f"peak RSS with n_ctx 192: {small:.0f} MiB, with n_ctx 8192: {full:.0f} MiB")
    assert full - small < 16


@pytest.mark.slow  # three processes, a 1024-token prefill each
def test_decode_after_a_long_context(smollm_gguf: Path, tmp_path: Path) -> None:
    """The depth mode of the speed tool (tools/bench_vs_llamacpp.py --depths): decode after 1024 cached tokens, f16 and
    q8 caches; slower than at depth 0 (attention reads the cache), never by more than the cache read explains."""
    short = speed_run(smollm_gguf, tmp_path, "-d", "16", "-n", "16")
    long = {kv: speed_run(smollm_gguf, tmp_path, "-d", "1024", "-n", "16", "--kv-cache", kv) for kv in ("f16", "q8")}
    print(f"decode tok/s at depth 16: {short['tg']:.1f}; at 1024: f16 {long['f16']['tg']:.1f}, "
          f"q8 {long['q8']['tg']:.1f}")
    assert long["f16"]["depth"] == 1024 and long["q8"]["kv_cache"] == "q8"
    assert 0.2 * short["tg"] < long["f16"]["tg"] < 1.1 * short["tg"]
