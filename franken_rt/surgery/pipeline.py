"""franken-convert's surgery options, applied to a checkpoint: `--drop N --method M`, `--target-size SIZE`,
`--heal [METHOD]`, with `--calib FILE` (default: text sampled from the model). The result is a checkpoint that
runs only the kept blocks (renumbered: a plain llama file) and the storage policy to write it with."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from franken_rt.checkpoint.layer_plan import drop, format_plan, is_removal_only, parse_plan
from franken_rt.checkpoint.types import Checkpoint
from franken_rt.errors import FrankenError
from franken_rt.model import Model
from franken_rt.surgery import allocate, healing, size
from franken_rt.surgery import select as sl
from franken_rt.surgery.analyze import BlockStats, residual_stats
from franken_rt.surgery.calib import calibration_text, windows
from franken_rt.surgery.importance import Hessians, input_moments
from franken_rt.surgery.plan import apply_plan

DEFAULT_METHOD = "angular"
CALIB_CTX = 256
CALIB_WINDOWS = 16     # for healing and --drop selections
SEARCH_WINDOWS = 4     # perplexity of each candidate (ppl-greedy steps, --target-size candidates)
IMPORTANCE_WINDOWS = 8  # input moments for the weighted 3/4-bit rounding
GPTQ_WINDOWS = 8        # second moments for error-feedback rounding (2040 positions; 16 doubles the tracing)


@dataclass
class SurgeryOptions:
    calib: str | None = None
    drop: int | None = None
    method: str = DEFAULT_METHOD
    heal: str | None = None          # healing method, or None
    target_size: str | None = None
    plan: str | None = None          # --plan (removal-only plans can be healed)
    rounding: str = "search"
    portable: bool = False           # --target-size: only types llama.cpp reads
    thorough: bool = False           # --target-size: the slower, finer search
    threads: int | None = None
    notes: list[str] = field(default_factory=list)
    windows: list[list[int]] | None = None  # the calibration windows, once tokenized
    moments: tuple[dict, dict] | None = None  # (tensors they were measured on, input moments)

    @property
    def active(self) -> bool:
        return self.drop is not None or self.target_size is not None or self.heal is not None


def check(opts: SurgeryOptions) -> None:
    """Option combinations that cannot work, before any file is read."""
    if opts.method not in sl.METHODS:
        raise FrankenError(f"--method must be one of {', '.join(sl.METHODS)}, got {opts.method!r}")
    if opts.heal is not None:
        healing.check(opts.heal)
    if opts.plan is not None and (opts.drop is not None or opts.target_size is not None):
        raise FrankenError("--plan cannot be combined with --drop or --target-size")
    if opts.drop is not None and opts.target_size is not None:
        raise FrankenError("--target-size chooses how many blocks to drop: do not give --drop with it")
    if opts.heal is not None and opts.drop is None and opts.target_size is None and opts.plan is None:
        raise FrankenError("--heal needs removed blocks: give --drop N, --target-size or a removal --plan")
    if opts.drop is not None and opts.drop < 0:
        raise FrankenError(f"--drop must be >= 0, got {opts.drop}")
    if opts.target_size is not None:
        size.parse_size(opts.target_size)
    elif opts.portable or opts.thorough:
        raise FrankenError(f"--{'portable' if opts.portable else 'thorough'} applies to --target-size")


def log(msg: str) -> None:
    print(msg, file=sys.stderr)


def calibration_windows(ckpt: Checkpoint, opts: SurgeryOptions) -> list[list[int]]:
    """The calibration text as windows of token ids, made once per conversion (the text sampled from the model, or
    --calib), so every later step (a pruned model's importance too) reads the same tokens."""
    if opts.windows is None:
        model = Model(ckpt, threads=opts.threads, n_ctx=min(CALIB_CTX, ckpt.config.context_length),
                      activations="f32", kv_cache="f32")
        if opts.calib is None:
            log("calibration: sampling text from the model (cached after the first time)")
        text = calibration_text(model, opts.calib)
        opts.windows = windows(model, text, model.n_ctx, max_windows=CALIB_WINDOWS)
        opts.notes.append(f"calibration: {opts.calib or 'text sampled from the model'} "
                          f"({len(opts.windows)} windows of {model.n_ctx})")
    return opts.windows


def importance(ckpt: Checkpoint, opts: SurgeryOptions) -> dict:
    """Per-column input moments of `ckpt`'s matrices on the calibration windows, for the weighted rounding."""
    if opts.moments is not None and opts.moments[0] == ckpt.tensors:  # e.g. --target-size kept every block
        return opts.moments[1]
    log("calibration: measuring the inputs of every matrix (importance-weighted rounding)")
    moments = input_moments(ckpt, calibration_windows(ckpt, opts)[:IMPORTANCE_WINDOWS], threads=opts.threads)
    opts.moments = (dict(ckpt.tensors), moments)
    return moments


def hessians(ckpt: Checkpoint, opts: SurgeryOptions) -> Hessians:
    """The inputs' second moments of `ckpt`'s matrices on the calibration windows (each block's built when the
    writer reaches it), for error-feedback rounding."""
    log("calibration: tracing the inputs of every matrix (error-feedback rounding)")
    return Hessians(ckpt, calibration_windows(ckpt, opts)[:GPTQ_WINDOWS], threads=opts.threads)


def run(ckpt: Checkpoint, opts: SurgeryOptions, policy, heal_folder: Path):  # noqa: ANN001, ANN201
    """(checkpoint to write, policy to write it with, one line per decision)."""
    if ckpt.layer_plan is not None:
        raise FrankenError("--drop/--target-size/--heal need a source without a layer plan")
    depth = ckpt.config.n_layers
    wins = calibration_windows(ckpt, opts)
    short = wins[:SEARCH_WINDOWS]
    notes: list[str] = opts.notes

    removed: list[int] = []
    reused = False
    if opts.plan is not None:
        plan = parse_plan(opts.plan, depth)
        if not is_removal_only(plan):
            raise FrankenError("--heal works on plans that only remove blocks")
        removed = [b for b in range(depth) if b not in plan]
    elif opts.drop is not None:
        sel = sl.select_blocks(ckpt, short if opts.method == "ppl-greedy" else wins, opts.drop, opts.method,
                               threads=opts.threads, verbose=True)
        removed = sel.removed
        notes.append(f"--drop {opts.drop} --method {opts.method}: removing {format_plan(removed) or 'nothing'}; "
                     f"{sel.reason}")
    elif opts.target_size is not None:
        budget = size.parse_size(opts.target_size)
        allocate.fewest_removed(ckpt, budget, opts.portable)  # an impossible budget fails before measurements
        moments = importance(ckpt, opts)  # the sensitivity estimate weighs errors by them, whatever the rounding
        # candidates are scored with the weighted search (gptq per candidate would cost minutes each); the chosen
        # file is then written with the rounding asked for
        rounding = "rtn" if opts.rounding == "rtn" else "search"
        choice = allocate.choose(ckpt, budget, short, _removal_for(ckpt, wins, short, opts), moments,
                                 heal_folder, rounding=rounding, portable=opts.portable, thorough=opts.thorough,
                                 threads=opts.threads, verbose=True)
        removed = choice.removed
        policy = choice.policy
        notes.append(choice.why)
        if opts.heal is None and rounding == opts.rounding:  # the measured tensors are the file's: no re-encoding
            ckpt, reused = allocate.encoded(ckpt, choice)
    if opts.heal is not None and removed:
        ckpt, note = healing.heal(opts.heal, ckpt, removed, wins, heal_folder, threads=opts.threads)
        notes.append(note)
    if removed:
        ckpt = apply_plan(ckpt, drop(depth, removed))
    if reused:  # every matrix is stored in the type it is written in: the writer's rounding needs no moments
        opts.moments = (dict(ckpt.tensors), {})
    return ckpt, policy, notes


def _removal_for(ckpt: Checkpoint, wins: list[list[int]], short: list[list[int]], opts: SurgeryOptions):  # noqa: ANN202
    """n -> the blocks the method removes; measurements shared across n."""
    depth = ckpt.config.n_layers
    if opts.method == "ppl-greedy":
        order: list[int] = []

        def greedy(n: int) -> list[int]:
            if n > len(order):
                order[:] = _greedy_order(ckpt, short, n, opts.threads)
            return sorted(order[:n])

        return greedy
    traced: list[BlockStats] = []  # the residual statistics, measured when a removal is first asked for

    def stats() -> BlockStats:
        if not traced:
            model = Model(ckpt, threads=opts.threads, n_ctx=len(wins[0]), activations="f32", kv_cache="f32")
            traced.append(residual_stats(model, wins, max_shift=depth - 1))
        return traced[0]

    if opts.method == "bi":
        return lambda n: sl.by_bi(stats().bi, n).removed
    return lambda n: sl.by_angular(stats(), n).removed


def _greedy_order(ckpt: Checkpoint, wins: list[list[int]], n: int, threads: int | None) -> list[int]:
    """The greedy removal sequence (in removal order) for n blocks."""
    sel = sl.by_ppl_greedy(ckpt, wins, n, threads=threads, verbose=True)
    return sel.order


def default_heal() -> str:
    """What `--heal` alone means: the method measured to help on text of a domain it was not fitted on."""
    return healing.DEFAULT_METHOD
