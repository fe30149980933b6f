"""What every reader produces: a Checkpoint is hyperparameters + named tensors (as places in files) + tokenizer.

Tensors are never loaded here: a TensorInfo says where the bytes are, and the core maps the file.
Names follow GGUF's llama convention (`token_embd.weight`, `blk.3.attn_q.weight`, ...), whatever the source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from franken_rt.config import ModelConfig
    from franken_rt.tokenizer import Tokenizer


class DType(IntEnum):
    """Tensor storage types; the numbers are GGUF's `ggml_type` ids, shared with the C++ core. Ids from 1000 up are
    franken-rt's own formats, which llama.cpp does not read (ggml has no 3-bit type with 32-element blocks)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q8_0 = 8
    BF16 = 30
    Q3_0 = 1003


# (elements per block, bytes per block): facts of the GGUF/ggml formats.
BLOCK_LAYOUT: dict[DType, tuple[int, int]] = {
    DType.F32: (1, 4),
    DType.F16: (1, 2),
    DType.BF16: (1, 2),
    DType.Q8_0: (32, 34),  # f16 scale + 32 x int8
    DType.Q4_0: (32, 18),  # f16 scale + 16 bytes of nibbles
    DType.Q4_1: (32, 20),  # f16 scale + f16 min + 16 bytes of nibbles
    DType.Q3_0: (32, 14),  # f16 scale + 4 bytes of high bits + 8 bytes of 2-bit pairs (ours)
}


def ggml_type(dtype: DType) -> Any:
    """The type id as gguf's writer takes it: its enum member for ggml's types, the plain id for ours."""
    import gguf

    try:
        return gguf.GGMLQuantizationType(int(dtype))
    except ValueError:
        return int(dtype)


def nbytes_of(dtype: DType, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of this type and shape (row-major, last dim contiguous) occupies."""
    block, size = BLOCK_LAYOUT[dtype]
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
