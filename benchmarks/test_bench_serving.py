"""Serving throughput: streams decoded together must share the passes over the weights. Ratios measured in one
run, alternating; the comparison with llama-server runs where its binary is built (python tools/llamacpp.py)."""

from __future__ import annotations

import pytest

from franken_rt.eval.demo_model import existing_model_path
from franken_rt.eval.llamacpp import bin_dir
from franken_rt.eval.serving import drive, llama_server, running_server

pytestmark = pytest.mark.gate
ROUNDS = 3


def best_rates(url: str, streams: tuple[int, ...], max_tokens: int = 48) -> dict[int, float]:
    """Aggregate tokens/s per stream count, the best of ROUNDS rounds taken in turn."""
    drive(url, 1, requests=1, max_tokens=4)  # warm up
    best = dict.fromkeys(streams, 0.0)
    for _ in range(ROUNDS):
        for n in streams:
            best[n] = max(best[n], drive(url, n, max_tokens=max_tokens).tokens_per_second)
    return best


def test_four_streams_share_the_weights() -> None:
    with running_server(existing_model_path(), "--parallel", "4", "--ctx", "256") as server:
        rate = best_rates(server.url, (1, 4))
    ratio = rate[4] / rate[1]
    print(f"aggregate tokens/s: 1 stream {rate[1]:.1f}, 4 streams {rate[4]:.1f} ({ratio:.2f}x)")
    # The target is 2.5x (measured 2.7-2.9x here with the client on the same 2 cores, docs/serving.md); the gate
    # is set where a loss of batching (streams run one after another: ~1x) could never pass.
    assert ratio >= 2.0


@pytest.mark.slow
@pytest.mark.skipif(not (bin_dir() / "llama-server").is_file(),
                    reason="llama-server not built (python tools/llamacpp.py builds it); not a CI step")
def test_against_llama_server() -> None:
    model = existing_model_path()
    rates = {}
    for engine in ("franken-serve", "llama-server"):
        start = (running_server(model, "--parallel", "4", "--ctx", "256") if engine == "franken-serve"
                 else llama_server(bin_dir() / "llama-server", model, 4, 256))
        with start as server:
            rates[engine] = best_rates(server.url, (2, 4))
    for n in (2, 4):
        ratio = rates["franken-serve"][n] / rates["llama-server"][n]
        print(f"{n} streams: franken-serve {rates['franken-serve'][n]:.1f}, llama-server "
              f"{rates['llama-server'][n]:.1f} tok/s ({ratio:.2f}x)")
        assert ratio >= 1.2
