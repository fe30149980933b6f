"""Shared fixtures: the real demo model, tiny random LLaMA models with a trained sentencepiece tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEMO_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def demo_model_path() -> Path:
    env = os.environ.get("FRANKEN_MODEL")
    return Path(env) if env else Path.home() / ".cache" / "franken-rt" / DEMO_MODEL_NAME


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF); `python tools/fetch_model.py` puts it in the cache."""
    path = demo_model_path()
    if not path.is_file():
        pytest.fail(f"demo model missing at {path}: run `python tools/fetch_model.py` (or set FRANKEN_MODEL)")
    return path


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sentencepiece BPE tokenizer (byte fallback) trained on the pydoc topics text."""
    from tiny_models import train_sentencepiece

    return train_sentencepiece(tmp_path_factory.mktemp("spm"))
