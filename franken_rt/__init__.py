"""franken-rt: make LLaMA-family models small and fast enough for CPU-class devices, and run them there."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from franken_rt.errors import FrankenError

__all__ = ["FrankenError", "load"]
__version__ = "0.1.0"


def load(
    path: str | Path,
    threads: int | None = None,
    n_ctx: int | None = None,
    kernels: str = "",
    activations: str = "q8",
    kv_cache: str | None = None,
    layer_plan: Sequence[int] | None = None,
    sequences: int = 1,
    cpus: Sequence[int] | str | None = None,
    max_memory: int | str | None = None,
):  # noqa: ANN201 (franken_rt.model.Model; imported lazily to keep `import franken_rt` light)
    """Load a GGUF file or Hugging Face folder; returns a franken_rt.model.Model ready to generate.

    threads: default physical cores. n_ctx: KV cache size, default min(model's, 2048). kernels: force a kernel
    path ("scalar", "avx2", ...). activations: "q8" (integer kernels, default) or "f32" (reference precision).
    kv_cache: "f16" (default), "q8" (half the memory) or "f32" (reference precision).
    layer_plan: stored block indices in execution order, overriding the file's own plan (`franken.layer_plan`
    metadata, followed by default). sequences: independent KV caches of n_ctx each (a server's slots).
    cpus: the CPUs to pin the threads to, [4, 5, 6, 7] or "4-7" (default: unpinned; the thread count defaults to the
    physical cores among them). max_memory: bytes or "512M"/"1.5GB" for weights + KV cache + buffers: the context and
    KV cache type are chosen to fit (model.memory_plan says which); an explicit n_ctx/kv_cache is kept, and refused
    if it does not fit.
    """
    # Here, not at module top: importing any franken_rt module runs this file, and the readers and the converter's
    # size planning must not need the compiled core that franken_rt.model loads.
    from franken_rt.checkpoint import read_checkpoint
    from franken_rt.model import Model

    return Model(read_checkpoint(path), threads=threads, n_ctx=n_ctx, kernels=kernels, activations=activations,
                 kv_cache=kv_cache, layer_plan=layer_plan, sequences=sequences, cpus=cpus, max_memory=max_memory)


def __getattr__(name: str) -> object:
    """`from franken_rt import _core` asks here before it imports the submodule: import it, and when there is no
    compiled core to import, say why."""
    if name == "_core":
        try:
            return importlib.import_module("franken_rt._core")
        except ModuleNotFoundError:
            pass
        here = Path(__file__).resolve().parent
        raise ImportError(
            f"franken_rt's compiled core (_core) is not in {here}: this is probably the source folder, which shadows "
            "the installed package when Python runs from the repository's root. Run from another folder, or install "
            "in place with `.venv/bin/pip install -e .` (the extension is then found from here too)."
        )
    raise AttributeError(f"module 'franken_rt' has no attribute {name!r}")

