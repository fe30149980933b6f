#!/usr/bin/env python3
"""The compression frontier of the demo model, ours and llama.cpp's files, with one scorer: docs/frontier.md,
docs/frontier.json and docs/frontier.svg.

    nice -n 10 python tools/frontier.py [--windows N] [--ctx 512] [--only REGEX] [--fresh]

Every file (franken-convert's and llama-quantize's) is dequantized to F32 by its own engine's tool
(`franken-convert FILE --quant f32`, `llama-quantize --allow-requantize FILE OUT F32`) and scored by franken-rt's
float path (float activations, float KV cache): the differences are the formats', not the runtimes' or the
activation rounding's. Scored: perplexity on GPL-3 and the KL divergence of each file's next-token distribution
to the float original's on the same windows; for our files also the default path's perplexity (8-bit
activations), what users get. Calibration (ours `--calib`, llama.cpp's `llama-imatrix`) is the pydoc topics text,
another domain than GPL-3. Files and scores are cached in ~/.cache/franken-rt/frontier: a row already scored on
the same windows (and file size) is not scored again unless --fresh (which also remakes the selected files), so
runs of different --only subsets, in turn or side by side, add up to one table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = Path("/usr/share/common-licenses/GPL-3")  # scored, never calibrated on
CALIB = "{calib}"  # placeholder in the row arguments: the pydoc calibration text file
IMATRIX = "{imatrix}"  # placeholder: llama.cpp's importance matrix of the float original on that text
IMATRIX_CTX, IMATRIX_CHUNKS = 256, 8  # as franken-convert's weighted rounding: 8 windows of 256 tokens
PROG = "frontier.py"


@dataclass(frozen=True)
class Row:
    label: str
    engine: str          # "float" (the original itself), "franken-convert" or "llama-quantize"
    args: tuple[str, ...] = ()  # franken-convert options, or llama-quantize's [options] and type
    note: str = ""


# One line per row; a row whose --quant or --rounding this build does not know is skipped (and said so).
ROWS: list[Row] = [
    Row("float original (f32)", "float"),
    Row("f16", "franken-convert", ("--quant", "f16")),
    Row("q8_0", "franken-convert", ("--quant", "q8_0")),
    Row("q4_0 weighted search", "franken-convert", ("--quant", "q4_0", "--calib", CALIB)),
    Row("q4_1 weighted search", "franken-convert", ("--quant", "q4_1", "--calib", CALIB)),
    Row("iq4_nl weighted search", "franken-convert", ("--quant", "iq4_nl", "--calib", CALIB)),
    Row("q3_0 weighted search", "franken-convert", ("--quant", "q3_0", "--calib", CALIB)),
    Row("q3_0m weighted search", "franken-convert", ("--quant", "q3_0m", "--calib", CALIB)),
    Row("q4_0 gptq", "franken-convert", ("--quant", "q4_0", "--rounding", "gptq", "--calib", CALIB)),
    Row("q4_1 gptq", "franken-convert", ("--quant", "q4_1", "--rounding", "gptq", "--calib", CALIB)),
    Row("iq4_nl gptq", "franken-convert", ("--quant", "iq4_nl", "--rounding", "gptq", "--calib", CALIB)),
    Row("q3_0 gptq", "franken-convert", ("--quant", "q3_0", "--rounding", "gptq", "--calib", CALIB)),
    Row("q3_0m gptq", "franken-convert", ("--quant", "q3_0m", "--rounding", "gptq", "--calib", CALIB)),
    Row("q3_nl weighted search", "franken-convert", ("--quant", "q3_nl", "--calib", CALIB)),
    Row("q3_nl gptq", "franken-convert", ("--quant", "q3_nl", "--rounding", "gptq", "--calib", CALIB)),
    Row("q2_nl gptq", "franken-convert", ("--quant", "q2_nl", "--rounding", "gptq", "--calib", CALIB)),
    Row("--target-size 92MB", "franken-convert", ("--target-size", "92MB", "--calib", CALIB)),
    Row("--target-size 75MB", "franken-convert", ("--target-size", "75MB", "--calib", CALIB)),
    Row("--target-size 60MB", "franken-convert", ("--target-size", "60MB", "--calib", CALIB)),
    Row("Q4_0 imatrix", "llama-quantize", ("--imatrix", IMATRIX, "Q4_0")),
    Row("Q4_1 imatrix", "llama-quantize", ("--imatrix", IMATRIX, "Q4_1")),
    Row("IQ4_NL imatrix", "llama-quantize", ("--imatrix", IMATRIX, "IQ4_NL")),
    Row("Q4_K_M imatrix", "llama-quantize", ("--imatrix", IMATRIX, "Q4_K_M")),
    Row("Q3_K_S imatrix", "llama-quantize", ("--imatrix", IMATRIX, "Q3_K_S")),
    Row("Q2_K imatrix", "llama-quantize", ("--imatrix", IMATRIX, "Q2_K")),
]


class UsageError(Exception):
    """A bad option: one line on stderr, exit 2."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from franken_rt.cli import ArgumentParser

    ap = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=None,
                    help="score the first N windows of GPL-3 (default: every whole window it holds)")
    ap.add_argument("--ctx", type=int, default=512, help="window size in tokens (512)")
    ap.add_argument("--only", metavar="REGEX", default=None,
                    help="make and score only the rows whose label matches (the others come from the JSON)")
    ap.add_argument("--fresh", action="store_true", help="remake and rescore the selected rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "docs" / "frontier.md"),
                    help="the table (its .json and .svg are written beside it)")
    ap.add_argument("--list", action="store_true", help="print the row labels and exit")
    ap.add_argument("--report", action="store_true",
                    help="score nothing: write the docs from the scores cached by earlier runs")
    ap.add_argument("--make-only", action="store_true",
                    help="make the selected rows' files and their F32 copies, score nothing (run it beside a "
                         "scoring run to overlap the conversions)")
    args = ap.parse_args(argv)
    if args.windows is not None and args.windows < 1:
        raise UsageError(f"--windows must be at least 1, got {args.windows}")
    if args.ctx < 2:
        raise UsageError(f"--ctx must be at least 2, got {args.ctx}")
    if args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if not Path(args.out).parent.is_dir():
        raise UsageError(f"--out: folder {Path(args.out).parent} does not exist")
    args.rows = select(ROWS, args.only)
    return args


def select(rows: Sequence[Row], only: str | None) -> list[Row]:
    """The rows whose label matches `only` (all without it); a bad or matchless pattern is a usage error."""
    if only is None:
        return list(rows)
    try:
        pattern = re.compile(only)
    except re.error as e:
        raise UsageError(f"--only: bad regular expression {only!r}: {e}") from None
    chosen = [r for r in rows if pattern.search(r.label)]
    if not chosen:
        raise UsageError(f"--only {only!r} matches no row (see --list)")
    return chosen


def unsupported(row: Row) -> str | None:
    """Why this build of franken-convert cannot make the row (an unknown --rounding or --quant), else None."""
    if row.engine != "franken-convert":
        return None
    from franken_rt.quant.formats import ROUNDINGS
    from franken_rt.quant.policy import MIXES, QUANT_NAMES

    opts = dict(zip(row.args, row.args[1:]))  # each option with the word after it
    if opts.get("--rounding", "search") not in ROUNDINGS:
        return f"--rounding {opts['--rounding']} is not in this build ({', '.join(ROUNDINGS)})"
    if "--quant" in opts and opts["--quant"] not in (*QUANT_NAMES, *MIXES):
        return f"--quant {opts['--quant']} is not in this build"
    return None


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", label.strip("-")).strip("_")


# ---- making the files ---------------------------------------------------------------------------------------


@dataclass
class Workspace:
    folder: Path
    float_path: Path
    calib: Path
    llama_bin: Path | None = None
    imatrix: Path | None = None
    log: list[str] = field(default_factory=list)


def workspace() -> Workspace:
    from franken_rt.cache import cache_dir
    from franken_rt.eval.corpus import pydoc_text
    from franken_rt.eval.demo_model import float_original

    folder = cache_dir() / "frontier"
    folder.mkdir(parents=True, exist_ok=True)
    calib = folder / "calib-pydoc.txt"
    text = pydoc_text()
    if not calib.is_file() or calib.read_text(encoding="utf-8") != text:
        write_atomic(calib, lambda p: p.write_text(text, encoding="utf-8"))
    return Workspace(folder, float_original(), calib)


def llama_tools(ws: Workspace) -> Path:
    """llama.cpp's tools (llama-imatrix among them), built once; the importance matrix of the float original on
    the first IMATRIX_CHUNKS x IMATRIX_CTX tokens of the calibration text (what our weighted rounding reads)."""
    if ws.llama_bin is None:
        from franken_rt.eval.llamacpp import build

        ws.llama_bin = build()
    if ws.imatrix is None:
        out = ws.folder / "imatrix-pydoc.gguf"
        if not out.is_file():
            write_atomic(out, lambda tmp: run([ws.llama_bin / "llama-imatrix", "-m", ws.float_path, "-f", ws.calib,
                                                "-o", tmp, "-c", str(IMATRIX_CTX), "--chunks", str(IMATRIX_CHUNKS),
                                                "-t", "2"]), suffix=".gguf")
        ws.imatrix = out
    return ws.llama_bin


def run(cmd: Sequence[Any]) -> str:
    """Run a tool; its stderr (the converter's notes) is returned with its peak resident memory appended, a failure
    ends the run with its output."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        log = err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{log[-3000:]}")
    return log + f"\npeak memory {usage.ru_maxrss / 1024:.0f} MiB"


def write_atomic(out: Path, write: Callable[[Path], object], suffix: str = ".tmp") -> None:
    """`write(tmp)` to a temporary file beside `out`, renamed over it only when complete."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make(row: Row, ws: Workspace, fresh: bool) -> tuple[Path, Path, str]:
    """(the file, its F32 dequantization by its own engine, the maker's notes)."""
    if row.engine == "float":
        return ws.float_path, ws.float_path, ""
    bin_dir = llama_tools(ws) if row.engine == "llama-quantize" else None
    name = ("ours-" if bin_dir is None else "llamacpp-") + slug(row.label)
    path, deq, notes_file = (ws.folder / f"{name}.gguf", ws.folder / f"{name}.f32.gguf",
                             ws.folder / f"{name}.notes")
    args = [str(ws.calib) if a == CALIB else str(ws.imatrix) if a == IMATRIX else a for a in row.args]
    convert = str(Path(sys.executable).parent / "franken-convert")
    if fresh or not path.is_file():
        deq.unlink(missing_ok=True)
        t0 = time.perf_counter()
        if bin_dir is None:
            notes = run([convert, ws.float_path, "-o", path, "-q", "--force", *args])
        else:
            notes = quantize_notes(run([bin_dir / "llama-quantize", *args[:-1], ws.float_path, path, args[-1]]))
        notes += f"\nmade in {time.perf_counter() - t0:.0f} s"
        notes_file.write_text(notes)
    if not deq.is_file():
        if bin_dir is None:
            run([convert, path, "-o", deq, "-q", "--force", "--quant", "f32"])
        else:
            write_atomic(deq, lambda tmp: run([bin_dir / "llama-quantize", "--allow-requantize", path, tmp, "F32"]),
                         suffix=".gguf")
    return path, deq, notes_file.read_text() if notes_file.is_file() else ""


def quantize_notes(log: str) -> str:
    """llama-quantize's log cut to what the table needs: its fallback warnings (one per distinct message) and how
    many matrices got each type."""
    warnings = dict.fromkeys(re.sub(r"^warning: \S+\s+- ", "", ln.strip()) for ln in log.splitlines()
                             if re.search(r"fall(ing )?back", ln, re.I) and "WARNING" not in ln)
    types: dict[str, int] = {}
    for t in re.findall(r"converting to (\w+)", log):
        types[t] = types.get(t, 0) + 1
    census = ", ".join(f"{n} x {t}" for t, n in sorted(types.items(), key=lambda kv: -kv[1]))
    return "\n".join([*(f"{' '.join(w.split())} ({sum(w in ln for ln in log.splitlines())} tensors)"
                        for w in warnings),
                      f"matrices: {census}"])


# ---- scoring ------------------------------------------------------------------------------------------------


def score_row(row: Row, path: Path, deq: Path, notes: str, windows: list[list[int]],
              reference: Callable[[], list], args: argparse.Namespace) -> dict[str, Any]:
    from franken_rt.checkpoint import read_checkpoint
    from franken_rt.eval.divergence import Divergence, score
    from franken_rt.eval.perplexity import summarize
    from franken_rt.model import Model

    def show(done: int, total: int) -> None:
        print(f"\r  [{row.label}: {done}/{total} windows]", end="", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    if row.engine == "float":  # the reference itself: its perplexity from its log-probabilities, KL 0 exactly
        ref = reference()
        ppl = summarize([-lp[np.arange(len(ids) - 1), ids[1:]].astype(np.float64) for ids, lp in zip(windows, ref)],
                        args.ctx)
        kl = Divergence(0.0, 0.0, ppl.tokens, len(windows), args.ctx)
    else:
        model = Model(read_checkpoint(deq), threads=args.threads, n_ctx=args.ctx, activations="f32",
                      kv_cache="f32")
        ppl, kl = score(model, windows, reference(), progress=show)
        del model
    result: dict[str, Any] = {
        "label": row.label, "engine": row.engine, "args": list(row.args), "file": path.name,
        "bytes": path.stat().st_size, "windows": len(windows), "ctx": args.ctx, "tokens": ppl.tokens,
        "ppl": ppl.ppl, "ppl_se": ppl.stderr, "kl": kl.kl, "kl_se": kl.stderr,
        "chosen": chosen(notes), "notes": notes.strip(),
    }
    if row.engine != "llama-quantize":  # the default path: 8-bit activations, f16 KV cache (what users run)
        default = Model(read_checkpoint(path), threads=args.threads, n_ctx=args.ctx)
        nll = [default.nll(ids) for ids in windows]
        result.update(ppl_q8=summarize(nll, args.ctx).ppl)
    result["scored_in_s"] = round(time.perf_counter() - t0)
    print(file=sys.stderr)
    return result


def chosen(notes: str) -> str:
    """What --target-size chose, from franken-convert's note (`target ...: <choice> with N blocks removed ...`)."""
    m = re.search(r"target [^:]*: (.+? with \d+ blocks removed(?: \([^)]*\))?)", notes)
    return m.group(1) if m else ""


def four_bit(row: dict[str, Any]) -> bool:
    """Rows whose matrices are mostly 4-bit: the float original sits on a Q4_1 grid, which flatters them. A
    per-tensor allocation is judged by the census of its file (the converter's `N x TYPE` note)."""
    census = {t.upper(): int(n) for n, t in re.findall(r"(\d+) x (\w+)", row.get("notes", "").split("types:")[-1])}
    matrices = {t: n for t, n in census.items() if t not in ("F32", "F16", "BF16")}
    if "allocation" in row.get("chosen", "") and matrices:
        return 2 * sum(n for t, n in matrices.items() if re.match(r"I?Q4", t)) > sum(matrices.values())
    return bool(re.search(r"(?i)\b(i?q4)", f"{row['label']} {row.get('chosen', '')}"))


# ---- the outputs -------------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table: one line per scored row, in the given order; 'vs float' against the float row's."""
    base = next((r for r in rows if r["engine"] == "float"), None)
    lines = ["| made by | file | size (bytes) | size (MB) | ppl, float path | vs float | KL to float (nats) "
             "| ppl, default path (q8 act.) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        label = r["label"] + (f" → {r['chosen']}" if r.get("chosen") else "") + (" †" if four_bit(r) else "")
        vs = f"{r['ppl'] / base['ppl'] - 1:+.1%}" if base else "—"
        q8 = f"{r['ppl_q8']:.3f}" if r.get("ppl_q8") is not None else "—"
        lines.append(f"| {r['engine']} | {label} | {r['bytes']:,} | {r['bytes'] / 1e6:.2f} | "
                     f"{r['ppl']:.3f} ± {r['ppl_se']:.3f} | {vs} | {r['kl']:.4f} ± {r['kl_se']:.4f} | {q8} |")
    return lines


TARGETS = [(92e6, 0.04), (75e6, 0.15), (60e6, 0.30)]  # issue 13's targets: (file size, perplexity over float)


def budgets(rows: list[dict[str, Any]]) -> list[str]:
    """For each of the issue's size targets, each engine's best file that fits (least float-path perplexity) and
    its distance to the target, computed from the rows."""
    base = next((r for r in rows if r["engine"] == "float"), None)
    if base is None:
        return []
    lines = ["Best file of each engine within each of issue 13's size targets (least perplexity on the float path; "
             "figures from the table):", ""]
    for size, allowed in TARGETS:
        parts = []
        for engine, name in (("franken-convert", "ours"), ("llama-quantize", "llama.cpp")):
            fits = [r for r in rows if r["engine"] == engine and r["bytes"] <= size]
            if not fits:
                parts.append(f"{name}: no file")
                continue
            best = min(fits, key=lambda r: r["ppl"])
            over = best["ppl"] / base["ppl"] - 1
            parts.append(f"{name}: {best['label']}{' †' if four_bit(best) else ''} ({best['bytes'] / 1e6:.1f} MB, "
                         f"{over:+.1%}, KL {best['kl']:.3f})")
        lines.append(f"- ≤ {size / 1e6:.0f} MB (target: at most {allowed:+.0%} over float): " + "; ".join(parts))
    return [*lines, ""]


def document(rows: list[dict[str, Any]], skipped: list[str], svg_name: str) -> str:
    first = rows[0] if rows else {"windows": 0, "ctx": 0, "tokens": 0}
    lines = [
        "# The compression frontier: SmolLM2-135M-Instruct, one scorer",
        "",
        "Reproduce (files cached in `~/.cache/franken-rt/frontier`, llama.cpp's tools built once from the "
        "llama-cpp-python 0.3.36 sources):",
        "",
        "```",
        "nice -n 10 .venv/bin/python tools/frontier.py" + (f" --windows {first['windows']}" if rows else ""),
        "nice -n 10 .venv/bin/python tools/frontier.py --only 'gptq'   # a subset; the other rows are kept",
        "```",
        "",
        "How every row is measured:",
        "- **Float original**: the demo model's Q4_1 GGUF dequantized to F32 (`franken_rt.eval.demo_model."
        "float_original()`). Every file here is made from it.",
        "- **Calibration** (ours: `franken-convert --calib`; llama.cpp: `llama-imatrix -f`): the standard "
        "library's `pydoc_data.topics`, all topics joined. Our weighted rounding reads its first 8 windows of 256 "
        f"tokens; `llama-imatrix` gets the same amount (`-c {IMATRIX_CTX} --chunks {IMATRIX_CHUNKS}`), and every "
        "llama.cpp file is quantized with that importance matrix (`llama-quantize --imatrix`).",
        f"- **Held-out text**: `{HELD_OUT}`, another domain, never used for calibration: {first['tokens']} "
        f"positions scored ({first['windows']} windows of {first['ctx']} tokens). docs/quality.md does the "
        "opposite (calibrates on GPL-3, scores pydoc); these tables follow this rule instead, so their figures "
        "are not comparable with that page's.",
        "- **One scorer**: each file is dequantized to F32 by its own engine's tool (`franken-convert FILE --quant "
        "f32`, `llama-quantize --allow-requantize FILE OUT F32`) and scored by franken-rt's float path "
        "(`--activations f32 --kv-cache f32`): perplexity and the KL divergence KL(p_float ‖ p_file) of the "
        "next-token distribution, averaged over the same positions (`franken_rt/eval/divergence.py`).",
        "- **Default path**: our files scored as users run them (8-bit activations, f16 KV cache, "
        "`franken-eval FILE --ppl GPL-3`). llama.cpp's K-quant files do not run in franken-rt, so only the float "
        "path scores them.",
        "- **Size**: the file's bytes; MB = 10^6 bytes.",
        "- **±**: the standard error over positions. Every row is scored on the same windows, so differences "
        "between rows are paired and far more precise than each perplexity's ± suggests.",
        "- **†**: mostly 4-bit matrices. The float original's weights lie on a Q4_1 grid (it is a Q4_1 file "
        "dequantized), so Q4_1 requantization is nearly lossless and uniform 4-bit grids are flattered: read every "
        "† figure as a best case, not what the format does to a model trained in float.",
        "",
        *table(rows),
        "",
        f"![perplexity against file size, both engines]({svg_name})",
        "",
        *budgets(rows),
    ]
    notes = [r for r in rows if r["engine"] == "llama-quantize" and r.get("notes")]
    if notes:
        lines += ["What llama-quantize said about types (rows of 576 do not fit its 256-element K/IQ superblocks):",
                  ""]
        for r in notes:
            said = "; ".join(ln.strip() for ln in r["notes"].splitlines() if ln.strip())
            lines.append(f"- {r['label']}: {said[:600]}")
        lines.append("")
    made = [(r["label"], re.search(r"made in (\d+) s", r.get("notes", "")),
             re.search(r"peak memory (\d+) MiB", r.get("notes", ""))) for r in rows if r["engine"] == "franken-convert"]
    made = [(label, t.group(1), m.group(1)) for label, t, m in made if t and m]
    if made:
        lines += ["Conversion time (wall, on whatever else the machine was running) and peak resident memory of "
                  "franken-convert, for the rows made since the tool records them:", "",
                  *[f"- {label}: {t} s, {m} MiB" for label, t, m in made], ""]
    if skipped:
        lines += ["Rows not in the table:", "", *[f"- {s}" for s in skipped], ""]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """Perplexity (log scale) against file size, one marker per engine, written atomically as SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"franken-convert": ("o", "tab:blue", "franken-rt (franken-convert)"),
              "llama-quantize": ("s", "tab:red", "llama.cpp (llama-quantize --imatrix)"),
              "float": ("*", "black", "float original")}
    for engine, (marker, color, name) in styles.items():
        pts = [r for r in rows if r["engine"] == engine]
        if not pts:
            continue
        ax.scatter([r["bytes"] / 1e6 for r in pts], [r["ppl"] for r in pts], marker=marker, color=color,
                   label=name, s=60 if engine == "float" else 30, zorder=3)
        for r in pts:
            ax.annotate(r["label"].replace(" weighted search", "").replace(" imatrix", ""),
                        (r["bytes"] / 1e6, r["ppl"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    base = next((r for r in rows if r["engine"] == "float"), None)
    if base:
        ax.axhline(base["ppl"], color="gray", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel(f"perplexity on {HELD_OUT.name} (float path, log scale)")
    ax.set_title("SmolLM2-135M: perplexity against size, one scorer")
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(out, lambda tmp: fig.savefig(tmp, format="svg", metadata={"Date": None}), suffix=".svg")
    plt.close(fig)


def write_outputs(rows: list[dict[str, Any]], skipped: list[str], out: Path) -> None:
    svg = out.with_suffix(".svg")
    write_atomic(out.with_suffix(".json"), lambda p: p.write_text(json.dumps(rows, indent=1) + "\n"))
    plot(rows, svg)
    write_atomic(out, lambda p: p.write_text(document(rows, skipped, svg.name), encoding="utf-8"))


# ---- main ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(r.label for r in ROWS))
        return 0
    from franken_rt.errors import FrankenError

    try:
        return measure(args)
    except FrankenError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


def measure(args: argparse.Namespace) -> int:
    from franken_rt.checkpoint import read_checkpoint
    from franken_rt.eval.corpus import read_text
    from franken_rt.eval.perplexity import token_windows
    from franken_rt.model import Model

    out = Path(args.out)
    ws = workspace()
    if args.make_only:
        for row in args.rows:
            if unsupported(row) is None:
                print(f"{row.label}: {make(row, ws, args.fresh)[0]}", file=sys.stderr, flush=True)
        return 0
    float_model = Model(read_checkpoint(ws.float_path), threads=args.threads, n_ctx=args.ctx, activations="f32",
                        kv_cache="f32")
    windows = token_windows(float_model, read_text(HELD_OUT), args.ctx, args.windows, what=str(HELD_OUT))
    cache = ScoreCache(ws.folder, len(windows), args.ctx)
    supported = [r for r in ROWS if unsupported(r) is None]
    skipped = [f"{r.label}: {unsupported(r)}" for r in ROWS if unsupported(r) is not None]
    for row in [] if args.report else args.rows:
        if row not in supported:
            continue
        path, deq, notes = make(row, ws, args.fresh)
        prev = cache.get(row)
        if prev is not None and not args.fresh and prev["bytes"] == path.stat().st_size:
            continue
        result = score_row(row, path, deq, notes, windows, lambda: cache.reference(float_model, windows), args)
        print(json.dumps({k: v for k, v in result.items() if k != "notes"}), flush=True)
        cache.put(row, result)
        write_outputs(cache.rows(supported), skipped, out)  # partial results survive an interrupted run
    rows = cache.rows(supported)
    skipped += [f"{r.label}: not scored yet on these windows (`--only='{r.label}'`)" for r in supported
                if cache.get(r) is None]
    write_outputs(rows, skipped, out)
    print("\n".join(table(rows)))
    return 0


class ScoreCache:
    """Scores and the float original's log-probabilities on one set of windows, kept in the cache folder: runs of
    different --only subsets (in turn or side by side) add up to one table."""

    def __init__(self, folder: Path, n_windows: int, ctx: int) -> None:
        self.folder = folder / "scores"
        self.folder.mkdir(exist_ok=True)
        self.key = f"w{n_windows}-c{ctx}"

    def _path(self, row: Row) -> Path:
        return self.folder / f"{slug(row.label)}.{self.key}.json"

    def get(self, row: Row) -> dict[str, Any] | None:
        path = self._path(row)
        return json.loads(path.read_text()) if path.is_file() else None

    def put(self, row: Row, result: dict[str, Any]) -> None:
        write_atomic(self._path(row), lambda p: p.write_text(json.dumps(result, indent=1)))

    def rows(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        return [r for r in map(self.get, rows) if r is not None]

    def reference(self, model, windows: list[list[int]]) -> np.ndarray:  # noqa: ANN001 (Model)
        """The float original's log-probabilities (windows, ctx - 1, vocab), float32, memory-mapped."""
        from franken_rt.eval.divergence import reference_logprobs

        path = self.folder / f"reference.{self.key}.npy"
        if not path.is_file():
            print(f"float original: {len(windows)} windows", file=sys.stderr, flush=True)
            ref = np.stack(reference_logprobs(model, windows))
            write_atomic(path, lambda p: np.save(p, ref), suffix=".npy")
        return np.load(path, mmap_mode="r")


if __name__ == "__main__":
    sys.exit(main())
