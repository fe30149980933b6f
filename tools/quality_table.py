#!/usr/bin/env python3
"""Perplexity of the demo model in every format, ours and llama.cpp's, on the pydoc text: docs/quality.md.

    python tools/quality_table.py [--windows 24] [--ctx 512]

The float original is the demo GGUF dequantized (franken-convert --quant f32). Our files come from franken-convert,
llama.cpp's from its llama-quantize (tools/llamacpp.py builds it). Every file is scored by llama.cpp
(llama-cpp-python) with the same windows, and ours also by franken-eval: the two must agree within 1%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from franken_rt.eval.demo_model import convert_cached, float_original
from franken_rt.eval.llamacpp import build

ROOT = Path(__file__).resolve().parent.parent

CALIB = Path("/usr/share/common-licenses/GPL-3")  # weighted rounding calibrates on another domain than the test
OURS = [  # (label, franken-convert arguments)
    ("f16", ["--quant", "f16"]),
    ("q8_0", ["--quant", "q8_0"]),
    ("q4_0 rtn", ["--quant", "q4_0", "--rounding", "rtn"]),
    ("q4_0 search", ["--quant", "q4_0", "--rounding", "search"]),
    ("q4_0 search, weighted", ["--quant", "q4_0", "--calib", str(CALIB)]),
    ("q4_1 search", ["--quant", "q4_1", "--rounding", "search"]),
    ("q4_1 search + q8_0 attn_v/ffn_down", ["--quant", "q4_1", "--tensor-type", r"attn_v|ffn_down=q8_0"]),
    ("iq4_nl search", ["--quant", "iq4_nl", "--rounding", "search"]),
    ("iq4_nl search, weighted", ["--quant", "iq4_nl", "--calib", str(CALIB)]),
    ("q3_0 search", ["--quant", "q3_0"]),
    ("q3_0 search, weighted", ["--quant", "q3_0", "--calib", str(CALIB)]),
    ("q3_0m (+ q4_0 attn_v/ffn_down), weighted", ["--quant", "q3_0m", "--calib", str(CALIB)]),
    ("q3_0m + q3_0 embedding, weighted", ["--quant", "q3_0m", "--tensor-type", "token_embd=q3_0",
                                          "--calib", str(CALIB)]),
]
OURS_ONLY = ("q3_0",)  # formats llama.cpp cannot read: scored by franken-rt alone
THEIRS = ["Q8_0", "Q4_0", "IQ4_NL", "Q4_K_M"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=24)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--out", default=str(ROOT / "docs" / "quality.md"))
    ap.add_argument("--fresh", action="store_true", help="score every file again (default: reuse docs/quality.json "
                    "rows of the same label and file size)")
    args = ap.parse_args()

    import franken_rt
    from franken_rt.eval.corpus import pydoc_text
    from franken_rt.eval.llamacpp import llamacpp_perplexity
    from franken_rt.eval.perplexity import perplexity

    bin_dir = build()
    f32 = float_original()
    work = f32.parent
    files: list[tuple[str, str, Path]] = [("float original", "f32", f32)]
    for label, conv_args in OURS:
        name = f"ours-{label.replace(' ', '_').replace('/', '-')}.gguf"
        files.append(("franken-convert", label, convert_cached(f32, name, *conv_args)))
    for q in THEIRS:
        out = work / f"llamacpp-{q}.gguf"
        if not out.exists():
            subprocess.run([bin_dir / "llama-quantize", f32, out, q], check=True, capture_output=True)
        files.append(("llama-quantize", q, out))

    text = pydoc_text()
    ids = franken_rt.load(f32, threads=2).tokenize(text)
    old_json = Path(args.out).with_suffix(".json")
    cached = {} if args.fresh or not old_json.is_file() else {
        (r["tool"], r["format"]): r for r in json.loads(old_json.read_text())}
    rows = []
    for tool, label, path in files:
        mib = os.path.getsize(path) / 2**20
        old = cached.get((tool, label))
        if old is not None and abs(old["MiB"] - mib) < 1e-6 and old.get("windows", args.windows) == args.windows:
            rows.append(old)
            continue
        row = {"tool": tool, "format": label, "file": path.name, "MiB": mib, "windows": args.windows}
        if not label.startswith(OURS_ONLY):
            theirs = llamacpp_perplexity(path, ids, ctx=args.ctx, max_windows=args.windows)
            row.update(ppl_llamacpp=theirs.ppl, se=theirs.stderr, tokens=theirs.tokens)
        if tool != "llama-quantize" or label in ("Q8_0", "Q4_0"):  # files our runtime reads (llama.cpp's IQ4_NL and
            # Q4_K_M mixes keep some matrices in K-quants)
            ours = perplexity(franken_rt.load(path, threads=2), text, ctx=args.ctx, max_windows=args.windows)
            row.update(ppl_ours=ours.ppl, se_ours=ours.stderr, tokens=ours.tokens)
        rows.append(row)
        print(json.dumps(row), flush=True)

    base, base_ours = rows[0]["ppl_llamacpp"], rows[0]["ppl_ours"]
    lines = [
        "# Quality of each format: SmolLM2-135M-Instruct on the pydoc text",
        "",
        f"Perplexity over {rows[0]['tokens']} tokens ({args.windows} windows of {args.ctx}) of the standard library's "
        "pydoc topics. `llama.cpp` scores every file with llama-cpp-python; `franken-rt` scores the files our "
        "runtime runs (8-bit activations, as llama.cpp). Reproduce: `python tools/quality_table.py`. The same "
        "formats with one scorer (each file dequantized and scored on the float path, KL divergence to the float "
        "model, calibrated on pydoc and scored on GPL-3): [frontier.md](frontier.md).",
        "",
        "| made by | format | size (MiB) | ppl (llama.cpp) | vs float | ppl (franken-rt) | ours vs llama.cpp |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ours = f"{r['ppl_ours']:.3f}" if "ppl_ours" in r else "—"
        both = "ppl_ours" in r and "ppl_llamacpp" in r
        agree = f"{r['ppl_ours'] / r['ppl_llamacpp'] - 1:+.2%}" if both else "—"
        if "ppl_llamacpp" in r:
            theirs, vs = f"{r['ppl_llamacpp']:.3f} ± {r['se']:.3f}", f"{r['ppl_llamacpp'] / base - 1:+.2%}"
        else:  # llama.cpp cannot read it: our runtime's figure against our float figure
            theirs, vs = "—", f"{r['ppl_ours'] / base_ours - 1:+.2%} (ours)"
        lines.append(f"| {r['tool']} | {r['format']} | {r['MiB']:.1f} | {theirs} | {vs} | {ours} | {agree} |")
    lines += [
        "",
        "Reading it:",
        "- The float original is the demo GGUF (Q4_1) dequantized, as the issue defines it. Its weights therefore lie",
        "  on a Q4_1 grid already, and an error-minimizing Q4_1 rounding (`q4_1 search`) recovers most of that grid:",
        "  its tiny loss here overstates what Q4_1 would do to a model trained in float. Q4_0 and Q4_K_M have no such",
        "  advantage.",
        "- Our q8_0 and llama.cpp's Q8_0 are the same bytes (round-to-nearest is ggml's reference), so the same",
        "  perplexity; the +0.6% against float is mostly the 8-bit quantization of activations, in both runtimes.",
        "- `--rounding search` lowers q4_0's loss from +26% to +21% in the same file size and format.",
        "- `ours vs llama.cpp`: the same file scored by both runtimes agrees within 0.2%.",
        "- `weighted`: `--calib FILE` makes the 3/4-bit search weigh each column's error by the mean squared input",
        "  it meets on that text (llama.cpp's importance-matrix idea). The calibration here is the GPL-3 licence, a",
        "  different domain from the pydoc text scored, so the gain is not the calibration text leaking in.",
        "- `iq4_nl` is ggml's IQ4_NL (4.5 bits per weight: Q4_0's size, 16 non-linear levels denser near zero);",
        "  our search picks each block's scale over both ends of the level set, weighted like the others with",
        "  `--calib`. The Q4_1-grid caveat above applies to every 4-bit row: the float original favours uniform grids.",
        "  llama.cpp's IQ4_NL file type keeps some matrices in Q5_K (rows of 1536 fit its 256-element blocks), so it",
        "  is larger than ours and only llama.cpp scores it.",
        "- `q3_0` is franken-rt's own 3-bit format (3.5 bits per weight; llama.cpp cannot read it, so the 'vs float'",
        "  column compares our runtime's figures). The embedding stays Q8_0 unless overridden, as for 4-bit types.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
