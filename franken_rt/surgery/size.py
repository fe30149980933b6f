"""`--target-size`: the number of removed blocks and the per-tensor quantization with the least calibration
perplexity whose GGUF file fits a byte budget.

File sizes are predicted exactly: the header (metadata and tensor infos) is built as the writer builds it, and each
tensor's bytes come from BLOCK_LAYOUT, padded to the GGUF alignment. The candidates are every storage type and mix
the converter knows (QUANT_NAMES and MIXES of franken_rt.quant.policy, less the float types wider than F16), each
with every type for the embedding/output matrix: a new format joins the search by being added there. For each
candidate the fewest removed blocks that fit are taken (removing more only loses quality), and the candidates are
ranked by perplexity measured on the calibration windows with their tensors actually quantized.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np

from franken_rt import units
from franken_rt.checkpoint import gguf_writer as gw
from franken_rt.checkpoint.layer_plan import PLAN_KEY, drop
from franken_rt.checkpoint.types import Checkpoint, DType, TensorInfo, ggml_type, nbytes_of
from franken_rt.errors import FrankenError
from franken_rt.quant.formats import encode
from franken_rt.quant.policy import MIXES, QUANT_NAMES, QuantPolicy
from franken_rt.quant.tensors import float_array
from franken_rt.surgery.analyze import plan_nll
from franken_rt.surgery.plan import apply_plan

EXCLUDED_BASES = ("f32", "bf16")  # never smaller than f16 at the same quality
EMBED_PATTERN = r"^(token_embd|output)\.weight$"
ALIGNMENT = 32  # GGUF's default data alignment (the writer does not change it)


def parse_size(text: str) -> int:
    """`--target-size`: `60MB` (10^6), `60MiB` (2^20), `1.5GB`, `123456` (bytes) -> bytes."""
    return units.parse_size(text, "--target-size")


def candidate_quants() -> list[tuple[str, str | None]]:
    """(quant, embedding type or None for the quant's default) pairs to search."""
    bases = [q for q in (*QUANT_NAMES, *MIXES) if q not in EXCLUDED_BASES]
    embeds = [q for q in QUANT_NAMES if q not in EXCLUDED_BASES]
    return [(b, e) for b in bases for e in (None, *embeds)]


def policy_of(quant: str, embed: str | None) -> QuantPolicy:
    return QuantPolicy.parse(quant, [f"{EMBED_PATTERN}={embed}"] if embed else [])


def describe_quant(quant: str, embed: str | None) -> str:
    return quant + (f" + embedding {embed}" if embed else "")


def _pad(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def header_bytes(ckpt: Checkpoint, policy: Callable[[TensorInfo], DType]) -> int:
    """Bytes before the tensor data of the GGUF file write_gguf makes for `ckpt` (padded to the alignment)."""
    fd, tmp = tempfile.mkstemp(suffix=".gguf")
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, arch="llama")
        vocab = ckpt.tokenizer.gguf_metadata(vocab_size=ckpt.config.vocab_size)
        order = {PLAN_KEY: [int(b) for b in ckpt.layer_plan]} if ckpt.layer_plan is not None else {}
        for key, val in {**gw.hyperparameters(ckpt.config), **vocab, **order}.items():
            gw.add_value(w, key, val)
        plan = [(name, t, policy(t)) for name, t in ckpt.tensors.items()]
        w.add_file_type(gw.file_type(d for _, _, d in plan))
        freqs = gw._rope_freqs(ckpt)
        if freqs is not None:
            w.add_tensor_info("rope_freqs.weight", freqs.shape, np.dtype(np.float32), freqs.nbytes)
        for name, t, d in plan:
            w.add_tensor_info(name, t.shape, np.dtype(np.float32), nbytes_of(d, t.shape),
                              raw_dtype=ggml_type(d))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        w.close()
        return _pad(os.path.getsize(tmp))
    finally:
        Path(tmp).unlink(missing_ok=True)


def file_size(ckpt: Checkpoint, policy: Callable[[TensorInfo], DType], header: int | None = None) -> int:
    """The exact size of the GGUF file write_gguf(ckpt, dtype=policy) writes."""
    head = header if header is not None else header_bytes(ckpt, policy)
    data = sum(_pad(nbytes_of(policy(t), t.shape)) for t in ckpt.tensors.values())
    freqs = 0
    c = ckpt.config
    if c.rope_scaling is not None or c.rope_freq_factors is not None:
        freqs = _pad(c.head_dim // 2 * 4)
    return head + freqs + data


class QuantCache:
    """Each tensor encoded once per type, in files of a temporary folder: quantized checkpoints to measure."""

    def __init__(self, ckpt: Checkpoint, rounding: str, folder: Path, importance: dict | None = None) -> None:
        self.ckpt, self.rounding, self.folder = ckpt, rounding, Path(folder)
        self.importance = importance or {}
        self._done: dict[tuple[str, DType], TensorInfo] = {}

    def tensor(self, t: TensorInfo, d: DType) -> TensorInfo:
        if t.dtype == d:
            return t
        key = (t.name, d)
        if key not in self._done:
            path = self.folder / f"{t.name}.{d.name}.bin"
            encode(float_array(t), d, self.rounding, self.importance.get(t.name)).tofile(path)
            self._done[key] = TensorInfo(t.name, path, 0, d, t.shape)
        return self._done[key]

    def checkpoint(self, ckpt: Checkpoint, policy: Callable[[TensorInfo], DType]) -> Checkpoint:
        return replace(ckpt, tensors={n: self.tensor(t, policy(t)) for n, t in ckpt.tensors.items()})


@dataclass
class Choice:
    removed: list[int]
    quant: str
    embed: str | None
    size: int
    ppl: float
    table: list[dict]   # every candidate measured: quant, embed, removed, size, ppl
    why: str

    @property
    def policy(self) -> QuantPolicy:
        return policy_of(self.quant, self.embed)


def choose(ckpt: Checkpoint, budget: int, windows: list[list[int]], removal_for: Callable[[int], list[int]],
           max_drop: int | None = None, rounding: str = "search", threads: int | None = None,
           candidates: Sequence[tuple[str, str | None]] | None = None, verbose: bool = False,
           importance: dict | None = None, cache: QuantCache | None = None) -> Choice:
    """The (removed blocks, quantization) under `budget` bytes with the least calibration perplexity.
    `removal_for(n)`: which n blocks to remove (a selection method's answer). `importance`: per-column input
    moments for the weighted rounding (franken_rt.surgery.importance), as the file will be written. `cache`: quantized
    tensors to reuse across calls (its rounding and importance then apply)."""
    depth = ckpt.config.n_layers
    max_drop = depth - 1 if max_drop is None else min(max_drop, depth - 1)
    removals: dict[int, list[int]] = {}

    def removed(n: int) -> list[int]:
        if n not in removals:
            removals[n] = sorted(removal_for(n)) if n else []
        return removals[n]

    headers: dict[int, int] = {}

    def sized(n: int, policy: QuantPolicy) -> int:
        # Block tensors are alike, so the size depends on how many blocks go, not which: blocks 0..n-1 stand in.
        # The header's size does not depend on the types (each tensor's type is a fixed-size field).
        out = apply_plan(ckpt, list(range(n, depth)))
        if n not in headers:
            headers[n] = header_bytes(out, policy)
        return file_size(out, policy, header=headers[n])

    feasible: list[tuple[str, str | None, int, int]] = []
    seen: set[tuple] = set()
    for quant, embed in candidates if candidates is not None else candidate_quants():
        policy = policy_of(quant, embed)
        signature = tuple(policy(t) for t in ckpt.tensors.values())
        if signature in seen:
            continue  # the same types as an earlier candidate
        seen.add(signature)
        if sized(max_drop, policy) > budget:
            continue
        lo, hi = 0, max_drop  # the fewest removed blocks that fit: sizes fall as n grows
        while lo < hi:
            mid = (lo + hi) // 2
            if sized(mid, policy) <= budget:
                hi = mid
            else:
                lo = mid + 1
        feasible.append((quant, embed, lo, sized(lo, policy)))
    if not feasible:
        smallest = min(sized(max_drop, policy_of(q, e)) for q, e in candidates or candidate_quants())
        raise FrankenError(f"no model fits {budget:,} bytes: the smallest candidate is {smallest:,} bytes "
                           f"({max_drop} blocks removed)")
    removed(max(n for _, _, n, _ in feasible))  # nested selections (bi, ppl-greedy) are measured once
    table = []
    with tempfile.TemporaryDirectory(prefix="franken-size-") as tmp:
        cache = cache or QuantCache(ckpt, rounding, Path(tmp), importance)
        for i, (quant, embed, n, size) in enumerate(feasible):
            if verbose:
                print(f"\r[target size: measuring candidate {i + 1}/{len(feasible)}]", end="", file=sys.stderr,
                      flush=True)
            qckpt = cache.checkpoint(ckpt, policy_of(quant, embed))
            plan = drop(depth, removed(n))
            nll = plan_nll(qckpt, plan, windows, activations="q8", threads=threads)
            table.append({"quant": quant, "embed": embed, "removed": removed(n), "size": size, "ppl": math.exp(nll)})
        if verbose:
            print(file=sys.stderr)
    table.sort(key=lambda r: r["ppl"])
    best = table[0]
    others = "; ".join(f"{describe_quant(r['quant'], r['embed'])} -{len(r['removed'])} blocks: "
                       f"{r['size'] / 1e6:.2f} MB, ppl {r['ppl']:.2f}" for r in table[1:4])
    why = (f"target {budget / 1e6:.2f} MB: {describe_quant(best['quant'], best['embed'])} with "
           f"{len(best['removed'])} blocks removed ({best['removed'] or 'none'}) is {best['size'] / 1e6:.2f} MB and "
           f"has the least calibration perplexity {best['ppl']:.2f} of {len(table)} candidates that fit"
           + (f" (next: {others})" if others else ""))
    return Choice(best["removed"], best["quant"], best["embed"], best["size"], best["ppl"], table, why)
