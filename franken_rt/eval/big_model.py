"""Bounded memory at full size, measured: franken-convert's peak RSS on a synthetic Llama 3 checkpoint
(franken_rt.eval.synthetic_llama), the converted file's resident memory once loaded against its size, and decode
speed against the machine's measured read bandwidth (the method of benchmarks/test_bench_bandwidth.py).

    python -m franken_rt.eval.big_model 8b [--quant q4_0] [--rounding rtn] [--work FOLDER] [--clean]   (prints JSON)

builds the checkpoint (in the cache, or --work), converts it with the installed franken-convert, measures, and with
--clean deletes the checkpoint and the converted file afterwards (16 GB and 4.7 GiB at 8B).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

import franken_rt
from franken_rt import _core
from franken_rt.checkpoint import Checkpoint
from franken_rt.eval.memory import status_bytes

BIN = Path(sys.executable).parent  # the console scripts installed with this interpreter


@dataclass
class Measured:
    """A finished child process: exit code, its own peak resident memory (bytes), wall time (s)."""

    returncode: int
    peak_rss: int
    seconds: float


# Started by a small interpreter, not by the caller: a child started from a large process (vfork, then exec) counts
# that process's peak in its ru_maxrss. This one's peak is ~10 MiB; it runs the command and reports the command's.
_MEASURE = """
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024], f)  # Linux reports KiB
"""


def run_measured(cmd: list[str], log: Path) -> Measured:
    """Run `cmd` with stdout and stderr to `log`: its exit code, its own peak RSS (from wait4, taken by a small
    parent, see _MEASURE), the wall time."""
    report = log.with_suffix(".rusage.json")
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        subprocess.run([sys.executable, "-c", _MEASURE, str(report), *cmd], stdout=out, stderr=subprocess.STDOUT,
                       check=True)
    seconds = time.perf_counter() - t0
    code, peak = json.loads(report.read_text())
    report.unlink()
    return Measured(code, peak, seconds)


def convert(source: Path, out: Path, quant: str = "q4_0", rounding: str = "rtn") -> Measured:
    """The installed franken-convert, measured; its output (progress off) goes to OUT.log beside the file."""
    cmd = [str(BIN / "franken-convert"), str(source), "-o", str(out), "--quant", quant, "--rounding", rounding, "-q",
           "--force"]
    return run_measured(cmd, out.with_suffix(".log"))


def bytes_per_token(ckpt: Checkpoint) -> int:
    """Weight bytes one decode step reads: every tensor but the embedding table, whose one row is negligible, unless
    the output projection is that table (tied embeddings)."""
    tensors = ckpt.tensors
    embed = tensors["token_embd.weight"].nbytes if "output.weight" in tensors else 0
    return sum(t.nbytes for t in tensors.values()) - embed


def decode_vs_bandwidth(path: Path, threads: int = 2, steps: int = 8, rounds: int = 3) -> dict[str, float]:
    """Load `path`, decode, and probe the read bandwidth: the best of `rounds` alternations of the probe (memchr over
    1 GiB with `threads` threads) and `steps` single-token decode steps. Also the resident memory after loading and
    one token, and its peak so far, against the file's size (before the probe's buffer). Meant for a fresh process
    (measure_file)."""
    model = franken_rt.load(path, threads=threads, n_ctx=256)
    token = array("i", [1])
    model._core.eval(token)  # page the weights in
    rss, peak = status_bytes("VmRSS"), status_bytes("VmHWM")
    per_token = bytes_per_token(model.checkpoint)
    best, bandwidth = float("inf"), 0.0
    for _ in range(rounds):
        bandwidth = max(bandwidth, _core.testing.memory_bandwidth(1 << 30, threads, 2))
        model._core.truncate(0)
        t0 = time.perf_counter()
        for _ in range(steps):
            model._core.eval(token)
        best = min(best, (time.perf_counter() - t0) / steps)
    size = os.path.getsize(path)
    return {"file_bytes": size, "rss_after_load": rss, "rss_over_file": rss / size, "peak_rss_load": peak,
            "peak_over_file": peak / size, "bytes_per_token": per_token,
            "tok_s": 1 / best, "reached_gb_s": per_token / best / 1e9, "bandwidth_gb_s": bandwidth / 1e9,
            "fraction": per_token / best / bandwidth, "threads": threads, "kernels": model.kernels}


def measure_file(path: Path, threads: int = 2) -> dict[str, float]:
    """decode_vs_bandwidth in a fresh interpreter (so the resident memory is the model's alone)."""
    code = ("import json, sys; from franken_rt.eval.big_model import decode_vs_bandwidth; "
            "print(json.dumps(decode_vs_bandwidth(sys.argv[1], int(sys.argv[2]))))")
    path = Path(path).resolve()
    # cwd away from any source tree: `-c` puts the working directory first on sys.path, and a checkout's franken_rt
    # (no compiled core in it) would shadow the installed package
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(threads)], capture_output=True, text=True,
                          cwd=path.parent)
    if proc.returncode:
        raise RuntimeError(f"measuring {path} failed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    # here, not at the top: the child measure_file starts imports this module, and numpy (which the checkpoint
    # builder needs) would add to the resident memory it measures
    from franken_rt.eval.synthetic_llama import SHAPES, synthetic_llama3

    ap = argparse.ArgumentParser(prog="python -m franken_rt.eval.big_model", description=__doc__.split("\n")[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("--quant", default="q4_0")
    ap.add_argument("--rounding", default="rtn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="folder of the checkpoint and the output (default: "
                                                               "the cache)")
    ap.add_argument("--clean", action="store_true", help="delete the checkpoint and the output afterwards")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    source = synthetic_llama3(args.shape, args.work)
    made = time.perf_counter() - t0
    out = source.parent / f"synthetic-llama3-{args.shape}-{args.quant}-{args.rounding}.gguf"
    try:
        conv = convert(source, out, args.quant, args.rounding)
        if conv.returncode:
            print(out.with_suffix(".log").read_text(), file=sys.stderr)
            return conv.returncode
        result = {"shape": args.shape, "quant": args.quant, "rounding": args.rounding, "checkpoint_seconds": made,
                  "checkpoint_bytes": sum(f.stat().st_size for f in source.iterdir()),
                  "convert": asdict(conv), **measure_file(out, args.threads)}
        print(json.dumps(result, indent=1))
    finally:
        if args.clean:
            out.unlink(missing_ok=True)
            out.with_suffix(".log").unlink(missing_ok=True)
            shutil.rmtree(source, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
