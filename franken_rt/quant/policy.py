"""Per-tensor storage types: what `franken-convert --quant` means for each tensor, and user overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from franken_rt.checkpoint.types import DType, TensorInfo
from franken_rt.errors import FrankenError
from franken_rt.formats import FORMATS, by_cli_name, format_of

QUANT_NAMES = by_cli_name()  # every format franken-convert writes, by its CLI name
LOW_BIT = tuple(DType(f.id) for f in FORMATS if f.quantized and f.writable and f.bits < 8)  # 2- to 4-bit
# Mixes, as llama.cpp's "_M" types: the base type, with the tensors most sensitive to quantization (the attention
# values and the FFN down projection) kept wider: (base, pattern, their type). q3_0m is the mixed 3/4-bit format.
_SENSITIVE = r"attn_v\.|ffn_down\."
MIXES = {"q4_0m": ("q4_0", _SENSITIVE, "q8_0"), "q4_1m": ("q4_1", _SENSITIVE, "q8_0"),
         "q3_0m": ("q3_0", _SENSITIVE, "q4_0"), "iq4_nlm": ("iq4_nl", _SENSITIVE, "q8_0")}


def parse_dtype(name: str) -> DType:
    try:
        return QUANT_NAMES[name.lower()]
    except KeyError:
        raise FrankenError(f"unknown type {name!r} (choose from {', '.join(QUANT_NAMES)})") from None


@dataclass
class QuantPolicy:
    """`base` for 2-D weights; norms stay F32. With a 3- or 4-bit base, the embedding/output matrix is kept at
    Q8_0, as llama.cpp's mixes keep it above 4 bits: it is read by every token and errors there reach every logit.
    `overrides`: (regex, type) pairs matched against tensor names before any default, first match wins."""

    base: DType
    overrides: list[tuple[re.Pattern[str], DType]] = field(default_factory=list)

    @classmethod
    def parse(cls, quant: str, overrides: list[str] = ()) -> QuantPolicy:  # type: ignore[assignment]
        pairs = []
        if quant.lower() in MIXES:
            quant, sensitive, wider = MIXES[quant.lower()]
            overrides = [*overrides, f"{sensitive}={wider}"]  # the user's overrides come first and win
        for item in overrides:
            pattern, sep, type_name = item.rpartition("=")
            if not sep or not pattern:
                raise FrankenError(f"--tensor-type wants PATTERN=TYPE, got {item!r}")
            try:
                pairs.append((re.compile(pattern), parse_dtype(type_name)))
            except re.error as e:
                raise FrankenError(f"--tensor-type: bad pattern {pattern!r} ({e})") from None
        return cls(parse_dtype(quant), pairs)

    def __call__(self, t: TensorInfo) -> DType:
        if len(t.shape) != 2:
            return DType.F32
        chosen = next((d for rx, d in self.overrides if rx.search(t.name)), None)
        if chosen is None:
            chosen = self.base
            if self.base in LOW_BIT and t.name in ("token_embd.weight", "output.weight"):
                chosen = DType.Q8_0
        if t.shape[-1] % format_of(chosen).block_elems:
            return DType.F16  # rows that are not whole blocks cannot be quantized
        return chosen
