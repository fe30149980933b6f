"""Shared fixtures: the real demo model, tiny random LLaMA models with a trained sentencepiece tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from franken_rt.eval.demo_model import existing_model_path
from franken_rt.eval.tiny_models import train_sentencepiece


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF); `python tools/fetch_model.py` puts it in the cache."""
    return existing_model_path()


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sentencepiece BPE tokenizer (byte fallback) trained on the pydoc topics text."""
    return train_sentencepiece(tmp_path_factory.mktemp("spm"))
