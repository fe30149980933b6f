"""Sizes as people write them on a command line: `60MB`, `60MiB`, `1.5G`, `123456`."""

from __future__ import annotations

import re

from franken_rt.errors import FrankenError

# kb/mb/gb/tb are decimal (a file's size on a disk label), kib/mib/gib/tib and the bare letters k/m/g/t binary
# (how memory is sold and how `docker --memory 2g` or `ulimit` read them).
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str, option: str = "size") -> int:
    """`60MB` (10^6), `60MiB` or `60M` (2^20), `1.5GB`, `123456` (bytes) -> bytes; FrankenError naming `option` if
    the text is not a positive size."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt](?:i?b)?|b)?\s*", text.lower())
    if not m:
        raise FrankenError(f"{option}: cannot read {text!r} (e.g. 60MB, 60MiB, 512M, 1.2GB)")
    n = float(m.group(1)) * _UNITS[m.group(2) or ""]
    if n < 1:
        raise FrankenError(f"{option} must be positive, got {text!r}")
    return int(n)


def mib(n: float) -> str:
    """Bytes as whole MiB, for messages."""
    return f"{n / 2**20:.0f} MiB"
