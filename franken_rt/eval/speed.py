"""Prompt and generation speed the way llama-bench measures it: pp = a fresh prompt of P tokens in one batch,
tg = G single-token decode steps (no sampling); tokens per second of each, and this process's peak RSS.

    python -m franken_rt.eval.speed MODEL [-t THREADS] [-p 128] [-n 64] [-r 3] [--ctx N]   (prints JSON)
    python -m franken_rt.eval.speed MODEL -d DEPTH [--kv-cache f16|q8] [-n 64]   (decode after DEPTH tokens)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from array import array

import franken_rt
from franken_rt import _core
from franken_rt.eval.memory import peak_rss_mib


def measure(path: str, threads: int, n_prompt: int = 128, n_gen: int = 64, repeats: int = 3,
            n_ctx: int | None = None) -> dict:
    """`n_ctx`: the KV cache's size, by default just what the run fills (as llama-bench sizes it)."""
    model = franken_rt.load(path, threads=threads, n_ctx=n_ctx or n_prompt + n_gen)
    core = model._core
    # Python's generator and array('i'), not numpy: importing it would add over 10 MiB to the peak RSS this
    # process reports, memory no generation needs.
    rng = random.Random(0)
    prompt = array("i", [rng.randrange(model.config.vocab_size) for _ in range(n_prompt)])
    pp, tg = [], []
    for _ in range(repeats + 1):  # the first round warms caches and pages in the weights
        core.truncate(0)
        t0 = time.perf_counter()
        core.advance(prompt)
        pp.append(n_prompt / (time.perf_counter() - t0))
        tg.append(_decode_rate(core, 0, n_gen))
    return {"engine": "franken-rt", "model": path, "threads": threads, "pp": statistics.median(pp[1:]),
            "tg": statistics.median(tg[1:]), "peak_rss_mib": peak_rss_mib(), "kernels": model.kernels}


def _decode_rate(core: _core.Model, start: int, n_gen: int) -> float:
    """Tokens/s of n_gen single-token steps after the cache is cut back to `start` tokens."""
    core.truncate(start)
    token = array("i", [1])
    t0 = time.perf_counter()
    for _ in range(n_gen):
        core.advance(token)
    return n_gen / (time.perf_counter() - t0)


def measure_depth(path: str, threads: int, depth: int, kv_cache: str = "f16", n_gen: int = 64,
                  repeats: int = 2) -> dict:
    """Decode speed after `depth` tokens are in the cache (llama-bench's -d): n_gen single-token steps, the
    median of `repeats` after a warm-up round."""
    model = franken_rt.load(path, threads=threads, n_ctx=depth + n_gen, kv_cache=kv_cache)
    core = model._core
    rng = random.Random(0)
    core.advance(array("i", [rng.randrange(model.config.vocab_size) for _ in range(depth)]))
    tg = [_decode_rate(core, depth, n_gen) for _ in range(repeats + 1)]
    return {"engine": "franken-rt", "model": path, "threads": threads, "depth": depth, "kv_cache": kv_cache,
            "tg": statistics.median(tg[1:]), "peak_rss_mib": peak_rss_mib(), "kernels": model.kernels}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("-r", "--repeats", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=None, help="KV cache size in tokens (default: prompt + generated)")
    ap.add_argument("-d", "--depth", type=int, default=None,
                    help="decode only, after this many tokens in the cache (llama-bench's -d)")
    ap.add_argument("--kv-cache", default="f16", choices=["f16", "q8", "f32"])
    a = ap.parse_args()
    if a.depth is not None:
        print(json.dumps(measure_depth(a.model, a.threads, a.depth, a.kv_cache, a.n_gen)))
    else:
        print(json.dumps(measure(a.model, a.threads, a.n_prompt, a.n_gen, a.repeats, a.ctx)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
