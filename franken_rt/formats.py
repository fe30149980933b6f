"""The storage formats: one row per type, the one Python statement of each format's facts.

The C++ core states the same facts in `csrc/kernels/formats.h` (`kFormats`); `tests/test_formats.py` holds the two
tables equal through `_core.formats()`. The Python table is kept rather than read from the core because reading a
checkpoint's header (and the converter's size planning) must work without the built core, and needs no numpy.
Each quantized row's numpy codec is its row in `franken_rt.quant.formats.CODECS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


@dataclass(frozen=True)
class Format:
    """`id`: GGUF's ggml_type id (ours from 1000 up, which llama.cpp does not read). `header_halves`: f16 words
    of each block's header (scale, minimum), `header_at` bytes into the block. `codebook`: the signed levels a
    code indexes (codebook formats). `writable`: franken-convert writes it (else it is read only, from
    llama.cpp's files)."""

    id: int
    name: str
    block_elems: int
    block_bytes: int
    header_halves: int = 0
    codebook: tuple[int, ...] = ()
    interleaves: bool = False  # the core repacks it into eight-row groups for its integer kernels
    llama_ftype: int = 0  # llama.cpp's LLAMA_FTYPE for a file mostly of this type
    header_at: int = 0
    writable: bool = True

    @property
    def quantized(self) -> bool:
        return self.block_elems > 1

    @property
    def portable(self) -> bool:
        """llama.cpp reads it."""
        return self.id < 1000

    @property
    def bits(self) -> float:
        """Bits per weight."""
        return 8 * self.block_bytes / self.block_elems

    @property
    def cli_name(self) -> str:
        return self.name.lower()


FORMATS: tuple[Format, ...] = (
    Format(0, "F32", 1, 4, llama_ftype=0),
    Format(1, "F16", 1, 2, llama_ftype=1),
    Format(30, "BF16", 1, 2, llama_ftype=32),
    # f16 scale + 32 int8
    Format(8, "Q8_0", 32, 34, header_halves=1, interleaves=True, llama_ftype=7),
    # f16 scale + 16 bytes of nibbles: d * (q - 8)
    Format(2, "Q4_0", 32, 18, header_halves=1, interleaves=True, llama_ftype=2),
    # f16 scale + f16 minimum + 16 bytes of nibbles: d * q + m
    Format(3, "Q4_1", 32, 20, header_halves=2, interleaves=True, llama_ftype=3),
    # f16 scale + 16 bytes of nibbles indexing a non-linear level set: d * levels[q]; llama.cpp's MOSTLY_IQ4_NL
    Format(20, "IQ4_NL", 32, 18, header_halves=1, interleaves=True, llama_ftype=25,
           codebook=(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)),
    # read only, from llama.cpp's files (its _K_M/_K_S mixes and their fallbacks for rows not of 256 elements):
    # f16 scale + 4 bytes of fifth bits + 16 bytes of nibbles: d * (q - 16)
    Format(6, "Q5_0", 32, 22, header_halves=1, interleaves=True, llama_ftype=8, writable=False),
    # f16 scale + f16 minimum + Q5_0's codes: d * q + m
    Format(7, "Q5_1", 32, 24, header_halves=2, interleaves=True, llama_ftype=9, writable=False),
    # 256-element superblocks: f16 scale and minimum, 6-bit scales and minimums of eight sub-blocks, nibbles
    Format(12, "Q4_K", 256, 144, header_halves=2, interleaves=True, llama_ftype=15, writable=False),
    # Q4_K with a fifth bit per element
    Format(13, "Q5_K", 256, 176, header_halves=2, interleaves=True, llama_ftype=17, writable=False),
    # 6-bit codes, int8 scales of sixteen sub-blocks, the f16 scale last: d * sc * (q - 32)
    Format(14, "Q6_K", 256, 210, header_halves=1, header_at=208, interleaves=True, llama_ftype=18, writable=False),
    # ours: f16 scale + 4 bytes of high bits + 8 bytes of 2-bit pairs: d * (q - 4); llama.cpp's "guessed" flag
    Format(1003, "Q3_0", 32, 14, header_halves=1, interleaves=True, llama_ftype=1024),
    # ours: Q3_0's block, its codes indexing eight non-linear levels: d * levels[q]
    Format(1004, "Q3_NL", 32, 14, header_halves=1, interleaves=True, llama_ftype=1024,
           codebook=(-5, -3, -2, -1, 0, 1, 2, 4)),
    # ours: f16 scale + 8 bytes of 2-bit codes (Q3_0's low planes) indexing four levels: d * levels[q], 2.5 bits
    Format(1005, "Q2_NL", 32, 10, header_halves=1, interleaves=True, llama_ftype=1024, codebook=(-5, -2, 0, 3)),
)

_BY_ID = {f.id: f for f in FORMATS}

DType = IntEnum("DType", [(f.name, f.id) for f in FORMATS], module=__name__)  # type: ignore[misc]
DType.__doc__ = "Tensor storage types; the numbers are GGUF's ggml_type ids, shared with the C++ core."


def format_of(dtype: int) -> Format:
    """The row of a type id (KeyError for an unknown one: readers check `is_known` first)."""
    return _BY_ID[int(dtype)]


def is_known(dtype: int) -> bool:
    return int(dtype) in _BY_ID


def by_cli_name() -> dict[str, DType]:
    """`--quant`/`--tensor-type` names of every format franken-convert writes, in table order."""
    return {f.cli_name: DType(f.id) for f in FORMATS if f.writable}


def quantized_types() -> list[DType]:
    """Every quantized format the runtime reads."""
    return [DType(f.id) for f in FORMATS if f.quantized]


def whole_blocks(dtype: int, n: int) -> int:
    """n rounded down to whole blocks of the type (at least one block): a superblock format's nearest row length
    (SmolLM2's 576-wide rows are not whole 256-element blocks; llama.cpp stores them in other types)."""
    block = format_of(dtype).block_elems
    return max(block, n // block * block)
