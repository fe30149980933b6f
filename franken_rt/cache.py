"""The user cache folder of franken-rt: $FRANKEN_CACHE, by default ~/.cache/franken-rt. It holds the calibration
text sampled from a model, the demo model and the files converted from it, and llama.cpp's tools built from source."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("FRANKEN_CACHE", Path.home() / ".cache" / "franken-rt"))
