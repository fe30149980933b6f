"""franken-convert SRC -o OUT.gguf --quant TYPE: a Hugging Face folder or GGUF file to a (quantized) GGUF."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from franken_rt import _core
from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.gguf_writer import check_free_space, write_gguf
from franken_rt.checkpoint.layer_plan import DRAFT_PLAN_KEY, executed, parse_plan
from franken_rt.checkpoint.types import Checkpoint, DType, nbytes_of
from franken_rt.checkpoint.validate import check_finite
from franken_rt.cli import ArgumentParser, user_errors
from franken_rt.errors import FrankenError
from franken_rt.formats import FORMATS, format_of
from franken_rt.quant.formats import ROUNDINGS
from franken_rt.quant.gptq import has_grid
from franken_rt.quant.policy import LOW_BIT, MIXES, QUANT_NAMES, QuantPolicy
from franken_rt.quant.tensors import transcoder
from franken_rt.surgery import pipeline
from franken_rt.surgery.plan import plan_checkpoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="franken-convert", description="Convert and quantize a LLaMA-family model.")
    ap.add_argument("source", help="Hugging Face model folder or GGUF file")
    ap.add_argument("-o", "--output", required=True, help="output .gguf file")
    ap.add_argument("--list-types", action="store_true",
                    help="print the storage types and mixes this build supports, and exit")
    ap.add_argument("--quant", default="q8_0", choices=sorted([*QUANT_NAMES, *MIXES]),
                    help="type of 2-D weights (q8_0); the *m mixes keep attn_v and ffn_down wider; q3_0 is "
                         "franken-rt's 3-bit type (llama.cpp cannot read it); see --list-types"),
    ap.add_argument("--rounding", default="search", choices=ROUNDINGS,
                    help="rounding of quantized types: rtn (round to nearest), search (error-minimizing scales; "
                         "default) or gptq (error feedback: each column's rounding error is compensated by the "
                         "columns after it, using the correlations of the inputs on calibration text: --calib, or "
                         "text sampled from the model)")
    ap.add_argument("--tensor-type", action="append", default=[], metavar="REGEX=TYPE",
                    help="override the type of tensors whose name matches REGEX (repeatable; first match wins)")
    ap.add_argument("--plan", metavar="PLAN", default=None,
                    help="layer plan: the blocks to run, in order, e.g. 0-11,14,14,15-29 (indices of the source's "
                         "executed blocks); removals give a plain llama file, repeats are stored once")
    ap.add_argument("--draft-plan", metavar="PLAN", default=None,
                    help="record a shallower plan of the output's stored blocks for self-speculative decoding "
                         "(franken.draft_plan, which `franken-run --draft self` follows), e.g. 0-21,28,29")
    ap.add_argument("--materialize-repeats", action="store_true",
                    help="store a copy of each repeated block, for runtimes that do not know layer plans")
    ap.add_argument("--calib", metavar="FILE", default=None,
                    help="calibration text for --drop, --heal and --target-size (default: text sampled from the "
                         "model itself, cached); with it (or with those options) the 3/4-bit rounding weighs each "
                         "column by the mean squared input it meets on this text")
    ap.add_argument("--drop", type=int, metavar="N", default=None, help="remove N decoder blocks, chosen by --method")
    ap.add_argument("--method", default="angular", choices=["bi", "angular", "ppl-greedy"],
                    help="how to choose the blocks to remove: bi (lowest Block Influence), angular (the contiguous "
                         "run that changes the residual stream least; default), ppl-greedy (measured perplexity)")
    ap.add_argument("--heal", nargs="?", const="default", default=None, metavar="METHOD",
                    help="repair the model after removing blocks: ridge, diag or lstsq fold a fitted linear map "
                         "for each removed run into the block before it (training-free; no new parameters); "
                         "distill trains the blocks next to each run to match the full model's next-token "
                         "distributions (needs torch: pip install 'franken-rt[heal]'); default: see "
                         "docs/surgery.md")
    ap.add_argument("--target-size", metavar="SIZE", default=None,
                    help="e.g. 60MB or 60MiB: choose a type for each matrix (by measured sensitivity) and the "
                         "removed blocks whose file fits, against the uniform mixes, by KL divergence to the "
                         "float model on calibration text (--quant is ignored; docs/size.md)")
    ap.add_argument("--portable", action="store_true",
                    help="with --target-size: only types llama.cpp reads (no q3_0 or other franken-rt types)")
    ap.add_argument("--thorough", action="store_true",
                    help="with --target-size: measure each matrix's sensitivity alone (every row), allocate with "
                         "up to 2 more blocks removed and measure 3 uniform mixes; about ten times slower than the "
                         "default (docs/size.md)")
    ap.add_argument("--force", action="store_true", help="replace an existing output file")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def list_types() -> str:
    """The registry's formats (bits per weight, whether franken-convert writes them or only reads them, whether
    llama.cpp reads them, which kernel paths of this CPU run them interleaved), then the mixes."""
    paths = _core.available_kernels()
    rows = {p: _core.kernel_rows(p) for p in paths}
    lines = [f"{'type':8} {'bits':>5}  {'writes':6}  {'llama.cpp':9}  interleaved on ({', '.join(paths)})"]
    for f in FORMATS:
        fast = [p for p in paths if rows[p][f.name]["interleaved"]]
        lines.append(f"{f.cli_name:8} {f.bits:5.2f}  {'yes' if f.writable else 'reads':6}  "
                     f"{'yes' if f.portable else 'no':9}  {', '.join(fast) or '-'}")
    lines += [f"{m:8} mix: {base}, tensors matching {pattern} at {wide}" for m, (base, pattern, wide) in MIXES.items()]
    return "\n".join(lines)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@user_errors
def main(argv: list[str] | None = None) -> int:
    if "--list-types" in (sys.argv[1:] if argv is None else argv):
        print(list_types())
        return 0
    args = parse_args(argv)
    policy = QuantPolicy.parse(args.quant, args.tensor_type)
    out = Path(args.output)
    if out.suffix != ".gguf":
        raise FrankenError(f"output must end in .gguf: {out}")
    heal = pipeline.default_heal() if args.heal == "default" else args.heal
    opts = pipeline.SurgeryOptions(calib=args.calib, drop=args.drop, method=args.method, heal=heal,
                                   target_size=args.target_size, plan=args.plan, rounding=args.rounding,
                                   portable=args.portable, thorough=args.thorough)
    pipeline.check(opts)
    if args.draft_plan is not None:
        parse_plan(args.draft_plan, 1 << 30)  # its syntax now, before minutes of work; its blocks below
    if opts.active and out.exists() and not args.force:
        raise FrankenError(f"{out} exists (use --force to replace it)")  # before minutes of measurements
    ckpt = read_checkpoint(args.source)
    unchanged = not opts.active and args.plan is None and not args.materialize_repeats  # these tensors are written
    if unchanged:  # before the NaN scan reads every tensor (a minute at 8B)
        check_output_space(out, ckpt, policy)
    if args.rounding == "gptq" and opts.target_size is None and not any(
            has_grid(policy(t)) for t in ckpt.tensors.values() if len(t.shape) == 2):
        grids = ", ".join(f.cli_name for f in FORMATS if has_grid(DType(f.id)))
        raise FrankenError(f"--rounding gptq applies to quantized types ({grids}); --quant {args.quant} writes none")
    check_finite(ckpt)  # NaN/inf weights or block scales: refuse rather than carry them into the output
    warn_requantize(ckpt, policy, args.source)
    before = sum(t.nbytes for t in ckpt.tensors.values())
    scratch = tempfile.TemporaryDirectory(prefix="franken-convert-")  # healed tensors live here until written
    if opts.active:
        ckpt, policy, notes = pipeline.run(ckpt, opts, policy, Path(scratch.name))
        for note in notes:
            print(note, file=sys.stderr)
    ckpt, surgery = plan_checkpoint(ckpt, None if opts.heal else args.plan, args.materialize_repeats)
    extra: dict[str, object] = {}
    if args.draft_plan is not None:
        draft = parse_plan(args.draft_plan, ckpt.config.n_layers)
        if len(draft) >= len(executed(ckpt)):
            raise FrankenError(f"--draft-plan runs {len(draft)} blocks; a draft must run fewer than the model's "
                               f"{len(executed(ckpt))}")
        extra[DRAFT_PLAN_KEY] = draft
    if not unchanged:  # before minutes of calibration
        check_output_space(out, ckpt, policy)
    moments = None  # with calibration at hand, 3/4-bit rounding weighs each column by the inputs it meets
    if args.rounding == "search" and (args.calib or opts.active) and any(
            policy(t) in LOW_BIT for t in ckpt.tensors.values()):
        moments = pipeline.importance(ckpt, opts)
    hessians = None  # error feedback always calibrates (--calib, or text sampled from the model)
    if args.rounding == "gptq":
        hessians = pipeline.hessians(ckpt, opts)
    t0 = time.perf_counter()
    try:  # the output is written to a temporary file, removed on failure: nothing partial is left
        write_gguf(ckpt, out, dtype=policy, force=args.force, progress=not args.quiet, extra_metadata=extra,
                   tensor_bytes=transcoder(args.rounding, moments, hessians))
    except OSError as e:  # e.g. a full disk
        raise FrankenError(f"cannot write {out}: {e.strerror or e}; nothing was written") from None
    except KeyboardInterrupt:
        print(f"\nfranken-convert: interrupted; nothing was written to {out}", file=sys.stderr)
        return 130
    finally:
        scratch.cleanup()
    after = os.path.getsize(out)
    counts: dict[str, int] = {}
    for t in ckpt.tensors.values():
        counts[policy(t).name] = counts.get(policy(t).name, 0) + 1
    mix = ", ".join(f"{n} x {k}" for k, n in sorted(counts.items()))
    print(f"{args.source} -> {out}: tensors {mib(before)} -> file {mib(after)} ({after / before:.1%}); "
          f"{mix}; {time.perf_counter() - t0:.1f} s" + (f"; {surgery}" if surgery else ""), file=sys.stderr)
    return 0


def check_output_space(out: Path, ckpt: Checkpoint, policy: QuantPolicy) -> None:
    """FrankenError if the output's folder has not the room for the tensors alone (write_gguf checks the whole file,
    header included, before it writes any tensor)."""
    check_free_space(out, sum(nbytes_of(policy(t), t.shape) for t in ckpt.tensors.values()))


def warn_requantize(ckpt: Checkpoint, policy: QuantPolicy, source: str) -> None:
    """A warning when stored quantized matrices are re-rounded to another 3- or 4-bit type: the error adds up (the
    demo's Q4_1 file to q4_0 costs ~19% perplexity on GPL-3; from its float form far less)."""
    requantized: dict[tuple[str, str], int] = {}
    for t in ckpt.tensors.values():
        new = policy(t)
        # 8-bit blocks hold a 4- or 3-bit grid almost exactly: only a narrower target adds real error
        if len(t.shape) == 2 and format_of(t.dtype).quantized and new in LOW_BIT and new != t.dtype:
            key = (t.dtype.name, new.name)
            requantized[key] = requantized.get(key, 0) + 1
    if requantized:
        what = ", ".join(f"{n} x {a} -> {b}" for (a, b), n in sorted(requantized.items()))
        print(f"franken-convert: warning: {source} holds quantized weights; this requantizes them ({what}), adding "
              "the new rounding error to the old: convert from a float original where there is one", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
