"""What a model needs from the machine, checked before anything is allocated: memory for the KV cache and the
core's scratch buffers against what the system has available."""

from __future__ import annotations

import sys

from franken_rt.config import ModelConfig
from franken_rt.errors import FrankenError

# Bytes per stored K or V row element for each KV cache type (Q8_0: 34 bytes per 32 values).
_KV_BYTES = {"f32": 4.0, "f16": 2.0, "q8": 34 / 32}
BATCH = 64  # prompt tokens per step in the core (Config::n_batch)


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; a no-op elsewhere).

    Reading a vocabulary builds and frees a few hundred thousand small objects (Python's and the `tokenizers`
    engine's); glibc keeps the freed pages resident (~6 MiB after reading SmolLM2's 49k tokens). The core's
    allocations reuse most of that heap anyway: the peak of a generation with SmolLM2 drops by ~0.7 MiB, net of
    importing ctypes for it.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # ~0.7 MiB resident, imported only here (the runtime has no numpy to have imported it)

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # a libc without it (musl)
        return
    trim(0)


KEY_CHUNK, SPLIT_ROWS = 256, 8  # Model::kKeyChunk and kSplitRows (csrc/model/model.h)


def runtime_bytes(c: ModelConfig, depth: int, n_ctx: int, kv_cache: str, threads: int, sequences: int = 1) -> int:
    """Bytes the core allocates for `sequences` contexts: K and V caches of every executed block, plus activations,
    attention scores and queries per thread, and logits buffers (the weights are not counted: memory-mapped, or
    repacked at load into a copy of the same size whose mapped original is released)."""
    q_dim, kv_dim = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    kv = int(2 * sequences * depth * n_ctx * kv_dim * _KV_BYTES[kv_cache])
    activations = BATCH * (3 * max(c.dim, q_dim) + 2 * kv_dim + q_dim + 2 * c.ffn_dim) * 4
    # Attention takes keys in chunks (Model::kKeyChunk): per thread a chunk's scores for each query head of a KV head's
    # group, the queries and the chunk's softmax with its running fold; and, for decoding rows (at most
    # Model::kSplitRows) whose chunks run in parallel, every chunk's partial result.
    group = c.n_heads // c.n_kv_heads
    per_thread = group * min(n_ctx, KEY_CHUNK) + group * c.head_dim + group * (2 * c.head_dim + 4)
    per_thread += max(c.dim, c.ffn_dim, q_dim)
    chunks = -(-n_ctx // KEY_CHUNK)
    partials = min(BATCH, SPLIT_ROWS) * c.n_heads * chunks * (c.head_dim + 2)
    scratch = (threads * per_thread + partials) * 4 + (BATCH + 1) * c.vocab_size * 4
    return kv + activations + scratch


def check_memory(c: ModelConfig, depth: int, n_ctx: int, kv_cache: str, threads: int, sequences: int = 1) -> None:
    """FrankenError if the context(s) would not fit in the memory the system has available."""
    need = runtime_bytes(c, depth, n_ctx, kv_cache, threads, sequences)
    have = available_memory()
    if have is not None and need > have:
        mib = 1 << 20
        raise FrankenError(
            f"{sequences} x " * (sequences > 1) + f"a context of {n_ctx} tokens needs {need / mib:.0f} MiB "
            f"(KV cache and buffers) but only {have / mib:.0f} MiB of memory are available; use a smaller context or "
            "--kv-cache q8"
        )
