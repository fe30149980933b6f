"""franken-convert SRC -o OUT.gguf --quant TYPE: a Hugging Face folder or GGUF file to a (quantized) GGUF."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from franken_rt.cli import ArgumentParser, user_errors
from franken_rt.errors import FrankenError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from franken_rt.quant.formats import ROUNDINGS
    from franken_rt.quant.policy import MIXES, QUANT_NAMES

    ap = ArgumentParser(prog="franken-convert", description="Convert and quantize a LLaMA-family model.")
    ap.add_argument("source", help="Hugging Face model folder or GGUF file")
    ap.add_argument("-o", "--output", required=True, help="output .gguf file")
    ap.add_argument("--quant", default="q8_0", choices=sorted([*QUANT_NAMES, *MIXES]),
                    help="type of 2-D weights (q8_0); q4_0m/q4_1m keep attn_v and ffn_down at q8_0")
    ap.add_argument("--rounding", default="search", choices=ROUNDINGS,
                    help="4-bit rounding: rtn (round to nearest) or search (error-minimizing scales; default)")
    ap.add_argument("--tensor-type", action="append", default=[], metavar="REGEX=TYPE",
                    help="override the type of tensors whose name matches REGEX (repeatable; first match wins)")
    ap.add_argument("--force", action="store_true", help="replace an existing output file")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from franken_rt.checkpoint import read_checkpoint
    from franken_rt.checkpoint.gguf_writer import write_gguf
    from franken_rt.quant.policy import QuantPolicy

    policy = QuantPolicy.parse(args.quant, args.tensor_type)
    out = Path(args.output)
    if out.suffix != ".gguf":
        raise FrankenError(f"output must end in .gguf: {out}")
    ckpt = read_checkpoint(args.source)
    before = sum(t.nbytes for t in ckpt.tensors.values())
    t0 = time.perf_counter()
    write_gguf(ckpt, out, dtype=policy, force=args.force, rounding=args.rounding, progress=not args.quiet)
    after = os.path.getsize(out)
    counts: dict[str, int] = {}
    for t in ckpt.tensors.values():
        counts[policy(t).name] = counts.get(policy(t).name, 0) + 1
    mix = ", ".join(f"{n} x {k}" for k, n in sorted(counts.items()))
    print(f"{args.source} -> {out}: tensors {mib(before)} -> file {mib(after)} ({after / before:.1%}); "
          f"{mix}; {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
