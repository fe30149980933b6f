#!/usr/bin/env python3
"""franken-serve against llama.cpp's llama-server: the same file, threads, slots and client load, alternating.

    python tools/serve_bench.py [--rounds 2] [--streams 1 2 4 8] [--max-tokens 64]

For the demo model (its Q4_1 original) and its q4_0 conversion: aggregate generated tokens/s and median time to
first token with 1, 2, 4 and 8 concurrent streams (each stream sends 2 streamed completions one after another,
end-of-sequence ignored so each makes exactly --max-tokens), both servers started with 8 slots of 512 tokens and
2 threads, one server at a time, their order alternating per round; the best round of each cell. Also the idle
server's resident memory against franken-run's peak. Writes docs/serving.md and docs/serving.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

from franken_rt.eval.demo_model import convert_cached, fetch, float_original
from franken_rt.eval.llamacpp import build
from franken_rt.eval.serving import drive, llama_server, rss_mib, running_server

ROOT = Path(__file__).resolve().parent.parent
SLOTS, CTX, THREADS = 8, 512, 2


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def franken_run_peak_mib(model: Path) -> float:
    """Peak RSS franken-run reports after a short generation with the same context and threads."""
    out = subprocess.run([str(Path(sys.executable).parent / "franken-run"), str(model), "-p", "Hello", "-n", "16",
                          "--ctx", str(CTX), "-t", str(THREADS)], capture_output=True, text=True, check=True).stderr
    return float(re.search(r"peak RSS (\d+) MiB", out).group(1))  # type: ignore[union-attr]


def kv_slot_mib(model: Path) -> float:
    from franken_rt.checkpoint import read_checkpoint
    from franken_rt.resources import runtime_bytes

    c = read_checkpoint(model).config
    one, two = (runtime_bytes(c, c.n_layers, CTX, "f16", THREADS, n) for n in (1, 2))
    return (two - one) / (1 << 20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "serving.md")
    ap.add_argument("--report", action="store_true", help="measure nothing: rewrite the page from the JSON")
    args = ap.parse_args()
    if args.report:
        results = json.loads(args.out.with_suffix(".json").read_text())
        args.rounds = results.get("rounds", args.rounds)
        args.out.write_text(report(results, args))
        return 0

    server_bin = build() / "llama-server"
    files = [("Q4_1 (original)", fetch()),
             ("q4_0", convert_cached(float_original(), "bench-q4_0.gguf", "--quant", "q4_0"))]
    results: dict = {"machine": cpu_name(), "rounds": args.rounds, "slots": SLOTS, "ctx": CTX, "threads": THREADS,
                     "max_tokens": args.max_tokens, "files": {}}
    for label, path in files:
        cells: dict[str, dict[int, dict]] = {"franken-serve": {}, "llama-server": {}}
        memory = {}
        for r in range(args.rounds):
            order = ["franken-serve", "llama-server"][:: 1 if r % 2 == 0 else -1]
            for engine in order:
                start = (running_server(path, "--parallel", str(SLOTS), "--ctx", str(CTX), "--threads", str(THREADS))
                         if engine == "franken-serve" else llama_server(server_bin, path, SLOTS, CTX, THREADS))
                with start as server:
                    memory.setdefault(engine, rss_mib(server.proc.pid))
                    drive(server.url, 1, requests=1, max_tokens=8)  # warm up
                    for n in args.streams:
                        load = drive(server.url, n, max_tokens=args.max_tokens)
                        best = cells[engine].get(n)
                        if best is None or load.tokens_per_second > best["tps"]:
                            cells[engine][n] = {"tps": load.tokens_per_second, "ttft": load.ttft_median,
                                                "tokens": load.tokens}
                        print(f"{label} round {r} {engine} x{n}: {load.tokens_per_second:.1f} tok/s, "
                              f"TTFT {load.ttft_median * 1000:.0f} ms", file=sys.stderr)
        results["files"][label] = {"file": path.name, "cells": cells, "idle_rss_mib": memory,
                                   "franken_run_peak_mib": franken_run_peak_mib(path),
                                   "kv_per_slot_mib": kv_slot_mib(path)}
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.out.write_text(report(results, args))
    print(args.out.read_text())
    return 0


def report(res: dict, args: argparse.Namespace) -> str:
    lines = [
        "# Serving: franken-serve against llama-server",
        "",
        f"Measured on {res['machine']} with `python tools/serve_bench.py --rounds {args.rounds}`: both servers with "
        f"{res['slots']} slots of {res['ctx']} tokens and {res['threads']} threads, one at a time, their order "
        "alternating per round; the same client load (`franken_rt.eval.serving.drive`: a thin http.client load "
        "generator on the same machine whose threads run at nice 10, so that its parsing takes from either server only "
        "what the server leaves idle, as clients on other machines would; each stream sends 2 streamed "
        f"completions one after another, {res['max_tokens']} tokens each, end-of-sequence ignored); the best round "
        "of each cell. Aggregate = all streams' generated tokens / wall time; TTFT = median time to the first "
        "generated text. llama-server is built from the llama-cpp-python 0.3.36 sources.",
        "",
        "The demo model's Q4_1 file is its original; q4_0 is made from its float form, which lies on a Q4_1 grid "
        "(speed does not depend on that).",
        "",
    ]
    for label, f in res["files"].items():
        ours, theirs = f["cells"]["franken-serve"], f["cells"]["llama-server"]
        single = ours[min(ours, key=int)]["tps"]
        lines += [f"## {label}", "",
                  "| streams | franken-serve tok/s | vs its 1 stream | llama-server tok/s | ours / theirs | "
                  "TTFT ours (ms) | TTFT theirs (ms) |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for n in sorted(ours, key=int):
            o, t = ours[n], theirs[n]
            lines.append(f"| {n} | {o['tps']:.1f} | {o['tps'] / single:.2f}x | {t['tps']:.1f} | "
                         f"{o['tps'] / t['tps']:.2f}x | {o['ttft'] * 1000:.0f} | {t['ttft'] * 1000:.0f} |")
        rss = f["idle_rss_mib"]
        extra = rss["franken-serve"] - f["franken_run_peak_mib"]
        lines += ["", f"Idle resident memory after loading: franken-serve {rss['franken-serve']:.0f} MiB, "
                  f"llama-server {rss['llama-server']:.0f} MiB; franken-run's peak with one context of the same size "
                  f"{f['franken_run_peak_mib']:.0f} MiB. The server costs {extra:+.0f} MiB beyond franken-run "
                  "(Python's HTTP stack and the engine): the other slots' KV caches "
                  f"({res['slots'] - 1} x {f['kv_per_slot_mib']:.1f} MiB at most) are zero pages, resident only as "
                  "their tokens fill them.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
