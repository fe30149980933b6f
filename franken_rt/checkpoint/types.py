"""What every reader produces: a Checkpoint is hyperparameters + named tensors (as places in files) + tokenizer.

Tensors are never loaded here: a TensorInfo says where the bytes are, and the core maps the file.
Names follow GGUF's llama convention (`token_embd.weight`, `blk.3.attn_q.weight`, ...), whatever the source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from franken_rt.formats import DType, format_of

if TYPE_CHECKING:
    from franken_rt.config import ModelConfig
    from franken_rt.tokenizer import Tokenizer


def ggml_type(dtype: DType) -> Any:
    """The type id as gguf's writer takes it: its enum member for ggml's types, the plain id for ours."""
    import gguf

    try:
        return gguf.GGMLQuantizationType(int(dtype))
    except ValueError:
        return int(dtype)


def nbytes_of(dtype: DType, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of this type and shape (row-major, last dim contiguous) occupies."""
    f = format_of(dtype)
    block, size = f.block_elems, f.block_bytes
    row = shape[-1]
    if row % block:
        raise ValueError(f"row length {row} is not a multiple of the {dtype.name} block size {block}")
    n_rows = math.prod(shape[:-1])  # Python integers: a hostile shape must not wrap around
    return n_rows * (row // block) * size


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: which file, where in it, its type and shape (outermost first; the last dim is contiguous)."""

    name: str
    file: Path
    offset: int
    dtype: DType
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.dtype, self.shape)


@dataclass
class Checkpoint:
    """A model as found on disk, ready to hand to the core.

    `rope_interleaved` tells which pairing of RoPE dimensions the q/k weights were stored for:
    GGUF llama files pair adjacent dimensions (2i, 2i+1); Hugging Face checkpoints pair i with i + d/2.
    `layer_plan`: the stored blocks in execution order (GGUF metadata `franken.layer_plan`); None runs each once.
    """

    config: ModelConfig
    tensors: dict[str, TensorInfo]
    tokenizer: Tokenizer
    rope_interleaved: bool
    source: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    layer_plan: list[int] | None = None
