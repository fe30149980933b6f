"""The same perplexity, computed by llama.cpp (through llama-cpp-python) on any GGUF it runs: one evaluator for
files that only llama.cpp can run (k-quants) and for interop checks of ours. Test and tools use only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from franken_rt.eval.perplexity import Perplexity, summarize


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
