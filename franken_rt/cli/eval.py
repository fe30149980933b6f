"""franken-eval MODEL --ppl FILE: perplexity with its standard error."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from franken_rt.cli import ArgumentParser, user_errors
from franken_rt.errors import FrankenError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="franken-eval", description="Measure a model.")
    ap.add_argument("model", help="GGUF file or Hugging Face model folder")
    ap.add_argument("--ppl", metavar="FILE", required=True, help="UTF-8 text file to compute perplexity on")
    ap.add_argument("--ctx", type=int, default=512, help="window (context) size in tokens (512)")
    ap.add_argument("--max-windows", type=int, default=None, help="score at most this many windows")
    ap.add_argument("--threads", "-t", type=int, default=None, help="threads (default: physical cores)")
    ap.add_argument("--activations", default="q8", choices=["q8", "f32"], help="as franken-run (q8)")
    ap.add_argument("--kv-cache", default="f16", choices=["f16", "q8", "f32"], help="as franken-run (f16)")
    ap.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    return ap.parse_args(argv)


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FrankenError(f"no such file: {path}") from None
    except UnicodeDecodeError:
        raise FrankenError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise FrankenError(f"cannot read {path}: {e.strerror or e}") from None


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.max_windows is not None and args.max_windows < 1:
        raise FrankenError(f"--max-windows must be >= 1, got {args.max_windows}")
    text = read_text(args.ppl)
    import franken_rt
    from franken_rt.eval.perplexity import perplexity

    model = franken_rt.load(args.model, threads=args.threads, n_ctx=max(args.ctx, 2), activations=args.activations,
                            kv_cache=args.kv_cache)

    def progress(done: int, total: int) -> None:
        print(f"\r[{done}/{total} windows]", end="", file=sys.stderr, flush=True)

    result = perplexity(model, text, ctx=args.ctx, max_windows=args.max_windows, progress=progress)
    print(file=sys.stderr)
    print(result)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "text": args.ppl, **result.__dict__}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
