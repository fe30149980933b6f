"""Calibration text for layer analysis, block selection, healing and size targets.

Without a file, the default is text sampled from the model itself (fixed seed, a few neutral short prompts,
temperature 1): it follows what the model knows instead of one domain. It is cached in the user cache folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from franken_rt.cache import cache_dir
from franken_rt.errors import FrankenError
from franken_rt.eval import corpus
from franken_rt.eval.perplexity import token_windows

PROMPTS = (
    "Once upon a time",
    "The main idea of the article is",
    "Here is a short explanation:",
    "In the morning,",
    "A list of things to remember:",
    "The history of the city",
    "Dear friend,",
    "How does it work? First,",
)
SAMPLE_TOKENS = 200  # per prompt
SAMPLE_SEED = 1234
SAMPLE_VERSION = 1  # part of the cache key: bump when the sampling recipe changes


def read_text(path: str | Path) -> str:
    text = corpus.read_text(path)
    if not text.strip():
        raise FrankenError(f"{path}: the calibration text is empty")
    return text


def model_key(model) -> str:  # noqa: ANN001 (franken_rt.model.Model)
    """A key for what the model computes: its hyperparameters and a fingerprint of its tensors' places."""
    ckpt = model.checkpoint
    h = hashlib.sha256(repr((ckpt.config, SAMPLE_VERSION)).encode())
    for name in sorted(ckpt.tensors)[:8]:
        t = ckpt.tensors[name]
        st = t.file.stat()
        h.update(f"{name}:{t.file.name}:{st.st_size}:{t.offset}:{int(t.dtype)}".encode())
    return h.hexdigest()[:16]


def sampled_text(model, n_tokens: int | None = None, cache: bool = True) -> str:  # noqa: ANN001
    """Text the model writes from PROMPTS (seeded, temperature 1), n_tokens (SAMPLE_TOKENS) per prompt; cached."""
    n_tokens = n_tokens if n_tokens is not None else SAMPLE_TOKENS
    path = cache_dir() / "calibration" / f"sampled-{model_key(model)}-{n_tokens}.txt"
    if cache and path.is_file():
        return path.read_text(encoding="utf-8")
    pieces = []
    for i, prompt in enumerate(PROMPTS):
        out = "".join(model.generate(prompt, max_tokens=n_tokens, temperature=1.0, top_k=0, top_p=1.0, min_p=0.05,
                                     seed=SAMPLE_SEED + i, ignore_eos=True))
        pieces.append(prompt + out)
    text = "\n\n".join(pieces)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return text


def calibration_text(model, path: str | Path | None = None) -> str:  # noqa: ANN001
    """The text of `path`, or the model-sampled default."""
    return read_text(path) if path is not None else sampled_text(model)


def windows(model, text: str, ctx: int, max_windows: int | None = None) -> list[list[int]]:  # noqa: ANN001
    """Non-overlapping token windows of `ctx` tokens of the calibration text."""
    return token_windows(model, text, ctx, max_windows, what="the calibration text")
