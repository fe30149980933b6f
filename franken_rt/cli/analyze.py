"""franken-analyze MODEL: per-block importance (Block Influence, angular distance, perplexity without the block)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import franken_rt
from franken_rt.cli import ArgumentParser, user_errors
from franken_rt.errors import FrankenError
from franken_rt.surgery import analyze as an
from franken_rt.surgery.calib import calibration_text, windows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="franken-analyze", description="Measure how much each decoder block matters.")
    ap.add_argument("model", help="GGUF file or Hugging Face model folder")
    ap.add_argument("--calib", metavar="FILE",
                    help="calibration text (default: text sampled from the model, cached)")
    ap.add_argument("-o", "--output", metavar="DIR", default="analysis", help="folder for CSV, JSON, PNG (analysis)")
    ap.add_argument("--ctx", type=int, default=256, help="window size in tokens (256)")
    ap.add_argument("--max-tokens", type=int, default=8192, help="calibration tokens to use at most (8192)")
    ap.add_argument("--max-shift", type=int, default=None, help="largest n of d(l, l+n) (default: depth / 4)")
    ap.add_argument("--ppl-windows", type=int, default=4,
                    help="windows for the perplexity of each single-block removal (4; 0 skips it)")
    ap.add_argument("--attention", metavar="PROMPT", help="also plot attention maps of PROMPT per layer and head")
    ap.add_argument("--no-plots", action="store_true", help="write CSV and JSON only")
    ap.add_argument("--threads", "-t", type=int, default=None, help="threads (default: physical cores)")
    return ap.parse_args(argv)


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ctx < 2:
        raise FrankenError(f"--ctx must be at least 2, got {args.ctx}")
    if args.ppl_windows < 0:
        raise FrankenError(f"--ppl-windows must be >= 0, got {args.ppl_windows}")
    if args.max_tokens < args.ctx:
        raise FrankenError(f"--max-tokens ({args.max_tokens}) is less than one window of --ctx {args.ctx}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise FrankenError(f"{out} exists and is not a folder")
    if not args.no_plots:
        an.pyplot()  # fail before the work if matplotlib is missing
    model = franken_rt.load(args.model, threads=args.threads, n_ctx=args.ctx, activations="f32", kv_cache="f32")
    if args.calib is None:
        print("calibration: text sampled from the model (cached)", file=sys.stderr)
    text = calibration_text(model, args.calib)
    wins = windows(model, text, args.ctx, max_windows=args.max_tokens // args.ctx)
    stats = an.residual_stats(model, wins, args.max_shift)
    if args.ppl_windows:
        def progress(done: int, total: int) -> None:
            print(f"\r[perplexity without block: {done}/{total}]", end="", file=sys.stderr, flush=True)

        stats.base_ppl, stats.ppl_removed = an.removal_perplexity(model.checkpoint, wins[:args.ppl_windows],
                                                                  threads=args.threads, progress=progress)
        print(file=sys.stderr)
    print(an.format_table(stats))
    out.mkdir(parents=True, exist_ok=True)
    (out / "blocks.csv").write_text(an.to_csv(stats))
    (out / "blocks.json").write_text(an.to_json(stats))
    written = [out / "blocks.csv", out / "blocks.json"]
    if not args.no_plots:
        written += an.plot_stats(stats, out)
    if args.attention is not None:
        ids = model.tokenize(args.attention)
        if len(ids) > args.ctx:
            raise FrankenError(f"the --attention prompt has {len(ids)} tokens; --ctx is {args.ctx}")
        maps = an.attention_maps(model, ids)
        if not args.no_plots:
            pieces = [model.detokenize([i]) for i in ids]
            written += an.plot_attention(maps, pieces, out)
    print(f"wrote {len(written)} files to {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
