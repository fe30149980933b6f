"""Decode of ~1B-parameter models (too large for the caches) against the machine's measured read bandwidth: every
weight except the embedding table (unless tied: then it is the output matrix) is read once per token, so bytes per
token / time per token is the bandwidth the decode step reaches. Two models: random Q4_0/Q8_0 codes in a 1.1B
llama (synthetic.py), and the Llama 3.2 1B shape converted by franken-convert from a synthetic sharded bf16 Hugging
Face checkpoint (franken_rt.eval.synthetic_llama; docs/convert.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from synthetic import llama3_gguf, synthetic_model

from franken_rt.checkpoint import DType
from franken_rt.eval.big_model import decode_vs_bandwidth

pytestmark = [pytest.mark.gate, pytest.mark.slow]  # a ratio gate, on a 1B model built first


def check_fraction(path: Path, label: str) -> None:
    r = decode_vs_bandwidth(path, threads=2)
    fraction = r["fraction"]
    print(f"{label}: {r['bytes_per_token'] / 2**20:.0f} MiB/token, {r['tok_s']:.2f} tok/s, {r['reached_gb_s']:.2f} "
          f"GB/s of {r['bandwidth_gb_s']:.2f} GB/s measured = {fraction:.0%}")
    # Measured here against the memchr probe: Q4_0 70-80%, Q8_0 76-82% on a quiet machine; with another process
    # keeping one of the 2 cores busy (`yes > /dev/null`), 53% and 63% since the thread pool hands out chunks
    # (41-43% before: a descheduled thread held up every step).
    load = os.getloadavg()[0]
    assert fraction >= 0.5, (f"{fraction:.0%} of the bandwidth measured beside it; load average "
                             f"{load:.1f} on {os.cpu_count()} CPUs" +
                             (": the machine is busier than the gate allows for" if load > 1.5 else ""))


@pytest.mark.parametrize("dtype", [DType.Q4_0, DType.Q8_0], ids=lambda d: d.name)
def test_decode_fraction_of_bandwidth(dtype: DType) -> None:
    check_fraction(synthetic_model(dtype), dtype.name)


def test_decode_fraction_of_bandwidth_llama3_1b_converted() -> None:
    """Llama 3.2 1B's shape (tied 128256 x 2048 embedding, GQA 32/8), q4_0 with its embedding at q8_0."""
    check_fraction(llama3_gguf("1b", "q4_0"), "llama3-1b q4_0 (converted)")
