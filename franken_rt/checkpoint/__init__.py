"""Reading model files: a Hugging Face folder or a GGUF file becomes a Checkpoint."""

from __future__ import annotations

from pathlib import Path

from franken_rt.checkpoint.gguf import GGUF_MAGIC, read_gguf
from franken_rt.checkpoint.hf import read_hf
from franken_rt.checkpoint.types import Checkpoint, DType, TensorInfo
from franken_rt.errors import FrankenError

__all__ = ["Checkpoint", "DType", "TensorInfo", "read_checkpoint"]


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Open a model from a GGUF file or a Hugging Face folder (config.json + *.safetensors + tokenizer)."""
    p = Path(path)
    if p.is_dir():
        return read_hf(p)
    if not p.exists():
        raise FrankenError(f"no such file or folder: {p}")
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise FrankenError(f"cannot read {p}: {e.strerror or e}") from None
    if magic == GGUF_MAGIC:
        return read_gguf(p)
    if p.suffix == ".safetensors" and (p.parent / "config.json").is_file():
        return read_hf(p.parent)
    raise FrankenError(f"{p}: not a GGUF file or a Hugging Face model folder")
