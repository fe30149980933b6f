"""`--target-size` by measured sensitivity: a storage type for each matrix (by layer and role, the tied
embedding/output matrix too) that buys the most calibration quality per byte, against the uniform mixes.

1. The sensitivity table ΔL(t, q) of every matrix in every type (franken_rt.surgery.sensitivity: the KL-scaled
   diagonal output error).
2. Greedy knapsack: every matrix starts in its smallest type; the upgrade with the largest ΔL reduction per extra
   byte (along each matrix's lower convex hull of (bytes, ΔL)) is taken while it fits, then any upgrade that still
   fits. If even the smallest types do not fit, the fewest blocks are removed that make them fit (by the removal
   method, as the uniform search does).
3. The uniform candidates of franken_rt.surgery.size (every format and mix, each with every embedding type, with
   the fewest removed blocks that fit) are ranked by the same table (fewest removed blocks first).
4. The allocation and the best uniform candidate are measured (KL divergence to the float model on the calibration
   windows) and the lower wins: the allocation must beat or match the uniform mixes, measured.

File sizes are exact: the header and tensor bytes come from franken_rt.surgery.size.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from franken_rt.checkpoint.gguf_writer import needs_permute
from franken_rt.checkpoint.layer_plan import drop
from franken_rt.checkpoint.types import Checkpoint, DType, TensorInfo, nbytes_of
from franken_rt.errors import FrankenError
from franken_rt.formats import format_of
from franken_rt.surgery import sensitivity as sn
from franken_rt.surgery import size
from franken_rt.surgery.plan import apply_plan

THOROUGH_EXTRA_DROPS = 2  # the thorough mode also allocates with this many more blocks removed, measured
THOROUGH_UNIFORM = 3      # and measures this many uniform candidates


@dataclass
class TypeTable:
    """A storage policy from a table of types by tensor name (matrices missing from it stay F16, the rest F32)."""

    types: dict[str, DType]

    def __call__(self, t: TensorInfo) -> DType:
        if len(t.shape) != 2:
            return DType.F32
        return self.types.get(t.name, DType.F16)

    def renumbered(self, depth: int, removed: Sequence[int]) -> TypeTable:
        """The same types under the names apply_plan gives the kept blocks (renumbered 0..k-1)."""
        new = {old: i for i, old in enumerate(b for b in range(depth) if b not in set(removed))}
        out = {}
        for name, d in self.types.items():
            layer = sn.layer_of(name)
            if layer is None:
                out[name] = d
            elif layer in new:
                out[f"blk.{new[layer]}.{name.split('.', 2)[2]}"] = d
        return TypeTable(out)


@dataclass
class Candidate:
    label: str
    removed: list[int] | None                # None: the n_removed blocks the removal method picks, not yet asked
    policy: Callable[[TensorInfo], DType]   # by the source's tensor names
    size: int
    predicted: float                         # Σ ΔL of its matrices
    measured: sn.Score | None = None
    n_removed: int = 0


@dataclass
class Allocation:
    removed: list[int]
    policy: Callable[[TensorInfo], DType]    # by the names of the file (kept blocks renumbered)
    source_policy: Callable[[TensorInfo], DType]
    size: int
    why: str
    cache: size.QuantCache
    candidates: list[Candidate] = field(default_factory=list)
    alpha: dict[str, float] = field(default_factory=dict)


def padded(t: TensorInfo, d: DType) -> int:
    return size._pad(nbytes_of(d, t.shape))


def hull(points: list[tuple[int, float, DType]]) -> list[tuple[int, float, DType]]:
    """The lower convex hull of (bytes, loss, type) from the fewest bytes on: the upgrades worth taking in order,
    each with a smaller loss reduction per byte than the one before."""
    pts = sorted(points, key=lambda p: (p[0], p[1]))
    front: list[tuple[int, float, DType]] = []
    for p in pts:  # Pareto front: more bytes must buy less loss
        if not front or p[1] < front[-1][1] and p[0] > front[-1][0]:
            front.append(p)
    out: list[tuple[int, float, DType]] = []
    for p in front:
        while len(out) >= 2:
            (b0, l0, _), (b1, l1, _) = out[-2], out[-1]
            if (l0 - l1) * (p[0] - b1) <= (l1 - p[1]) * (b1 - b0):  # out[-1] lies on or above the chord
                out.pop()
            else:
                break
        out.append(p)
    return out


def knapsack(options: dict[str, list[tuple[int, float, DType]]], room: int) -> dict[str, DType] | None:
    """The type of each tensor: the smallest first, then the greedy upgrades by loss reduction per byte while
    they fit. `options`: {tensor: [(bytes, ΔL, type)]}. None if the smallest types do not fit in `room` bytes."""
    hulls = {n: hull(p) for n, p in options.items()}
    at = {n: 0 for n in hulls}
    used = sum(h[0][0] for h in hulls.values())
    if used > room:
        return None
    heap = []

    def push(n: str) -> None:
        h, i = hulls[n], at[n]
        if i + 1 < len(h):
            heapq.heappush(heap, (-(h[i][1] - h[i + 1][1]) / (h[i + 1][0] - h[i][0]), n))

    for n in hulls:
        push(n)
    while heap:
        _, n = heapq.heappop(heap)
        h, i = hulls[n], at[n]
        extra = h[i + 1][0] - h[i][0]
        if used + extra <= room:
            used += extra
            at[n] = i + 1
            push(n)
    chosen = {n: hulls[n][at[n]] for n in hulls}
    while True:  # the hull steps that did not fit may leave room for a smaller step off the hull
        best = None
        for n, (b, loss, _) in chosen.items():
            for p in options[n]:
                if b < p[0] <= b + room - used and p[1] < loss:
                    gain = (loss - p[1]) / (p[0] - b)
                    if best is None or gain > best[0]:
                        best = (gain, n, p)
        if best is None:
            break
        _, n, p = best
        used += p[0] - chosen[n][0]
        chosen[n] = p
    return {n: p[2] for n, p in chosen.items()}


def fixed_bytes(ckpt: Checkpoint, kept: list[int]) -> int:
    """File bytes besides the matrices' data (header, rope factors, F32 vectors) with the blocks `kept`."""
    out = apply_plan(ckpt, kept)
    policy = TypeTable({})
    return size.file_size(out, policy) - sum(padded(t, policy(t)) for t in sn.matrices(out))


def summary(types: dict[str, DType], depth: int) -> str:
    """Types per role and layer band, e.g. `ffn_down 0-9: 6 q4_0, 4 q8_0`."""
    parts: dict[str, dict[str, int]] = {}
    for name, d in types.items():
        layer = sn.layer_of(name)
        key = sn.role_of(name) if layer is None else "{} {}-{}".format(sn.role_of(name), *sn.band_of(layer, depth))
        parts.setdefault(key, {})
        parts[key][d.name.lower()] = parts[key].get(d.name.lower(), 0) + 1
    return "; ".join(f"{k}: " + ", ".join(f"{n} {t}" for t, n in sorted(v.items(), key=lambda kv: -kv[1]))
                     for k, v in parts.items())


def choose(ckpt: Checkpoint, budget: int, windows: list[list[int]], removal_for: Callable[[int], list[int]],
           moments: dict[str, np.ndarray], folder: Path, rounding: str = "search", portable: bool = False,
           thorough: bool = False, threads: int | None = None, verbose: bool = False,
           sens_windows: int = 2) -> Allocation:
    """The per-tensor allocation or uniform candidate under `budget` bytes with the least measured KL divergence
    to the float model on `windows`. `removal_for(n)`: the n blocks to remove. `folder`: where quantized tensors
    are kept (the returned policy's tensors are there, for the writer to reuse). `thorough`: every tensor's KL
    scale measured alone, more removal counts and uniform candidates measured (several times slower)."""
    t_start = time.perf_counter()
    depth = ckpt.config.n_layers
    types = sn.storage_types(portable)
    mats = {t.name: t for t in sn.matrices(ckpt)}
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose else (lambda msg: None)

    def progress(i: int, n: int) -> None:
        if verbose:
            print(f"\r[target size: quantization error of matrix {i}/{n}]", end="" if i < n else "\n",
                  file=sys.stderr, flush=True)

    smallest_fit = fewest_removed(ckpt, budget, portable)
    errors = sn.output_errors(ckpt, types, moments, rounding, None if thorough else sn.SAMPLE_ELEMS, progress)
    say(f"target size: quantization errors of {len(errors)} matrices in {len(types)} types "
        f"({time.perf_counter() - t_start:.0f} s)")
    cache = size.QuantCache(ckpt, rounding, folder, moments)
    ref = sn.reference(ckpt, windows, threads)
    t0 = time.perf_counter()
    alpha, _ = sn.kl_scales(ckpt, cache, errors, types, windows[:sens_windows], ref[:sens_windows],
                            per_tensor=thorough, threads=threads, verbose=verbose)
    say(f"target size: KL scales measured ({time.perf_counter() - t0:.0f} s)")
    loss = {n: {d: alpha[n] * e for d, e in errs.items()} for n, errs in errors.items()}

    removals: dict[int, list[int]] = {0: []}

    def removed(n: int) -> list[int]:
        if n not in removals:
            removals[n] = sorted(removal_for(n))
        return removals[n]

    def allocate(n: int) -> Candidate | None:
        gone = removed(n)
        kept = [b for b in range(depth) if b not in gone]
        names = [m for m in mats if sn.layer_of(m) is None or sn.layer_of(m) in kept]
        options = {m: [(padded(mats[m], d), loss[m][d], d) for d in loss[m]] for m in names}
        head = fixed_bytes(ckpt, kept)
        table = knapsack(options, budget - head)
        if table is None:
            return None
        policy = TypeTable(table)
        total = head + sum(padded(mats[m], d) for m, d in table.items())
        return Candidate(f"per-tensor allocation with {n} blocks removed", gone, policy, total,
                         sum(loss[m][d] for m, d in table.items()), n_removed=n)

    allocs = [c for n in range(smallest_fit, min(depth - 1, smallest_fit + (THOROUGH_EXTRA_DROPS if thorough else 0))
                                + 1) if (c := allocate(n)) is not None]
    uniform = _uniform(ckpt, budget, mats, loss, depth)
    measured = allocs + uniform[:THOROUGH_UNIFORM if thorough else 1]
    for i, c in enumerate(measured):
        c.removed = removed(c.n_removed) if c.removed is None else c.removed
        if verbose:
            print(f"\r[target size: measuring candidate {i + 1}/{len(measured)}]", end="", file=sys.stderr,
                  flush=True)
        qckpt = cache.checkpoint(ckpt, c.policy)
        c.measured = sn.score(qckpt, drop(depth, c.removed) if c.removed else None, windows, ref, threads)
    if verbose:
        print(file=sys.stderr)
    best = min(measured, key=lambda c: c.measured.kl)  # type: ignore[union-attr]
    gone = best.removed or []
    table = {m: best.policy(mats[m]) for m in mats if sn.layer_of(m) is None or sn.layer_of(m) not in gone}
    why = _explain(best, measured, budget, table, depth, portable, time.perf_counter() - t_start)
    return Allocation(gone, TypeTable(table).renumbered(depth, gone), TypeTable(table), best.size, why, cache,
                      measured, alpha)


def encoded(ckpt: Checkpoint, choice: Allocation) -> tuple[Checkpoint, bool]:
    """`ckpt` with its matrices replaced by the encodings the choice was measured with (kept in its folder), so
    the writer copies them instead of encoding again; True if every matrix was. Matrices the writer permutes
    (q/k of Hugging Face sources) stay float: their encoding must follow the permutation."""
    cache = choice.cache
    tensors = dict(ckpt.tensors)
    complete = True
    for name, t in ckpt.tensors.items():
        if len(t.shape) != 2 or (layer := sn.layer_of(name)) is not None and layer in choice.removed:
            continue
        if needs_permute(ckpt, name):
            complete = False
            continue
        tensors[name] = cache.tensor(t, choice.source_policy(t))
    return replace(ckpt, tensors=tensors), complete


def fewest_removed(ckpt: Checkpoint, budget: int, portable: bool = False) -> int:
    """The fewest blocks to remove for every matrix in its smallest type to fit `budget` (blocks are alike in
    size: which ones go does not matter); a FrankenError when none fits, before any measurement."""
    depth = ckpt.config.n_layers
    types = sn.storage_types(portable)
    mats = sn.matrices(ckpt)
    fixed: dict[int, int] = {}

    def smallest(n: int) -> int:
        if n not in fixed:
            fixed[n] = fixed_bytes(ckpt, list(range(n, depth)))
        return fixed[n] + sum(min(padded(t, d) for d in types if sn.fits_rows(t, d)) for t in mats
                              if (layer := sn.layer_of(t.name)) is None or layer >= n)

    n = _fewest_removed(lambda k: smallest(k) <= budget, depth)
    if n is None:
        raise FrankenError(f"no model fits {budget:,} bytes: the smallest is {smallest(depth - 1):,} bytes (every "
                           f"matrix in its smallest type{' llama.cpp reads' if portable else ''}, {depth - 1} of "
                           f"{depth} blocks removed)")
    return n


def _fewest_removed(fits: Callable[[int], bool], depth: int) -> int | None:
    """The fewest removed blocks (0 .. depth-1) for which `fits`, by bisection (fitting only gets easier)."""
    if not fits(depth - 1):
        return None
    lo, hi = 0, depth - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _uniform(ckpt: Checkpoint, budget: int, mats: dict[str, TensorInfo], loss: dict[str, dict[DType, float]],
             depth: int) -> list[Candidate]:
    """The uniform candidates of franken_rt.surgery.size that fit (fewest removed blocks), ranked by the fewest
    removed blocks, then the predicted loss (of the blocks kept when the first ones go: which go is asked only for
    the candidates measured)."""
    headers: dict[int, int] = {}
    out = []
    seen = set()
    for quant, embed in size.candidate_quants():
        policy = size.policy_of(quant, embed)
        sig = tuple(policy(t) for t in mats.values())
        if sig in seen or any(d not in loss[m] for m, d in zip(mats, sig)):
            continue  # a repeat, or a type outside the allowed ones (--portable)
        seen.add(sig)

        def sized(n: int, policy: size.QuantPolicy = policy) -> int:
            out_ckpt = apply_plan(ckpt, list(range(n, depth)))
            if n not in headers:
                headers[n] = size.header_bytes(out_ckpt, policy)
            return size.file_size(out_ckpt, policy, header=headers[n])

        n = _fewest_removed(lambda k, sized=sized: sized(k) <= budget, depth)
        if n is None:
            continue
        pred = sum(loss[m][policy(t)] for m, t in mats.items() if sn.layer_of(m) is None or sn.layer_of(m) >= n)
        out.append(Candidate(size.describe_quant(quant, embed) + f" with {n} blocks removed", None, policy, sized(n),
                             pred, n_removed=n))
    out.sort(key=lambda c: (c.n_removed, c.predicted))
    return out


def _explain(best: Candidate, measured: list[Candidate], budget: int, table: dict[str, DType], depth: int,
             portable: bool, seconds: float) -> str:
    """The choice in a few lines: what was measured, the types by role and layer band, what llama.cpp reads."""
    others = "; ".join(f"{c.label}: {c.size / 1e6:.2f} MB, {c.measured}" for c in measured if c is not best)
    gone = f" ({best.removed})" if best.removed else ""
    lines = [f"target {budget / 1e6:.2f} MB: {best.label}{gone} is {best.size:,} bytes (predicted exactly) with the "
             f"least calibration divergence to the float model, {best.measured}"
             + (f" (also measured: {others})" if others else "")
             + f"; sensitivity: KL-scaled diagonal output error; search {seconds:.0f} s",
             f"types: {summary(table, depth)}"]
    own = sorted({d.name.lower() for d in table.values() if not format_of(d).portable})
    if own:
        n = sum(1 for d in table.values() if not format_of(d).portable)
        lines.append(f"llama.cpp cannot read {', '.join(own)} ({n} tensors): --portable limits the choice to types "
                     "it reads")
    elif not portable:
        lines.append("every type chosen is one llama.cpp reads")
    return "\n".join(lines)
