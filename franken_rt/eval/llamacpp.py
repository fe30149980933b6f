"""llama.cpp, the peer: the same perplexity computed by llama.cpp (through llama-cpp-python) on any GGUF it runs,
one evaluator for files that only llama.cpp can run (k-quants) and for interop checks of ours; and llama.cpp's own
tools (llama-bench, llama-quantize, llama-perplexity, llama-imatrix) built once from the llama.cpp sources vendored
in the `llama-cpp-python` sdist on PyPI, cached outside the repo (`python tools/llamacpp.py`). Test and tools use
only."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from franken_rt.cache import cache_dir
from franken_rt.eval.perplexity import Perplexity, summarize

DEFAULT_VERSION = "0.3.36"
TARGETS = ["llama-bench", "llama-quantize", "llama-perplexity", "llama-imatrix", "llama-server"]


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
                    "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=ON",
                    "-DBUILD_SHARED_LIBS=OFF"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", *TARGETS], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def llamacpp_quantize(src: Path, dst: Path, ftype: int, threads: int = 2) -> None:
    """llama.cpp's own quantizer (through llama-cpp-python): `src` to `dst` as LLAMA_FTYPE `ftype` (15: Q4_K_M,
    17: Q5_K_M, ...), with llama.cpp's choices of type per tensor and its fallbacks for rows it cannot split."""
    import llama_cpp  # an optional extra: llama-cpp-python, for tests and tools

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {src} to ftype {ftype}")


def llamacpp_perplexity(path: Path, ids: list[int], ctx: int = 512, max_windows: int | None = None,
                        threads: int = 2) -> Perplexity:
    """Perplexity of `path` in llama.cpp over the token ids `ids`, windowed exactly as franken-eval windows."""
    from llama_cpp import Llama  # an optional extra: llama-cpp-python, for tests and tools

    llm = Llama(model_path=str(path), n_ctx=ctx, n_batch=ctx, logits_all=True, n_threads=threads, verbose=False)
    n_windows = len(ids) // ctx if max_windows is None else min(len(ids) // ctx, max_windows)
    nll = []
    for w in range(n_windows):
        window = ids[w * ctx:(w + 1) * ctx]
        llm.reset()
        llm.eval(window)
        logits = np.asarray(llm.scores[: ctx - 1], dtype=np.float64)
        mx = logits.max(axis=1, keepdims=True)
        logz = mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1))
        nll.append(logz - logits[np.arange(ctx - 1), window[1:]])
    return summarize(nll, ctx)
