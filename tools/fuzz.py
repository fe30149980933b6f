"""Fuzz the file readers for a bounded time: python tools/fuzz.py --seconds 60 [--target gguf ...]

Each target (tests/fuzz/fuzz_readers.py) runs under atheris/libFuzzer for its share of the seconds, seeded from
tests/fuzz/corpus/<target>/ (read only: new inputs go to a scratch folder). Prints the executions run per target and
in total; exits 1 on a crash, an uncaught exception, a hang (--timeout seconds on one input) or an allocation beyond
--rss-mb, after copying the input that caused it to --artifacts (default fuzz-artifacts/).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "fuzz" / "fuzz_readers.py"
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
TARGETS = ("gguf_header", "gguf", "safetensors", "config", "tokenizer_json", "tokenizer_model", "bpe")
CORPUS_OF = {"gguf_header": "gguf", "gguf": "gguf"}
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STAT = re.compile(r"^#(\d+)\s", re.MULTILINE)


def fuzz_one(target: str, seconds: int, timeout: int, rss_mb: int, artifacts: Path) -> tuple[int, bool]:
    """(executions, ok) for one target."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as scratch:
        found = Path(scratch) / "found"
        crashes = Path(scratch) / "artifacts"
        found.mkdir()
        crashes.mkdir()
        cmd = [sys.executable, str(HARNESS), "--target", target, f"-max_total_time={seconds}",
               f"-timeout={timeout}", f"-rss_limit_mb={rss_mb}", f"-artifact_prefix={crashes}/",
               "-print_final_stats=1", str(found), str(CORPUS / CORPUS_OF.get(target, target))]
        files = Path(tempfile.mkdtemp(prefix="franken-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        # the harness's scratch files: in memory, removed below
        env = {**os.environ, "FRANKEN_FUZZ_SCRATCH": str(files)}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 10 * timeout + 120)
        except subprocess.TimeoutExpired as e:  # libFuzzer's own -timeout did not fire: a hang outside one input
            log = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            print(f"--- {target}: the fuzzer did not finish in time\n{log[-4000:]}", file=sys.stderr)
            return 0, False
        finally:
            shutil.rmtree(files, ignore_errors=True)
        log = proc.stderr + proc.stdout
        done = _DONE.search(log)
        stats = _STAT.findall(log)
        runs = int(done.group(1)) if done else (int(stats[-1]) if stats else 0)
        bad = sorted(crashes.iterdir())
        ok = proc.returncode == 0 and not bad
        if not ok:
            artifacts.mkdir(parents=True, exist_ok=True)
            kept = []
            for f in bad:
                dest = artifacts / f"{target}-{f.name}"
                shutil.copy(f, dest)
                kept.append(str(dest))
            tail = "\n".join(log.strip().splitlines()[-40:])
            print(f"--- {target}: fuzzer exit {proc.returncode}; inputs: {', '.join(kept) or 'none'}\n{tail}",
                  file=sys.stderr)
        return runs, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="total fuzzing time, shared by the targets (60)")
    ap.add_argument("--target", action="append", choices=TARGETS, help="target (repeatable; default all)")
    ap.add_argument("--timeout", type=int, default=20, help="seconds one input may take before it is a hang (20)")
    ap.add_argument("--rss-mb", type=int, default=2048, help="memory limit: more is a runaway allocation (2048)")
    ap.add_argument("--artifacts", type=Path, default=ROOT / "fuzz-artifacts", help="where failing inputs go")
    args = ap.parse_args(argv)
    targets = args.target or list(TARGETS)
    share = max(1, args.seconds // len(targets))
    total, failed = 0, []
    for target in targets:
        runs, ok = fuzz_one(target, share, args.timeout, args.rss_mb, args.artifacts)
        total += runs
        print(f"{target:15s} {runs:9d} executions in {share} s  {'ok' if ok else 'FAILED'}")
        if not ok:
            failed.append(target)
    print(f"{'total':15s} {total:9d} executions")
    if failed:
        print(f"fuzzing found problems in: {', '.join(failed)} (inputs in {args.artifacts})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
