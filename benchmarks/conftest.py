"""The demo model for the end-to-end benchmarks (tools/fetch_model.py puts it in the cache)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from fetch_model import model_path  # noqa: E402


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    path = model_path()
    if not path.is_file():
        pytest.fail(f"demo model missing at {path}: run `python tools/fetch_model.py` (or set FRANKEN_MODEL)")
    return path
