#!/usr/bin/env python3
"""`--target-size` on SmolLM2-135M: what the search chooses at several budgets, and what the 3-bit formats buy:
docs/size.md and docs/size.json.

For each budget, `franken_rt.surgery.size.choose` ranks every format/mix x embedding type that fits (the fewest
blocks removed, by angular distance, that reach the budget) by calibration perplexity, as `franken-convert
--target-size` does. The choice, and the best candidate without the 3-bit types (q3_0, q3_0m), are then evaluated on
held-out pydoc text and on a second domain with the runtime's default 8-bit activations. Calibration, as in
tools/surgery_table.py: the first 200k characters of the pydoc text; the weighted rounding's input moments come from
it too.

    python tools/size_table.py [--budgets 95MB,80MB,70MB,60MB] [--eval-windows 6]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CTX = 256
THREE_BIT = ("q3_0", "q3_0m")


def label(row: dict) -> str:
    from franken_rt.surgery.size import describe_quant

    n = len(row["removed"])
    return describe_quant(row["quant"], row["embed"]) + (f", -{n} blocks" if n else ", all 30 blocks")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="95MB,80MB,70MB,60MB")
    ap.add_argument("--eval-windows", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "docs" / "size.md"))
    args = ap.parse_args(argv)

    from surgery_table import second_text, windows  # tools/, first on sys.path when run as a script

    from franken_rt.checkpoint import read_checkpoint
    from franken_rt.checkpoint.layer_plan import drop
    from franken_rt.eval.corpus import pydoc_text
    from franken_rt.eval.demo_model import float_original
    from franken_rt.model import Model
    from franken_rt.surgery import select as sl
    from franken_rt.surgery import size as sz
    from franken_rt.surgery.analyze import residual_stats
    from franken_rt.surgery.importance import input_moments

    budgets = [sz.parse_size(b) for b in args.budgets.split(",")]
    ckpt = read_checkpoint(float_original())
    depth = ckpt.config.n_layers
    model = Model(ckpt, n_ctx=CTX, activations="f32", kv_cache="f32")
    text = pydoc_text()
    calib = windows(model, text[:200_000], 16)
    second_name, second = second_text()
    evals = {"pydoc": windows(model, text[-150_000:], args.eval_windows),
             "second": windows(model, second, args.eval_windows)}
    t0 = time.perf_counter()
    stats = residual_stats(model, calib, max_shift=depth - 1)  # any run length the budgets may need
    moments = input_moments(ckpt, calib[:8])
    print(f"calibration statistics: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    del model

    def evaluate(qckpt, removed: list[int]) -> dict:  # noqa: ANN001
        m = Model(qckpt, n_ctx=CTX, layer_plan=drop(depth, removed))
        out = {}
        for key, wins in evals.items():
            nll = np.concatenate([m.nll(w) for w in wins])
            out[f"ppl_{key}"] = math.exp(float(nll.mean()))
        return out

    results = []
    with tempfile.TemporaryDirectory(prefix="franken-size-table-") as tmp:
        cache = sz.QuantCache(ckpt, "search", Path(tmp), moments)
        for budget in budgets:
            t0 = time.perf_counter()
            choice = sz.choose(ckpt, budget, calib[:4], lambda n: sl.by_angular(stats, n).removed,
                               importance=moments, cache=cache, verbose=True)
            best = choice.table[0]
            plain = next((r for r in choice.table if r["quant"] not in THREE_BIT and r["embed"] not in THREE_BIT),
                         None)
            row = {"budget": budget, "why": choice.why, "candidates": choice.table}
            for key, r in (("chosen", best), ("best_without_3bit", plain)):
                if r is None:
                    row[key] = None
                    continue
                ev = evaluate(cache.checkpoint(ckpt, sz.policy_of(r["quant"], r["embed"])), r["removed"])
                row[key] = {**r, "label": label(r), **ev}
            row["seconds"] = round(time.perf_counter() - t0)
            results.append(row)
            print(f"{budget / 1e6:.0f} MB: {row['chosen']['label']} ppl {row['chosen']['ppl_pydoc']:.2f}"
                  f" ({row['seconds']} s)", file=sys.stderr, flush=True)

    md = Path(args.out)
    md.with_suffix(".json").write_text(json.dumps({"second_name": second_name, "eval_windows": args.eval_windows,
                                                   "results": results}, indent=1))
    lines = [
        "# `--target-size` on SmolLM2-135M-Instruct",
        "",
        "Produced by `python tools/size_table.py` (all candidates with their calibration perplexity in "
        "`docs/size.json`). For each budget the search (`franken_rt/surgery/size.py`, what `franken-convert "
        "--target-size` runs) measures every storage format and mix, each with every embedding type, with the "
        "fewest blocks removed (by angular distance) that fit, on 4 calibration windows of 256 tokens of pydoc text, "
        "and keeps the lowest perplexity. Rounding: error-minimizing scales weighted by the input moments of the "
        "calibration text. The choice, and the best candidate that uses no 3-bit type, are evaluated on "
        f"{args.eval_windows} windows of {CTX} tokens of held-out pydoc text and of `{second_name}` (never used for "
        "calibration), with the runtime's default 8-bit activations. Sizes are the exact GGUF file sizes.",
        "",
        "| budget | chosen | size (MB) | ppl pydoc / " + second_name + " | best without 3-bit | size (MB) | "
        "ppl pydoc / " + second_name + " |",
        "| ---: | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in results:
        c, p = r["chosen"], r["best_without_3bit"]
        other = (f"{p['label']} | {p['size'] / 1e6:.2f} | {p['ppl_pydoc']:.2f} / {p['ppl_second']:.2f}" if p
                 else "nothing fits | | ")
        lines.append(f"| {r['budget'] / 1e6:.0f} MB | {c['label']} | {c['size'] / 1e6:.2f} | "
                     f"{c['ppl_pydoc']:.2f} / {c['ppl_second']:.2f} | {other} |")
    lines += ["", "What the converter said for each budget:", ""]
    lines += [f"- {r['budget'] / 1e6:.0f} MB: {r['why']}" for r in results]
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
