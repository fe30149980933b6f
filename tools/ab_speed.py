#!/usr/bin/env python3
"""Speed of two builds of franken-rt on the same GGUF files, rounds alternating, in one run: a change's effect on
prompt (pp) and generation (tg) tokens/s, measured as a ratio on whatever machine runs it.

    git worktree add /tmp/before REV && (build its core into /tmp/before/franken_rt, e.g. with CMake's
        -DFRANKEN_PYTHON=ON and copying _core*.so there)
    python tools/ab_speed.py /tmp/before MODEL.gguf [MODEL.gguf ...] [--after DIR] [--rounds 5] [--threads 2]

Each measurement is franken_rt.eval.speed.measure (llama-bench's pp128/tg64) in a fresh process that imports the
franken_rt of one tree only; per file and tree, the median over rounds. Prints one line per file: pp and tg of
both builds and after/before.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# The child drops any editable-install import hook, so the tree put first on sys.path is the one imported.
CHILD = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable")]
sys.path.insert(0, sys.argv[1])
import franken_rt
from franken_rt.eval.speed import measure
assert franken_rt.__file__.startswith(sys.argv[1]), franken_rt.__file__
print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
"""


def measure_in(tree: Path, model: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(model), str(threads)], capture_output=True,
                         text=True, check=True, cwd="/").stdout
    return json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path, help="a franken-rt tree with its core built into franken_rt/")
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--after", type=Path, default=Path(__file__).resolve().parent.parent,
                    help="the other tree (default: this checkout)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    trees = {"before": a.before.resolve(), "after": a.after.resolve()}
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(a.rounds):
        for model in a.models:
            order = ("before", "after") if r % 2 == 0 else ("after", "before")  # neither always runs first
            for side in order:
                runs.setdefault((str(model), side), []).append(measure_in(trees[side], model, a.threads))
    print(f"{'model':40} {'pp before':>10} {'pp after':>10} {'ratio':>6} {'tg before':>10} {'tg after':>10} "
          f"{'ratio':>6}")
    for model in a.models:
        med = {side: {k: statistics.median(x[k] for x in runs[(str(model), side)]) for k in ("pp", "tg")}
               for side in trees}
        b, f = med["before"], med["after"]
        print(f"{model.name:40} {b['pp']:10.1f} {f['pp']:10.1f} {f['pp'] / b['pp']:6.3f} {b['tg']:10.1f} "
              f"{f['tg']:10.1f} {f['tg'] / b['tg']:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
