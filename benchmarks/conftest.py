"""The demo model for the end-to-end benchmarks (tools/fetch_model.py puts it in the cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from franken_rt.eval.demo_model import existing_model_path


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF); `python tools/fetch_model.py` puts it in the cache."""
    return existing_model_path()
