"""Two models in one process, generating from two Python threads at once, give the tokens of sequential runs
(the core releases the GIL while it evaluates, so the threads really overlap)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import franken_rt
from franken_rt.model import Model

# tests/test_smollm2.py keeps a shorter two-thread run in the quick set
pytestmark = pytest.mark.slow

JOBS = [
    dict(prompt="The capital of France is", max_tokens=24, temperature=0.0),
    dict(prompt="Once upon a time", max_tokens=24, temperature=0.9, top_k=50, top_p=0.9, seed=7),
]


def run_concurrently(models: list[Model]) -> list[list[int]]:
    results: list[list[int]] = [[] for _ in JOBS]
    errors: list[BaseException] = []
    start = threading.Barrier(len(JOBS))

    def work(i: int) -> None:
        try:
            start.wait()
            results[i] = list(models[i].generate_tokens(**JOBS[i]))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(JOBS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    return results


def test_two_models_two_threads_match_sequential(smollm_gguf: Path) -> None:
    # Fresh models for every run: a second generation on one model reuses its cached prompt prefix, which is
    # a different (batched vs single-token) evaluation path; here only the threads may differ.
    def fresh() -> list[Model]:
        return [franken_rt.load(smollm_gguf, threads=1, n_ctx=256) for _ in JOBS]

    expected = [list(m.generate_tokens(**job)) for m, job in zip(fresh(), JOBS)]
    assert all(len(e) == 24 for e in expected) and expected[0] != expected[1]
    for _ in range(3):
        assert run_concurrently(fresh()) == expected
