#!/usr/bin/env python3
"""Layer surgery on SmolLM2-135M (30 blocks): docs/surgery.md, docs/surgery.json and docs/surgery.png.

For 6 and 9 removed blocks, each selection method (bi, angular, ppl-greedy) with and without the shipped healing,
and hand-picked configurations in the original Franken-LLaMA style (blocks near the end, in the middle, a repeat
plan; with --single also the one-block ones: a block near the end, one in the middle, one block run twice).
Calibration: the first 200k characters of the pydoc text. Measured: perplexity on held-out pydoc text (its last
150k characters) and on a text of another domain (the GPL-3 licence, or Python's LICENSE file), multiple-choice
accuracy on questions built from the held-out pydoc text (tools/make_mc.py), the size of the q8_0 GGUF file
(predicted exactly) and MACs per token (franken_rt.surgery.cost). All runs use float activations and KV cache,
on the F32 original, so the numbers show what surgery does, not quantization.

    python tools/surgery_table.py --eval-windows 2 --mc 16 --calib-windows 12 --greedy-windows 2 --greedy-ctx 128

Results are cached per configuration in docs/surgery.json: a second run only measures what is missing
(--fresh to start over).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CTX = 256
HEAL_COMPARED = ("ridge", "diag", "lstsq")
KEPT = "## Healing by distillation"  # the section of docs/surgery.md this tool does not make, kept as it is
SECOND_DOMAIN = (Path("/usr/share/common-licenses/GPL-3"), Path(sys.base_prefix) / "lib" /
                 f"python{sys.version_info.major}.{sys.version_info.minor}" / "LICENSE.txt")


def second_text() -> tuple[str, str]:
    for p in SECOND_DOMAIN:
        if p.is_file():
            return p.name, p.read_text(encoding="utf-8", errors="replace")
    raise SystemExit("no second-domain text found (GPL-3 or Python's LICENSE.txt)")


def windows(model, text: str, n: int, ctx: int = CTX) -> list[list[int]]:  # noqa: ANN001
    ids = model.tokenize(text)
    return [ids[i * ctx:(i + 1) * ctx] for i in range(min(n, len(ids) // ctx))]


def configs(depth: int, sel: dict[str, dict[int, list[int]]], heal_method: str, single: bool = False) -> list[dict]:
    """Every row of the table: name, group, plan (stored blocks in execution order), removed blocks, healing."""
    rows = [dict(name="full model", group="full", n=0, plan=list(range(depth)), removed=[], heal=None)]

    def keep(removed: list[int]) -> list[int]:
        return [b for b in range(depth) if b not in removed]

    for n in (6, 9):
        for method in ("bi", "angular", "ppl-greedy"):
            removed = sel[method][n] if method in sel else None  # None: measured later (ppl-greedy is slow)
            for heal in (None, heal_method):
                rows.append(dict(name=f"{method} -{n}" + (f" + heal ({heal})" if heal else ""), group=f"method-{n}",
                                 n=n, plan=None if removed is None else keep(removed), removed=removed, heal=heal,
                                 method=method))
        mid = depth // 2 - n // 2
        hand = {
            f"hand: {n} before the last": list(range(depth - 1 - n, depth - 1)),
            f"hand: middle {n}": list(range(mid, mid + n)),
        }
        for name, removed in hand.items():
            rows.append(dict(name=name, group=f"hand-{n}", n=n, plan=keep(removed), removed=removed, heal=None))
        # the Franken style: skip a run and run the block before it twice (executed depth: depth - n)
        gone = list(range(mid, mid + n + 1))
        plan = [b for b in range(depth) if b < mid] + [mid - 1] + [b for b in range(depth) if b > mid + n]
        rows.append(dict(name=f"hand: skip {mid}-{mid + n}, run {mid - 1} twice", group=f"hand-{n}", n=n,
                         plan=plan, removed=gone, heal=None))
    for other in (m for m in HEAL_COMPARED if m != heal_method):  # the healing methods not shipped, on one run
        removed = sel["angular"][6]
        rows.append(dict(name=f"angular -6 + heal ({other})", group="heal-6", n=6, plan=keep(removed),
                         removed=removed, heal=other))
    if single:  # the original experiment's one-block configurations
        for name, plan, removed in (
            (f"hand: skip {depth - 2} (near the end)", keep([depth - 2]), [depth - 2]),
            (f"hand: skip {depth // 2} (middle)", keep([depth // 2]), [depth // 2]),
            (f"hand: run {depth // 2} twice", sorted([*range(depth), depth // 2]), []),
        ):
            rows.append(dict(name=name, group="hand-1", n=len(removed), plan=plan, removed=removed, heal=None))
    return rows


def measure(row: dict, ckpt, evals: dict, questions, folder: Path, calib, traces) -> dict:  # noqa: ANN001
    from franken_rt.eval.multiple_choice import evaluate
    from franken_rt.model import Model
    from franken_rt.surgery import heal as hl
    from franken_rt.surgery.cost import cost
    from franken_rt.surgery.plan import apply_plan
    from franken_rt.surgery.size import file_size, policy_of

    t0 = time.perf_counter()
    out = dict(row)
    c = ckpt
    if row["heal"]:
        c, fits = hl.heal(ckpt, row["removed"], calib, row["heal"], folder=folder, cached=traces)
        out["heal_note"] = hl.describe(fits, row["heal"])
    model = Model(c, n_ctx=CTX, layer_plan=row["plan"], activations="f32", kv_cache="f32")
    for key, wins in evals.items():
        nll = np.concatenate([model.nll(w) for w in wins])
        out[f"ppl_{key}"] = math.exp(float(nll.mean()))
        out[f"ppl_{key}_se"] = out[f"ppl_{key}"] * float(nll.std(ddof=1) / math.sqrt(len(nll)))
    mc = evaluate(model, questions)
    out.update(mc_acc=mc.acc, mc_acc_se=mc.acc_stderr, mc_acc_norm=mc.acc_norm, mc_acc_norm_se=mc.acc_norm_stderr,
               mc_n=mc.n)
    policy = policy_of("q8_0", None)
    cst = cost(ckpt, row["plan"], policy=policy)
    out["size_q8_0"] = file_size(apply_plan(ckpt, row["plan"]), policy)
    out["params"] = cst.params
    out["macs_per_token_ctx256"] = cst.macs(CTX)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def fmt_plan(plan: list[int]) -> str:
    from franken_rt.checkpoint.layer_plan import format_plan

    return format_plan(plan)


def write_report(results: list[dict], meta: dict, md: Path, png: Path) -> None:
    second = meta["second_name"]
    lines = [
        "# Layer surgery on SmolLM2-135M-Instruct (30 blocks)",
        "",
        "Produced by `python tools/surgery_table.py` (numbers in `docs/surgery.json`). Calibration (block selection "
        f"and healing): the first 200k characters of the pydoc text, {meta['calib_windows']} windows of {CTX} tokens. "
        f"Perplexity on {meta['eval_windows']} windows of {CTX} tokens of held-out pydoc text (its last 150k "
        f"characters) and of `{second}` (another domain, never used for calibration); multiple-choice accuracy on "
        f"{meta['mc']} questions built from the held-out pydoc text by `tools/make_mc.py` (4 endings, chance 25%; "
        "acc_norm: log-likelihood per byte). Size: the q8_0 GGUF file (predicted exactly by "
        "`franken_rt.surgery.size.file_size`); MACs per token at a context of 256. All on the F32 original with float "
        "activations, so the differences are surgery alone.",
        "",
        f"| configuration | removed | executed | size q8_0 (MB) | GMACs/token | ppl pydoc | ppl {second} | "
        "MC acc | MC acc_norm |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {fmt_plan(r['removed']) or '-'} | {len(r['plan'])} | {r['size_q8_0'] / 1e6:.1f} | "
            f"{r['macs_per_token_ctx256'] / 1e9:.3f} | {r['ppl_pydoc']:.2f} ± {r['ppl_pydoc_se']:.2f} | "
            f"{r['ppl_second']:.2f} ± {r['ppl_second_se']:.2f} | {r['mc_acc']:.3f} ± {r['mc_acc_se']:.3f} | "
            f"{r['mc_acc_norm']:.3f} |")
    lines += ["", "## Findings", ""]
    by = {r["name"]: r for r in results}
    for n in (6, 9):
        methods = [r for r in results if r["group"] == f"method-{n}"]  # with and without healing
        hands = [r for r in results if r["group"] == f"hand-{n}"]
        best = min(methods, key=lambda r: r["ppl_second"])  # judged on the text not used for calibration
        if not methods or not hands:
            continue
        beaten = all(best["ppl_second"] < h["ppl_second"] and best["ppl_pydoc"] < h["ppl_pydoc"] for h in hands)
        best_hand = min(hands, key=lambda r: r["ppl_second"])
        lines.append(
            f"- **{n} blocks removed**: the best measured method is `{best['name']}` (removes "
            f"{fmt_plan(best['removed'])}): ppl {best['ppl_pydoc']:.2f} (pydoc) / {best['ppl_second']:.2f} "
            f"({second}). The best hand-picked configuration, `{best_hand['name']}`, has "
            f"{best_hand['ppl_pydoc']:.2f} / {best_hand['ppl_second']:.2f}. Beats every hand-picked "
            f"configuration removing as many blocks, on both texts: **{'yes' if beaten else 'no'}**.")
        for method in ("bi", "angular", "ppl-greedy"):
            plain = by[f"{method} -{n}"]
            healed = next((r for r in results if r["group"] == f"method-{n}" and r["heal"]
                           and r["name"].startswith(f"{method} -{n} ")), None)
            if healed is None or f"{method} -{n}" not in by:
                continue
            lines.append(
                f"  - `{method}` healing: pydoc {plain['ppl_pydoc']:.2f} -> {healed['ppl_pydoc']:.2f}, {second} "
                f"{plain['ppl_second']:.2f} -> {healed['ppl_second']:.2f} "
                f"({'lower' if healed['ppl_second'] < plain['ppl_second'] else 'NOT lower'} on the text not used "
                "for calibration)")
    comp = [r for r in results if r["name"].startswith("angular -6")]
    if len(comp) > 2:
        lines += ["", "Healing methods on the same removal (angular -6):", ""]
        lines += [f"- `{r['name']}`: pydoc {r['ppl_pydoc']:.2f}, {second} {r['ppl_second']:.2f}, MC acc "
                  f"{r['mc_acc']:.3f}" for r in comp]
    lines += ["", "Healing notes:", ""]
    lines += [f"- {r['name']}: {r['heal_note']}" for r in results if r.get("heal_note")]
    lines += ["", "![perplexity against size](surgery.png)", ""]
    lines += ["Removing blocks against spending fewer bits per weight under a file-size budget (`--target-size`, "
              "with the 3-bit formats): [size.md](size.md). The per-block analysis of the full model "
              "(`franken-analyze`): [analyze/](analyze/).", ""]
    old = md.read_text() if md.exists() else ""
    if KEPT in old:  # measured by hand (franken-eval on whole files), not by this tool: carried over
        lines += [old[old.index(KEPT):].strip("\n"), ""]
    md.write_text("\n".join(lines))
    plot(results, png, second)


def plot(results: list[dict], png: Path, second: str) -> None:
    from franken_rt.surgery.analyze import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"full": ("k", "*"), "method-6": ("tab:blue", "o"), "method-9": ("tab:green", "o"),
              "heal-6": ("tab:cyan", "o"),
              "hand-6": ("tab:red", "x"), "hand-9": ("tab:orange", "x"), "hand-1": ("tab:purple", "+")}
    for ax, key, title in ((axes[0], "ppl_pydoc", "held-out pydoc (calibration domain)"),
                           (axes[1], "ppl_second", f"{second} (other domain)")):
        for r in results:
            color, marker = styles[r["group"]]
            if marker in "o*":
                ax.scatter(r["size_q8_0"] / 1e6, r[key], c="none" if r["heal"] else color, edgecolors=color,
                           marker=marker, s=50)
            else:
                ax.scatter(r["size_q8_0"] / 1e6, r[key], c=color, marker=marker, s=50)
            ax.annotate(r["name"].replace("hand: ", ""), (r["size_q8_0"] / 1e6, r[key]), fontsize=5,
                        xytext=(3, 2), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("q8_0 GGUF size (MB)")
        ax.set_ylabel("perplexity")
        ax.set_title(title, fontsize=10)
    fig.suptitle("SmolLM2-135M layer surgery: filled = method, hollow = method + healing, x = hand-picked",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--eval-windows", type=int, default=6, help="windows of 256 tokens per evaluation text (6)")
    ap.add_argument("--calib-windows", type=int, default=16, help="calibration windows of 256 tokens (16)")
    ap.add_argument("--greedy-windows", type=int, default=4, help="calibration windows for ppl-greedy steps (4)")
    ap.add_argument("--greedy-ctx", type=int, default=CTX, help="tokens of each of those windows (256)")
    ap.add_argument("--mc", type=int, default=60, help="multiple-choice questions (60)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "surgery.md"))
    ap.add_argument("--single", action="store_true", help="also the one-block hand-picked configurations")
    ap.add_argument("--fresh", action="store_true", help="ignore cached results in the JSON")
    ap.add_argument("--report-only", action="store_true", help="write the report from the cached results only")
    ap.add_argument("--only", metavar="REGEX", help="measure only the configurations whose name matches (no report)")
    args = ap.parse_args(argv)

    from franken_rt.checkpoint import read_checkpoint
    from franken_rt.eval.corpus import pydoc_text
    from franken_rt.eval.demo_model import float_original
    from franken_rt.eval.mc_questions import make_questions
    from franken_rt.eval.multiple_choice import read_questions
    from franken_rt.model import Model
    from franken_rt.surgery import heal as hl
    from franken_rt.surgery import select as sl
    from franken_rt.surgery.analyze import residual_stats

    md = Path(args.out)
    js, png = md.with_suffix(".json"), md.with_suffix(".png")
    ckpt = read_checkpoint(float_original())
    depth = ckpt.config.n_layers
    model = Model(ckpt, n_ctx=CTX, activations="f32", kv_cache="f32")
    text = pydoc_text()
    calib = windows(model, text[:200_000], args.calib_windows)
    second_name, second = second_text()
    evals = {"pydoc": windows(model, text[-150_000:], args.eval_windows),
             "second": windows(model, second, args.eval_windows)}
    with tempfile.TemporaryDirectory() as tmp:  # the questions as franken-eval --mc reads them
        mc_file = Path(tmp) / "mc.jsonl"
        mc_file.write_text("".join(json.dumps(q) + "\n" for q in make_questions(text[-150_000:], args.mc, seed=0)))
        questions = read_questions(mc_file)
    meta = dict(calib_windows=len(calib), eval_windows=args.eval_windows, mc=len(questions), second_name=second_name,
                greedy=[args.greedy_windows, args.greedy_ctx],
                heal_method=hl.DEFAULT_METHOD)
    cache = {} if args.fresh or not js.is_file() else json.loads(js.read_text())
    if cache.get("meta", {}) != meta:
        cache = {}
    results_by_name = {r["name"]: r for r in cache.get("results", [])}

    sel = cache.get("selections") or {}
    traced: list = []

    def traces() -> list:  # the full model's residual stream on the calibration windows, computed once if needed
        if not traced:
            print(f"calibration: {len(calib)} windows; tracing the full model", file=sys.stderr)
            traced.extend(hl.traces(ckpt, calib))
        return traced

    if "bi" not in sel:
        stats = residual_stats(model, calib, max_shift=9, traces=traces())
        sel.update(bi={str(n): sl.by_bi(stats.bi, n).removed for n in (6, 9)},
                   angular={str(n): sl.by_angular(stats, n).removed for n in (6, 9)}, bi_values=stats.bi,
                   angular_values=stats.angular)

    def selections() -> dict[str, dict[int, list[int]]]:
        return {m: {int(k): v for k, v in sel[m].items()} for m in ("bi", "angular", "ppl-greedy") if m in sel}

    def greedy() -> None:
        g = sl.by_ppl_greedy(ckpt, [w[:args.greedy_ctx] for w in calib[:args.greedy_windows]], 9, verbose=True)
        sel.update({"ppl-greedy": {str(n): sorted(g.order[:n]) for n in (6, 9)}, "greedy_reason": g.reason})

    rows = configs(depth, selections(), hl.DEFAULT_METHOD, args.single)
    rows.sort(key=lambda r: r.get("method") == "ppl-greedy")  # the slow selection last
    folder = js.parent / ".surgery-heal-tmp"
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for i, row in enumerate(rows):
            if row["plan"] is None:
                if args.only and not re.search(args.only, row["name"]) or args.report_only and "ppl-greedy" not in sel:
                    continue
                if "ppl-greedy" not in sel:
                    greedy()
                fresh = configs(depth, selections(), hl.DEFAULT_METHOD, args.single)
                row = next(r for r in fresh if r["name"] == row["name"])
            cached = results_by_name.get(row["name"])
            if cached and cached["plan"] == row["plan"] and cached.get("heal") == row["heal"]:
                results.append(cached)
                continue
            if args.only and not re.search(args.only, row["name"]) or args.report_only:
                continue
            r = measure(row, ckpt, evals, questions, folder, calib, traces() if row["heal"] else None)
            results.append(r)
            print(f"[{i + 1}/{len(rows)}] {r['name']}: ppl {r['ppl_pydoc']:.2f} / {r['ppl_second']:.2f}, "
                  f"MC {r['mc_acc']:.3f} ({r['seconds']} s)", file=sys.stderr, flush=True)
            done = {r["name"] for r in results}
            keep = results + [r for n, r in results_by_name.items() if n not in done]
            js.write_text(json.dumps({"meta": meta, "selections": sel, "results": keep}, indent=1))
    finally:
        for f in folder.glob("*"):
            f.unlink()
        folder.rmdir()
    if args.only:
        js.write_text(json.dumps({"meta": meta, "selections": sel, "results": results}, indent=1))
        return 0
    order = [r["name"] for r in configs(depth, selections(), hl.DEFAULT_METHOD, args.single)]
    results.sort(key=lambda r: order.index(r["name"]))
    js.write_text(json.dumps({"meta": meta, "selections": sel, "results": results}, indent=1))
    write_report(results, meta, md, png)
    print(f"wrote {md}, {js}, {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
