"""franken-eval MODEL --ppl FILE | --mc FILE.jsonl | --cost: perplexity, multiple-choice accuracy (each with its
standard error) and the cost model (size, bytes read and MACs per token)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.gguf_writer import atomic_output
from franken_rt.checkpoint.layer_plan import compose, executed, parse_plan
from franken_rt.cli import ArgumentParser, user_errors
from franken_rt.errors import FrankenError
from franken_rt.eval.corpus import read_text
from franken_rt.eval.multiple_choice import evaluate, read_questions
from franken_rt.eval.perplexity import perplexity
from franken_rt.model import Model
from franken_rt.quant.policy import QuantPolicy
from franken_rt.surgery.cost import cost, cost_table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="franken-eval", description="Measure a model (give at least one of --ppl, --mc, --cost).")
    ap.add_argument("model", help="GGUF file or Hugging Face model folder")
    ap.add_argument("--ppl", metavar="FILE", help="UTF-8 text file to compute perplexity on")
    ap.add_argument("--mc", metavar="FILE", help="multiple-choice questions, HellaSwag jsonl (ctx, endings, label)")
    ap.add_argument("--cost", action="store_true", help="parameters, bytes on disk and read per token, MACs per token")
    ap.add_argument("--ctx", type=int, default=512, help="perplexity window (context) size in tokens (512)")
    ap.add_argument("--max-windows", type=int, default=None, help="score at most this many windows")
    ap.add_argument("--limit", type=int, default=None, help="--mc: the first N questions only")
    ap.add_argument("--ctx-list", default="128,512,2048", help="--cost: context lengths of the MAC table")
    ap.add_argument("--quant", default=None, help="--cost: as if converted with this --quant (default: as stored)")
    ap.add_argument("--plan", metavar="PLAN", default=None,
                    help="run this layer plan (indices of the model's executed blocks, e.g. 0-11,14,14,15-29)")
    ap.add_argument("--threads", "-t", type=int, default=None, help="threads (default: physical cores)")
    ap.add_argument("--activations", default="q8", choices=["q8", "f32"], help="as franken-run (q8)")
    ap.add_argument("--kv-cache", default="f16", choices=["f16", "q8", "f32"], help="as franken-run (f16)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if not (args.ppl or args.mc or args.cost):
        ap.error("give at least one of --ppl FILE, --mc FILE, --cost")
    return args


def ctx_list(text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise FrankenError(f"--ctx-list wants comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise FrankenError(f"--ctx-list wants comma-separated positive integers, got {text!r}")
    return values


def progress(what: str):  # noqa: ANN201
    def show(done: int, total: int) -> None:
        print(f"\r[{done}/{total} {what}]", end="", file=sys.stderr, flush=True)

    return show


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.max_windows is not None and args.max_windows < 1:
        raise FrankenError(f"--max-windows must be >= 1, got {args.max_windows}")
    contexts = ctx_list(args.ctx_list) if args.cost else []
    text = read_text(args.ppl) if args.ppl else None
    questions = None
    if args.mc:
        questions = read_questions(args.mc, args.limit)
    ckpt = read_checkpoint(args.model)
    plan = compose(ckpt, parse_plan(args.plan, len(executed(ckpt)))) if args.plan is not None else None
    report: dict[str, Any] = {"model": args.model}
    if args.cost:
        policy = QuantPolicy.parse(args.quant) if args.quant else None
        cst = cost(ckpt, plan, policy=policy, kv_cache=args.kv_cache)
        print(cost_table(cst, contexts))
        report["cost"] = cst.as_dict(contexts)
    if text is None and questions is None:
        return _write(args.json, report)

    n_ctx = max(args.ctx, 2) if text is not None else None
    if questions is not None and n_ctx is not None:
        n_ctx = max(n_ctx, min(ckpt.config.context_length, 2048))
    model = Model(ckpt, threads=args.threads, n_ctx=n_ctx, layer_plan=plan, activations=args.activations,
                  kv_cache=args.kv_cache)
    if text is not None:
        result = perplexity(model, text, ctx=args.ctx, max_windows=args.max_windows, progress=progress("windows"))
        print(file=sys.stderr)
        print(result)
        report.update({"text": args.ppl, **result.__dict__})
    if questions is not None:
        mc = evaluate(model, questions, progress=progress("questions"))
        print(file=sys.stderr)
        print(mc)
        report["mc"] = {"file": args.mc, **mc.__dict__}
    return _write(args.json, report)


def _write(path: str | None, report: dict[str, Any]) -> int:
    if path:
        with atomic_output(Path(path), [], force=True) as tmp:
            tmp.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
