"""Decode of a ~1.1B-parameter model (too large for the caches) against the machine's measured read bandwidth:
every weight except the embedding table is read once per token, so bytes per token / time per token is the
bandwidth the decode step reaches."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from synthetic import synthetic_model

import franken_rt
from franken_rt import _core
from franken_rt.checkpoint import DType, read_checkpoint

pytestmark = [pytest.mark.gate, pytest.mark.slow]  # a ratio gate, on a 1.1B model built first


@pytest.mark.parametrize("dtype", [DType.Q4_0, DType.Q8_0], ids=lambda d: d.name)
def test_decode_fraction_of_bandwidth(dtype: DType) -> None:
    path = synthetic_model(dtype)
    ckpt = read_checkpoint(path)
    bytes_per_token = sum(t.nbytes for name, t in ckpt.tensors.items() if name != "token_embd.weight")
    model = franken_rt.load(path, threads=2, n_ctx=256)
    token = np.array([1], dtype=np.int32)
    model._core.eval(token)  # page the weights in
    best = float("inf")
    bandwidth = 0.0
    for _ in range(3):  # alternate the probe and the model, best of each
        bandwidth = max(bandwidth, _core.testing.memory_bandwidth(1 << 30, 2, 2))
        model._core.truncate(0)
        t0 = time.perf_counter()
        for _ in range(8):
            model._core.eval(token)
        best = min(best, (time.perf_counter() - t0) / 8)
    reached = bytes_per_token / best
    print(f"{dtype.name}: {bytes_per_token / 2**20:.0f} MiB/token, {1 / best:.2f} tok/s, {reached / 1e9:.2f} GB/s of "
          f"{bandwidth / 1e9:.2f} GB/s measured = {reached / bandwidth:.0%}")
    # Measured here against the memchr probe: Q4_0 70-80%, Q8_0 76-82% on a quiet machine; with another process
    # keeping one of the 2 cores busy (`yes > /dev/null`), 53% and 63% since the thread pool hands out chunks
    # (41-43% before: a descheduled thread held up every step).
    load = os.getloadavg()[0]
    assert reached / bandwidth >= 0.5, (f"{reached / bandwidth:.0%} of the bandwidth measured beside it; load average "
                                        f"{load:.1f} on {os.cpu_count()} CPUs" +
                                        (": the machine is busier than the gate allows for" if load > 1.5 else ""))
