#!/usr/bin/env python3
"""Build llama.cpp's own tools (llama-bench, llama-quantize, llama-perplexity) once, from the llama.cpp sources
vendored in the `llama-cpp-python` sdist on PyPI, and cache them outside the repo. Prints the bin folder.

    python tools/llamacpp.py [--version 0.3.36] [--jobs 2]

The peer is timed with its own llama-bench: its Python bindings' decode loop reaches only ~0.83x of it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEFAULT_VERSION = "0.3.36"
TARGETS = ["llama-bench", "llama-quantize", "llama-perplexity"]


def cache_dir() -> Path:
    return Path(os.environ.get("FRANKEN_CACHE", Path.home() / ".cache" / "franken-rt"))


def bin_dir(version: str = DEFAULT_VERSION) -> Path:
    return cache_dir() / f"llama.cpp-{version}" / "build" / "bin"


def source_dir(version: str = DEFAULT_VERSION) -> Path:
    """llama.cpp's source tree, from the sdist (downloaded and unpacked once)."""
    root = cache_dir() / f"llama.cpp-{version}"
    src = root / "src"
    if not (src / "CMakeLists.txt").is_file():
        cache_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                            "llama-cpp-python", "--dest", tmp, f"llama-cpp-python=={version}"], check=True)
            sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            with tarfile.open(sdist) as tf:
                tf.extractall(tmp, filter="data")
            vendored = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
            root.mkdir(parents=True, exist_ok=True)
            vendored.rename(src)
    return src


def build(version: str = DEFAULT_VERSION, jobs: int = 2) -> Path:
    out = bin_dir(version)
    if all((out / t).is_file() for t in TARGETS):
        return out
    src = source_dir(version)
    build_dir = src.parent / "build"
    subprocess.run(["cmake", "-S", str(src), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                    "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                    "-DBUILD_SHARED_LIBS=OFF"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", *TARGETS], check=True,
                   stdout=subprocess.DEVNULL)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=DEFAULT_VERSION)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    print(build(args.version, args.jobs))
