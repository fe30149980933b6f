#!/usr/bin/env python3
"""Build llama.cpp's own tools (llama-bench, llama-quantize, llama-perplexity, llama-imatrix) once, from the
llama.cpp sources vendored in the `llama-cpp-python` sdist on PyPI, and cache them outside the repo. Prints the bin
folder.

    python tools/llamacpp.py [--version 0.3.36] [--jobs 2]

The peer is timed with its own llama-bench: its Python bindings' decode loop reaches only ~0.83x of it. The work is
franken_rt.eval.llamacpp's, which the tests and tools share.
"""

from __future__ import annotations

import argparse

from franken_rt.eval.llamacpp import DEFAULT_VERSION, build

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=DEFAULT_VERSION)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    print(build(args.version, args.jobs))
