"""Shared fixtures: the real demo model, tiny random LLaMA models with a trained sentencepiece tokenizer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from fetch_model import existing_model_path  # noqa: E402


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF); `python tools/fetch_model.py` puts it in the cache."""
    return existing_model_path()


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sentencepiece BPE tokenizer (byte fallback) trained on the pydoc topics text."""
    from tiny_models import train_sentencepiece

    return train_sentencepiece(tmp_path_factory.mktemp("spm"))
