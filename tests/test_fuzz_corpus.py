"""Every file of the fuzzing corpus (tests/fuzz/corpus/<target>/: seeds and the inputs that once crashed a reader)
through its reader: it loads, or raises FrankenError; nothing else. Runs without atheris."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz.fuzz_readers import CORPUS_OF, TARGETS, run_one

FUZZ = Path(__file__).resolve().parent / "fuzz"

CASES = [(target, f) for target in TARGETS for f in sorted((FUZZ / "corpus" / CORPUS_OF[target]).iterdir())]


def test_corpus_is_small_and_covers_every_target() -> None:
    assert {t for t, _ in CASES} == set(TARGETS)
    assert sum(f.stat().st_size for f in (FUZZ / "corpus").rglob("*") if f.is_file()) < 1 << 20


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{t}-{f.name}" for t, f in CASES])
def test_corpus_input(target: str, path: Path) -> None:
    run_one(target, path.read_bytes())  # any exception but FrankenError fails the test


VALID = [(t, f) for t, f in CASES if f.name.startswith(("tiny_", "valid", "llama3_"))]


@pytest.mark.parametrize(("target", "path"), VALID, ids=[f"{t}-{f.name}" for t, f in VALID])
def test_valid_seeds_load(target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())  # the seeds the fuzzer mutates are accepted, not rejected early
