#!/usr/bin/env python3
"""franken-rt against llama.cpp's own llama-bench on the same GGUF files, side by side in one run.

    python tools/bench_vs_llamacpp.py [--rounds 3] [--threads 1 2] [--depths 512 2048 4000] [--extra FILE ...]

For the demo model in its Q4_1 original and in q8_0 and q4_0 (made by franken-convert from the float original):
prompt (pp128) and generation (tg64) tokens/s of both engines, runs alternating, medians; peak RSS of each
process. With --depths, also decode (tg64) of q4_0 with 2 threads after that many tokens in the cache (llama-bench's
-d), with an f16 and a q8 KV cache (llama.cpp needs flash attention for a quantized V cache: -fa 1 there, its default
for f16). Prints tables and writes docs/performance.json (docs/performance.md quotes it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from franken_rt.cache import cache_dir
from franken_rt.eval.demo_model import convert_cached, fetch, float_original
from franken_rt.eval.llamacpp import build

ROOT = Path(__file__).resolve().parent.parent


def run_measured(cmd: list[str]) -> tuple[str, float]:
    """stdout of a command and its peak RSS in MiB (measured by a wrapper process of its own)."""
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
               "sys.stderr.write(p.stderr); print(p.stdout); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True,
                         cwd=cache_dir()).stdout  # outside the source tree, so the installed package is imported
    body, _, rss = out.rstrip().rpartition("\n")
    return body, int(rss) / 1024


def llama_bench(bin_dir: Path, model: Path, threads: int) -> dict:
    out, rss = run_measured([str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(threads), "-p", "128",
                             "-n", "64", "-r", "3", "-o", "json"])
    results = json.loads(out)
    pp = next(r["avg_ts"] for r in results if r["n_prompt"] > 0)
    tg = next(r["avg_ts"] for r in results if r["n_gen"] > 0)
    return {"pp": pp, "tg": tg, "peak_rss_mib": rss}


def ours(model: Path, threads: int) -> dict:
    out, rss = run_measured([sys.executable, "-m", "franken_rt.eval.speed", str(model), "-t", str(threads)])
    r = json.loads(out.strip().splitlines()[-1])
    return {"pp": r["pp"], "tg": r["tg"], "peak_rss_mib": rss}


def llama_bench_depth(bin_dir: Path, model: Path, threads: int, depth: int, kv: str) -> float:
    kind = {"f16": "f16", "q8": "q8_0"}[kv]
    out, _ = run_measured([str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(threads), "-p", "0", "-n", "64",
                           "-d", str(depth), "-ctk", kind, "-ctv", kind, *(["-fa", "1"] if kv == "q8" else []),
                           "-r", "2", "-o", "json"])
    return next(r["avg_ts"] for r in json.loads(out) if r["n_gen"] > 0)


def ours_depth(model: Path, threads: int, depth: int, kv: str) -> float:
    out, _ = run_measured([sys.executable, "-m", "franken_rt.eval.speed", str(model), "-t", str(threads),
                           "-d", str(depth), "--kv-cache", kv])
    return json.loads(out.strip().splitlines()[-1])["tg"]


def models() -> list[tuple[str, Path]]:
    f32 = float_original()
    return [("Q4_1 (original)", fetch())] + [(q, convert_cached(f32, f"bench-{q}.gguf", "--quant", q))
                                            for q in ("q8_0", "q4_0")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(ROOT / "docs" / "performance.json"))
    ap.add_argument("--only", default="", help="time only the model files whose label contains this (q8_0, q4_0, Q4_1)")
    ap.add_argument("--depths", type=int, nargs="*", default=[], help="also decode q4_0 after these context depths")
    ap.add_argument("--extra", type=Path, nargs="*", default=[],
                    help="more GGUF files to time, labelled by file name (e.g. llama.cpp's K-quant files, or "
                         "benchmarks/synthetic.py's 1B-shape ones)")
    args = ap.parse_args()
    bin_dir = build()
    files = models() + [(p.stem, p) for p in args.extra]
    depth_rows = []
    for depth in args.depths:
        q4_0 = dict(files)["q4_0"]
        for kv in ("f16", "q8"):
            runs: dict[str, list[float]] = {"llama.cpp": [], "franken-rt": []}
            for _ in range(args.rounds):
                runs["llama.cpp"].append(llama_bench_depth(bin_dir, q4_0, 2, depth, kv))
                runs["franken-rt"].append(ours_depth(q4_0, 2, depth, kv))
            ours_tg, theirs_tg = (statistics.median(runs[e]) for e in ("franken-rt", "llama.cpp"))
            depth_rows.append({"depth": depth, "kv_cache": kv, "franken-rt_tg": ours_tg, "llama.cpp_tg": theirs_tg,
                               "tg_ratio": ours_tg / theirs_tg})
            print(f"q4_0 depth {depth} kv {kv}: tg64 {ours_tg:.1f} vs {theirs_tg:.1f} ({ours_tg / theirs_tg:.2f}x)",
                  flush=True)
    rows = []
    for label, path in (m for m in files if args.only in m[0]):
        for threads in args.threads:
            runs: dict[str, list[dict]] = {"llama.cpp": [], "franken-rt": []}
            for _ in range(args.rounds):  # alternate, so both engines see the same machine
                runs["llama.cpp"].append(llama_bench(bin_dir, path, threads))
                runs["franken-rt"].append(ours(path, threads))
            med = {eng: {k: statistics.median(r[k] for r in rs) for k in ("pp", "tg", "peak_rss_mib")}
                   for eng, rs in runs.items()}
            row = {"model": label, "file": path.name, "threads": threads, **{
                f"{eng}_{k}": v for eng, m in med.items() for k, v in m.items()}}
            row["pp_ratio"] = med["franken-rt"]["pp"] / med["llama.cpp"]["pp"]
            row["tg_ratio"] = med["franken-rt"]["tg"] / med["llama.cpp"]["tg"]
            rows.append(row)
            print(f"{label:16} t={threads}  pp128 {med['franken-rt']['pp']:7.1f} vs {med['llama.cpp']['pp']:7.1f} "
                  f"({row['pp_ratio']:.2f}x)  tg64 {med['franken-rt']['tg']:6.1f} vs {med['llama.cpp']['tg']:6.1f} "
                  f"({row['tg_ratio']:.2f}x)  RSS {med['franken-rt']['peak_rss_mib']:.0f} vs "
                  f"{med['llama.cpp']['peak_rss_mib']:.0f} MiB", flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    machine = {"cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version()}
    result = {"machine": machine, "rounds": args.rounds, "rows": rows, "depth_rows": depth_rows}
    Path(args.out).write_text(json.dumps(result, indent=1))
    md = Path(args.out).with_suffix(".md")
    notes = ""  # the hand-written "## Notes" section of an existing report survives a re-run
    if md.is_file() and "\n## Notes" in md.read_text():
        notes = "\n## Notes" + md.read_text().split("\n## Notes", 1)[1]
    md.write_text(render(result) + notes)
    return 0


def render(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Speed: franken-rt against llama.cpp",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs (a shared VM: figures move by several percent between",
        "runs, so both engines run alternately on the same files and the table gives medians of "
        f"{result['rounds']} rounds). Python {m['python']}.",
        "",
        "Reproduce: `python tools/bench_vs_llamacpp.py` (builds llama.cpp's `llama-bench` from the sources in the",
        "`llama-cpp-python` sdist once, then times both engines; writes docs/performance.json and this file).",
        "pp128: a 128-token prompt in one batch; tg64: 64 single-token decode steps; tokens/s. Peak RSS per process.",
        "",
        "| model file | threads | pp128 ours | pp128 llama.cpp | ratio | tg64 ours | tg64 llama.cpp | ratio "
        "| RSS ours (MiB) | RSS llama.cpp (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['threads']} | {r['franken-rt_pp']:.1f} | {r['llama.cpp_pp']:.1f} | "
            f"{r['pp_ratio']:.2f}x | {r['franken-rt_tg']:.1f} | {r['llama.cpp_tg']:.1f} | {r['tg_ratio']:.2f}x | "
            f"{r['franken-rt_peak_rss_mib']:.0f} | {r['llama.cpp_peak_rss_mib']:.0f} |")
    if result.get("depth_rows"):
        lines += [
            "",
            "Decode after a long context (`--depths`): q4_0, 2 threads, tg64 after that many tokens in the KV cache "
            "(llama-bench -d; its flash attention on for the q8 cache, which needs it).",
            "",
            "| depth | KV cache | tg64 ours | tg64 llama.cpp | ratio |",
            "| ---: | --- | ---: | ---: | ---: |",
        ]
        for r in result["depth_rows"]:
            lines.append(f"| {r['depth']} | {r['kv_cache']} | {r['franken-rt_tg']:.1f} | {r['llama.cpp_tg']:.1f} | "
                         f"{r['tg_ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
