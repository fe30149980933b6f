#!/usr/bin/env python3
"""Score GGUF files against their float model on a text: perplexity (as `franken-eval --ppl`: every token after a
window's first) and KL divergence of the next-token distributions to the float model's, both on the float path
(float activations and cache), so activation rounding does not blur the weights' differences. For docs/size.md's
per-tensor allocation table.

    python tools/allocation_table.py FLOAT.gguf LABEL=FILE.gguf ... [--text /usr/share/common-licenses/GPL-3]
        [--ctx 512] [--max-windows 8] [--json out.json]

Windows go outer and models inner, so only one window's reference distribution is held at a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from franken_rt.checkpoint import read_checkpoint
from franken_rt.eval.corpus import read_text
from franken_rt.eval.perplexity import token_windows
from franken_rt.model import Model
from franken_rt.surgery.sensitivity import log_probs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("float_model")
    ap.add_argument("files", nargs="+", metavar="LABEL=FILE")
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    def load(path: str) -> Model:
        return Model(read_checkpoint(path), n_ctx=args.ctx, activations="f32", kv_cache="f32")

    ref = load(args.float_model)
    wins = token_windows(ref, read_text(args.text), args.ctx, args.max_windows)
    files = dict(item.split("=", 1) for item in args.files)
    models = {label: load(path) for label, path in files.items()}
    kl = {label: 0.0 for label in files}
    nll = {label: 0.0 for label in ["float", *files]}
    n_kl = n_nll = 0
    for i, w in enumerate(wins):
        p = log_probs(ref.logits(w))
        nll["float"] -= float(p[np.arange(len(w) - 1), w[1:]].sum())
        for label, model in models.items():
            q = log_probs(model.logits(w))
            kl[label] += float((np.exp(p[1:]) * (p[1:] - q[1:])).sum())  # the first position (a sink) left out
            nll[label] -= float(q[np.arange(len(w) - 1), w[1:]].sum())
        n_kl += len(w) - 1
        n_nll += len(w) - 1
        print(f"window {i + 1}/{len(wins)}", file=sys.stderr, flush=True)
    rows = [{"label": "float", "file": args.float_model, "bytes": os.path.getsize(args.float_model),
             "ppl": math.exp(nll["float"] / n_nll), "kl": 0.0}]
    rows += [{"label": label, "file": path, "bytes": os.path.getsize(path), "ppl": math.exp(nll[label] / n_nll),
              "kl": kl[label] / n_kl} for label, path in files.items()]
    for r in rows:
        print(f"{r['label']:40} {r['bytes'] / 1e6:8.2f} MB  ppl {r['ppl']:8.3f}  "
              f"(+{r['ppl'] / rows[0]['ppl'] - 1:6.1%})  KL {r['kl']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"text": args.text, "ctx": args.ctx, "windows": len(wins),
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
