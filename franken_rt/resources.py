"""What a model needs from the machine, checked before anything is allocated: memory for the weights, the KV cache
and the core's scratch buffers against what the system has available (or the budget of --max-memory), and the
CPUs its threads run on (--cpus)."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

from franken_rt.config import ModelConfig
from franken_rt.errors import FrankenError
from franken_rt.units import mib

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


def check_memory(c: ModelConfig, depth: int, n_ctx: int, kv_cache: str, threads: int, sequences: int = 1,
                 weights: int = 0) -> None:
    """FrankenError if the weights (`weights` bytes as loaded) and the context(s) would not fit in the memory the
    system has available."""
    need = runtime_bytes(c, depth, n_ctx, kv_cache, threads, sequences)
    have = available_memory()
    if have is not None and weights + need > have:
        raise FrankenError(
            (f"the weights take {mib(weights)} and " if weights else "")
            + f"{sequences} x " * (sequences > 1) + f"a context of {n_ctx} tokens needs {mib(need)} "
            f"(KV cache and buffers) but only {mib(have)} of memory are available; use a smaller context or "
            "--kv-cache q8"
        )


# ---- memory budget (--max-memory) ----------------------------------------------------------------------------------

KV_PREFERENCE = ("f16", "q8")  # the default cache first; q8 halves it at a small cost, before any context is cut
MIN_CTX = 256  # the smallest context --max-memory settles for (one key chunk)


@dataclass(frozen=True)
class MemoryPlan:
    """A context size and KV cache type, and the bytes they need with the weights."""

    n_ctx: int
    kv_cache: str
    weights: int
    runtime: int  # KV cache and buffers (runtime_bytes)

    @property
    def total(self) -> int:
        return self.weights + self.runtime

    def describe(self) -> str:
        return (f"context {self.n_ctx} tokens, {self.kv_cache} KV cache: weights {mib(self.weights)} + KV cache and "
                f"buffers {mib(self.runtime)} = {mib(self.total)}")


def plan_memory(c: ModelConfig, depth: int, weights: int, budget: int, n_ctx: int | None, kv_cache: str | None,
                default_ctx: int, threads: int, sequences: int = 1) -> MemoryPlan:
    """The largest context (up to `default_ctx`) and the widest KV cache whose total fits `budget` bytes; an explicit
    `n_ctx` or `kv_cache` is kept as given. The default cache at the default context is taken if it fits, else the
    q8 cache at that context, else the context is cut (in key chunks, not below MIN_CTX) with the narrowest cache.
    FrankenError with the numbers when nothing fits."""
    # A Q8_0 cache stores each head's keys in 32-value blocks.
    kvs = [kv_cache] if kv_cache is not None else [k for k in KV_PREFERENCE if k != "q8" or c.head_dim % 32 == 0]

    def plan(ctx: int, kv: str) -> MemoryPlan:
        return MemoryPlan(ctx, kv, weights, runtime_bytes(c, depth, ctx, kv, threads, sequences))

    if weights >= budget:
        raise FrankenError(f"--max-memory {mib(budget)}: the weights alone take {mib(weights)}")
    def widest(ctx: int) -> MemoryPlan | None:  # the widest cache that holds `ctx` tokens
        return next((p for p in (plan(ctx, kv) for kv in kvs) if p.total <= budget), None)

    if n_ctx is not None:  # the context is fixed
        fixed = widest(n_ctx)
        if fixed is None:
            raise FrankenError(f"--max-memory {mib(budget)}: {plan(n_ctx, kvs[-1]).describe()} does not fit")
        return fixed
    full = widest(default_ctx)
    if full is not None:
        return full
    kv = kvs[-1]
    # Shorter contexts: whole key chunks from MIN_CTX up to (not including) the default; the most that fits.
    chunks = range(MIN_CTX // KEY_CHUNK, (default_ctx - 1) // KEY_CHUNK + 1)
    smallest = plan(chunks[0] * KEY_CHUNK if chunks else default_ctx, kv)
    if smallest.total > budget:
        raise FrankenError(f"--max-memory {mib(budget)}: even {smallest.describe()} does not fit")
    lo, hi = 0, len(chunks) - 1  # chunks[lo] fits; find the last that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if plan(chunks[mid] * KEY_CHUNK, kv).total <= budget else (lo, mid - 1)
    return plan(chunks[lo] * KEY_CHUNK, kv)


# ---- CPUs (--cpus) -------------------------------------------------------------------------------------------------


def _process_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


# Read once, at import: sched_getaffinity answers for the calling thread, and a model run with --cpus pins the thread
# that runs it to one CPU, which is not what the process may use.
_PROCESS_CPUS = _process_cpus()


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (taskset, cgroups), in order."""
    return list(_PROCESS_CPUS)


def parse_cpus(text: str) -> list[int]:
    """A Linux CPU list, `0-3,6`, -> [0, 1, 2, 3, 6] (in the order given, each once); FrankenError if unreadable or
    if a CPU is not one this process may use."""
    cpus: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise FrankenError(f"--cpus: cannot read {text!r} (a CPU list such as 0-3 or 4,5,6,7)")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if last - first > 4096:
            raise FrankenError(f"--cpus: {part.strip()!r} is not a range of this machine's CPUs")
        cpus += [c for c in range(first, last + 1) if c not in cpus]
    return check_cpus(cpus)


def check_cpus(cpus: list[int]) -> list[int]:
    allowed = allowed_cpus()
    outside = [c for c in cpus if c not in allowed]
    if not cpus or outside:
        raise FrankenError(f"--cpus: CPU {', '.join(map(str, outside or ['(none)']))} is not one this process may "
                           f"use ({_cpu_list(allowed)})")
    return cpus


def _cpu_list(cpus: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def _core_of(cpu: int) -> str | None:
    """The CPUs sharing `cpu`'s core (its SMT siblings, itself included) as sysfs lists them: the same text for every
    CPU of a core. None where it cannot be read. (Not physical_package_id + core_id: Arm boards number cores within
    each cluster, so a big and a LITTLE core can share both.)"""
    try:
        with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def one_per_core(cpus: list[int]) -> list[int]:
    """`cpus` reordered so that the first CPU of each physical core comes first, the SMT siblings after: thread t runs
    on the t-th, so a thread count up to the number of cores never puts two threads on one core's SIMD units."""
    seen: set[str] = set()
    first, rest = [], []
    for c in cpus:
        core = _core_of(c)
        (rest if core is not None and core in seen else first).append(c)
        if core is not None:
            seen.add(core)
    return first + rest


def physical_cores(cpus: list[int]) -> int:
    """Physical cores among `cpus` (SMT siblings share the SIMD units: the default thread count)."""
    cores = {_core_of(c) for c in cpus}
    return len(cpus) if None in cores else len(cores)
